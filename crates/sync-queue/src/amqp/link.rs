//! One AMQP connection that heals itself. A call that needs the connection and finds it broken
//! opens a new one and declares the topology on it (or, for operator commands, checks that the
//! queues they use exist); when the broker cannot be reached, calls fail fast with `Unavailable`
//! until the next attempt that the backoff schedule allows, so a missing broker costs callers one
//! bounded attempt, not a hang each. A broker that refuses the login fails with `Other`: waiting
//! does not help.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, ErrorKind};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use sync_core::Direction;

use super::topology::Topology;
use crate::QueueError;

/// What the connection is for; it names the connection in the broker's management view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    Consumer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Consumer => "consumer",
        }
    }
}

/// A lazily (re)opened connection to the broker.
pub(crate) struct Link {
    role: Role,
    /// The broker, with the frame size asked for.
    uri: AMQPUri,
    topology: Arc<Topology>,
    state: Mutex<State>,
    /// Set when a publish found a queue or binding missing: the next call redeclares.
    stale_topology: AtomicBool,
    closed: AtomicBool,
    /// Declare the topology (the daemon), or only check that it exists (operator commands, which
    /// must not create a deployment under a mistyped prefix).
    declares: bool,
}

struct State {
    connection: Option<Arc<Connection>>,
    backoff: ExponentialBackoff,
    /// No new attempt before this instant, after a failed one.
    next_attempt: Option<Instant>,
    last_error: String,
}

impl Link {
    /// A link for `role` to the broker at `uri` (as parsed by [`super::AmqpConfig::validate`]);
    /// with `declares` false the topology is checked, never declared.
    pub(crate) fn with_declaring(
        role: Role,
        uri: AMQPUri,
        topology: Arc<Topology>,
        declares: bool,
    ) -> Self {
        Self {
            declares,
            role,
            uri: with_frame_max(uri),
            topology,
            state: Mutex::new(State {
                connection: None,
                backoff: backoff(),
                next_attempt: None,
                last_error: String::new(),
            }),
            stale_topology: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// The open connection, (re)opened if needed, by `deadline` at the latest.
    pub(crate) async fn connection(
        &self,
        deadline: Instant,
    ) -> Result<Arc<Connection>, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Unavailable("the queue was closed".into()));
        }
        let mut state = timeout_at(deadline, self.state.lock())
            .await
            .map_err(|_| self.timed_out("waiting for another caller to connect"))?;

        let open = state
            .connection
            .as_ref()
            .filter(|connection| connection.status().connected())
            .cloned();
        if let Some(connection) = open {
            if self.stale_topology.swap(false, Ordering::AcqRel) {
                self.redeclare(&connection, deadline).await?;
            }
            return Ok(connection);
        }
        if state.connection.take().is_some() {
            tracing::warn!(role = self.role.as_str(), "rabbitmq connection lost");
        }

        // Within the backoff window the last failure still stands: answer at once.
        if let Some(next) = state.next_attempt {
            let now = Instant::now();
            if now < next {
                return Err(QueueError::Unavailable(format!(
                    "rabbitmq unreachable ({}), next attempt in {} ms",
                    state.last_error,
                    (next - now).as_millis()
                )));
            }
        }

