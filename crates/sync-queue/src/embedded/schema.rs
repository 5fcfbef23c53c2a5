//! The embedded queue's SQLite file: opening a connection with the durability settings the queue
//! relies on (WAL, `synchronous=FULL`, a busy timeout), and creating or upgrading the schema,
//! whose version is kept in `PRAGMA user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::sql_error;
use crate::QueueError;

/// The schema this code reads and writes.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another connection's write lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1: one table for every message of both directions, ready or dead.
const SCHEMA_V1: &str = "
CREATE TABLE messages (
    seq               INTEGER PRIMARY KEY,
    direction         TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    state             TEXT    NOT NULL CHECK (state IN ('ready', 'dead')),
    due_at            INTEGER NOT NULL,
    lease_token       TEXT,
    lease_expires_at  INTEGER,
    delivery_count    INTEGER NOT NULL DEFAULT 0,
    message_id        TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    received_at       INTEGER NOT NULL,
    attempt           INTEGER NOT NULL,
    provider_event_id TEXT,
    first_failed_at   INTEGER,
    body              BLOB    NOT NULL,
    dead_reason       TEXT,
    last_status       INTEGER,
    last_error        TEXT,
    dead_at           INTEGER
);
CREATE INDEX messages_due ON messages (direction, due_at) WHERE state = 'ready';
CREATE INDEX messages_leased ON messages (direction) WHERE lease_token IS NOT NULL;
CREATE INDEX messages_dead ON messages (direction, dead_at) WHERE state = 'dead';
";

/// Open (or create) the file with the settings every connection of the queue needs.
pub(super) fn connect(path: &Path) -> Result<Connection, QueueError> {
    let conn = Connection::open(path).map_err(|e| {
        QueueError::Unavailable(format!("cannot open queue file {}: {e}", path.display()))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;

    // WAL lets readers (dead-letter listings, other processes) work while the writer commits.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::Other(format!(
            "queue file {} refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }

    // FULL syncs the WAL on every commit: a message answered 202 survives a power loss too.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_error)?;
    Ok(conn)
}

/// Bring the schema to [`SCHEMA_VERSION`]. Safe when several processes open the file at once:
/// the check and the creation happen under the write lock.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_error)?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA_V1).map_err(sql_error)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sql_error)?;
        }
        SCHEMA_VERSION => {}
        newer => {
            return Err(QueueError::Other(format!(
                "queue file has schema version {newer}, this build knows up to {SCHEMA_VERSION}: \
                 run a newer build or point queue.path elsewhere"
            )));
        }
    }
    tx.commit().map_err(sql_error)
}
