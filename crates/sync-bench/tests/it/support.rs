//! Shared helpers: the broker the tests use, and failing loudly when it is missing.

use sync_bench::cli::DEFAULT_AMQP_URL;

/// Panic with the command that starts RabbitMQ when it is not running.
pub async fn require_broker() -> &'static str {
    if let Err(err) = sync_bench::backend::require_broker(DEFAULT_AMQP_URL).await {
        panic!("{err:#}");
    }
    DEFAULT_AMQP_URL
}
