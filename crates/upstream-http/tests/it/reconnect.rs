//! Connection failures retried inside one call: a port nobody listens on yet, then does; a
//! schedule that runs out; a request that reached the upstream before its connection was lost
//! (never sent again); and an in-flight slot given back while a retry waits.
//!
//! Each test watches `ccsync_upstream_reconnects_total` through a recorder local to its thread;
//! the default `tokio::test` runtime polls every task on that thread. These run on the real
//! clock because connections are real; they poll for conditions with generous deadlines.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::net::TcpListener;
use upstream_http::{Budget, Reconnect};

use crate::raw::{OK, Reply, counted_raw_server, serve};
use crate::{Call, ExampleError, post, transport};

/// How long a condition a test waits for may take to come true on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// Counts the in-process reconnects of the made-up upstream; every other series is ignored.
#[derive(Default)]
struct Reconnects {
    count: Arc<AtomicU64>,
}

impl Reconnects {
    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` reconnects were counted.
    async fn reach(&self, n: u64) {
        let waited = tokio::time::timeout(DEADLINE, async {
            while self.count() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{} reconnects after {DEADLINE:?}, waited for {n}",
            self.count()
        );
    }
}

impl Recorder for Reconnects {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let ours = key.name() == "ccsync_upstream_reconnects_total"
            && key
                .labels()
                .any(|l| l.key() == "upstream" && l.value() == "example");
        if ours {
            Counter::from_arc(Arc::clone(&self.count))
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// A local port nobody listens on: it was free a moment ago.
fn free_port() -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    match port {
        Ok(address) => address.port(),
        Err(error) => panic!("no free local port: {error}"),
    }
}

/// Runs `call` until `condition` is done, and fails if the call finishes first.
async fn until<T: std::fmt::Debug>(call: impl Future<Output = T>, condition: impl Future) {
    tokio::select! {
        done = call => panic!("the call finished early: {done:?}"),
        _ = condition => {}
    }
}

#[tokio::test]
async fn a_refused_connection_is_tried_again_until_the_upstream_listens() {
    let reconnects = Reconnects::default();
    let _recorder = metrics::set_default_local_recorder(&reconnects);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/items");
    // Waits long enough that the port is listening well before the retries run out.
    let transport = transport(|c| {
        c.reconnect = Reconnect {
            retries: 6,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        }
    });

    let (answer, accepted) = tokio::join!(post(&transport, Call::Write, &url), async {
        // Two tries are refused; then the port starts listening.
        reconnects.reach(2).await;
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => serve(listener, Reply::Write(OK)),
            Err(error) => panic!("port {port} could not be bound again: {error}"),
        }
    });

    let Ok(answer) = answer else {
        panic!("expected the write to get through, got {answer:?}");
    };
    assert_eq!(answer.status.as_u16(), 200);
    assert_eq!(&answer.body[..], b"ok");
    assert!(reconnects.count() >= 2, "{} reconnects", reconnects.count());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_port_that_never_listens_ends_the_call_after_the_schedule() {
    let reconnects = Reconnects::default();
    let _recorder = metrics::set_default_local_recorder(&reconnects);
    let url = format!("http://127.0.0.1:{}/people/mira", free_port());
    let transport = transport(|c| {
        c.reconnect = Reconnect {
            retries: 2,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        }
    });

    let error = post(&transport, Call::Write, &url).await;
    match error {
        Err(ExampleError::Transient {
            status: None,
            message,
        }) => {
            assert!(message.starts_with("item write: "), "{message}");
            assert!(message.ends_with(" (3 tries)"), "{message}");
            assert!(!message.contains("mira"), "path in {message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert_eq!(reconnects.count(), 2);

    // Without a schedule the first refusal ends the call.
    let transport = crate::transport(|c| c.reconnect = Reconnect::NEVER);
    let error = post(&transport, Call::Write, &url).await;
    assert!(
        matches!(&error, Err(ExampleError::Transient { message, .. }) if !message.contains("tries")),
        "{error:?}"
    );
    assert_eq!(reconnects.count(), 2);
}

#[tokio::test]
async fn a_request_that_reached_the_upstream_is_not_sent_again() {
    let reconnects = Reconnects::default();
    let _recorder = metrics::set_default_local_recorder(&reconnects);
    let (url, accepted) = counted_raw_server(Reply::Close).await;

    let error = post(&transport(|_| {}), Call::Write, &url).await;
    match error {
        Err(ExampleError::Transient {
            status: None,
            message,
        }) => assert!(!message.contains("tries"), "{message}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(reconnects.count(), 0);
}

#[tokio::test]
async fn a_retry_waiting_to_reconnect_holds_no_in_flight_slot() {
    let reconnects = Reconnects::default();
    let _recorder = metrics::set_default_local_recorder(&reconnects);
    let refused = format!("http://127.0.0.1:{}/", free_port());
    let (open, _) = counted_raw_server(Reply::Write(OK)).await;
    // One request in flight at most, and a retry that waits far longer than the test's deadline.
    let transport = transport(|c| {
        let requests = std::num::NonZeroU32::new(1000).unwrap_or(std::num::NonZeroU32::MIN);
        c.budget = Budget::new(Duration::from_secs(1), requests, Some(1));
        c.reconnect = Reconnect {
            retries: 1,
            first_delay: Duration::from_secs(600),
            max_delay: Duration::from_secs(600),
        };
    });

    let waiting = post(&transport, Call::Write, &refused);
    tokio::pin!(waiting);
    until(&mut waiting, reconnects.reach(1)).await;

    // The refused call sleeps before its retry; the only slot is free for another request.
    let other = tokio::time::timeout(DEADLINE, post(&transport, Call::Read, &open)).await;
    assert!(matches!(other, Ok(Ok(_))), "{other:?}");
}
