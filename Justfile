# Rivet's tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := env("HOME") / ".cargo/bin:" + env("PATH")

# List the recipes.
default:
    @just --list --unsorted

# Install every system package and Python tool the tests need (idempotent; needs root).
deps:
    scripts/deps.sh

# Build every crate, test and binary.
build:
    cargo build --workspace --all-targets

# Check formatting and lints, run the whole test suite against real peers, build the guide.
test: deps
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo build --workspace --bins
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc
    scripts/docs.sh

# The main demo: the most complete end-to-end run Rivet can do today.
demo: deps
    scripts/demo.sh

# Benchmarks side by side with the real tools; results go to target/bench/.
bench: deps
    scripts/bench.sh

# Run every fuzz target for the given number of seconds each.
fuzz seconds="60":
    scripts/fuzz.sh {{seconds}}

# Build the agent's bootable image (kernel, initramfs, hybrid BIOS/UEFI ISO) into target/agent-image/.
agent-image *args:
    scripts/agent-image.sh {{args}}

# Build the user guide into docs/book.
docs:
    scripts/docs.sh
