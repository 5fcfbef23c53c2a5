//! Backend-independent queue behaviour, run against each backend.
