//! The drain benchmark: preload a work queue through `Queue::publish` from concurrent
//! publishers (the enqueue rate), then consume it through `Queue::consume` with a bounded
//! prefetch and ack every delivery (the drain rate). Both backends run the same steps, so their
//! figures sit side by side.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use sync_core::{Direction, Envelope, Settlement, Source};
use sync_queue::Queue;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::RunQueue;
use crate::cli::{Backend, DrainArgs};
use crate::machine::Machine;
use crate::payload;

/// Everything one `drain` command measured.
#[derive(Clone, Debug, Serialize)]
pub struct DrainReport {
    pub machine: Machine,
    pub messages: usize,
    pub prefetch: u16,
    pub publishers: usize,
    pub body_bytes: usize,
    pub sequential_acks: bool,
    pub runs: Vec<DrainRun>,
}

/// One backend's figures.
#[derive(Clone, Debug, Serialize)]
pub struct DrainRun {
    pub backend: Backend,
    /// Confirmed publishes per second while preloading.
    pub enqueue_per_sec: f64,
    pub enqueue_secs: f64,
    /// Deliveries consumed and acked per second.
    pub drain_per_sec: f64,
    pub drain_secs: f64,
    /// Messages still in the work queue afterwards (RabbitMQ only; 0 when all were acked).
    pub left: Option<u32>,
}

/// Run the benchmark on the chosen backend, or on both.
pub async fn run(args: &DrainArgs) -> anyhow::Result<DrainReport> {
    let mut machine = Machine::at_start();
    let backends = match args.backend {
        Some(backend) => vec![backend],
        None => vec![Backend::Amqp, Backend::Embedded],
    };
    let mut runs = Vec::new();
    for backend in backends {
        runs.push(run_backend(args, backend).await?);
    }
    machine.finish();
    Ok(DrainReport {
        machine,
        messages: args.messages,
        prefetch: args.prefetch,
        publishers: args.publishers,
        body_bytes: args.body_bytes,
        sequential_acks: args.sequential_acks,
        runs,
    })
}

async fn run_backend(args: &DrainArgs, backend: Backend) -> anyhow::Result<DrainRun> {
    let run_queue = RunQueue::open(backend, &args.amqp_url, "drain").await?;
    let measured = measure(args, &run_queue).await;
    let left = match &measured {
        Ok(_) => run_queue.depth(Direction::Inbound).await,
        Err(_) => Ok(None),
    };
    run_queue.remove().await?;
    let (enqueue, drain) = measured?;
    let rate = |took: Duration| args.messages as f64 / took.as_secs_f64().max(f64::EPSILON);
    Ok(DrainRun {
        backend,
        enqueue_per_sec: rate(enqueue),
        enqueue_secs: enqueue.as_secs_f64(),
        drain_per_sec: rate(drain),
        drain_secs: drain.as_secs_f64(),
        left: left?,
    })
}

/// How long preloading took, then how long draining took.
async fn measure(args: &DrainArgs, run_queue: &RunQueue) -> anyhow::Result<(Duration, Duration)> {
    let backend = run_queue.backend.as_str();
    eprintln!(
        "drain on {backend}: preloading {} messages from {} publishers",
        args.messages, args.publishers
    );
    let enqueue = tokio::time::timeout(
        args.timeout,
        preload(
            run_queue.queue.clone(),
            args.messages,
            args.publishers,
            args.body_bytes,
        ),
    )
    .await
    .with_context(|| format!("preloading did not finish within {:?}", args.timeout))??;

    eprintln!(
        "drain on {backend}: consuming with prefetch {}{}",
        args.prefetch,
        if args.sequential_acks {
            ", one ack at a time"
        } else {
            ""
        }
    );
    let drain = tokio::time::timeout(
        args.timeout,
        drain(
            run_queue.queue.clone(),
            args.messages,
            args.prefetch,
            args.sequential_acks,
        ),
    )
    .await
    .with_context(|| format!("draining did not finish within {:?}", args.timeout))??;
    Ok((enqueue, drain))
}

/// Publish `messages` reporting events through the queue contract; how long it took.
pub async fn preload(
    queue: Arc<dyn Queue>,
    messages: usize,
    publishers: usize,
    body_bytes: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..publishers.max(1) {
        let (queue, next, run) = (queue.clone(), next.clone(), run.clone());
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= messages {
                    return Ok::<_, anyhow::Error>(());
                }
                let event_id = payload::event_id(&run, task, index as u64);
                let body = payload::reporting_event(&event_id, index % 5_000, body_bytes);
                let envelope = Envelope::new(
                    Source::CustomerioReporting,
                    Bytes::from(body),
                    Some(event_id),
                );
                queue
                    .publish(&envelope)
                    .await
                    .context("a preload publish failed")?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a preload task panicked")??;
    }
    Ok(started.elapsed())
}

/// Consume the inbound work queue and ack `messages` deliveries; how long it took from the
/// subscription to the last ack.
pub async fn drain(
    queue: Arc<dyn Queue>,
    messages: usize,
    prefetch: u16,
    sequential: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = queue
        .consume(Direction::Inbound, prefetch)
        .await
        .context("cannot subscribe to the work queue")?;
    let mut settling = JoinSet::new();
    let mut received = 0;
    while received < messages {
        let Some(next) = stream.next().await else {
            bail!("the consumer stream ended after {received} of {messages} deliveries");
        };
        let delivery = next.context("the consumer stream failed")?;
        received += 1;
        if sequential {
            delivery
                .settle(Settlement::Ack)
                .await
                .context("an ack failed")?;
            continue;
        }
        settling.spawn(delivery.settle(Settlement::Ack));
        // Reap finished acks as we go; at most `prefetch` are ever pending.
        while let Some(done) = settling.try_join_next() {
            done.context("an ack task panicked")?
                .context("an ack failed")?;
        }
    }
    while let Some(done) = settling.join_next().await {
        done.context("an ack task panicked")?
            .context("an ack failed")?;
    }
    Ok(started.elapsed())
}

impl DrainReport {
    /// The readable summary: one line per backend.
    pub fn summary(&self) -> String {
        let mut lines = vec![
            format!(
                "drain benchmark: {} messages of {} B, {} publishers, prefetch {}, {} acks",
                self.messages,
                self.body_bytes,
                self.publishers,
                self.prefetch,
                if self.sequential_acks {
                    "sequential"
                } else {
                    "concurrent"
                }
            ),
            format!("  machine: {}", self.machine.summary()),
            format!(
                "  {:<9} {:>14} {:>14}",
                "backend", "enqueue msg/s", "drain msg/s"
            ),
        ];
        for run in &self.runs {
            lines.push(format!(
                "  {:<9} {:>14.0} {:>14.0}",
                run.backend.as_str(),
                run.enqueue_per_sec,
                run.drain_per_sec
            ));
            if let Some(left) = run.left.filter(|left| *left > 0) {
                lines.push(format!("    {left} messages left in the queue"));
            }
        }
        lines.join("\n")
    }
}
