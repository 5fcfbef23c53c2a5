//! The claim file's connection and the thread that writes through it.
//!
//! A lookup runs on the caller's thread through a free read-only connection: a search of a
//! B-tree whose recent pages sit in SQLite's cache takes under ten microseconds, less than a hop
//! to another thread and back, and in WAL mode it reads the last commit while the thread writes
//! the next one. When every reader is in use or the file is busy, the lookup goes to the thread
//! instead, so no async task ever waits for a lock or a commit.
//!
//! Confirmed claims are written behind: nobody waits for them (the store keeps them in memory
//! until they are in the file). They gather in a shared list, and only the first one of a batch
//! wakes the thread, which waits [`WRITE_DELAY`], commits the whole list together and forgets
//! those claims' copies in memory. A busy receiver thus pays for one commit and one thread wake-up
//! per few dozen requests instead of one per request.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{Open, State};
use crate::QueueError;

/// How long a confirmed claim may wait for its commit. A process that crashes loses the claims
/// confirmed in this last stretch.
pub(super) const WRITE_DELAY: Duration = Duration::from_millis(10);

/// At most this many claims share one commit, and at most this many lookups one read.
const MAX_GROUP: usize = 512;

/// A claim as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Row {
    pub message_id: String,
    pub claimed_at: i64,
    pub confirmed: bool,
}

/// One request to the thread.
enum Command {
    /// Read the claim of `key`.
    Lookup {
        key: String,
        reply: oneshot::Sender<Result<Option<Row>, QueueError>>,
    },
    /// Writes are waiting: commit them in [`WRITE_DELAY`], or at once when `now`.
    Wake { now: bool },
    /// Delete the scope's claims older than `before`.
    Sweep { before: i64 },
    /// Commit every write sent before this, then answer.
    Flush(oneshot::Sender<Result<(), QueueError>>),
}

/// A confirmed claim to write.
struct Write {
    key: String,
    message_id: String,
    at: i64,
}

