//! Embedded SQLite backend: the queue contract on one machine with no broker (DESIGN §4), the
//! default when no `queue.amqp_url` is configured.
//!
//! # Schema
//! One table, `messages`, holds every message of both directions (schema version in
//! `PRAGMA user_version`, see `embedded/schema.rs`). A row is in one of two states:
//! - `ready`: waiting on its direction's work queue, or delivered and leased. `due_at` (unix ms)
//!   is when it may next be claimed: the receipt time, a retry's due time, or, while a consumer
//!   holds it, the lease expiry. One partial index on `(direction, due_at)` over ready rows
//!   therefore finds "the next due message of a direction" and expired leases alike.
//! - `dead`: a dead letter, with `dead_reason`, `last_status`, `last_error` and `dead_at`.
//!
//! The envelope is stored in columns (`message_id`, `source`, `received_at`, `attempt`,
//! `provider_event_id`, `first_failed_at`, `body` as a BLOB), never re-encoded. A retry and a dead
//! letter change the row in place, and a replay turns a dead row back into a ready one, so a
//! message keeps one row for its whole life and an `Ack` deletes it.
//!
//! # Leases
//! A consumer claims due messages in one transaction: it stamps them with a fresh lease token,
//! moves `due_at` to now + `lease` and bumps `delivery_count`. Settling checks the token, so a
//! consumer whose lease expired and was claimed by someone else changes nothing (it gets
//! [`QueueError::Refused`]). An expired lease makes the message claimable again, delivered with
//! `redelivered = true`; a message already delivered `delivery_limit` times without settlement is
//! dead-lettered with reason `delivery_limit` instead. A delivery dropped unsettled (a consumer
//! shutting down) gives its message back at once rather than at lease expiry. Two consumers, even
//! in two processes, never hold the same message: claims run under SQLite's write lock.
//!
//! While a delivery is held, the process renews its lease every third of `lease`, so a slow batch
//! or a long rate-limit pause keeps its messages; only a process that stops (or a delivery held
//! longer than `max_hold`, like RabbitMQ's consumer timeout) lets a lease run out. `lease` is
//! therefore the wait before redelivery after a crash, not a limit on how long work may take.
//!
//! # Writes and time
//! One writer thread owns the read-write connection and runs every change in group transactions
//! (see `embedded/writer.rs`): `publish` returns only after the transaction holding it committed,
//! and many concurrent publishes share one commit. Dead-letter listings use a second connection.
//! Due times are wall-clock unix milliseconds, because other processes read them too; tokio's
//! paused clock does not move them.
//!
//! # Layout
//! - `embedded/schema.rs`: opening the file with its durability settings, and the schema.
//! - `embedded/writer.rs`: the writer thread and its group commit.
//! - `embedded/store.rs`: every SQL statement.
//! - `embedded/consumer.rs`: the consumer stream, leases and settling.
//!
//! # What survives a crash
//! The file is in WAL mode with `synchronous=FULL`: every committed transaction is on disk before
//! its callers are answered, so a published message survives `kill -9` and a power loss. A retry
//! or a dead letter is one update of one row, so a crash leaves either the old or the new state,
//! never both or neither. Messages leased by a process that died stay invisible until their lease
//! expires, then are redelivered with `redelivered = true`.

mod consumer;
mod schema;
mod store;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode};
use sync_core::time::now_ms;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::writer::Writer;
use crate::{DeadFilter, DeadLetter, DeliveryStream, Direction, Envelope, Queue, QueueError};

/// How long `check` waits for the writer before it reports the queue unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the embedded backend.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The SQLite file; its parent folder is created if missing.
    pub path: PathBuf,
    /// How long a delivery stays claimed without word from its holder: a process that stops
    /// (a crash) sees its messages redelivered this long after its last renewal.
    pub lease: Duration,
    /// Leases of a delivery held this long are no longer renewed, so a consumer that hangs gives
    /// its messages back one `lease` later. RabbitMQ's consumer timeout plays the same part.
    pub max_hold: Duration,
    /// How often an idle consumer looks for due messages published by another process or coming
    /// due (a publish in the same process wakes it at once).
    pub poll_interval: Duration,
    /// Deliveries without settlement after which a message is dead-lettered with reason
    /// `delivery_limit`; 0 means no limit.
    pub delivery_limit: u32,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/queue.sqlite3"),
            lease: Duration::from_secs(60),
            max_hold: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_millis(250),
            delivery_limit: 10,
        }
    }
}

