//! The writer: one thread that owns the queue's read-write connection and makes every change to
//! the file. It takes all the jobs waiting in its channel, runs them in one transaction (each in
//! its own savepoint, so that one failing job does not undo the others), commits once, and only
//! then answers each caller. Many concurrent publishes therefore share one fsync (group commit),
//! and no async task ever blocks on SQLite.

use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{sql_error, store};
use crate::QueueError;

/// At most this many jobs share one transaction, so that a flood of publishes still gets
/// answered in bounded slices.
const MAX_GROUP: usize = 512;

/// How often the depth gauges are refreshed, at most.
const DEPTH_EVERY: Duration = Duration::from_secs(1);

/// One unit of work for the writer thread.
trait Job: Send {
    /// Run inside the group's transaction. False when the job failed and its savepoint must be
    /// rolled back.
    fn run(&mut self, conn: &Connection) -> bool;

    /// Answer the caller once the group's transaction is over: `Err` when it did not commit.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

/// A job built from a closure, answered through a oneshot channel.
struct Call<T, F> {
    op: Option<F>,
    result: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<Result<T, QueueError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let result = op(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let answer = match (committed, self.result) {
            (Err(cause), _) => Err(QueueError::Unavailable(format!(
                "embedded queue transaction did not commit: {cause}"
            ))),
            (Ok(()), Some(result)) => result.map_err(sql_error),
            (Ok(()), None) => Err(QueueError::Other(
                "embedded queue job was answered without running".to_owned(),
            )),
        };
        // A caller that went away (a dropped future) does not need its answer.
        let _ = self.reply.send(answer);
    }
}

enum Command {
    Job(Box<dyn Job>),
    /// Stop after everything sent before this, answering when done.
    Close(oneshot::Sender<()>),
}

/// The handle that async code uses to reach the writer thread.
#[derive(Clone)]
pub(super) struct Writer {
    commands: mpsc::UnboundedSender<Command>,
}

impl Writer {
    /// Start the writer thread on a connection that has been migrated.
    pub(super) fn start(conn: Connection) -> Result<Self, QueueError> {
        let (commands, receiver) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("ccsync-queue-writer".to_owned())
            .spawn(move || run(conn, receiver))
            .map_err(|e| QueueError::Other(format!("cannot start the queue writer thread: {e}")))?;
        Ok(Self { commands })
    }

    /// Run `op` in the next group transaction and return its result once that transaction has
    /// committed.
    pub(super) async fn call<T, F>(&self, op: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let reply = self.submit(op)?;
        reply.await.map_err(|_| stopped())?
    }

    /// Queue `op` without waiting for it; the receiver gets its result after the commit.
    pub(super) fn submit<T, F>(
        &self,
        op: F,
    ) -> Result<oneshot::Receiver<Result<T, QueueError>>, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job = Call {
            op: Some(op),
            result: None,
            reply,
        };
        self.commands
            .send(Command::Job(Box::new(job)))
            .map_err(|_| stopped())?;
        Ok(receiver)
    }

    /// Commit everything already submitted, then stop the thread. Later calls fail.
    pub(super) async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

fn stopped() -> QueueError {
    QueueError::Unavailable("embedded queue is closed (its writer has stopped)".to_owned())
}

/// The writer thread's loop: one group transaction per wake-up.
fn run(mut conn: Connection, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut closing = None;
    let mut depth_at: Option<Instant> = None;
    while closing.is_none() {
        let Some(first) = commands.blocking_recv() else {
            break;
        };

        // Everything already waiting joins this group: that is what makes commits shared.
        let mut jobs = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Job(job) => jobs.push(job),
                Command::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if jobs.len() < MAX_GROUP {
                next = commands.try_recv().ok();
            }
        }

        if !jobs.is_empty() {
            run_group(&mut conn, jobs);
        }

        if depth_at.is_none_or(|at| at.elapsed() >= DEPTH_EVERY) {
            depth_at = Some(Instant::now());
            if let Err(cause) = store::record_depth(&conn) {
                debug!(cause = %cause, "queue depth not refreshed");
            }
        }
    }

    // Refuse what arrived after the close request: dropping a job drops its reply channel, and
    // its caller learns that the queue is closed.
    commands.close();
    while let Ok(command) = commands.try_recv() {
        if let Command::Close(done) = command {
            let _ = done.send(());
        }
    }
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
    info!("embedded queue writer stopped");
}

/// Run a group of jobs in one transaction and answer every one of them.
fn run_group(conn: &mut Connection, mut jobs: Vec<Box<dyn Job>>) {
    let count = jobs.len();
    let committed = run_in_transaction(conn, &mut jobs).map_err(|e| e.to_string());
    if let Err(cause) = &committed {
        warn!(jobs = count, cause = %cause, "embedded queue group transaction failed");
    }
    for job in jobs {
        job.answer(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

fn run_in_transaction(conn: &mut Connection, jobs: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock up front, so another process cannot make us fail halfway.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in jobs.iter_mut() {
        tx.execute_batch("SAVEPOINT job")?;
        if job.run(&tx) {
            tx.execute_batch("RELEASE job")?;
        } else {
            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
        }
    }
    tx.commit()
}
