//! Answers that are broken or missing, from a raw TCP listener: a `2xx` whose body is cut off
//! (taken when the call says a write needs nothing back, transient otherwise), a connection
//! closed with no answer, and silence until the transport's timeout. None of these is tried
//! again in-process: each reached the upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Call, ExampleError, post, transport};

/// An answer that promises 100 bytes of body and sends 7 before closing the connection.
const CUT_OFF: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial";

/// A whole `200` answer.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// What the raw listener does once it has read a request.
#[derive(Clone, Copy)]
pub enum Reply {
    /// Writes these bytes and closes the connection.
    Write(&'static [u8]),
    /// Closes the connection without a word.
    Close,
    /// Keeps the connection open and says nothing.
    Silence,
}

/// Serves every connection with `reply`; returns the base URL.
async fn raw_server(reply: Reply) -> String {
    counted_raw_server(reply).await.0
}

/// Serves every connection with `reply`; returns the base URL and the count of connections
/// accepted so far.
pub async fn counted_raw_server(reply: Reply) -> (String, Arc<AtomicUsize>) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("no local listener: {error}"),
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => panic!("listener without an address: {error}"),
    };
    (format!("http://{address}"), serve(listener, reply))
}

/// Serves every connection `listener` accepts with `reply`, in the background; returns the count
/// of connections accepted so far.
pub fn serve(listener: TcpListener, reply: Reply) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The whole request is read first, so closing sends a clean end of stream.
                if !read_request(&mut stream).await {
                    return;
                }
                match reply {
                    Reply::Write(answer) => {
                        let _ = stream.write_all(answer).await;
                        let _ = stream.shutdown().await;
                    }
                    Reply::Close => {
                        let _ = stream.shutdown().await;
                    }
                    Reply::Silence => std::future::pending::<()>().await,
                }
            });
        }
    });
    accepted
}

/// Reads one request's head and its `content-length` bytes of body; false if the peer left.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => seen.extend_from_slice(&chunk[..read]),
        }
    }
}

#[tokio::test]
async fn a_write_answered_2xx_is_taken_even_when_the_body_is_cut_off() {
    let url = raw_server(Reply::Write(CUT_OFF)).await;
    let accepted = post(&transport(|_| {}), Call::Write, &url).await;
    let Ok(accepted) = accepted else {
        panic!("expected the write to be taken, got {accepted:?}");
    };
    assert_eq!(accepted.status.as_u16(), 200);
    assert!(accepted.body.is_empty());
}

#[tokio::test]
async fn a_read_whose_body_is_cut_off_is_transient() {
    let url = raw_server(Reply::Write(CUT_OFF)).await;
    let error = post(&transport(|_| {}), Call::Read, &url).await;
    match error {
        Err(ExampleError::Transient {
            status: Some(200),
            message,
        }) => {
            assert!(
                message.starts_with("item read: 200 answer cut off: "),
                "{message}"
            );
            assert!(!message.contains("127.0.0.1"), "url in {message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_transient_and_leaves_the_url_out() {
    let url = format!("{}/people/mira@example.org", raw_server(Reply::Close).await);
    let error = post(&transport(|_| {}), Call::Write, &url).await;
    match error {
        Err(ExampleError::Transient {
            status: None,
            message,
        }) => {
            assert!(message.starts_with("item write: "), "{message}");
            assert!(!message.contains("127.0.0.1"), "url in {message}");
            assert!(!message.contains("mira"), "path in {message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn no_answer_in_time_is_transient_and_not_sent_again() {
    let (url, accepted) = counted_raw_server(Reply::Silence).await;
    let transport = transport(|c| c.timeout = Duration::from_millis(300));
    let error = post(&transport, Call::Write, &url).await;
    assert_eq!(
        error,
        Err(ExampleError::Transient {
            status: None,
            message: "item write: no answer within 300ms".to_owned()
        })
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