impl EmbeddedConfig {
    /// The defaults, on the given file.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }
}

/// The queue in one SQLite file. Cheap to share behind an `Arc`; several instances, in one
/// process or several, may open the same file.
pub struct EmbeddedQueue {
    shared: Arc<Shared>,
}

/// What the queue handle, its consumers and their deliveries share.
struct Shared {
    config: EmbeddedConfig,
    writer: Writer,
    /// A second connection for listings, so that a long dead-letter listing does not hold up
    /// publishes.
    reader: Mutex<Connection>,
    /// Wakes this process's consumers of a direction when something became due there.
    wakeups: [Notify; 2],
    closed: watch::Sender<bool>,
    /// Leases held by this process's deliveries, by message `seq` and lease token, with when
    /// each was claimed; the renewal task extends them.
    held: Mutex<HashMap<(i64, Arc<str>), Instant>>,
}

impl Shared {
    fn wakeup(&self, direction: Direction) -> &Notify {
        match direction {
            Direction::Inbound => &self.wakeups[0],
            Direction::Outbound => &self.wakeups[1],
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, Arc<str>), Instant>> {
        // The map holds no invariant a panic could break half-way.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Extend the leases this process still holds and has held for less than `max_hold`.
    async fn renew_leases(&self) -> Result<(), QueueError> {
        let now = Instant::now();
        let due: Vec<(i64, Arc<str>)> = self
            .held()
            .iter()
            .filter(|(_, claimed_at)| now.duration_since(**claimed_at) < self.config.max_hold)
            .map(|(key, _)| key.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let lease_ms = millis(self.config.lease);
        let held = due.len();
        let renewed = self
            .writer
            .call(move |conn| store::renew(conn, &due, now_ms().saturating_add(lease_ms)))
            .await?;
        debug!(held, renewed, "embedded leases renewed");
        Ok(())
    }
}

/// Renew the leases held in this process every third of the lease, until the queue closes or is
/// dropped.
async fn renew_leases(shared: Weak<Shared>, mut closed: watch::Receiver<bool>, lease: Duration) {
    let interval = (lease / 3).max(Duration::from_millis(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = closed.wait_for(|closed| *closed) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.renew_leases().await {
            warn!(%error, "embedded queue could not renew leases; they expire unless the next renewal succeeds");
        }
    }
}

impl EmbeddedQueue {
    /// Open (or create) the queue file and start its writer.
    pub async fn open(config: EmbeddedConfig) -> Result<Self, QueueError> {
        if config.lease.is_zero() || config.poll_interval.is_zero() {
            return Err(QueueError::Other(
                "embedded queue lease and poll interval must be longer than zero".to_owned(),
            ));
        }

        // Opening and migrating block on the file; keep that off the async workers.
        let path = config.path.clone();
        let (write_conn, read_conn) = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    QueueError::Unavailable(format!(
                        "cannot create queue folder {}: {e}",
                        parent.display()
                    ))
                })?;
            }
            let mut write_conn = schema::connect(&path)?;
            schema::migrate(&mut write_conn)?;
            let read_conn = schema::connect(&path)?;
            Ok::<_, QueueError>((write_conn, read_conn))
        })
        .await
        .map_err(|e| QueueError::Other(format!("opening the queue file panicked: {e}")))??;

