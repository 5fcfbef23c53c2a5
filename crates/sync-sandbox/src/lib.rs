//! sync-sandbox
