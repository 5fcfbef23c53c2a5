//! End-to-end tests of the assembled daemon: real HTTP requests to the receiver, a real RabbitMQ
//! broker at 127.0.0.1:5672 (or the embedded queue), and the sandbox playing both upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod cli;
mod lifecycle;
mod pipeline;
mod resilience;
mod secrets;
