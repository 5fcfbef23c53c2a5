//! Seen provider event ids, so that a provider's retry of an event already accepted is not
//! queued twice (DESIGN §3 "Duplicates"). The receiver claims `{source}:{provider id}` before it
//! publishes; the claim is *pending* until the queue confirms the message, then *confirmed*.
//! A later copy of a confirmed claim is a duplicate (answered as accepted, not queued again); a
//! copy that arrives while the claim is still pending is told to retry, since the first copy may
//! yet fail; a claim whose publish failed is released so the provider's retry can win it. A
//! pending claim left behind by a crash is taken over once it is older than [`PENDING_TTL`].
//!
//! Claims live in a SQLite table, scoped by the queue prefix so deployments sharing a file never
//! see each other's ids, and are forgotten after the window. An insert is atomic, so two copies
//! arriving at the same moment still produce one queued message.
//!
//! The worker also records here which messages it delivered as non-idempotent Chameleon events,
//! so that a message redelivered after a lost acknowledgement is not sent twice.
//!
//! Limitation: the claim file is local to the process that receives; several receiver replicas
//! behind a load balancer each keep their own, so a retry that lands on another replica is queued
//! again (Customer.io then drops the relayed duplicate by its event id, but a Chameleon event
//! would be written twice).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

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
/// claim orphaned by a crash gets this old.
pub const PENDING_TTL: Duration = Duration::from_secs(120);

/// Claims of one deployment.
#[derive(Clone)]
pub struct ClaimStore {
    conn: Arc<Mutex<Connection>>,
    scope: String,
    window_ms: i64,
    /// Claims made by this process, to sweep expired ones now and then.
    claimed: Arc<AtomicU64>,
}

/// How many claims between two sweeps of expired ones.
const SWEEP_EVERY: u64 = 1_000;

impl ClaimStore {
    /// Open (or create) the claim file; `scope` is the queue prefix.
    pub fn open(path: &Path, scope: &str, window: Duration) -> Result<Self, QueueError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                QueueError::Other(format!("cannot create {}: {err}", parent.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        // A claim lost to a power cut only lets one duplicate through; no fsync per request.
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
            conn.execute_batch(
                "ALTER TABLE claims ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1",
            )
            .map_err(sqlite)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            scope: scope.to_owned(),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            claimed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Claim `key` for `message_id`; a new claim is pending until confirmed.
    pub async fn claim(&self, key: &str, message_id: &str) -> Result<Claim, QueueError> {
        let (key, message_id) = (key.to_owned(), message_id.to_owned());
        self.blocking("claim", move |store| {
            store.claim_blocking(&key, &message_id)
        })
        .await
    }

    /// The message of a claim is queued: later copies are duplicates.
    pub async fn confirm(&self, key: &str, message_id: &str) -> Result<(), QueueError> {
        let (key, message_id) = (key.to_owned(), message_id.to_owned());
        self.blocking("confirm", move |store| {
            store
                .lock()
                .execute(
                    "UPDATE claims SET confirmed = 1, claimed_at = ?4
                 WHERE scope = ?1 AND key = ?2 AND message_id = ?3",
                    params![store.scope, key, message_id, sync_core::time::now_ms()],
                )
                .map(|_| ())
                .map_err(sqlite)
        })
        .await
    }

    /// Give a claim back (its message could not be queued).
    pub async fn release(&self, key: &str, message_id: &str) -> Result<(), QueueError> {
        let (key, message_id) = (key.to_owned(), message_id.to_owned());
        self.blocking("release", move |store| {
            store
                .lock()
                .execute(
                    "DELETE FROM claims WHERE scope = ?1 AND key = ?2 AND message_id = ?3",
                    params![store.scope, key, message_id],
                )
                .map(|_| ())
                .map_err(sqlite)
        })
        .await
    }

    /// Whether `message_id` was already delivered upstream: a redelivery after an
    /// acknowledgement was lost (a broker restart, a crash between sending and acking).
    pub async fn was_delivered(&self, message_id: &str) -> Result<bool, QueueError> {
        let key = format!("delivered:{message_id}");
        self.blocking("delivery log", move |store| {
            let fresh_after = sync_core::time::now_ms().saturating_sub(store.window_ms);
            store
                .lock()
                .query_row(
                    "SELECT 1 FROM claims
                 WHERE scope = ?1 AND key = ?2 AND claimed_at >= ?3 AND confirmed = 1",
                    params![store.scope, key, fresh_after],
                    |_| Ok(()),
                )
                .optional()
                .map(|found| found.is_some())
                .map_err(sqlite)
        })
        .await
    }

    /// Run `work` on a blocking thread, off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&ClaimStore) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|err| QueueError::Other(format!("{what} task failed: {err}")))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record that `message_id` was delivered upstream, so a redelivery is not sent again.
    pub async fn mark_delivered(&self, message_id: &str) -> Result<(), QueueError> {
        let key = format!("delivered:{message_id}");
        self.claim(&key, message_id).await?;
        self.confirm(&key, message_id).await
    }

    fn claim_blocking(&self, key: &str, message_id: &str) -> Result<Claim, QueueError> {
        let now = sync_core::time::now_ms();
        let fresh_after = now.saturating_sub(self.window_ms);
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(sqlite)?;

        let existing: Option<(String, i64, bool)> = tx
            .query_row(
                "SELECT message_id, claimed_at, confirmed FROM claims WHERE scope = ?1 AND key = ?2",
                params![self.scope, key],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(sqlite)?;
        let pending_after = now.saturating_sub(PENDING_TTL.as_millis() as i64);
        match existing {
            Some((first, claimed_at, true)) if claimed_at >= fresh_after && first != message_id => {
                return Ok(Claim::Duplicate { message_id: first });
            }
            Some((first, claimed_at, false))
                if claimed_at >= pending_after && first != message_id =>
            {
                return Ok(Claim::Pending { message_id: first });
            }
            _ => {}
        }
        tx.execute(
            "INSERT OR REPLACE INTO claims (scope, key, message_id, claimed_at, confirmed)
             VALUES (?1, ?2, ?3, ?4, 0)",
            params![self.scope, key, message_id, now],
        )
        .map_err(sqlite)?;
        let claimed = self.claimed.fetch_add(1, Ordering::Relaxed) + 1;
        if claimed.is_multiple_of(SWEEP_EVERY) {
            tx.execute(
                "DELETE FROM claims WHERE claimed_at < ?1",
                params![fresh_after],
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)?;
        Ok(Claim::New)
    }
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
}
