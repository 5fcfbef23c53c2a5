//! sync-relay
