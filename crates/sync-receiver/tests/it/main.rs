//! Integration tests of the receiver: the real router over the embedded SQLite queue, served on
//! a local port and driven by a raw HTTP/1.1 client, so that hostile requests reach it byte for
//! byte as an attacker would send them.
//!
//! - [`server`]: starting a receiver on a temporary queue, and looking into that queue.
//! - [`wire`]: the raw client.
//! - [`routes`]: the webhook routes, genuine bodies, and signing.
//! - [`hostile`]: a few hundred generated bad requests against every route.
//! - [`limits`]: slow and oversize bodies against the request timeout and the body limit.

mod hostile;
mod limits;
mod routes;
mod server;
mod wire;
