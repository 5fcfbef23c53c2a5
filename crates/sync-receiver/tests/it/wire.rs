//! A deliberately naive HTTP/1.1 client over a raw TCP socket. A real client refuses to send
//! most of what these tests need (invalid header bytes, lying `Content-Length`, broken chunk
//! framing, bodies trickled a byte at a time), so requests are written byte for byte here and
//! only the status line of the answer is read.
//!
//! The body is written while the answer is read, so a server that answers before it has read
//! the whole body (`413`, `408`) is seen doing so, and [`Answer::body_bytes_sent`] tells how much
//! of the body had left the client by then.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// Pieces a body is written in, unless it is trickled.
const PIECE: usize = 16 * 1024;

/// How the body is framed on the wire.
#[derive(Clone, Debug)]
pub enum Framing {
    /// `Content-Length` equal to the body's length.
    Length,
    /// `Transfer-Encoding: chunked`, no length given.
    Chunked,
    /// `Content-Length` claims this many bytes, the body is sent, then the client stops sending
    /// (half-closes) without the rest.
    CutShort { declared: usize },
    /// No framing header is added; the request's own headers say whatever they say.
    AsWritten,
}

/// How fast the body leaves the client.
#[derive(Clone, Debug)]
pub enum Pace {
    /// As fast as the socket takes it.
    Full,
    /// `piece` bytes, then a pause of `every`, and so on.
    Trickle { piece: usize, every: Duration },
}

/// One request, written exactly as given apart from the framing header.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, raw bytes (they need not be a valid URI).
    pub target: Vec<u8>,
    /// Header names and raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    pub pace: Pace,
}

impl Request {
    pub fn post(target: impl Into<Vec<u8>>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "POST".to_owned(),
            target: target.into(),
            headers: vec![("content-type".to_owned(), b"application/json".to_vec())],
            body: body.into(),
            framing: Framing::Length,
            pace: Pace::Full,
        }
    }

    pub fn get(target: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "GET".to_owned(),
            headers: Vec::new(),
            ..Self::post(target, Vec::new())
        }
    }

    /// Add a header (a second one of the same name is sent as a second line).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Replace every header of this name with one value (or none, for `None`).
    pub fn set_header(mut self, name: &str, value: Option<&[u8]>) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_owned(), value.to_vec()));
        }
        self
    }

    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    pub fn pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }

    fn head(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = Vec::new();
        head.extend_from_slice(self.method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(&self.target);
        head.extend_from_slice(b" HTTP/1.1\r\n");
        head.extend_from_slice(format!("host: {addr}\r\nconnection: close\r\n").as_bytes());
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        match self.framing {
            Framing::Length => head
                .extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes()),
            Framing::CutShort { declared } => {
                head.extend_from_slice(format!("content-length: {declared}\r\n").as_bytes())
            }
            Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::AsWritten => {}
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// What came back.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line and headers, as text.
    pub head: String,
    /// How many body bytes the client had written when the answer's head arrived.
    pub body_bytes_sent: usize,
    /// From connecting to the answer's head.
    pub elapsed: Duration,
}

/// Why there is no answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// Nothing within the client's deadline: the server hung.
    TimedOut,
    /// The server closed the connection without a status line.
    Closed { received: String },
    /// The socket failed before a status line arrived.
    Io(std::io::Error),
}

/// Send `request` on a new connection and wait at most `deadline` for the answer's head.
pub async fn send(
    addr: SocketAddr,
    request: &Request,
    deadline: Duration,
) -> Result<Answer, NoAnswer> {
    let started = Instant::now();
    let sent = AtomicUsize::new(0);
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(NoAnswer::Io)?;
        let (mut reader, mut writer) = stream.into_split();
        let head = request.head(addr);

        // The writer never finishes the race: a server that stops reading leaves it blocked,
        // and a server that answers early is heard by the reader meanwhile. It keeps the write
        // half alive once done, since dropping it would half-close the connection.
        let write = async {
            let _ = write_request(&mut writer, &head, request, &sent).await;
            std::future::pending::<Result<(u16, String), NoAnswer>>().await
        };
        let read = async {
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                if let Some(end) = find(&received, b"\r\n\r\n") {
                    let (status, head) = parse_head(&received[..end])?;
                    // An interim answer (`100 Continue`) is followed by the real one.
                    if !(100..200).contains(&status) {
                        return Ok((status, head));
                    }
                    received.drain(..end + 4);
                    continue;
                }
                match reader.read(&mut buf).await {
                    Ok(0) => return Err(closed(&received)),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(_) if find(&received, b"\r\n").is_some() => {
                        return parse_head(&received);
                    }
                    Err(err) => return Err(NoAnswer::Io(err)),
                }
            }
        };
        tokio::select! {
            answer = read => answer,
            answer = write => answer,
        }
    };

    let (status, head) = tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| NoAnswer::TimedOut)??;
    Ok(Answer {
        status,
        head,
        body_bytes_sent: sent.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
    })
}

async fn write_request(
    writer: &mut OwnedWriteHalf,
    head: &[u8],
    request: &Request,
    sent: &AtomicUsize,
) -> std::io::Result<()> {
    writer.write_all(head).await?;

    let piece = match request.pace {
        Pace::Full => PIECE,
        Pace::Trickle { piece, .. } => piece.max(1),
    };
    for chunk in request.body.chunks(piece) {
        if matches!(request.framing, Framing::Chunked) {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(chunk).await?;
            writer.write_all(b"\r\n").await?;
        } else {
            writer.write_all(chunk).await?;
        }
        sent.fetch_add(chunk.len(), Ordering::SeqCst);
        if let Pace::Trickle { every, .. } = request.pace {
            tokio::time::sleep(every).await;
        }
    }

    match request.framing {
        Framing::Chunked => writer.write_all(b"0\r\n\r\n").await?,
        Framing::CutShort { .. } => writer.shutdown().await?,
        Framing::Length | Framing::AsWritten => {}
    }
    Ok(())
}

fn parse_head(head: &[u8]) -> Result<(u16, String), NoAnswer> {
    let text = String::from_utf8_lossy(head).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    match status {
        Some(status) => Ok((status, text)),
        None => Err(NoAnswer::Closed { received: text }),
    }
}

fn closed(received: &[u8]) -> NoAnswer {
    NoAnswer::Closed {
        received: String::from_utf8_lossy(received).into_owned(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
