//! The request metrics: which series every request touches, with the upstream's label.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{Call, post, transport};

/// One series a request touched: its name and its labels in order.
type Series = (String, Vec<(String, String)>);

/// Remembers every series registered on this thread while it is the local recorder.
#[derive(Default)]
struct Touched {
    series: Arc<Mutex<Vec<Series>>>,
}

impl Touched {
    fn note(&self, key: &Key) {
        let labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.push((key.name().to_owned(), labels));
    }

    fn taken(&self) -> Vec<Series> {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *series)
    }
}

impl Recorder for Touched {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key);
        Counter::noop()
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key);
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key);
        Histogram::noop()
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (name.to_owned(), labels)
}

// A current-thread runtime (the default of `tokio::test`) polls the transport on this thread,
// where the local recorder is set.
#[tokio::test]
async fn each_request_counts_once_under_the_upstreams_label() {
    let limited = MockServer::start().await;
    let open = MockServer::start().await;
    for (server, status) in [(&limited, 429), (&open, 202)] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(server)
            .await;
    }
    let transport = transport(|c| c.max_wait = Duration::from_secs(1));
    let touched = Touched::default();
    let _recorder = metrics::set_default_local_recorder(&touched);

    let answer = post(&transport, Call::Read, &limited.uri()).await;
    assert!(answer.is_err(), "{answer:?}");
    assert_eq!(
        touched.taken(),
        vec![
            series(
                "ccsync_upstream_requests_total",
                &[("upstream", "example"), ("call", "read"), ("status", "429")]
            ),
            series(
                "ccsync_upstream_request_seconds",
                &[("upstream", "example"), ("call", "read")]
            ),
            series(
                "ccsync_upstream_rate_limited_total",
                &[("upstream", "example")]
            ),
        ]
    );

    // The next request waits out the pause, cut to one second.
    let accepted = post(&transport, Call::Write, &open.uri()).await;
    assert!(accepted.is_ok(), "{accepted:?}");
    assert_eq!(
        touched.taken(),
        vec![
            series(
                "ccsync_upstream_requests_total",
                &[
                    ("upstream", "example"),
                    ("call", "write"),
                    ("status", "2xx")
                ]
            ),
            series(
                "ccsync_upstream_request_seconds",
                &[("upstream", "example"), ("call", "write")]
            ),
        ]
    );
}
