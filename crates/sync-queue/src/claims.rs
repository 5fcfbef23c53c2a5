//! Seen provider event ids, so that a provider's retry of an event already accepted is not
//! queued twice (DESIGN §3 "Duplicates"). The receiver claims `{source}:{provider id}` before it
//! publishes; the claim is *pending* until the queue confirms the message, then *confirmed*.
//! A later copy of a confirmed claim is a duplicate (answered as accepted, not queued again); a
//! copy that arrives while the claim is still pending is told to retry, since the first copy may
//! yet fail; a claim whose publish failed is released so the provider's retry can win it. A
//! pending claim older than [`PENDING_TTL`] is taken over.
//!
//! Pending claims only coordinate the copies that one process handles at the same moment, so
//! they live in memory: taking one is a map insert, atomic under the map's lock, so two copies
//! arriving together still produce one queued message. Confirmed claims go to a SQLite table,
//! scoped by the queue prefix so deployments sharing a file never see each other's ids, and are
//! forgotten after the window. One thread per store writes the file ([`writer`]): a lookup reads
//! in place through one of a few read-only connections (the thread answers it when all are in
//! use), so it never waits for a commit, and confirmed claims
//! are written behind, those of the last few milliseconds committed together, so a busy receiver
//! pays for one commit per few dozen requests and never waits for one.
//!
//! Durability: a confirmed claim stays in memory, where it already turns copies away, until its
//! commit, at most [`writer::WRITE_DELAY`] later; commits use `synchronous = NORMAL` (no fsync
//! per commit). A process crash therefore loses the pending claims and the claims confirmed in
//! those last milliseconds, and a power cut also the claims committed since the last WAL
//! checkpoint; the cost is one duplicate message for each such event that the provider sends
//! again, and one more delivery of each such Chameleon event that is redelivered. Dropping the
//! last handle of a store (a clean shutdown) writes everything first.
//!
//! The worker also records here which messages it delivered as non-idempotent Chameleon events,
//! so that a message redelivered after a lost acknowledgement is not sent twice.
//!
//! Limitation: the record is local to the process that receives; several receiver replicas
//! behind a load balancer each keep their own, so a retry that lands on another replica is queued
//! again (Customer.io then drops the relayed duplicate by its event id, but a Chameleon event
//! would be written twice). Processes sharing one file see each other's confirmed claims, not
//! their pending ones.

mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use self::writer::{Row, Writer};
use crate::QueueError;

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First sighting: go ahead, then [`ClaimStore::confirm`] or [`ClaimStore::release`].
    New,
    /// Seen within the window and queued as `message_id`.
    Duplicate { message_id: String },
    /// Another copy is being queued right now as `message_id`; its outcome is not known yet.
    Pending { message_id: String },
}

/// How long a pending claim holds off other copies; longer than any publish may take, so only a
/// claim orphaned by a caller that never settled it gets this old.
pub const PENDING_TTL: Duration = Duration::from_secs(120);

/// How many claims between two sweeps of expired ones.
const SWEEP_EVERY: u64 = 1_000;

/// Read-only connections for lookups, besides the writing one: enough for each core's runtime
/// worker to read at once.
const READERS: usize = 4;

/// Claims of one deployment. Clones share the same store.
#[derive(Clone)]
pub struct ClaimStore {
    inner: Arc<Inner>,
}

struct Inner {
    window_ms: i64,
    /// Claims held in memory: pending ones, and confirmed ones until the file has them.
    open: Arc<Mutex<HashMap<String, Open>>>,
    writer: Writer,
    /// Claims made by this store, to sweep expired ones now and then.
    claimed: AtomicU64,
}

/// A claim held in memory.
#[derive(Clone, Debug)]
struct Open {
    message_id: String,
    /// When it was claimed, or confirmed (unix milliseconds).
    since: i64,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Claimed; the message is being queued.
    Pending,
    /// Queued; the confirmed claim is being written to the file.
    Confirmed,
}

/// What a claim's holder says to another copy of the event, if anything.
enum Verdict {
    /// Nothing stands in the way: the claim is free, stale, or held by this very message.
    Free,
    Answer(Claim),
}

