//! RabbitMQ backend.
