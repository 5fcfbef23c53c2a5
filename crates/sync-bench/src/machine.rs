//! What a figure was measured on: the core count, the load averages before and after the run,
//! and the date, printed with every result so that figures are never quoted without them.

use serde::Serialize;

/// The machine and its load around one run.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Cores the process may use.
    pub cores: usize,
    /// 1, 5 and 15-minute load averages when the run started (`/proc/loadavg`).
    pub load_before: Option<[f64; 3]>,
    /// The same when it ended.
    pub load_after: Option<[f64; 3]>,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
}

impl Machine {
    /// Record the start of a run.
    pub fn at_start() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            load_before: load_average(),
            load_after: None,
            started_at: sync_core::time::format_ms(sync_core::time::now_ms()),
        }
    }

    /// Record the end of the run.
    pub fn finish(&mut self) {
        self.load_after = load_average();
    }

    /// One line for the readable summary.
    pub fn summary(&self) -> String {
        let load = |load: Option<[f64; 3]>| {
            load.map_or_else(
                || "unknown".to_owned(),
                |[one, five, fifteen]| format!("{one:.2} {five:.2} {fifteen:.2}"),
            )
        };
        format!(
            "{} cores, load {} before and {} after, started {}",
            self.cores,
            load(self.load_before),
            load(self.load_after),
            self.started_at
        )
    }
}

/// The load averages, where the system publishes them.
pub fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_averages() {
        assert_eq!(
            parse_loadavg("0.52 1.07 2.41 3/612 88123\n"),
            Some([0.52, 1.07, 2.41])
        );
        assert_eq!(parse_loadavg("0.52 oops"), None);
    }
}