impl ClaimStore {
    /// Open (or create) the claim file; `scope` is the queue prefix.
    pub fn open(path: &Path, scope: &str, window: Duration) -> Result<Self, QueueError> {
        let conn = open_file(path)?;
        let readers = (0..READERS)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        let open = Arc::new(Mutex::new(HashMap::new()));
        let writer = Writer::start(conn, readers, scope.to_owned(), open.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
                open,
                writer,
                claimed: AtomicU64::new(0),
            }),
        })
    }

    /// Claim `key` for `message_id`; a new claim is pending until confirmed or released.
    pub async fn claim(&self, key: &str, message_id: &str) -> Result<Claim, QueueError> {
        let now = sync_core::time::now_ms();
        {
            let mut open = self.lock();
            if let Some(entry) = open.get(key)
                && let Verdict::Answer(answer) = self.judge_open(entry, message_id, now)
            {
                return Ok(answer);
            }
            let entry = Open {
                message_id: message_id.to_owned(),
                since: now,
                state: State::Pending,
            };
            open.insert(key.to_owned(), entry);
        }
        self.sweep_now_and_then(now);

        // Held in memory from here on; the file may still know an earlier copy.
        let answer = match self.inner.writer.lookup(key).await {
            Ok(Some(row)) => match self.judge_row(&row, message_id, now) {
                Verdict::Free => Ok(Claim::New),
                Verdict::Answer(answer) => Err(Ok(answer)),
            },
            Ok(None) => Ok(Claim::New),
            Err(err) => Err(Err(err)),
        };
        match answer {
            Ok(new) => Ok(new),
            Err(answer) => {
                self.forget_pending(key, message_id);
                answer
            }
        }
    }

    /// The message of a claim is queued: later copies are duplicates. The claim is written to
    /// the file in the background, within [`writer::WRITE_DELAY`] ([`ClaimStore::flush`] waits
    /// for it). A claim that is no longer this message's (taken over) is left alone.
    pub async fn confirm(&self, key: &str, message_id: &str) -> Result<(), QueueError> {
        let now = sync_core::time::now_ms();
        {
            let mut open = self.lock();
            match open.get_mut(key) {
                Some(entry) if entry.message_id == message_id => {
                    entry.state = State::Confirmed;
                    entry.since = now;
                }
                _ => return Ok(()),
            }
        }
        self.inner.writer.write(key, message_id, now)
    }

    /// Write every claim confirmed so far to the file; returns once they are committed.
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.inner.writer.flush().await
    }

    /// Give a claim back (its message could not be queued).
    pub async fn release(&self, key: &str, message_id: &str) -> Result<(), QueueError> {
        self.forget_pending(key, message_id);
        Ok(())
    }

    /// Whether `message_id` was already delivered upstream: a redelivery after an
    /// acknowledgement was lost (a broker restart, a crash between sending and acking).
    pub async fn was_delivered(&self, message_id: &str) -> Result<bool, QueueError> {
        let key = delivered_key(message_id);
        let now = sync_core::time::now_ms();
        let held = self.lock().get(&key).map(|entry| entry.state);
        match held {
            Some(State::Confirmed) => return Ok(true),
            // Being recorded right now: not delivered as far as anyone knows yet.
            Some(State::Pending) => return Ok(false),
            None => {}
        }
        let row = self.inner.writer.lookup(&key).await?;
        Ok(row.is_some_and(|row| row.confirmed && row.claimed_at >= self.fresh_after(now)))
    }

    /// Record that `message_id` was delivered upstream, so a redelivery is not sent again.
    pub async fn mark_delivered(&self, message_id: &str) -> Result<(), QueueError> {
        let key = delivered_key(message_id);
        self.claim(&key, message_id).await?;
        self.confirm(&key, message_id).await
    }

    /// What a claim held in memory says to `message_id`.
    fn judge_open(&self, entry: &Open, message_id: &str, now: i64) -> Verdict {
        if entry.message_id == message_id {
            return Verdict::Free;
        }
        let first = || entry.message_id.clone();
        match entry.state {
            State::Confirmed if entry.since >= self.fresh_after(now) => {
                Verdict::Answer(Claim::Duplicate {
                    message_id: first(),
                })
            }
            State::Pending if entry.since >= pending_after(now) => {
                Verdict::Answer(Claim::Pending {
                    message_id: first(),
                })
            }
            _ => Verdict::Free,
        }
    }

    /// What a claim in the file says to `message_id`. Files written by earlier versions may hold
    /// pending claims too; they are judged like pending claims in memory.
    fn judge_row(&self, row: &Row, message_id: &str, now: i64) -> Verdict {
        if row.message_id == message_id {
            return Verdict::Free;
        }
        let first = || row.message_id.clone();
        match row.confirmed {
            true if row.claimed_at >= self.fresh_after(now) => Verdict::Answer(Claim::Duplicate {
                message_id: first(),
            }),
            false if row.claimed_at >= pending_after(now) => Verdict::Answer(Claim::Pending {
                message_id: first(),
            }),
            _ => Verdict::Free,
        }
    }

    /// Drop `message_id`'s pending claim on `key`, if it still holds it.
    fn forget_pending(&self, key: &str, message_id: &str) {
        let mut open = self.lock();
        let ours = open
            .get(key)
            .is_some_and(|entry| entry.state == State::Pending && entry.message_id == message_id);
        if ours {
            open.remove(key);
        }
    }

    /// Every [`SWEEP_EVERY`] claims: drop expired claims from the file, and claims in memory
    /// that nobody settled.
    fn sweep_now_and_then(&self, now: i64) {
        let claimed = self.inner.claimed.fetch_add(1, Ordering::Relaxed) + 1;
        if !claimed.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let (fresh_after, pending_after) = (self.fresh_after(now), pending_after(now));
        self.lock().retain(|_, entry| match entry.state {
            State::Pending => entry.since >= pending_after,
            State::Confirmed => entry.since >= fresh_after,
        });
        if let Err(err) = self.inner.writer.sweep(fresh_after) {
            tracing::debug!(cause = %err, "expired claims not swept");
        }
    }

    fn fresh_after(&self, now: i64) -> i64 {
        now.saturating_sub(self.inner.window_ms)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Open>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Claims younger than this (unix milliseconds) still hold off other copies while pending.
fn pending_after(now: i64) -> i64 {
    now.saturating_sub(i64::try_from(PENDING_TTL.as_millis()).unwrap_or(i64::MAX))
}

/// The claim key under which a delivered message is recorded.
fn delivered_key(message_id: &str) -> String {
    format!("delivered:{message_id}")
}

/// A connection for lookups only, on a file [`open_file`] has set up. In WAL mode it reads the
/// last commit without waiting for one in progress. It never waits for a lock either: a read
/// that finds the file busy fails at once, and the writing thread answers it instead.
fn open_reader(path: &Path) -> Result<Connection, QueueError> {
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(Duration::ZERO).map_err(sqlite)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sqlite)?;
    Ok(conn)
}

