//! Where the CPU goes during a measured period: this process's threads grouped by name (the
//! receiver's runtime, the load tasks, lapin's I/O thread, the embedded queue's writer, the
//! claim store's thread), the broker (`beam.smp`) and the whole machine, read from `/proc` at the
//! start and the end of the window. On a 2-core machine the load generator, the receiver and the broker share the same
//! cores, so this split is what explains a ratio to the bare loop.
//!
//! Limitation: `/proc` counts CPU time in clock ticks of 10 ms (USER_HZ is 100 on Linux), so a
//! component that used less than a few ticks over the window shows as zero.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use crate::load::Window;

/// Clock ticks per second in `/proc` counters (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// The name given to the receiver's runtime threads, so they can be told from the load's.
pub const RECEIVER_THREAD: &str = "receiver";

/// The name of the thread that runs the load tasks (HTTP clients or bare publishers).
pub const LOAD_THREAD: &str = "bench-load";

/// CPU counters at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    /// Ticks used by this process's threads, by component.
    components: BTreeMap<&'static str, u64>,
    broker: Option<u64>,
    /// Busy and total ticks of all cores.
    machine: Option<(u64, u64)>,
}

/// CPU used over a window, as average cores busy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    pub wall_secs: f64,
    /// This process's components: average cores each kept busy.
    pub components: BTreeMap<&'static str, f64>,
    /// The RabbitMQ node (`beam.smp`), when one runs on this machine.
    pub broker: Option<f64>,
    /// Everything on the machine, this benchmark and other users included.
    pub machine_busy: Option<f64>,
}

/// The CPU used over a window's measured period: wait for its start, read, wait for its end,
/// read again. Run it beside the load tasks.
pub async fn over(window: Window) -> CpuUse {
    tokio::time::sleep_until(window.measure_from).await;
    let start = Snapshot::take();
    tokio::time::sleep_until(window.end).await;
    start.until(&Snapshot::take())
}

impl Snapshot {
    /// Read the counters now.
    pub fn take() -> Self {
        Self {
            at: Instant::now(),
            components: components(),
            broker: broker_pid().and_then(|pid| process_ticks(&pid)),
            machine: machine_ticks(),
        }
    }

    /// The CPU used from `self` to `later`.
    pub fn until(&self, later: &Snapshot) -> CpuUse {
        let wall_secs = (later.at - self.at).as_secs_f64().max(f64::EPSILON);
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SEC / wall_secs;
        let components = later
            .components
            .iter()
            .map(|(name, ticks)| {
                let before = self.components.get(name).copied().unwrap_or(0);
                (*name, cores(ticks.saturating_sub(before)))
            })
            .collect();
        let broker = self
            .broker
            .zip(later.broker)
            .map(|(before, after)| cores(after.saturating_sub(before)));
        let machine_busy = self
            .machine
            .zip(later.machine)
            .map(|(before, after)| machine_cores_busy(before, after));
        CpuUse {
            wall_secs,
            components,
            broker,
            machine_busy,
        }
    }
}

impl CpuUse {
    /// `receiver 0.62, load 0.51, lapin-io 0.10, broker 0.71, machine 1.97 cores busy`.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .components
            .iter()
            .filter(|(_, cores)| **cores > 0.0)
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        if let Some(broker) = self.broker {
            parts.push(format!("broker {broker:.2}"));
        }
        if let Some(machine) = self.machine_busy {
            parts.push(format!("machine {machine:.2}"));
        }
        format!("{} cores busy", parts.join(", "))
    }

    /// The CPU of several windows taken together: each part's average over their summed wall
    /// time. The broker's and the machine's figures are kept only when every window has them.
    pub fn combine(parts: &[CpuUse]) -> CpuUse {
        let wall_secs = parts
            .iter()
            .map(|part| part.wall_secs)
            .sum::<f64>()
            .max(f64::EPSILON);
        let share = |part: &CpuUse, cores: f64| cores * part.wall_secs / wall_secs;
        let mut components = BTreeMap::new();
        for part in parts {
            for (name, cores) in &part.components {
                *components.entry(*name).or_insert(0.0) += share(part, *cores);
            }
        }
        let known_in_all = |pick: fn(&CpuUse) -> Option<f64>| {
            parts
                .iter()
                .map(|part| pick(part).map(|cores| share(part, cores)))
                .sum::<Option<f64>>()
        };
        CpuUse {
            wall_secs,
            components,
            broker: known_in_all(|part| part.broker),
            machine_busy: known_in_all(|part| part.machine_busy),
        }
    }

    /// CPU microseconds per operation of each part, for `operations` done in the window.
    pub fn micros_per(&self, operations: u64) -> BTreeMap<String, f64> {
        let per = |cores: f64| cores * self.wall_secs * 1e6 / operations.max(1) as f64;
        let mut out: BTreeMap<String, f64> = self
            .components
            .iter()
            .map(|(name, cores)| ((*name).to_owned(), per(*cores)))
            .collect();
        if let Some(broker) = self.broker {
            out.insert("broker".to_owned(), per(broker));
        }
        out
    }
}

