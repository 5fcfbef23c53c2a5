//! Embedded backend tests.
