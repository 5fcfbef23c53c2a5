//! Local stand-ins for the Chameleon and Customer.io APIs, for demos and tests.
//!
//! A [`Sandbox`] serves the Chameleon observe-hook writes and the Customer.io Track API calls
//! the daemon makes, checks each request the way the real service does (credentials, identity,
//! reserved names, size limits, ULID event ids), answers in that service's shapes, and records
//! what it received. It can be told to fail ([`Fault`]) and can emulate both rate limits. The
//! binary serves it as `cio-chameleon-sync sandbox` for the quickstart demo; other crates' tests
//! run it in-process as their fake upstream:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use sync_sandbox::{Sandbox, SandboxConfig, Upstream};
//!
//! let (sandbox, address) = Sandbox::spawn(SandboxConfig::default()).await?;
//! // Point a client at http://{address} with the demo credentials, then:
//! let delivered = sandbox
//!     .wait_for(|requests| !requests.is_empty(), Duration::from_secs(10))
//!     .await;
//! let events = sandbox.accepted(Upstream::Chameleon);
//! # let _ = (delivered, events);
//! # Ok(())
//! # }
//! ```
//!
//! What it does not do: store or read back data (`/v3/analyze/*` is not served), the
//! secret-in-the-path Chameleon routes (the daemon must not use them), or Customer.io object and
//! delivery operations.
//!
//! # Layout
//! - [`sandbox`]: the [`Sandbox`] handle, its router, and the path every request takes: fault,
//!   route and method, credentials, rate limit, the upstream's rules, journal, log line.
//! - [`chameleon`]: Chameleon's routes, rules and answer shapes (one example per request).
//! - [`customerio`]: the Track API's routes, rules and answer shapes (one example per request).
//! - [`control`]: the `/_sandbox` routes that read the journal and arm faults over HTTP.
//! - [`fault`]: injected faults.
//! - [`journal`]: the record of received requests ([`Recorded`]).
//! - [`config`]: the expected credentials and emulated limits ([`SandboxConfig`]).
//! - `rate`, `request`, `reply`: the fixed-window limiter, body parsing, and answers.

pub mod chameleon;
pub mod config;
pub mod control;
pub mod customerio;
pub mod fault;
pub mod journal;
mod rate;
mod reply;
mod request;
pub mod sandbox;

pub use config::SandboxConfig;
pub use fault::{Fault, FaultKind};
pub use journal::{Recorded, Upstream};
pub use sandbox::Sandbox;
