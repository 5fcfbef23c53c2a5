//! The receiver: the daemon's HTTP face (DESIGN §3). It authenticates each provider webhook,
//! checks its top-level shape, and enqueues the raw body in an [`Envelope`]; it answers success
//! only once the queue has confirmed the message. It never maps payloads: that happens later in
//! the worker and the relay, so a mapping bug cannot lose what was accepted.
//!
//! # Layout
//! - [`config`]: the typed settings the binary hands over.
//! - [`routes`]: the router, the handlers and their answers.
//! - [`body`]: reading a body's top level without building it.
//! - [`limits`]: the guards every request passes (body size, time, concurrency, JSON depth).
//! - [`serve`]: the HTTP/1.1 connection loop, with the header timeout and graceful shutdown.
//! - [`redact`]: request paths as they may appear in logs, with the endpoint token masked.
//!
//! [`Envelope`]: sync_core::Envelope

pub mod body;
pub mod config;
pub mod limits;
pub mod redact;
pub mod routes;
pub mod serve;

pub use config::ReceiverConfig;
pub use routes::{AppState, router};
pub use serve::serve;
