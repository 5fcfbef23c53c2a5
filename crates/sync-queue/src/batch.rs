//! Gathering deliveries into upstream batches: a batch is sent when it is full (items, bytes, or
//! deliveries) or when its first item has waited the linger time, whichever comes first. Items
//! that name the same key are coalesced into one (several updates of one profile become one batch
//! item). The worker batches Chameleon profile and company updates with it, the relay Customer.io
//! events.
//!
//! A batcher may have a *gate*: after the linger time it waits for the gate (the upstream's rate
//! budget being ready for the next request), and then for deliveries to stop arriving (no push
//! for a quarter of the linger time), keeping on gathering meanwhile; a second linger time bounds
//! that last wait. Behind a budget of one request per second, a batch sent on the linger timer
//! alone would go out while the rest of the consumer's prefetch window is still arriving, and the
//! stragglers would spend a whole request of their own.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// One batch item.
pub trait BatchItem: Send + 'static {
    /// Items with the same key are coalesced; `None` never coalesces.
    fn key(&self) -> Option<&str>;
    /// Merge a later item with the same key into this one.
    fn absorb(&mut self, other: Self);
    /// Bytes this item adds to the request.
    fn size(&self) -> usize;
}

/// Sends one batch and settles its deliveries.
pub type FlushFn<I> = Arc<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Resolves when a batch taken now could be sent at once (see the module doc).
pub type GateFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Limits of one batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Items after coalescing.
    pub max_items: usize,
    pub max_bytes: usize,
    /// Pushes (deliveries), coalesced or not. Set to the consumer's prefetch window: a batch
    /// holding the whole window can gain nothing by waiting, since no delivery comes until some
    /// are settled.
    pub max_deliveries: usize,
    pub linger: Duration,
}

struct State<I> {
    /// Bumped whenever a batch is taken, so a stale linger timer leaves the next batch alone.
    generation: u64,
    items: Vec<I>,
    keys: HashMap<String, usize>,
    bytes: usize,
    deliveries: usize,
    /// When the last item was pushed.
    last_push: Instant,
}

/// A batch being gathered, and the flushes in flight.
pub struct Batcher<I: BatchItem> {
    state: Mutex<State<I>>,
    limits: BatchLimits,
    flush: FlushFn<I>,
    gate: Option<GateFn>,
    /// Woken whenever a batch is taken, so a timer waiting at the gate for it lets go.
    taken: Notify,
    tasks: TaskTracker,
}

impl<I: BatchItem> Batcher<I> {
    /// A batcher that sends on the linger timer alone.
    pub fn new(limits: BatchLimits, flush: FlushFn<I>) -> Arc<Self> {
        Self::build(limits, flush, None)
    }

    /// A batcher that, once the linger time is up, also waits for `gate` before it takes the
    /// batch, gathering meanwhile. Full batches are sent at once either way.
    pub fn gated(limits: BatchLimits, flush: FlushFn<I>, gate: GateFn) -> Arc<Self> {
        Self::build(limits, flush, Some(gate))
    }

