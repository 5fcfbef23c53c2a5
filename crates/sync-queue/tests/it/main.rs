//! Integration tests of both queue backends against real storage: a RabbitMQ broker at
//! 127.0.0.1:5672 (guest/guest) and SQLite files in temporary folders.

mod amqp;
mod conformance;
mod embedded;