        let writer = Writer::start(write_conn)?;
        info!(
            path = %config.path.display(),
            schema = schema::SCHEMA_VERSION,
            "embedded queue opened"
        );
        let shared = Arc::new(Shared {
            config,
            writer,
            reader: Mutex::new(read_conn),
            wakeups: [Notify::new(), Notify::new()],
            closed: watch::Sender::new(false),
            held: Mutex::new(HashMap::new()),
        });
        tokio::spawn(renew_leases(
            Arc::downgrade(&shared),
            shared.closed.subscribe(),
            shared.config.lease,
        ));
        Ok(Self { shared })
    }

    pub fn config(&self) -> &EmbeddedConfig {
        &self.shared.config
    }

    /// Run a read on the reader connection, off the async workers.
    async fn read<T, F>(&self, op: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if *self.shared.closed.borrow() {
            return Err(closed());
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let conn = shared
                .reader
                .lock()
                .map_err(|_| QueueError::Other("queue reader lock poisoned".to_owned()))?;
            op(&conn).map_err(sql_error)
        })
        .await
        .map_err(|e| QueueError::Other(format!("queue read panicked: {e}")))?
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish(&self, envelope: &Envelope) -> Result<(), QueueError> {
        let stored = envelope.clone();
        self.shared
            .writer
            .call(move |conn| store::insert(conn, &stored, now_ms()))
            .await?;
        let direction = envelope.direction();
        crate::telemetry::published(direction);
        debug!(
            queue = direction.as_str(),
            message_id = %envelope.message_id,
            source = %envelope.source,
            "message queued"
        );
        self.shared.wakeup(direction).notify_waiters();
        Ok(())
    }

    async fn consume(
        &self,
        direction: Direction,
        prefetch: u16,
    ) -> Result<DeliveryStream, QueueError> {
        if *self.shared.closed.borrow() {
            return Err(closed());
        }
        info!(
            queue = direction.as_str(),
            prefetch, "embedded consumer started"
        );
        Ok(consumer::stream(
            Arc::clone(&self.shared),
            direction,
            prefetch,
        ))
    }

    async fn dead_letters(
        &self,
        direction: Direction,
        filter: &DeadFilter,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let filter = filter.clone();
        self.read(move |conn| store::dead_letters(conn, direction, &filter))
            .await
    }

    async fn replay(
        &self,
        direction: Direction,
        filter: &DeadFilter,
        rate: Option<u32>,
    ) -> Result<usize, QueueError> {
        let wakeup = || self.shared.wakeup(direction).notify_waiters();

        // Without a rate, one transaction replays them all.
        let Some(pause) = crate::replay_pause(rate) else {
            let filter = filter.clone();
            let replayed = self
                .shared
                .writer
                .call(move |conn| store::replay_matching(conn, direction, &filter, now_ms()))
                .await?;
            wakeup();
            info!(
                queue = direction.as_str(),
                replayed, "dead letters replayed"
            );
            return Ok(replayed);
        };

        // With a rate, one at a time, oldest first; a row that stopped being dead is skipped.
        let seqs = {
            let filter = filter.clone();
            self.read(move |conn| store::dead_seqs(conn, direction, &filter))
                .await?
        };
        let mut replayed = 0;
        for (index, seq) in seqs.into_iter().enumerate() {
            if index > 0 {
                tokio::time::sleep(pause).await;
            }
            let done = self
                .shared
                .writer
                .call(move |conn| store::replay_one(conn, seq, now_ms()))
                .await?;
            if done {
                replayed += 1;
                wakeup();
            }
        }
        info!(
            queue = direction.as_str(),
            replayed, "dead letters replayed"
        );
        Ok(replayed)
    }

    async fn purge(&self, direction: Direction, filter: &DeadFilter) -> Result<usize, QueueError> {
        let filter = filter.clone();
        let purged = self
            .shared
            .writer
            .call(move |conn| store::purge(conn, direction, &filter))
            .await?;
        info!(queue = direction.as_str(), purged, "dead letters purged");
        Ok(purged)
    }

    async fn check(&self) -> Result<(), QueueError> {
        if *self.shared.closed.borrow() {
            return Err(closed());
        }
        let query = self
            .shared
            .writer
            .call(|conn| conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)));
        match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(QueueError::Unavailable(format!(
                "embedded queue did not answer within {}s",
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn close(&self) {
        self.shared.closed.send_replace(true);
        self.shared.writer.close().await;
        info!(path = %self.shared.config.path.display(), "embedded queue closed");
    }
}

fn closed() -> QueueError {
    QueueError::Unavailable("embedded queue is closed".to_owned())
}

/// A duration as whole milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Classify a SQLite error by what the caller can do about it.
fn sql_error(error: rusqlite::Error) -> QueueError {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed,
        ) => QueueError::Unavailable(format!("embedded queue storage unavailable: {error}")),
        Some(ErrorCode::DiskFull | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            QueueError::Refused(format!("embedded queue cannot write: {error}"))
        }
        _ => QueueError::Other(format!("embedded queue: {error}")),
    }
}
