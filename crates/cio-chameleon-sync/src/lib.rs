//! `cio-chameleon-sync`: the binary and the library it is built from. It parses the command
//! line, loads and validates the configuration, sets up logs and metrics, wires the roles
//! together and handles signals. Everything it runs lives in the other crates of the workspace;
//! this one only assembles them, and its integration tests drive the assembled daemon.
//!
//! # Layout
//! - [`cli`]: commands and flags.
//! - [`settings`]: the configuration file and its environment overrides.
//! - [`telemetry`]: logs to standard error and the Prometheus recorder.
//! - [`wiring`]: building the queue and the API clients from settings.
//! - [`serve`]: the long-running roles (`serve`, `receive`, `work`, `relay`) and shutdown.
//! - [`dlq`]: the operator's dead-letter commands.
//! - [`demo`]: the sandbox and the one-command quickstart.

pub mod cli;
pub mod demo;
pub mod dlq;
pub mod serve;
pub mod settings;
pub mod telemetry;
pub mod wiring;
