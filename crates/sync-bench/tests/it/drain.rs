//! Short drain runs: everything preloaded is consumed and acked, on both backends.

use std::time::Duration;

use sync_bench::cli::DrainArgs;
use sync_bench::drain;

use crate::support::require_broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_drain_everything_they_preloaded() {
    let url = require_broker().await;
    let args = DrainArgs {
        backend: None,
        amqp_url: url.to_owned(),
        messages: 1_500,
        prefetch: 256,
        publishers: 16,
        body_bytes: 1024,
        sequential_acks: false,
        timeout: Duration::from_secs(120),
    };
    let report = drain::run(&args).await.unwrap();
    let backends: Vec<&str> = report.runs.iter().map(|run| run.backend.as_str()).collect();
    assert_eq!(backends, ["amqp", "embedded"]);
    for run in &report.runs {
        assert!(
            run.enqueue_per_sec > 0.0 && run.drain_per_sec > 0.0,
            "{run:?}"
        );
    }
    assert_eq!(report.runs[0].left, Some(0), "every message was acked");
    assert_eq!(report.runs[1].left, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_acks_drain_the_embedded_queue_too() {
    let args = DrainArgs {
        backend: Some(sync_bench::cli::Backend::Embedded),
        amqp_url: String::new(),
        messages: 300,
        prefetch: 64,
        publishers: 8,
        body_bytes: 512,
        sequential_acks: true,
        timeout: Duration::from_secs(120),
    };
    let report = drain::run(&args).await.unwrap();
    assert_eq!(report.runs.len(), 1);
    assert!(report.summary().contains("sequential acks"));
}
