//! Gathering deliveries into upstream batches: a batch is sent when it is full (items or bytes)
//! or when its first item has waited the linger time, whichever comes first. Items that name the
//! same key are coalesced into one (several updates of one profile become one batch item). The
//! worker batches Chameleon profile and company updates with it, the relay Customer.io events.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// Limits of one batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_items: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

struct State<I> {
    /// Bumped whenever a batch is taken, so a stale linger timer leaves the next batch alone.
    generation: u64,
    items: Vec<I>,
    keys: HashMap<String, usize>,
    bytes: usize,
}

/// A batch being gathered, and the flushes in flight.
pub struct Batcher<I: BatchItem> {
    state: Mutex<State<I>>,
    limits: BatchLimits,
    flush: FlushFn<I>,
    tasks: TaskTracker,
}

impl<I: BatchItem> Batcher<I> {
    pub fn new(limits: BatchLimits, flush: FlushFn<I>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                generation: 0,
                items: Vec::new(),
                keys: HashMap::new(),
                bytes: 0,
            }),
            limits: BatchLimits {
                max_items: limits.max_items.max(1),
                ..limits
            },
            flush,
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

        if state.items.len() >= self.limits.max_items || state.bytes >= self.limits.max_bytes {
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

    fn send(&self, state: &mut State<I>) {
        state.generation += 1;
        state.keys.clear();
        state.bytes = 0;
        let items = std::mem::take(&mut state.items);
        self.tasks.spawn((self.flush)(items));
    }

    fn start_linger_timer(self: &Arc<Self>, generation: u64) {
        let batcher = Arc::clone(self);
        self.tasks.spawn(async move {
            tokio::time::sleep(batcher.limits.linger).await;
            let mut state = batcher.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.generation == generation && !state.items.is_empty() {
                batcher.send(&mut state);
            }
        });
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

    fn collecting(
        limits: BatchLimits,
    ) -> (Arc<Batcher<Update>>, mpsc::UnboundedReceiver<Vec<Update>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let flush: FlushFn<Update> = Arc::new(move |items| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(items);
            })
        });
        (Batcher::new(limits, flush), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_when_full_and_coalesces_keys() {
        let limits = BatchLimits {
            max_items: 2,
            max_bytes: 1_000,
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
}
