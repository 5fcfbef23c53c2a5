//! Turning settings into running parts: the queue backend, the API clients and the typed
//! configuration of each role. Library crates never read the configuration file themselves.

use std::sync::Arc;

use anyhow::Context;
use chameleon_api::{ChameleonClient, ChameleonConfig};
use customerio_api::{TrackClient, TrackConfig};
use sync_core::RetryPolicy;
use sync_core::inbound::{InboundOptions, ReservedNames as CoreReservedNames};
use sync_core::outbound::OutboundOptions;
use sync_queue::amqp::{AmqpConfig, AmqpQueue};
use sync_queue::claims::ClaimStore;
use sync_queue::embedded::{EmbeddedConfig, EmbeddedQueue};
use sync_queue::{Queue, QueueError};
use sync_receiver::ReceiverConfig;
use sync_relay::RelayConfig;
use sync_worker::WorkerConfig;

use crate::settings::{Backend, Region, ReservedNames, Settings};

/// Connect to (or open) the configured queue and declare its topology.
pub async fn queue(settings: &Settings) -> anyhow::Result<Arc<dyn Queue>> {
    open_queue(settings, true).await
}

/// Connect to the configured queue as the operator commands do: on RabbitMQ the deployment must
/// exist already, and nothing is declared.
pub async fn existing_queue(settings: &Settings) -> anyhow::Result<Arc<dyn Queue>> {
    open_queue(settings, false).await
}

async fn open_queue(settings: &Settings, declares: bool) -> anyhow::Result<Arc<dyn Queue>> {
    let queue = &settings.queue;
    match queue.effective_backend() {
        Backend::Amqp => {
            let url = queue
                .amqp_url
                .as_ref()
                .map(|url| url.expose().to_owned())
                .unwrap_or_default();
            let config = AmqpConfig {
                url,
                prefix: queue.prefix.clone(),
                retry_tiers: queue.retry_tiers(),
                delivery_limit: queue.delivery_limit,
                operation_timeout: queue.operation_timeout,
            };
            let connected = if declares {
                match AmqpQueue::connect(config.clone()).await {
                    // The daemon may start before its broker: it serves /readyz and the
                    // webhook routes with 503 until the broker answers, instead of exiting.
                    Err(QueueError::Unavailable(cause)) => {
                        tracing::warn!(
                            %cause,
                            "rabbitmq not reachable yet (queue.amqp_url): not ready, and \
                             answering webhooks 503, until it is"
                        );
                        AmqpQueue::connect_later(config)
                    }
                    other => other,
                }
            } else {
                AmqpQueue::attach(config).await
            };
            let amqp = connected.context(if declares {
                "cannot start on RabbitMQ (queue.amqp_url)"
            } else {
                "cannot read the RabbitMQ deployment (queue.amqp_url, queue.prefix)"
            })?;
            tracing::info!(backend = "amqp", prefix = %queue.prefix, "queue ready");
            Ok(Arc::new(amqp))
        }
        Backend::Embedded => {
            let config = EmbeddedConfig {
                path: queue.path.clone(),
                lease: queue.lease,
                delivery_limit: queue.delivery_limit,
                ..EmbeddedConfig::default()
            };
            let embedded = EmbeddedQueue::open(config)
                .await
                .with_context(|| format!("cannot open the queue file {}", queue.path.display()))?;
            tracing::info!(backend = "embedded", path = %queue.path.display(), "queue ready");
            Ok(Arc::new(embedded))
        }
    }
}

pub fn receiver_config(settings: &Settings) -> ReceiverConfig {
    ReceiverConfig {
        max_body_bytes: settings.server.max_body_bytes,
        request_timeout: settings.server.request_timeout,
        // Report a slow queue as 503 before the request timeout answers 408.
        publish_timeout: settings
            .queue
            .operation_timeout
            .min(settings.server.request_timeout.mul_f64(0.75)),
        max_concurrent_requests: settings.server.max_concurrent_requests,
        max_json_depth: settings.server.max_json_depth,
        customerio_endpoint_token: settings.customerio.endpoint_token.clone(),
        customerio_signing_keys: settings.customerio.signing_keys.clone(),
        customerio_signature_tolerance_secs: settings.customerio.signature_tolerance_secs,
        chameleon_webhook_secrets: settings.chameleon.webhook_secrets.clone(),
        chameleon_signature_tolerance_secs: settings.chameleon.signature_tolerance_secs,
    }
}

pub fn retry_policy(settings: &Settings) -> RetryPolicy {
    let delivery = &settings.delivery;
    RetryPolicy {
        initial_delay: delivery.initial_delay,
        max_delay: delivery.max_delay,
        max_attempts: delivery.max_attempts,
        max_age: delivery.max_age,
        jitter: delivery.jitter,
    }
}

pub fn worker_config(settings: &Settings) -> WorkerConfig {
    let chameleon = &settings.chameleon;
    WorkerConfig {
        options: InboundOptions {
            reserved_names: match chameleon.reserved_names {
                ReservedNames::Rename => CoreReservedNames::Rename,
                ReservedNames::Reject => CoreReservedNames::Reject,
            },
            forward_metrics: chameleon.forward_metrics.clone(),
        },
        retry: retry_policy(settings),
        prefetch: settings.queue.prefetch,
        batch_size: chameleon.batch_size,
        batch_linger: chameleon.batch_linger,
    }
}

pub fn relay_config(settings: &Settings) -> RelayConfig {
    let customerio = &settings.customerio;
    RelayConfig {
        options: OutboundOptions {
            allow_email_identity: customerio.allow_email_identity,
            topics: customerio.topics.clone(),
            exclude_topics: customerio.exclude_topics.clone(),
        },
        retry: retry_policy(settings),
        prefetch: settings.queue.prefetch,
        batch_size: customerio.batch_size,
        ..RelayConfig::default()
    }
}

pub fn chameleon_client(settings: &Settings) -> anyhow::Result<ChameleonClient> {
    let chameleon = &settings.chameleon;
    let config = ChameleonConfig {
        api_url: chameleon.api_url.clone(),
        account_secret: chameleon.account_secret.clone(),
        requests_per_minute: chameleon.requests_per_minute,
        max_in_flight: chameleon.max_in_flight,
        timeout: settings.delivery.request_timeout,
        max_wait: settings.delivery.max_rate_limit_wait,
        retryable_statuses: settings.delivery.retryable_statuses.clone(),
    };
    ChameleonClient::new(config).context("cannot build the Chameleon client")
}

pub fn track_client(settings: &Settings) -> anyhow::Result<TrackClient> {
    let customerio = &settings.customerio;
    let config = TrackConfig {
        track_url: customerio.track_url.clone(),
        region: match customerio.region {
            Region::Us => customerio_api::Region::Us,
            Region::Eu => customerio_api::Region::Eu,
        },
        site_id: customerio.site_id.clone(),
        api_key: customerio.api_key.clone(),
        requests_per_second: customerio.requests_per_second,
        timeout: settings.delivery.request_timeout,
        max_wait: settings.delivery.max_rate_limit_wait,
        retryable_statuses: settings.delivery.retryable_statuses.clone(),
    };
    TrackClient::new(config).context("cannot build the Customer.io Track client")
}

/// The store of seen provider event ids: `dedupe.path`, else `seen.sqlite3` beside the embedded
/// queue file (or in `data/` for RabbitMQ deployments).
pub fn claims(settings: &Settings) -> anyhow::Result<ClaimStore> {
    let path = settings.dedupe_path();
    ClaimStore::open(&path, &settings.queue.prefix, settings.dedupe.window)
        .with_context(|| format!("cannot open the dedupe file {}", path.display()))
}