    fn build(limits: BatchLimits, flush: FlushFn<I>, gate: Option<GateFn>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                generation: 0,
                items: Vec::new(),
                keys: HashMap::new(),
                bytes: 0,
                deliveries: 0,
                last_push: Instant::now(),
            }),
            limits: BatchLimits {
                max_items: limits.max_items.max(1),
                max_deliveries: limits.max_deliveries.max(1),
                ..limits
            },
            flush,
            gate,
            taken: Notify::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// Add an item; may send a batch (in the background) if this fills it.
    pub fn push(self: &Arc<Self>, item: I) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let size = item.size();

        // An item that would take the batch over its byte limit starts the next batch.
        if !state.items.is_empty() && state.bytes + size > self.limits.max_bytes {
            self.send(&mut state);
        }

        state.deliveries += 1;
        state.last_push = Instant::now();
        let existing = item.key().and_then(|key| state.keys.get(key).copied());
        match existing {
            Some(index) => {
                let before = state.items[index].size();
                state.items[index].absorb(item);
                let after = state.items[index].size();
                state.bytes = state.bytes + after - before.min(after);
            }
            None => {
                if state.items.is_empty() {
                    self.start_linger_timer(state.generation);
                }
                if let Some(key) = item.key() {
                    let index = state.items.len();
                    state.keys.insert(key.to_owned(), index);
                }
                state.bytes += size;
                state.items.push(item);
            }
        }

        if state.items.len() >= self.limits.max_items
            || state.bytes >= self.limits.max_bytes
            || state.deliveries >= self.limits.max_deliveries
        {
            self.send(&mut state);
        }
    }

    /// Send what is gathered now and wait for every flush in flight (shutdown).
    pub async fn drain(&self) {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.items.is_empty() {
                self.send(&mut state);
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// Items waiting in the current batch.
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .items
            .len()
    }

    fn generation(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    fn send(&self, state: &mut State<I>) {
        state.generation += 1;
        state.keys.clear();
        state.bytes = 0;
        state.deliveries = 0;
        let items = std::mem::take(&mut state.items);
        self.taken.notify_waiters();
        self.tasks.spawn((self.flush)(items));
    }

    fn start_linger_timer(self: &Arc<Self>, generation: u64) {
        let batcher = Arc::clone(self);
        self.tasks.spawn(async move {
            let started = Instant::now();
            tokio::time::sleep(batcher.limits.linger).await;
            if let Some(gate) = &batcher.gate {
                let taken = batcher.taken.notified();
                tokio::pin!(taken);
                taken.as_mut().enable();
                // A batch already sent (full, or drained at shutdown) leaves nothing to wait for.
                if batcher.generation() != generation {
                    return;
                }
                tokio::select! {
                    () = gate() => {}
                    () = &mut taken => return,
                }
                let latest = started + 2 * batcher.limits.linger;
                while let Some(wait) = batcher.until_quiet(generation, latest) {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = &mut taken => return,
                    }
                }
            }
            let mut state = batcher.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.generation == generation && !state.items.is_empty() {
                batcher.send(&mut state);
            }
        });
    }

    /// How long until deliveries have stopped arriving for a quarter of the linger time, or
    /// `latest` is reached; `None` when the batch may go now (or was already taken).
    fn until_quiet(&self, generation: u64, latest: Instant) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation != generation {
            return None;
        }
        let quiet_at = (state.last_push + self.limits.linger / 4).min(latest);
        let now = Instant::now();
        (quiet_at > now).then(|| quiet_at - now)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Update {
        key: String,
        values: Vec<u32>,
    }

    impl BatchItem for Update {
        fn key(&self) -> Option<&str> {
            Some(&self.key)
        }
        fn absorb(&mut self, other: Self) {
            self.values.extend(other.values);
        }
        fn size(&self) -> usize {
            10 * self.values.len()
        }
    }

    fn update(key: &str, value: u32) -> Update {
        Update {
            key: key.into(),
            values: vec![value],
        }
    }

    type Sent = mpsc::UnboundedReceiver<Vec<Update>>;

    /// A flush that hands every batch to the receiver.
    fn collector() -> (FlushFn<Update>, Sent) {
        let (tx, rx) = mpsc::unbounded_channel();
        let flush: FlushFn<Update> = Arc::new(move |items| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(items);
            })
        });
        (flush, rx)
    }

    fn collecting(limits: BatchLimits) -> (Arc<Batcher<Update>>, Sent) {
        let (flush, rx) = collector();
        (Batcher::new(limits, flush), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_when_full_and_coalesces_keys() {
        let limits = BatchLimits {
            max_items: 2,
            max_bytes: 1_000,
            max_deliveries: 100,
            linger: Duration::from_secs(1),
        };
        let (batcher, mut sent) = collecting(limits);
        batcher.push(update("a", 1));
        batcher.push(update("a", 2));
        assert_eq!(batcher.pending(), 1);
        batcher.push(update("b", 3));
        let batch = sent.recv().await.unwrap();
        assert_eq!(
            batch,
            vec![
                Update {
                    key: "a".into(),
                    values: vec![1, 2]
                },
                update("b", 3)
            ]
        );
        assert_eq!(batcher.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_after_the_linger_time() {
        let limits = BatchLimits {
            max_items: 100,
            max_bytes: 1_000,
            max_deliveries: 100,
            linger: Duration::from_secs(1),
        };
        let (batcher, mut sent) = collecting(limits);
        let start = tokio::time::Instant::now();
        batcher.push(update("a", 1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        batcher.push(update("b", 2));
        let batch = sent.recv().await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn byte_limit_starts_a_new_batch_and_drain_sends_the_rest() {
        let limits = BatchLimits {
            max_items: 100,
            max_bytes: 25,
            max_deliveries: 100,
            linger: Duration::from_secs(60),
        };
        let (batcher, mut sent) = collecting(limits);
        batcher.push(update("a", 1));
        batcher.push(update("b", 2));
        batcher.push(update("c", 3));
        assert_eq!(sent.recv().await.unwrap().len(), 2);
        batcher.drain().await;
        assert_eq!(sent.recv().await.unwrap(), vec![update("c", 3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_holding_the_whole_window_goes_at_once() {
        let limits = BatchLimits {
            max_items: 100,
            max_bytes: 1_000,
            max_deliveries: 3,
            linger: Duration::from_secs(60),
        };
        let (batcher, mut sent) = collecting(limits);
        let start = tokio::time::Instant::now();
        batcher.push(update("a", 1));
        batcher.push(update("a", 2));
        batcher.push(update("b", 3));
        let batch = sent.recv().await.unwrap();
        assert_eq!(batch.len(), 2, "coalesced items, three deliveries");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(batcher.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_batch_keeps_gathering_until_the_gate_opens() {
        let limits = BatchLimits {
            max_items: 100,
            max_bytes: 1_000,
            max_deliveries: 100,
            linger: Duration::from_secs(1),
        };
        let (flush, mut sent) = collector();
        let open = Arc::new(tokio::sync::Notify::new());
        let gate: GateFn = {
            let open = Arc::clone(&open);
            Arc::new(move || {
                let open = Arc::clone(&open);
                Box::pin(async move { open.notified().await })
            })
        };
        let batcher = Batcher::gated(limits, flush, gate);

        batcher.push(update("a", 1));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(sent.try_recv().is_err(), "sent before the gate opened");
        batcher.push(update("b", 2));
        batcher.push(update("c", 3));

        open.notify_one();
        let batch = sent.recv().await.unwrap();
        assert_eq!(batch.len(), 3, "the stragglers rode along");
        assert_eq!(batcher.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_does_not_wait_for_the_gate() {
        let limits = BatchLimits {
            max_items: 2,
            max_bytes: 1_000,
            max_deliveries: 100,
            linger: Duration::from_secs(1),
        };
        let (flush, mut sent) = collector();
        let gate: GateFn = Arc::new(|| Box::pin(std::future::pending()));
        let batcher = Batcher::gated(limits, flush, gate);
        batcher.push(update("a", 1));
        batcher.push(update("b", 2));
        assert_eq!(sent.recv().await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_does_not_wait_for_a_closed_gate() {
        let limits = BatchLimits {
            max_items: 100,
            max_bytes: 1_000,
            max_deliveries: 100,
            linger: Duration::from_secs(1),
        };
        let (flush, mut sent) = collector();
        let gate: GateFn = Arc::new(|| Box::pin(std::future::pending()));
        let batcher = Batcher::gated(limits, flush, gate);
        batcher.push(update("a", 1));
        tokio::time::sleep(Duration::from_secs(2)).await;

        let drained = tokio::time::timeout(Duration::from_secs(10), batcher.drain()).await;
        assert!(drained.is_ok(), "drain waited for the gate");
        assert_eq!(sent.recv().await.unwrap(), vec![update("a", 1)]);
    }

    /// A batcher whose gate is always open.
    fn gated_collecting(limits: BatchLimits) -> (Arc<Batcher<Update>>, Sent) {
        let (flush, rx) = collector();
        let open: GateFn = Arc::new(|| Box::pin(async {}));
        (Batcher::gated(limits, flush, open), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_batch_waits_for_deliveries_to_stop_arriving() {
        let limits = BatchLimits {
            max_items: 1_000,
            max_bytes: 100_000,
            max_deliveries: 1_000,
            linger: Duration::from_secs(1),
        };
        let (batcher, mut sent) = gated_collecting(limits);
        let start = tokio::time::Instant::now();
        // One update every 50 ms for 1.5 s: past the linger time, never quiet for 250 ms.
        for n in 0..30 {
            batcher.push(update(&format!("k{n}"), n));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let batch = sent.recv().await.unwrap();
        assert_eq!(
            batch.len(),
            30,
            "the updates arriving after the linger time rode along"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1_700) && took <= Duration::from_millis(1_750),
            "sent after {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_flow_still_goes_after_two_linger_times() {
        let limits = BatchLimits {
            max_items: 1_000,
            max_bytes: 100_000,
            max_deliveries: 1_000,
            linger: Duration::from_secs(1),
        };
        let (batcher, mut sent) = gated_collecting(limits);
        let start = tokio::time::Instant::now();
        let pusher = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move {
                for n in 0..100 {
                    batcher.push(update(&format!("k{n}"), n));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let batch = sent.recv().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // Pushed every 50 ms from 0 on; the one due at 2 s exactly may or may not be in.
        assert!((40..=41).contains(&batch.len()), "{} updates", batch.len());
        pusher.await.unwrap();
    }
}