/// The connection and the handle of its thread. Dropping it lets the thread commit what is left
/// and waits for it to stop.
pub(super) struct Writer {
    /// Read-only connections for lookups on the callers' threads.
    readers: Vec<Mutex<Connection>>,
    scope: String,
    /// Confirmed claims waiting for the next commit.
    writes: Arc<Mutex<Vec<Write>>>,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start the thread on an opened, migrated connection. `open` is the store's map of claims
    /// held in memory, from which confirmed entries are removed once written.
    pub(super) fn start(
        conn: Connection,
        readers: Vec<Connection>,
        scope: String,
        open: Arc<Mutex<HashMap<String, Open>>>,
    ) -> Result<Self, QueueError> {
        let (commands, receiver) = mpsc::channel();
        let conn = Arc::new(Mutex::new(conn));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let thread = Thread {
            conn: conn.clone(),
            scope: scope.clone(),
            open,
            writes: writes.clone(),
            due: None,
            now: false,
            sweep_before: None,
            flushed: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("ccsync-claims".to_owned())
            .spawn(move || thread.run(&receiver))
            .map_err(|err| {
                QueueError::Other(format!("cannot start the claim store thread: {err}"))
            })?;
        Ok(Self {
            readers: readers.into_iter().map(Mutex::new).collect(),
            scope,
            writes,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// The claim of `key` in the file, if any: read here when a reader is free and the read
    /// succeeds, else by the thread.
    pub(super) async fn lookup(&self, key: &str) -> Result<Option<Row>, QueueError> {
        if let Some(Ok(found)) = self.read_if_free(key) {
            return Ok(found);
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Lookup {
            key: key.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| stopped())?
    }

    /// The claim of `key`, read on this thread through the first reader not in use; `None`
    /// when all are.
    fn read_if_free(&self, key: &str) -> Option<rusqlite::Result<Option<Row>>> {
        self.readers.iter().find_map(|reader| {
            let conn = match reader.try_lock() {
                Ok(conn) => conn,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            };
            Some(read_claim(&conn, &self.scope, key))
        })
    }

    /// Queue a confirmed claim for the next commit; nobody waits for it.
    pub(super) fn write(&self, key: &str, message_id: &str, at: i64) -> Result<(), QueueError> {
        let write = Write {
            key: key.to_owned(),
            message_id: message_id.to_owned(),
            at,
        };
        let waiting = {
            let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
            writes.push(write);
            writes.len()
        };
        // The first write of a batch wakes the thread; a full batch is committed at once.
        match waiting {
            1 => self.send(Command::Wake { now: false }),
            MAX_GROUP => self.send(Command::Wake { now: true }),
            _ => Ok(()),
        }
    }

    /// Commit every claim queued so far; returns once they are in the file.
    pub(super) async fn flush(&self) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Flush(reply))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Delete the scope's claims older than `before`, with the next commit.
    pub(super) fn sweep(&self, before: i64) -> Result<(), QueueError> {
        self.send(Command::Sweep { before })
    }

    fn send(&self, command: Command) -> Result<(), QueueError> {
        self.commands
            .as_ref()
            .ok_or_else(stopped)?
            .send(command)
            .map_err(|_| stopped())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel makes the thread commit what is left and stop; waiting for it
        // means a store dropped at shutdown has written every claim it confirmed.
        drop(self.commands.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the claim store thread panicked");
        }
    }
}

fn stopped() -> QueueError {
    QueueError::Unavailable("claim store: its thread has stopped".to_owned())
}

/// What the thread holds, and the writes it has gathered but not committed yet.
struct Thread {
    conn: Arc<Mutex<Connection>>,
    scope: String,
    open: Arc<Mutex<HashMap<String, Open>>>,
    writes: Arc<Mutex<Vec<Write>>>,
    /// When the waiting writes must be committed.
    due: Option<Instant>,
    /// Commit without waiting for `due`.
    now: bool,
    sweep_before: Option<i64>,
    /// Callers waiting for the next commit.
    flushed: Vec<oneshot::Sender<Result<(), QueueError>>>,
}

impl Thread {
    fn run(mut self, commands: &mpsc::Receiver<Command>) {
        loop {
            let first = match self.due {
                None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => commands.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            let mut lookups = Vec::new();
            match first {
                Ok(command) => self.take(command, &mut lookups),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Everything already waiting joins this round.
            while lookups.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(command) => self.take(command, &mut lookups),
                    Err(_) => break,
                }
            }
            if !lookups.is_empty() {
                self.answer_lookups(lookups);
            }
            let now = self.now || !self.flushed.is_empty();
            if now || self.due.is_some_and(|due| due <= Instant::now()) {
                self.commit();
            }
        }
        // Every handle is gone: write what is left before stopping.
        self.commit();
        tracing::debug!(scope = %self.scope, "claim store thread stopped");
    }

    fn take(&mut self, command: Command, lookups: &mut Vec<Lookup>) {
        match command {
            Command::Lookup { key, reply } => lookups.push((key, reply)),
            Command::Wake { now } => {
                self.due.get_or_insert_with(|| Instant::now() + WRITE_DELAY);
                self.now |= now;
            }
            Command::Sweep { before } => {
                self.due.get_or_insert_with(|| Instant::now() + WRITE_DELAY);
                self.sweep_before = Some(self.sweep_before.map_or(before, |b| b.max(before)));
            }
            Command::Flush(reply) => self.flushed.push(reply),
        }
    }

    /// Read every claim asked for in one read transaction and answer each caller.
    fn answer_lookups(&mut self, lookups: Vec<Lookup>) {
        let mut found = Vec::with_capacity(lookups.len());
        let read = read_claims(&mut self.lock(), &self.scope, &lookups, &mut found);
        // Reads that ran keep their own result; reads that never ran (the transaction did not
        // begin) get the transaction's error.
        let mut found = found.into_iter();
        for (_, reply) in lookups {
            let answer = match (found.next(), &read) {
                (Some(result), _) => result.map_err(|err| sqlite(&err)),
                (None, Err(err)) => Err(sqlite(err)),
                (None, Ok(())) => Err(QueueError::Other(
                    "claim store: a lookup was answered without running".to_owned(),
                )),
            };
            // A caller that went away does not need its answer.
            let _ = reply.send(answer);
        }
    }

    /// Commit the gathered writes and sweep, forget the written claims in memory, and answer
    /// whoever waits for the commit.
    fn commit(&mut self) {
        self.due = None;
        self.now = false;
        let writes =
            std::mem::take(&mut *self.writes.lock().unwrap_or_else(PoisonError::into_inner));
        let sweep_before = self.sweep_before.take();
        let flushed = std::mem::take(&mut self.flushed);
        if writes.is_empty() && sweep_before.is_none() && flushed.is_empty() {
            return;
        }

        let committed = write_claims(&mut self.lock(), &self.scope, &writes, sweep_before);
        match &committed {
            // Written claims need no copy in memory any more.
            Ok(()) => self.forget(&writes),
            // Claims that could not be written stay in memory, so this process still
            // recognises their copies until the window ends.
            Err(err) => {
                tracing::warn!(claims = writes.len(), cause = %err, "confirmed claims not written");
            }
        }
        for reply in flushed {
            let _ = reply.send(committed.as_ref().map_err(sqlite).copied());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drop the in-memory copies of written claims, unless another claim took their place.
    fn forget(&self, writes: &[Write]) {
        if writes.is_empty() {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for write in writes {
            let written = open.get(&write.key).is_some_and(|entry| {
                entry.state == State::Confirmed && entry.message_id == write.message_id
            });
            if written {
                open.remove(&write.key);
            }
        }
    }
}

type Lookup = (String, oneshot::Sender<Result<Option<Row>, QueueError>>);

const SELECT_CLAIM: &str =
    "SELECT message_id, claimed_at, confirmed FROM claims WHERE scope = ?1 AND key = ?2";

/// The claim of `key`, if any.
fn read_claim(conn: &Connection, scope: &str, key: &str) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached(SELECT_CLAIM)?
        .query_row(params![scope, key], row)
        .optional()
}

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        message_id: row.get(0)?,
        claimed_at: row.get(1)?,
        confirmed: row.get(2)?,
    })
}

/// Read the claims of `lookups` into `found`, in order, in one read transaction.
fn read_claims(
    conn: &mut Connection,
    scope: &str,
    lookups: &[Lookup],
    found: &mut Vec<rusqlite::Result<Option<Row>>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    {
        let mut select = tx.prepare_cached(SELECT_CLAIM)?;
        for (key, _) in lookups {
            found.push(select.query_row(params![scope, key], row).optional());
        }
    }
    tx.commit()
}

/// Write confirmed claims and delete expired ones in one transaction.
fn write_claims(
    conn: &mut Connection,
    scope: &str,
    writes: &[Write],
    sweep_before: Option<i64>,
) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock up front, so another connection to the file cannot make
    // the commit fail halfway.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO claims (scope, key, message_id, claimed_at, confirmed)
             VALUES (?1, ?2, ?3, ?4, 1)",
        )?;
        for write in writes {
            insert.execute(params![scope, write.key, write.message_id, write.at])?;
        }
    }
    if let Some(before) = sweep_before {
        tx.prepare_cached("DELETE FROM claims WHERE scope = ?1 AND claimed_at < ?2")?
            .execute(params![scope, before])?;
    }
    tx.commit()
}

