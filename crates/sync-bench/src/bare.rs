//! The baseline of the receiver benchmark: what the broker alone gives. Concurrent publishers
//! on confirm-mode channels of one connection (one channel each, unless `--bare-channels` makes
//! them share) publish persistent `mandatory` 1 KiB messages to the run's exchange with the
//! reporting routing key (so into the same quorum work queue the receiver fills) and wait for
//! each confirm before the next publish. No HTTP, no signature check, no JSON parsing, no claim:
//! the receiver can only be slower.

use anyhow::{Context, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};
use sync_core::Source;
use sync_core::envelope::headers;
use sync_queue::amqp::Topology;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend;
use crate::cpu::CpuUse;
use crate::load::{self, Tally, Window};
use crate::payload;

/// AMQP delivery mode of a message written to disk.
const PERSISTENT: u8 = 2;

/// Run `publishers` publish-and-confirm loops for the warm-up and the measured period.
pub async fn run(
    url: &str,
    topology: &Topology,
    publishers: usize,
    channel_count: usize,
    body_bytes: usize,
    window_of: impl FnOnce() -> Window,
) -> anyhow::Result<(Tally, CpuUse)> {
    let connection = backend::connect(url).await?;
    let channel_count = channel_count.clamp(1, publishers.max(1));
    let mut channels = Vec::with_capacity(channel_count);
    for _ in 0..channel_count {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("cannot put a channel in confirm mode")?;
        channels.push(channel);
    }

    // The window starts once every channel is open, so set-up is not measured.
    let window = window_of();
    let body = payload::reporting_event("bare", 1, body_bytes);
    let exchange = topology.exchange().to_owned();
    // On the same load thread as the receiver benchmark's HTTP clients, so both sides of the
    // ratio are loaded the same way.
    let (tallied, cpu) = load::on_load_thread(window, move || async move {
        let mut tasks = JoinSet::new();
        for task in 0..publishers.max(1) {
            let channel = channels[task % channels.len()].clone();
            let (exchange, body) = (exchange.clone(), body.clone());
            tasks.spawn(publish_loop(channel, exchange, body, task, window));
        }
        let mut tally = Tally::default();
        while let Some(joined) = tasks.join_next().await {
            tally.merge(joined.context("a bare publisher panicked")??);
        }
        anyhow::Ok(tally)
    })
    .await?;
    let tally = tallied?;

    let _ = connection.close(200, "bare baseline done".into()).await;
    if tally.total_ok == 0 {
        bail!("the bare baseline published nothing: {:?}", tally.errors);
    }
    Ok((tally, cpu))
}

async fn publish_loop(
    channel: Channel,
    exchange: String,
    body: Vec<u8>,
    task: usize,
    window: Window,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let mut seq = 0u64;
    while window.running() {
        seq += 1;
        let started = Instant::now();
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                Source::CustomerioReporting.routing_key().into(),
                options,
                &body,
                properties(task, seq),
            )
            .await;
        let confirmation = match confirm {
            Ok(confirm) => confirm.await,
            Err(err) => Err(err),
        };
        match confirmation {
            Ok(Confirmation::Ack(None)) => tally.ok(&window, started, Instant::now()),
            Ok(Confirmation::Ack(Some(_))) => tally.error("unroutable"),
            Ok(Confirmation::Nack(_)) => tally.error("nacked"),
            Ok(Confirmation::NotRequested) => bail!("a bare channel is not in confirm mode"),
            // A broken channel would fail every later publish too.
            Err(err) => return Err(err).context("bare publish failed"),
        }
    }
    Ok(tally)
}

/// Persistent, with an id and the headers the receiver's messages carry, so both sides put
/// frames of about the same size on the wire.
fn properties(task: usize, seq: u64) -> BasicProperties {
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    let message_id = ulid::Ulid::new().to_string();
    let mut table = FieldTable::default();
    table.insert(headers::MESSAGE_ID.into(), text(&message_id));
    table.insert(
        headers::SOURCE.into(),
        text(Source::CustomerioReporting.routing_key()),
    );
    table.insert(
        headers::RECEIVED_AT.into(),
        text(&sync_core::time::format_ms(sync_core::time::now_ms())),
    );
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(1));
    table.insert(
        headers::PROVIDER_EVENT_ID.into(),
        text(&payload::event_id("bare", task, seq)),
    );
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message_id.as_str().into())
        .with_headers(table)
}
