//! The daemon configuration the upstream benchmark writes is one the daemon accepts, with the
//! benchmark's sizes and budgets in it.

use std::time::Duration;

use cio_chameleon_sync::settings::{Backend, Settings};
use sync_bench::cli::UpstreamArgs;
use sync_bench::scratch::Scratch;
use sync_bench::upstream::daemon_config;

fn args() -> UpstreamArgs {
    UpstreamArgs {
        amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        binary: None,
        no_build: true,
        profile_updates: 50_000,
        uids: 5_000,
        webhooks: 50_000,
        seed: 42,
        chameleon_requests_per_minute: 60,
        customerio_requests_per_second: 100,
        chameleon_batch_size: 10_000,
        chameleon_batch_linger: Duration::from_millis(750),
        customerio_batch_size: 250,
        prefetch: 12_000,
        publishers: 64,
        timeout: Duration::from_secs(300),
        daemon_env: Vec::new(),
    }
}

#[test]
fn the_generated_configuration_loads_with_the_benchmark_settings() {
    let scratch = Scratch::new("config-test").unwrap();
    let text = daemon_config(
        &args(),
        "ccsync-bench-upstream-x",
        "127.0.0.1:18080",
        "http://127.0.0.1:19900",
        scratch.path(),
    );
    let path = scratch.path().join("daemon.toml");
    std::fs::write(&path, text).unwrap();

    let settings = Settings::load(Some(&path)).unwrap();
    assert_eq!(settings.queue.effective_backend(), Backend::Amqp);
    assert_eq!(settings.queue.prefix, "ccsync-bench-upstream-x");
    assert_eq!(settings.queue.prefetch, 12_000);
    assert_eq!(settings.server.listen.port(), 18080);
    assert_eq!(settings.chameleon.requests_per_minute, 60);
    assert_eq!(settings.chameleon.batch_size, 10_000);
    assert_eq!(settings.chameleon.batch_linger, Duration::from_millis(750));
    assert_eq!(settings.chameleon.api_url, "http://127.0.0.1:19900");
    assert_eq!(settings.customerio.requests_per_second, 100);
    assert_eq!(settings.customerio.batch_size, 250);
    assert_eq!(
        settings.customerio.track_url.as_deref(),
        Some("http://127.0.0.1:19900")
    );
    assert_eq!(
        settings.dedupe.path.as_deref(),
        Some(scratch.path().join("seen.sqlite3").as_path()),
        "nothing is written beside the working folder"
    );
}
