//! cio-chameleon-sync
fn main() {}
