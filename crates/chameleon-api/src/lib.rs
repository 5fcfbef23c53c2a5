//! Typed client for Chameleon's REST API, as the worker uses it: profile and company upserts
//! (single and batch) and user events, all through the `/v3/observe/hooks` endpoints with the
//! account secret in the `X-Account-Secret` header.
//!
//! The client owns what is particular to Chameleon: the endpoints and their names, the secret
//! header, the batch bodies and their size limit, how Chameleon's answers read (batch item
//! errors, error messages, the waits a `429` states), and its limits (`requests_per_minute`, a
//! cap on requests in flight). What both upstream clients share comes from `upstream_http`: the
//! rate budget shared by every clone (with the pause of the whole client when Chameleon answers
//! `429`), the send step, the classification of every failure as rate limited, transient or
//! permanent, and the upstream metrics. It does not build bodies (that is `sync_core::inbound`),
//! batch messages or decide when to retry (that is the worker and `sync_core::retry`).
//!
//! # Layout
//! - [`config`]: [`ChameleonConfig`], with the defaults for Chameleon's documented limits.
//! - [`client`]: [`ChameleonClient`], the calls and which answers they expect.
//! - [`answer`]: what Chameleon's answers mean: batch item errors, error messages, `429` waits.
//! - [`error`]: [`ChameleonError`], the shared `UpstreamError` named for [`error::Chameleon`].

pub mod answer;
pub mod client;
pub mod config;
pub mod error;

pub use answer::{BatchAnswer, ItemError};
pub use client::ChameleonClient;
pub use config::ChameleonConfig;
pub use error::ChameleonError;

/// A batch request body must stay under this many bytes; Chameleon answers `413` otherwise. Its
/// documentation says "16 MB": read as decimal megabytes, the stricter of the two readings.
pub const MAX_BATCH_BYTES: usize = 16_000_000;
