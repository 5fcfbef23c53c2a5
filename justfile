# Everyday commands. Install just with `cargo install just` (plain cargo commands in README.md
# work without it).

# Lint, then run every test.
default: lint test

# Start the sandbox and the daemon on the embedded queue, post the sample payloads, show results.
demo:
    cargo run --release -- demo

# Every test; broker tests need RabbitMQ at 127.0.0.1:5672 (`rabbitmq-server -detached`).
test:
    cargo test --workspace

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs.
ci:
    .ci/run

# Receiver and queue throughput against the local RabbitMQ; figures go to docs/benchmarks.md.
bench *args:
    cargo run --release -p sync-bench -- {{args}}

# Run every fuzz target for a while from its committed seeds, stopping at the first crash (needs
# nightly and `cargo install cargo-fuzz`; see docs/fuzzing.md).
fuzz seconds="60":
    for target in $(cargo fuzz list); do mkdir -p "fuzz/corpus/$target" && cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- -max_total_time={{seconds}} || exit 1; done
