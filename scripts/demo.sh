#!/usr/bin/env bash
# The README's main demo. Today it shows the command line Rivet has; it grows with each
# subsystem until it is the full lab run (enroll → inspect → provision → boot from disk).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
rivet=target/debug/rivet

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "rivet --help: the command groups"
"$rivet" --help
step "What exists today"
echo "Only the command-line skeleton and the shared data model are built; every command group"
echo "says plainly that it is not implemented yet and exits with code 3, for example:"
"$rivet" lab up || echo "(exit code $?)"
