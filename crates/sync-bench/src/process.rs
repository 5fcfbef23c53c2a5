//! The child processes of the `upstream` benchmark (the daemon and the sandbox): started from
//! the built binary with their logs in a file, watched through `/proc`, and stopped by signal
//! with a deadline. A child is killed if its handle is dropped, so an interrupted benchmark
//! leaves nothing running.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// One running child.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Start `binary` with `args`, its standard output and error appended to `log`. Variables
    /// that configure the daemon (`SYNC_*`, `RUST_LOG`) are not inherited: the child sees only
    /// `env`.
    pub fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("SYNC") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", binary.display()))?;
        Ok(Self { name, child, log })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status, if the child has stopped.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_field("VmHWM")
    }

    /// Resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_field("VmRSS")
    }

    fn status_field(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.id()?)).ok()?;
        status_kib(&status, field)
    }

    /// The last `lines` lines of the child's log, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Send `signal` (`TERM`, `INT`) and wait up to `grace` for the exit; kill it after that.
    pub async fn stop(mut self, signal: &str, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        if let Some(pid) = self.id() {
            let sent = Command::new("kill")
                .args(["-s", signal, &pid.to_string()])
                .status()
                .await;
            if !sent.is_ok_and(|status| status.success()) {
                tracing::warn!(process = self.name, pid, "signal not delivered");
            }
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not stop within {grace:?} of SIG{signal}; killed",
                    self.name
                )
            }
        }
    }

    /// Poll `url` until it answers 2xx; fail if the child exits or `timeout` passes first.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(answer) = http.get(url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited ({status}) before it was ready; its log ends with:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {timeout:?}; its log ends with:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A loopback address with a port free right now, for a child to listen on.
pub fn free_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?)
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_fields_of_proc_status() {
        let status = "Name:\tcio-chameleon-sync\nVmPeak:\t  812345 kB\nVmHWM:\t   40960 kB\n\
                      VmRSS:\t   38000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(40_960));
        assert_eq!(status_kib(status, "VmRSS"), Some(38_000));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[tokio::test]
    async fn a_child_is_stopped_by_signal_and_its_own_memory_is_read() {
        let scratch = crate::scratch::Scratch::new("process").unwrap();
        let child = Process::spawn(
            "sleeper",
            Path::new("sleep"),
            &["30".to_owned()],
            &[],
            scratch.path().join("sleep.log"),
        )
        .unwrap();
        assert!(child.peak_rss_kib().is_some_and(|kib| kib > 0));
        let status = child.stop("TERM", Duration::from_secs(10)).await.unwrap();
        assert!(!status.success(), "sleep ends by the signal, not by itself");
    }
}