/// Open the file, create or migrate the table, and set it up for many small commits.
fn open_file(path: &Path) -> Result<Connection, QueueError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| {
            QueueError::Other(format!("cannot create {}: {err}", parent.display()))
        })?;
    }
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    // A claim lost to a power cut only lets one duplicate through; no fsync per commit.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS claims (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            message_id TEXT NOT NULL,
            claimed_at INTEGER NOT NULL,
            confirmed INTEGER NOT NULL,
            PRIMARY KEY (scope, key)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS claims_by_age ON claims (claimed_at);",
    )
    .map_err(sqlite)?;
    // Files written before claims had a pending state hold only confirmed claims.
    let has_state: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('claims') WHERE name = 'confirmed'",
            [],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(sqlite)?;
    if !has_state {
        conn.execute_batch("ALTER TABLE claims ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1")
            .map_err(sqlite)?;
    }
    Ok(conn)
}

fn sqlite(err: rusqlite::Error) -> QueueError {
    QueueError::Unavailable(format!("claim store: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_copy_wins_and_release_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClaimStore::open(
            &dir.path().join("seen.sqlite3"),
            "a",
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(store.claim("k", "m1").await.unwrap(), Claim::New);
        assert_eq!(
            store.claim("k", "m2").await.unwrap(),
            Claim::Pending {
                message_id: "m1".into()
            },
            "unconfirmed: the first copy may still fail"
        );
        store.release("k", "m1").await.unwrap();
        assert_eq!(store.claim("k", "m2").await.unwrap(), Claim::New);
        store.confirm("k", "m2").await.unwrap();
        assert_eq!(
            store.claim("k", "m3").await.unwrap(),
            Claim::Duplicate {
                message_id: "m2".into()
            }
        );
    }

    #[tokio::test]
    async fn scopes_are_separate_and_claims_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.sqlite3");
        let a = ClaimStore::open(&path, "a", Duration::from_secs(60)).unwrap();
        let b = ClaimStore::open(&path, "b", Duration::ZERO).unwrap();
        assert_eq!(a.claim("k", "m1").await.unwrap(), Claim::New);
        assert_eq!(b.claim("k", "m2").await.unwrap(), Claim::New);
        b.confirm("k", "m2").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            b.claim("k", "m3").await.unwrap(),
            Claim::New,
            "window of zero forgets"
        );
    }

    #[tokio::test]
    async fn concurrent_copies_make_one_claim() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClaimStore::open(
            &dir.path().join("seen.sqlite3"),
            "a",
            Duration::from_secs(60),
        )
        .unwrap();
        let attempts: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.claim("same", &format!("m{i}")).await.unwrap() })
            })
            .collect();
        let mut new = 0;
        for attempt in attempts {
            if attempt.await.unwrap() == Claim::New {
                new += 1;
            }
        }
        assert_eq!(new, 1);
    }

    #[tokio::test]
    async fn delivered_messages_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.sqlite3");
        let store = ClaimStore::open(&path, "a", Duration::from_secs(60)).unwrap();
        assert!(!store.was_delivered("m1").await.unwrap());
        store.mark_delivered("m1").await.unwrap();
        assert!(store.was_delivered("m1").await.unwrap());
        assert!(!store.was_delivered("m2").await.unwrap());
        let other_scope = ClaimStore::open(&path, "b", Duration::from_secs(60)).unwrap();
        assert!(!other_scope.was_delivered("m1").await.unwrap());
    }

    #[tokio::test]
    async fn confirmed_claims_outlive_the_process_and_pending_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.sqlite3");
        let window = Duration::from_secs(60);
        let first = ClaimStore::open(&path, "a", window).unwrap();
        assert_eq!(first.claim("done", "m1").await.unwrap(), Claim::New);
        first.confirm("done", "m1").await.unwrap();
        assert_eq!(first.claim("open", "m2").await.unwrap(), Claim::New);
        first.flush().await.unwrap();
        {
            let open = first.lock();
            assert!(
                !open.contains_key("done"),
                "written, so no longer held in memory"
            );
            assert_eq!(open["open"].state, State::Pending);
        }
        // Confirmed but not written yet: dropping the store writes it.
        assert_eq!(first.claim("late", "m6").await.unwrap(), Claim::New);
        first.confirm("late", "m6").await.unwrap();
        drop(first);

        let second = ClaimStore::open(&path, "a", window).unwrap();
        let duplicate = Claim::Duplicate {
            message_id: "m1".into(),
        };
        assert_eq!(second.claim("done", "m3").await.unwrap(), duplicate);
        assert_eq!(
            second.claim("done", "m4").await.unwrap(),
            duplicate,
            "a duplicate found in the file leaves no pending claim behind"
        );
        assert_eq!(
            second.claim("open", "m5").await.unwrap(),
            Claim::New,
            "a pending claim dies with its process"
        );
        assert_eq!(
            second.claim("late", "m7").await.unwrap(),
            Claim::Duplicate {
                message_id: "m6".into()
            }
        );
    }

    #[tokio::test]
    async fn stale_pending_claims_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.sqlite3");
        let store = ClaimStore::open(&path, "a", Duration::from_secs(60)).unwrap();
        assert_eq!(store.claim("k", "m1").await.unwrap(), Claim::New);
        let stale = sync_core::time::now_ms() - PENDING_TTL.as_millis() as i64 - 1;
        store.lock().get_mut("k").unwrap().since = stale;
        assert_eq!(store.claim("k", "m2").await.unwrap(), Claim::New);
        store.confirm("k", "m1").await.unwrap();
        {
            let open = store.lock();
            assert_eq!(
                (open["k"].message_id.as_str(), open["k"].state),
                ("m2", State::Pending),
                "the first holder's late confirm does not take the claim back"
            );
        }
        store.confirm("k", "m2").await.unwrap();
        assert_eq!(
            store.claim("k", "m3").await.unwrap(),
            Claim::Duplicate {
                message_id: "m2".into()
            }
        );

        // Pending claims left in the file by earlier versions: a young one holds copies off, a
        // stale one is taken over.
        let conn = Connection::open(&path).unwrap();
        let now = sync_core::time::now_ms();
        for (key, claimed_at) in [("young", now), ("old", stale)] {
            conn.execute(
                "INSERT INTO claims (scope, key, message_id, claimed_at, confirmed)
                 VALUES ('a', ?1, 'earlier', ?2, 0)",
                rusqlite::params![key, claimed_at],
            )
            .unwrap();
        }
        assert_eq!(
            store.claim("young", "m4").await.unwrap(),
            Claim::Pending {
                message_id: "earlier".into()
            }
        );
        assert_eq!(store.claim("old", "m5").await.unwrap(), Claim::New);
    }
}
