//! The receiver's time and size limits against clients that abuse them: a body trickled or
//! stalled past `request_timeout` is answered `408` once the timeout is up, and a body over
//! `max_body_bytes` is answered `413` before the client has finished sending it, with or without
//! a `Content-Length`.
//!
//! These run on real sockets with real time (tokio's paused clock cannot drive a peer on the
//! other end of a TCP connection), with a one-second request timeout and generous upper bounds.

use std::time::Duration;

use sync_core::Direction;

use crate::routes::Route;
use crate::server::{self, Receiver};
use crate::wire::{self, Framing, Pace, Request};

/// Short, so that the timeout tests are quick.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Small, so that an oversize body is cheap to make.
const MAX_BODY: usize = 16 * 1024;

/// Slack on top of the request timeout for a loaded machine.
const SLACK: Duration = Duration::from_secs(10);

/// How long the client waits for any answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// An oversize body big enough that the socket buffers between client and server (a few MiB on
/// loopback) cannot hold it: the client can only finish sending it if the server reads it all.
const HUGE: usize = 64 * 1024 * 1024;

async fn receiver() -> Receiver {
    Receiver::start(server::config(MAX_BODY, REQUEST_TIMEOUT)).await
}

async fn send(receiver: &Receiver, request: &Request) -> wire::Answer {
    wire::send(receiver.addr, request, CLIENT_DEADLINE)
        .await
        .unwrap_or_else(|err| panic!("no answer: {err:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_answered_408_when_the_request_timeout_is_up() {
    let receiver = receiver().await;
    for route in [Route::Profiles, Route::Reporting, Route::Chameleon] {
        let body = route.genuine_body();
        let total = body.len();
        // One byte every 100 ms: the whole body would take half a minute or more.
        let request = route.authentic(body).pace(Pace::Trickle {
            piece: 1,
            every: Duration::from_millis(100),
        });

        let answer = send(&receiver, &request).await;

        assert_eq!(answer.status, 408, "{route:?}: {}", answer.head);
        assert!(
            answer.elapsed >= REQUEST_TIMEOUT,
            "{route:?}: answered after {:?}, before the timeout",
            answer.elapsed
        );
        assert!(
            answer.elapsed < REQUEST_TIMEOUT + SLACK,
            "{route:?}: answered only after {:?}",
            answer.elapsed
        );
        assert!(
            answer.body_bytes_sent < total,
            "{route:?}: the whole body went out first"
        );
    }

    for direction in Direction::ALL {
        let queued = receiver.take_queued(direction).await;
        assert!(
            queued.is_empty(),
            "a timed-out request was queued: {queued:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_when_the_request_timeout_is_up() {
    let receiver = receiver().await;
    // Headers promise 100 bytes, and none follow.
    let request = Request::post(Route::Profiles.path(), Vec::new())
        .header("content-length", "100")
        .framing(Framing::AsWritten);

    let answer = send(&receiver, &request).await;

    assert_eq!(answer.status, 408, "{}", answer.head);
    assert!(
        answer.elapsed >= REQUEST_TIMEOUT,
        "answered after {:?}",
        answer.elapsed
    );
    assert!(
        answer.elapsed < REQUEST_TIMEOUT + SLACK,
        "answered after {:?}",
        answer.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_answered_413_before_it_is_sent_whole() {
    let receiver = receiver().await;
    let body = vec![b' '; HUGE];
    for framing in [Framing::Length, Framing::Chunked] {
        for route in [Route::Profiles, Route::Chameleon] {
            // No valid signature is needed: the size is checked before anything reads the body.
            let request = Request::post(route.path(), body.clone()).framing(framing.clone());

            let answer = send(&receiver, &request).await;

            assert_eq!(answer.status, 413, "{route:?} {framing:?}: {}", answer.head);
            assert!(
                answer.body_bytes_sent < HUGE,
                "{route:?} {framing:?}: the client sent all {HUGE} bytes before the answer"
            );
        }
    }

    let health = send(&receiver, &Request::get("/healthz")).await;
    assert_eq!(health.status, 200, "{}", health.head);
    for direction in Direction::ALL {
        let queued = receiver.take_queued(direction).await;
        assert!(
            queued.is_empty(),
            "an oversize request was queued: {queued:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_is_exact() {
    let receiver = receiver().await;
    let body_of = |len: usize| {
        let prefix = r#"{"uid":"u1","pad":""#;
        let pad = "x".repeat(len - prefix.len() - 2);
        format!(r#"{prefix}{pad}"}}"#).into_bytes()
    };

    for framing in [Framing::Length, Framing::Chunked] {
        let over = body_of(MAX_BODY + 1);
        let answer = send(
            &receiver,
            &Route::Profiles.authentic(over).framing(framing.clone()),
        )
        .await;
        assert_eq!(
            answer.status, 413,
            "{framing:?}, one byte over: {}",
            answer.head
        );

        let at_limit = body_of(MAX_BODY);
        assert_eq!(at_limit.len(), MAX_BODY);
        let request = Route::Profiles
            .authentic(at_limit.clone())
            .framing(framing.clone());
        let answer = send(&receiver, &request).await;
        assert_eq!(
            answer.status, 202,
            "{framing:?}, at the limit: {}",
            answer.head
        );
        let queued = receiver.take_only(Direction::Inbound).await;
        assert_eq!(queued.body, at_limit, "{framing:?}: the queued body");
    }
}

/// A client that never finishes its request head is let go too: the connection layer times out
/// the head, since the timeout layer only starts once the head has been read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_off() {
    let receiver = receiver().await;
    let deadline = REQUEST_TIMEOUT + SLACK;
    // A head that never ends: one more header line every half second.
    let mut stream = tokio::net::TcpStream::connect(receiver.addr)
        .await
        .expect("connect");
    let head = format!("POST {} HTTP/1.1\r\nhost: x\r\n", Route::Profiles.path());
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(deadline, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        let mut line = 0u32;
        loop {
            tokio::select! {
                // An answer, a close or a reset: the server let go either way.
                _ = stream.read(&mut buf) => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    line += 1;
                    let header = format!("x-slow-{line}: 1\r\n");
                    if stream.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the receiver still held the connection after {:?} of an unfinished request head",
        started.elapsed()
    );
}

/// Requests beyond `max_concurrent_requests` are refused with `503` and `Retry-After` at once,
/// instead of queueing without bound; the ones in progress are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_cap_get_503_with_retry_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = server::config(MAX_BODY, Duration::from_secs(30));
    config.max_concurrent_requests = 2;
    let receiver = Receiver::start(config).await;

    // Two requests that hold their permits: headers sent, body promised but not yet sent.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(receiver.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n",
            Route::Profiles.path()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        held.push(stream);
    }
    // Give the server a moment to start handling both (they are waiting for their bodies).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let request = Request::post(Route::Profiles.path(), "{}");
    let answer = wire::send(receiver.addr, &request, CLIENT_DEADLINE)
        .await
        .expect("an answer");
    assert_eq!(answer.status, 503, "{}", answer.head);
    assert!(
        answer.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        answer.head
    );

    // The held requests finish normally once their bodies arrive.
    for mut stream in held {
        stream.write_all(b"{}").await.expect("write body");
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(CLIENT_DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 2"),
            "{text}"
        );
        assert!(!text.starts_with("HTTP/1.1 503"), "{text}");
    }
}

/// Send `bytes` on a new connection and read one whole answer (head and body) as text.
async fn exchange(receiver: &Receiver, bytes: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(receiver.addr)
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write the request");
    let mut received = Vec::new();
    let read_whole = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(CLIENT_DEADLINE, read_whole)
        .await
        .expect("an answer within the client's deadline");
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// A `Content-Length` over the limit is answered `413` from the head alone, without waiting for a
/// body that could not be accepted anyway; the answer names the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_answered_413_at_once() {
    let request_timeout = Duration::from_secs(60);
    let receiver = Receiver::start(server::config(MAX_BODY, request_timeout)).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        Route::Profiles.path(),
        MAX_BODY * 1000
    );

    let (answer, elapsed) = exchange(&receiver, head.as_bytes()).await;

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(&format!(
            r#"{{"error":"body is larger than server.max_body_bytes ({MAX_BODY} bytes)"}}"#
        )),
        "{answer}"
    );
    assert!(
        elapsed < request_timeout / 2,
        "answered after {elapsed:?}, as if waiting for the body"
    );
}

/// The answers the framework makes (a timeout, a wrong method) and a body the JSON parser refuses
/// say what is wrong in the same JSON shape as every other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong_in_json() {
    let receiver = receiver().await;

    let stalled = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        Route::Profiles.path()
    );
    let (answer, _) = exchange(&receiver, stalled.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(
            r#"{"error":"the request took longer than server.request_timeout (1000 ms)"}"#
        ),
        "{answer}"
    );

    let wrong_method = format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", Route::Profiles.path());
    let (answer, _) = exchange(&receiver, wrong_method.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("allow: post"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"method not allowed on this route"}"#),
        "{answer}"
    );

    let body = r#"{"uid":"u1","n":1e400}"#;
    let out_of_range = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        Route::Profiles.path(),
        body.len()
    );
    let (answer, _) = exchange(&receiver, out_of_range.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("body is not valid JSON: number out of range at line 1 column"),
        "{answer}"
    );
}
