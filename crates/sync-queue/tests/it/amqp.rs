//! RabbitMQ backend tests.
