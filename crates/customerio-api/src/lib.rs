//! Typed client for Customer.io's Track API, as the relay uses it: one person event through v1
//! (`POST /api/v1/customers/{identifier}/events`) or many through v2 (`POST /api/v2/batch`),
//! authenticated with HTTP Basic `site_id:api_key`.
//!
//! The client owns what is particular to Customer.io: the region's host, the Basic auth, the
//! request bodies and the split of events into batches within Customer.io's size limits, how its
//! answers read (`207` operation errors, error messages), and its pace of
//! `requests_per_second`. What both upstream clients share comes from `upstream_http`: the rate
//! budget shared by every clone (with the pause of the whole client when Customer.io answers
//! `429`), the send step, the classification of every failure as rate limited, transient or
//! permanent, and the upstream metrics. It does not map Chameleon webhooks to events (that is
//! `sync_core::outbound`) or decide when to retry (that is the relay and `sync_core::retry`).
//!
//! # Layout
//! - [`config`]: [`TrackConfig`] and [`Region`], which picks the Track host.
//! - [`client`]: [`TrackClient`], the calls and which answers they expect.
//! - [`batch`]: the v1 and v2 request bodies, the size limits and [`plan_batches`].
//! - [`answer`]: what Customer.io's answers mean: `207` operation errors and error messages.
//! - [`error`]: [`TrackError`], the shared `UpstreamError` named for [`error::CustomerIo`].

pub mod answer;
pub mod batch;
pub mod client;
pub mod config;
pub mod error;

pub use answer::{BatchResult, OpError};
pub use batch::{MAX_BATCH_BYTES, MAX_OP_BYTES, batch_operation, op_bytes, plan_batches};
pub use client::TrackClient;
pub use config::{Region, TrackConfig};
pub use error::TrackError;
pub use sync_core::outbound::{Identifier, TrackEvent};