/// The component a thread of this process belongs to, by its name.
fn component(thread: &str) -> &'static str {
    match thread {
        RECEIVER_THREAD => "receiver",
        LOAD_THREAD | "tokio-rt-worker" => "load",
        "lapin-io-loop" => "lapin-io",
        name if name.starts_with("ccsync-queue") => "embedded-writer",
        name if name.starts_with("ccsync-claims") => "claims",
        _ => "other",
    }
}

/// Ticks used so far by this process's threads, by component.
fn components() -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = stat_name_and_ticks(&stat) {
            *out.entry(component(name)).or_default() += ticks;
        }
    }
    out
}

/// CPU ticks used so far by a whole process (all its threads).
pub fn process_ticks_of(pid: u32) -> Option<u64> {
    process_ticks(&pid.to_string())
}

/// Ticks used so far by the RabbitMQ node on this machine, if one runs.
pub fn broker_ticks() -> Option<u64> {
    broker_pid().and_then(|pid| process_ticks(&pid))
}

/// Busy ticks and total ticks of all cores so far.
pub fn machine_ticks_now() -> Option<(u64, u64)> {
    machine_ticks()
}

/// The machine's busy share between two `(busy, total)` readings, in cores.
pub fn machine_cores_busy(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    busy / total * std::thread::available_parallelism().map_or(1, usize::from) as f64
}

/// Ticks as average cores busy over `secs`.
pub fn ticks_to_cores(ticks: u64, secs: f64) -> f64 {
    ticks as f64 / TICKS_PER_SEC / secs.max(f64::EPSILON)
}

/// The pid of the RabbitMQ node on this machine, if one runs.
fn broker_pid() -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (pid.bytes().all(|b| b.is_ascii_digit()) && comm.trim() == "beam.smp").then_some(pid)
        })
}

fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_name_and_ticks(&stat).map(|(_, ticks)| ticks)
}

/// The name and `utime + stime` of a `/proc/.../stat` line. The name sits in parentheses and may
/// hold spaces, so fields are counted after the last `)`.
fn stat_name_and_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state is field 3, utime field 14 and stime field 15.
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Busy and total ticks of all cores (`/proc/stat`); idle and iowait are not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let values: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total.saturating_sub(idle), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_lines_with_odd_names() {
        let stat = "4242 (lapin-io-loop) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0";
        assert_eq!(stat_name_and_ticks(stat), Some(("lapin-io-loop", 290)));
        let odd = "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 3 4 0";
        assert_eq!(stat_name_and_ticks(odd), Some(("a (b) c", 7)));
        assert_eq!(stat_name_and_ticks("garbage"), None);
    }

    #[test]
    fn machine_busy_leaves_idle_and_iowait_out() {
        let line = "cpu  100 5 50 800 40 3 2 0 0 0";
        assert_eq!(parse_cpu_line(line), Some((160, 1000)));
        assert_eq!(parse_cpu_line("intr 1 2 3"), None);
    }

    #[test]
    fn threads_are_grouped_by_name() {
        assert_eq!(component(RECEIVER_THREAD), "receiver");
        assert_eq!(component("tokio-rt-worker"), "load");
        assert_eq!(component(LOAD_THREAD), "load");
        assert_eq!(component("ccsync-queue-wr"), "embedded-writer");
        assert_eq!(component("ccsync-claims"), "claims");
        assert_eq!(component("main"), "other");
    }

    #[test]
    fn usage_over_a_window_is_in_cores_and_micros_per_operation() {
        let start = Instant::now();
        let before = Snapshot {
            at: start,
            components: BTreeMap::from([("receiver", 100), ("load", 50)]),
            broker: Some(1_000),
            machine: Some((1_000, 10_000)),
        };
        let after = Snapshot {
            at: start + std::time::Duration::from_secs(2),
            components: BTreeMap::from([("receiver", 300), ("load", 150)]),
            broker: Some(1_300),
            machine: None,
        };
        let used = before.until(&after);
        assert_eq!(used.components["receiver"], 1.0);
        assert_eq!(used.components["load"], 0.5);
        assert_eq!(used.broker, Some(1.5));
        assert_eq!(used.machine_busy, None);
        let micros = used.micros_per(10_000);
        assert_eq!(micros["receiver"], 200.0);
        assert_eq!(micros["broker"], 300.0);
        assert!(
            used.line()
                .starts_with("load 0.50, receiver 1.00, broker 1.50")
        );
    }

    #[test]
    fn windows_combine_weighted_by_their_length() {
        let window = |wall_secs: f64, receiver: f64, broker: Option<f64>| CpuUse {
            wall_secs,
            components: BTreeMap::from([("receiver", receiver)]),
            broker,
            machine_busy: Some(1.0),
        };
        let both = CpuUse::combine(&[window(1.0, 0.4, Some(1.0)), window(3.0, 0.8, Some(2.0))]);
        assert_eq!(both.wall_secs, 4.0);
        assert!((both.components["receiver"] - 0.7).abs() < 1e-12);
        assert!((both.broker.unwrap() - 1.75).abs() < 1e-12);
        assert!((both.machine_busy.unwrap() - 1.0).abs() < 1e-12);
        // The broker's figure is dropped when a window lacks it.
        let partial = CpuUse::combine(&[window(1.0, 0.4, None), window(1.0, 0.4, Some(1.0))]);
        assert_eq!(partial.broker, None);
    }
}
