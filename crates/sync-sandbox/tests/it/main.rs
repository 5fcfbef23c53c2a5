//! Integration tests of the sandbox over real HTTP: each test spawns its own sandbox on a free
//! loopback port and talks to it with reqwest, as the daemon's clients will.

mod chameleon;
mod control;
mod customerio;
mod faults;
mod rate_limits;
mod recording;
mod support;
