//! Short receiver runs: every accepted request is in the queue once, on both backends, with and
//! without the claim store.

use std::time::Duration;

use sync_bench::cli::{Backend, Claims, ReceiverArgs};
use sync_bench::receiver;

use crate::support::require_broker;

fn args(backend: Backend, amqp_url: &str) -> ReceiverArgs {
    ReceiverArgs {
        backend,
        amqp_url: amqp_url.to_owned(),
        clients: 8,
        body_bytes: 1024,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(500),
        rounds: 2,
        claims: Claims::Both,
        no_bare: false,
        bare_publishers: None,
        bare_channels: None,
        receiver_threads: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_runs_queue_every_accepted_request_and_compare_with_the_bare_loop() {
    let url = require_broker().await;
    let mut args = args(Backend::Amqp, url);
    // Eight publishers sharing three channels.
    args.bare_channels = Some(3);
    let report = receiver::run(&args).await.unwrap();

    let baseline = report.bare.as_ref().expect("the bare loop ran");
    assert_eq!((baseline.publishers, baseline.channels), (8, 3));
    let bare = &baseline.published;
    assert!(bare.total > 0 && bare.errors == 0, "{bare:?}");
    assert_eq!(report.rounds, 2);
    assert_eq!(baseline.per_second_by_round.len(), 2);
    assert_eq!(report.runs.len(), 2);
    assert_eq!(
        report.runs.iter().map(|run| run.claims).collect::<Vec<_>>(),
        [false, true]
    );
    for run in &report.runs {
        assert_eq!(run.accepted.errors, 0, "{run:?}");
        assert!(run.accepted.measured > 0, "{run:?}");
        assert_eq!(
            run.queued,
            Some(u32::try_from(run.accepted.total).unwrap()),
            "each accepted request is queued exactly once"
        );
        let ratio = run.ratio_to_bare.expect("a ratio to the bare loop");
        // The rounds add up: two rounds of 0.5 s measured.
        let mean_rate = run.per_second_by_round.iter().sum::<f64>() / 2.0;
        assert!(
            (mean_rate - run.accepted.per_second).abs() < 1e-6,
            "{run:?}"
        );
        let by_round = run.ratio_by_round.as_ref().expect("a ratio in each round");
        assert_eq!(by_round.len(), 2);
        assert!(by_round.iter().all(|ratio| *ratio > 0.0), "{by_round:?}");
        assert!(run.cpu.components["receiver"] > 0.0, "{:?}", run.cpu);
        assert!((ratio - run.accepted.per_second / bare.per_second).abs() < 1e-9);
    }
    let summary = report.summary();
    assert!(
        summary.contains("bare lapin loop (8 publishers, 3 channels)"),
        "{summary}"
    );
    assert!(summary.contains("ratio receiver/bare"), "{summary}");
    assert!(summary.contains("ratio by round: "), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_runs_need_no_broker_and_have_no_baseline() {
    let mut args = args(Backend::Embedded, "amqp://127.0.0.1:1/%2f");
    args.claims = Claims::On;
    let report = receiver::run(&args).await.unwrap();
    assert!(report.bare.is_none());
    let [run] = report.runs.as_slice() else {
        panic!("one run expected: {:?}", report.runs);
    };
    assert!(run.claims);
    assert_eq!(run.accepted.errors, 0, "{run:?}");
    assert!(run.accepted.measured > 0);
    assert_eq!(run.ratio_to_bare, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["backend"], "embedded");
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
}
