//! The process lifecycle with the real executable: SIGTERM drains and exits 0, a restart resumes
//! where the last process stopped, and `kill -9` in the middle of a batch loses nothing (the
//! redelivered events carry the same Customer.io ids, so Customer.io counts them once).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sync_sandbox::{Fault, FaultKind, Sandbox, SandboxConfig, Upstream};

use crate::support::{self, ACCOUNT_SECRET, API_KEY, SITE_ID, TOKEN, WEBHOOK_SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_cio-chameleon-sync");

struct Process {
    child: Child,
}

impl Process {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the exit status, at most `limit`.
    async fn exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(
    dir: &Path,
    queue: &str,
    prefix: &str,
    listen: &str,
    sandbox: &str,
) -> std::path::PathBuf {
    let path = dir.join("daemon.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "{listen}"
shutdown_grace = "20s"

[queue]
{queue}
prefix = "{prefix}"
retry_tiers = ["1s", "3s"]
lease = "3s"

[customerio]
endpoint_token = "{TOKEN}"
track_url = "http://{sandbox}"
site_id = "{SITE_ID}"
api_key = "{API_KEY}"
batch_size = 10

[chameleon]
api_url = "http://{sandbox}"
account_secret = "{ACCOUNT_SECRET}"
webhook_secrets = ["{WEBHOOK_SECRET}"]
requests_per_minute = 6000
max_in_flight = 4

[delivery]
initial_delay = "1s"
max_delay = "2s"
jitter = 0.0
request_timeout = "10s"

[dedupe]
path = "{dedupe}"
"#,
            dedupe = dir.join("seen.sqlite3").display()
        ),
    )
    .unwrap();
    path
}

async fn start(config: &Path, base: &str) -> Process {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut process = Process { child };
    let http = reqwest::Client::new();
    support::wait_ready(&http, base, || {
        process
            .child
            .try_wait()
            .is_ok_and(|status| status.is_some())
    })
    .await;
    process
}

async fn sandbox() -> (Sandbox, String) {
    let (sandbox, addr) = Sandbox::spawn(SandboxConfig {
        chameleon_account_secret: ACCOUNT_SECRET.into(),
        customerio_site_id: SITE_ID.into(),
        customerio_api_key: API_KEY.into(),
        chameleon_requests_per_minute: None,
        customerio_requests_per_second: None,
    })
    .await
    .unwrap();
    (sandbox, addr.to_string())
}

fn amqp_queue() -> String {
    format!(
        "backend = \"amqp\"\namqp_url = \"amqp://guest:guest@{}/%2f\"",
        support::BROKER
    )
}

async fn post_event(http: &reqwest::Client, base: &str, n: usize) {
    let body = serde_json::json!({"uid": format!("user_{n}"), "name": "Drain check", "n": n});
    let answer = http
        .post(format!("{base}/v1/customerio/{TOKEN}/events"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_a_restart_resumes() {
    let _broker = support::require_broker().await;
    let (sandbox, sandbox_addr) = sandbox().await;
    sandbox.inject(Fault {
        path_prefix: "/v3/observe/hooks/events".into(),
        count: 1_000,
        kind: FaultKind::Delay { millis: 700 },
    });
    let dir = tempfile::tempdir().unwrap();
    let prefix = support::unique_prefix();
    let listen = support::free_addr().await.to_string();
    let base = format!("http://{listen}");
    let config = write_config(dir.path(), &amqp_queue(), &prefix, &listen, &sandbox_addr);
    let http = reqwest::Client::new();

    let mut first = start(&config, &base).await;
    for n in 0..12 {
        post_event(&http, &base, n).await;
    }
    assert!(
        sandbox
            .wait_for(|requests| !requests.is_empty(), Duration::from_secs(20))
            .await,
        "no event reached the upstream"
    );
    first.signal("TERM");
    let status = first.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM must exit 0, got {status}");

    // A new process picks up what the first one had not taken; everything arrives once.
    let mut second = start(&config, &base).await;
    let all = sandbox
        .wait_for(
            |requests| requests.iter().filter(|r| r.status == 200).count() >= 12,
            Duration::from_secs(60),
        )
        .await;
    let delivered: Vec<u64> = sandbox
        .accepted(Upstream::Chameleon)
        .iter()
        .filter_map(|r| r.body["n"].as_u64())
        .collect();
    assert!(all, "delivered {delivered:?}");
    let distinct: BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(distinct, (0..12).collect(), "{delivered:?}");
    assert_eq!(
        delivered.len(),
        12,
        "a drained message was delivered twice: {delivered:?}"
    );

    second.signal("TERM");
    assert!(second.exit(Duration::from_secs(30)).await.success());
    support::delete_topology(&prefix, &["1s", "3s"]).await;
}

async fn kill_mid_batch(queue: String) {
    let (sandbox, sandbox_addr) = sandbox().await;
    sandbox.inject(Fault {
        path_prefix: "/api/v2/batch".into(),
        count: 1,
        kind: FaultKind::Delay { millis: 3_000 },
    });
    let dir = tempfile::tempdir().unwrap();
    let prefix = support::unique_prefix();
    let listen = support::free_addr().await.to_string();
    let base = format!("http://{listen}");
    let config = write_config(dir.path(), &queue, &prefix, &listen, &sandbox_addr);
    let http = reqwest::Client::new();

    let mut first = start(&config, &base).await;
    let webhooks = [
        "tour-started.json",
        "tour-completed.json",
        "tour-exited.json",
        "tour-button-clicked.json",
        "response-finished.json",
    ];
    for name in webhooks {
        let body = support::restamp(&support::payload(&format!("chameleon/{name}")));
        let answer = http
            .post(format!("{base}/v1/chameleon/webhooks"))
            .header("content-type", "application/json")
            .header(
                "x-chameleon-signature",
                sync_core::signature::sign_chameleon(WEBHOOK_SECRET, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{name}");
    }
    // Kill while the first batch request is still waiting for its (slow) answer.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    first.signal("KILL");
    let status = first.exit(Duration::from_secs(10)).await;
    assert!(!status.success());

    let mut second = start(&config, &base).await;
    let expected: BTreeSet<String> = webhooks
        .iter()
        .map(|name| {
            let body: Value =
                serde_json::from_slice(&support::payload(&format!("chameleon/{name}"))).unwrap();
            sync_core::outbound::event_ulid(body["id"].as_str().unwrap())
        })
        .collect();
    let ids = || -> Vec<String> {
        sandbox
            .accepted(Upstream::Customerio)
            .iter()
            .flat_map(|r| r.body["batch"].as_array().cloned().unwrap_or_default())
            .filter_map(|op| op["id"].as_str().map(str::to_owned))
            .collect()
    };
    let all = support::eventually(Duration::from_secs(60), || async {
        ids().into_iter().collect::<BTreeSet<_>>() == expected
    })
    .await;
    assert!(all, "received ids {:?}, expected {expected:?}", ids());

    second.signal("TERM");
    assert!(second.exit(Duration::from_secs(30)).await.success());
    support::delete_topology(&prefix, &["1s", "3s"]).await;
}

#[tokio::test]
async fn kill_9_mid_batch_loses_nothing_on_rabbitmq() {
    let _broker = support::require_broker().await;
    kill_mid_batch(amqp_queue()).await;
}

#[tokio::test]
async fn kill_9_mid_batch_loses_nothing_on_the_embedded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let queue = format!(
        "backend = \"embedded\"\npath = {:?}",
        dir.path().join("queue.sqlite3").display().to_string()
    );
    kill_mid_batch(queue).await;
}
