//! Typed client for Customer.io's Track API, as the relay uses it: one person event through v1
//! (`POST /api/v1/customers/{identifier}/events`) or many through v2 (`POST /api/v2/batch`),
//! authenticated with HTTP Basic `site_id:api_key`.
//!
//! The client owns what talking to Customer.io takes: the region's host, a rate budget shared by
//! every clone (an even pace of `requests_per_second`, and a pause of the whole client when
//! Customer.io answers `429`), the split of events into batches within Customer.io's size limits,
//! the classification of every failure as rate limited, transient or permanent, and the upstream
//! metrics. It does not map Chameleon webhooks to events (that is `sync_core::outbound`) or decide
//! when to retry (that is the relay and `sync_core::retry`).
//!
//! # Layout
//! - [`config`]: [`TrackConfig`] and [`Region`], which picks the Track host.
//! - [`client`]: [`TrackClient`], the calls and how an answer becomes a result.
//! - [`batch`]: the v1 and v2 request bodies, the size limits and [`plan_batches`].
//! - [`answer`]: what Customer.io's answers mean: `207` operation errors, error messages,
//!   `Retry-After`.
//! - [`error`]: [`TrackError`] and its mapping onto a delivery [`sync_core::Outcome`].
//! - `budget`: the shared pace and pause, on tokio's clock.
//! - `telemetry`: the upstream request metrics.

pub mod answer;
pub mod batch;
mod budget;
pub mod client;
pub mod config;
pub mod error;
mod telemetry;

pub use answer::{BatchResult, OpError};
pub use batch::{MAX_BATCH_BYTES, MAX_OP_BYTES, batch_operation, op_bytes, plan_batches};
pub use client::TrackClient;
pub use config::{Region, TrackConfig};
pub use error::TrackError;
pub use sync_core::outbound::{Identifier, TrackEvent};
