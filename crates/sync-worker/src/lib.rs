//! sync-worker
