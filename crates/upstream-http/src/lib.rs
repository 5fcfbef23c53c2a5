//! What the two upstream API clients (`chameleon-api` and `customerio-api`) share: sending one
//! request under a rate budget and turning the answer into a result.
//!
//! This crate owns the rate budget (an even pace with no burst, an optional cap on requests in
//! flight, and a pause of the whole client after a `429`), the set of statuses that mean "try
//! later", the in-process retry of requests that could not connect, the upstream request metrics
//! (`ccsync_upstream_*`, with the upstream's name as a label value), the error type every call
//! returns with its classification and its delivery outcome, the reading of wait headers and of
//! error bodies nobody understands, and the send step that ties them together.
//!
//! It does not know either API. Paths, credentials, request bodies, answer shapes and size limits
//! stay in each client, which tells this crate the little it needs through [`Upstream`] (the
//! upstream's names), [`ApiCall`] (how a call is named, and how an error answer and a `429` to it
//! read) and [`TransportConfig`] (headers, budget, timeout, waits, retryable statuses and the
//! reconnect schedule). Beyond a few quick reconnects it does not decide when to retry either:
//! that is the caller and `sync_core::retry`.
//!
//! # Layout
//! - [`upstream`]: the [`Upstream`] and [`ApiCall`] traits a client implements.
//! - [`transport`]: [`Transport`], the send step: budget, request, metrics and classification.
//! - [`error`]: [`UpstreamError`] and its mapping onto a delivery [`sync_core::Outcome`].
//! - [`budget`]: [`Budget`], the shared pace, in-flight cap and pause, on tokio's clock.
//! - [`statuses`]: [`StatusSet`], the error statuses a transport treats as transient.
//! - [`reconnect`]: [`Reconnect`], the in-process retry schedule of connection failures.
//! - [`answer`]: what both upstreams answer alike: waits in seconds, indexes, unreadable bodies.
//! - `telemetry`: the upstream request metrics.

pub mod answer;
pub mod budget;
pub mod error;
pub mod reconnect;
pub mod statuses;
mod telemetry;
pub mod transport;
pub mod upstream;

pub use budget::Budget;
pub use error::UpstreamError;
pub use reconnect::Reconnect;
pub use statuses::{StatusSet, StatusSetError};
pub use transport::{Accepted, MIN_RATE_LIMIT_WAIT, Transport, TransportConfig};
pub use upstream::{ApiCall, Upstream};