        match timeout_at(deadline, self.open()).await {
            Ok(Ok(connection)) => {
                state.backoff = backoff();
                state.next_attempt = None;
                state.connection = Some(connection.clone());
                self.stale_topology.store(false, Ordering::Release);
                tracing::info!(
                    role = self.role.as_str(),
                    prefix = %self.topology.exchange(),
                    declared = self.declares,
                    "rabbitmq connected, topology in place"
                );
                Ok(connection)
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => error,
                    _ => self.timed_out("connecting"),
                };
                let wait = state.backoff.next().unwrap_or(MAX_BACKOFF);
                state.next_attempt = Some(Instant::now() + wait);
                state.last_error = error.to_string();
                // A broker away is worth a warning each time; a refusal (a login, a missing
                // queue) reaches the caller, who says it once.
                if matches!(error, QueueError::Unavailable(_)) {
                    tracing::warn!(
                        role = self.role.as_str(),
                        cause = %error,
                        retry_in_ms = wait.as_millis() as u64,
                        "rabbitmq connection failed"
                    );
                } else {
                    tracing::debug!(
                        role = self.role.as_str(),
                        cause = %error,
                        retry_in_ms = wait.as_millis() as u64,
                        "rabbitmq connection refused"
                    );
                }
                Err(error)
            }
        }
    }

    /// Ask the next call to declare the topology again (a publish found part of it missing).
    pub(crate) fn mark_topology_stale(&self) {
        self.stale_topology.store(true, Ordering::Release);
    }

    pub(crate) fn topology_is_stale(&self) -> bool {
        self.stale_topology.load(Ordering::Acquire)
    }

    /// Close the connection; later calls answer `Unavailable`.
    pub(crate) async fn close(&self, deadline: Instant) {
        self.closed.store(true, Ordering::Release);
        let Ok(mut state) = timeout_at(deadline, self.state.lock()).await else {
            return;
        };
        if let Some(connection) = state.connection.take()
            && connection.status().connected()
        {
            let closing = connection.close(REPLY_SUCCESS, "shutting down".into());
            if let Ok(Err(error)) = timeout_at(deadline, closing).await {
                tracing::debug!(role = self.role.as_str(), cause = %error, "rabbitmq close failed");
            }
        }
    }

    async fn open(&self) -> Result<Arc<Connection>, QueueError> {
        let name = format!(
            "cio-chameleon-sync {} {}",
            self.topology.exchange(),
            self.role.as_str()
        );
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connected = Connection::connect_uri(self.uri.clone(), properties).await;
        let connection = connected.map_err(|error| {
            if refused_login(&error) {
                // Waiting will not help until someone fixes the URL (or the broker's users).
                QueueError::Other(format!(
                    "rabbitmq refused the login: {error} (check the user, password and vhost of \
                     queue.amqp_url)"
                ))
            } else {
                unavailable("connecting to rabbitmq", &error)
            }
        })?;
        let connection = Arc::new(connection);
        self.declare(&connection).await?;
        Ok(connection)
    }

    async fn redeclare(
        &self,
        connection: &Connection,
        deadline: Instant,
    ) -> Result<(), QueueError> {
        let outcome = timeout_at(deadline, self.declare(connection))
            .await
            .unwrap_or_else(|_| Err(self.timed_out("declaring the topology")));
        match &outcome {
            Ok(()) => {
                tracing::info!(
                    prefix = %self.topology.exchange(),
                    "rabbitmq topology declared again"
                )
            }
            Err(_) => self.mark_topology_stale(),
        }
        outcome
    }

    /// Declare on a channel of its own, closed afterwards; or, for a link that does not declare,
    /// check that every queue exists.
    async fn declare(&self, connection: &Connection) -> Result<(), QueueError> {
        if !self.declares {
            return self.check_exists(connection).await;
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| unavailable("opening a channel", &error))?;
        self.topology
            .declare(&channel)
            .await
            .map_err(|error| declare_error(&error))?;
        if let Err(error) = channel.close(REPLY_SUCCESS, "declared".into()).await {
            tracing::debug!(cause = %error, "closing the declaring channel failed");
        }
        Ok(())
    }

    /// The work and dead queues exist (all an operator command reads or writes; retry tiers
    /// may differ from the daemon's). A passive declare of a missing queue closes its channel,
    /// so each check that fails ends the checking.
    async fn check_exists(&self, connection: &Connection) -> Result<(), QueueError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| unavailable("opening a channel", &error))?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queues = Direction::ALL.into_iter().flat_map(|direction| {
            [
                self.topology.work_queue(direction),
                self.topology.dead_queue(direction),
            ]
        });
        for queue in queues {
            let declared = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await;
            match declared {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {
                    return Err(QueueError::Other(format!(
                        "rabbitmq has no queue {queue}: nothing is deployed under queue.prefix \
                         {:?} on this broker (is this the daemon's configuration?); operator \
                         commands read an existing deployment and create nothing",
                        self.topology.exchange()
                    )));
                }
                Err(error) => return Err(unavailable("checking the queues", &error)),
            }
        }
        if let Err(error) = channel.close(REPLY_SUCCESS, "checked".into()).await {
            tracing::debug!(cause = %error, "closing the checking channel failed");
        }
        Ok(())
    }

    fn timed_out(&self, what: &str) -> QueueError {
        QueueError::Unavailable(format!(
            "rabbitmq {} connection timed out {what}",
            self.role.as_str()
        ))
    }
}

/// AMQP's "normal shutdown" reply code.
pub(crate) const REPLY_SUCCESS: u16 = 200;

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The largest AMQP frame asked for unless the URL names one (`?frame_max=`). The client keeps
/// a receive and a send buffer of 32 frames per connection, zero-filled: at RabbitMQ's default of
/// 128 KiB that is 8 MiB resident per connection, at 16 KiB it is 1 MiB. A larger body is only
/// split into more frames.
const FRAME_MAX: u32 = 16 * 1024;

/// `uri` with [`FRAME_MAX`] unless it names a frame size of its own.
fn with_frame_max(mut uri: AMQPUri) -> AMQPUri {
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(FRAME_MAX);
    }
    uri
}

/// The waits between connection attempts: doubling from 200 ms, each with a random jitter of up
/// to as much again, so the base stops at half of [`MAX_BACKOFF`] and no wait exceeds it.
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(MAX_BACKOFF / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A broker error met while talking to it: the broker may be back later.
pub(crate) fn unavailable(what: &str, error: &lapin::Error) -> QueueError {
    QueueError::Unavailable(format!("{what}: {error}"))
}

/// The broker refusing a declaration because a queue exists with other arguments is a
/// configuration problem, not an outage.
fn declare_error(error: &lapin::Error) -> QueueError {
    if let ErrorKind::ProtocolError(amqp) = error.kind()
        && matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        )
    {
        return QueueError::Other(format!(
            "declaring the rabbitmq topology: {error} (queue arguments cannot change on \
             redeclaration: change them through a policy, or delete the queue)"
        ));
    }
    unavailable("declaring the rabbitmq topology", error)
}

/// Whether the broker refused the login or the vhost.
fn refused_login(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        )
    )
}

/// Whether the broker refused a call because what it names does not exist.
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> AMQPUri {
        url.parse().unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    #[test]
    fn a_small_frame_size_is_asked_for_unless_the_url_names_one() {
        let uri = with_frame_max(parse("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));

        let uri = with_frame_max(parse("amqp://127.0.0.1:5672/%2f?frame_max=131072"));
        assert_eq!(uri.query.frame_max, Some(131_072));
    }

    #[test]
    fn no_wait_between_attempts_exceeds_the_cap() {
        for _ in 0..20 {
            let waits: Vec<Duration> = backoff().take(40).collect();
            assert!(waits.iter().all(|wait| *wait <= MAX_BACKOFF), "{waits:?}");
            assert!(
                waits.iter().skip(10).all(|wait| *wait >= MAX_BACKOFF / 2),
                "{waits:?}"
            );
        }
    }
}
