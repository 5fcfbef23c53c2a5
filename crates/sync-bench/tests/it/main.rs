//! Integration tests of the benchmarks: short runs that check the counting (everything accepted
//! is queued, everything queued is drained) and the daemon configuration they generate. Speeds
//! are never asserted. Broker tests need RabbitMQ at 127.0.0.1:5672 (`rabbitmq-server
//! -detached`); each run uses its own queue prefix and deletes it.

mod drain;
mod receiver;
mod support;
mod upstream;