fn sqlite(err: &rusqlite::Error) -> QueueError {
    QueueError::Unavailable(format!("claim store: {err}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn start(path: &Path) -> Arc<Writer> {
        let conn = super::super::open_file(path).unwrap();
        let readers = (0..2)
            .map(|_| super::super::open_reader(path).unwrap())
            .collect();
        let open = Arc::new(Mutex::new(HashMap::new()));
        Arc::new(Writer::start(conn, readers, "a".to_owned(), open).unwrap())
    }

    fn confirmed_m1() -> Option<Row> {
        Some(Row {
            message_id: "m1".to_owned(),
            claimed_at: 42,
            confirmed: true,
        })
    }

    /// Another connection takes the file's write lock, and the thread is made to wait for it:
    /// as while a commit takes long. Returns that connection; dropping it ends the wait.
    async fn stall_the_thread(
        path: &Path,
        writer: &Arc<Writer>,
    ) -> (Connection, tokio::task::JoinHandle<()>) {
        let blocker = Connection::open(path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let flushed = tokio::spawn({
            let writer = writer.clone();
            async move { writer.flush().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !flushed.is_finished(),
            "the thread waits for the write lock"
        );
        (blocker, flushed)
    }

    #[tokio::test]
    async fn a_lookup_reads_in_place_while_the_thread_waits_for_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.sqlite3");
        let writer = start(&path);
        writer.write("k", "m1", 42).unwrap();
        writer.flush().await.unwrap();

        let (blocker, flushed) = stall_the_thread(&path, &writer).await;
        let looked_up = tokio::time::timeout(Duration::from_secs(2), writer.lookup("k")).await;
        drop(blocker);
        flushed.await.unwrap();
        assert_eq!(
            looked_up.expect("does not wait for the thread").unwrap(),
            confirmed_m1()
        );
    }

    #[tokio::test]
    async fn a_lookup_goes_to_the_thread_while_every_reader_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.sqlite3");
        let writer = start(&path);
        writer.write("k", "m1", 42).unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            writer.lookup("k").await.unwrap(),
            confirmed_m1(),
            "read in place"
        );

        // Every reader is taken and the thread is busy: the lookup waits for the thread, which
        // answers it once its commit is through.
        let (blocker, flushed) = stall_the_thread(&path, &writer).await;
        let readers: Vec<_> = writer.readers.iter().map(|r| r.lock().unwrap()).collect();
        let lookup = tokio::spawn({
            let writer = writer.clone();
            async move { writer.lookup("k").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !lookup.is_finished(),
            "waits for the thread, not for a reader"
        );
        drop(readers);
        drop(blocker);
        flushed.await.unwrap();
        assert_eq!(lookup.await.unwrap().unwrap(), confirmed_m1());
    }
}
