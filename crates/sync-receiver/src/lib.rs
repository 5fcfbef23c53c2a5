//! sync-receiver
