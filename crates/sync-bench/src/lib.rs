//! Throughput benchmarks of cio-chameleon-sync, run as `just bench <command>` (the `sync-bench`
//! binary). They show the speed targets of `docs/benchmarks.md`; no test asserts a speed. Each
//! command prints a readable summary, or one JSON object with `--json`, and stops by itself.
//!
//! - `receiver`: the receiver's router served in-process over a real queue, loaded by 64
//!   keep-alive HTTP clients posting signed 1 KiB Customer.io reporting events, with and without
//!   the dedupe claim store, next to a bare lapin confirm-publish loop on the same broker.
//! - `drain`: preload a work queue, then consume and ack it through `Queue::consume`, for both
//!   backends side by side.
//! - `upstream`: the real daemon binary against the sandbox (as two subprocesses) with
//!   Chameleon's and Customer.io's rate limits emulated: delivered updates and events per second,
//!   and the daemon's peak memory.
//!
//! This crate is a tool at the binary's edge, so its errors are `anyhow` errors with context.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`receiver`] and [`bare`]: the receiver benchmark and its bare-broker baseline.
//! - [`drain`]: the queue drain benchmark.
//! - [`upstream`]: the daemon-against-sandbox benchmark; [`process`] runs the two subprocesses
//!   and [`metrics_text`] reads the daemon's `/metrics`.
//! - [`payload`]: the deterministic request bodies every benchmark sends.
//! - [`backend`]: opening a queue backend for a run and removing it afterwards.
//! - [`load`]: closed-loop load tasks, the measurement window and their tallies.
//! - [`latency`]: latency samples and percentiles; [`cpu`]: where the CPU went in a window.
//! - [`machine`]: what the figures were measured on (cores, load, date).
//! - [`scratch`]: a temporary folder removed when dropped.

pub mod backend;
pub mod bare;
pub mod cli;
pub mod cpu;
pub mod drain;
pub mod latency;
pub mod load;
pub mod machine;
pub mod metrics_text;
pub mod payload;
pub mod process;
pub mod receiver;
pub mod scratch;
pub mod upstream;
