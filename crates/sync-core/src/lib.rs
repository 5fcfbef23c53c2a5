//! The pure heart of cio-chameleon-sync: what a queued message is, how each provider's payload
//! maps onto the other provider's API, how webhook signatures are checked, and what a delivery
//! attempt can end in. Nothing here performs I/O, so every rule can be tested in isolation.
//!
//! # Layout
//! - [`envelope`]: the queued message (raw body plus metadata), its sources and directions.
//! - [`outcome`]: what a delivery attempt ends in, and how the queue is told to settle it.
//! - [`retry`]: the retry policy that turns a failed attempt into a delay or a dead letter.
//! - [`signature`]: HMAC verification for Customer.io and Chameleon webhooks.
//! - [`inbound`]: Customer.io payloads -> Chameleon calls (the worker's mapping).
//! - [`outbound`]: Chameleon webhooks and tour events -> Customer.io events (the relay's mapping).
//! - [`readiness`]: whether the process's consumers run and whether it is draining.
//! - [`secret`]: a string that never prints itself.
//! - [`time`]: the clock helpers shared by the other modules.
//! - [`truncate`]: cutting strings to an upstream's byte limit on a character boundary.

pub mod envelope;
mod ids;
pub mod inbound;
pub mod outbound;
pub mod outcome;
pub mod readiness;
pub mod retry;
pub mod secret;
pub mod signature;
pub mod time;
pub mod truncate;

pub use envelope::{Direction, Envelope, Source};
pub use outcome::{Failure, Outcome, Settlement};
pub use readiness::Readiness;
pub use retry::RetryPolicy;
pub use secret::Secret;
