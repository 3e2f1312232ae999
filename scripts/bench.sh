#!/usr/bin/env bash
# Benchmarks, each side by side with the real tool doing the same work in the same run.
# Every subsystem contributes one script under scripts/bench/; results and reports go to
# target/bench/. `just bench` runs them all; `scripts/bench.sh images` runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
shopt -s nullglob
if [ $# -gt 0 ]; then
  scripts=()
  for name in "$@"; do scripts+=("scripts/bench/$name.sh"); done
else
  scripts=(scripts/bench/*.sh)
fi
if [ ${#scripts[@]} -eq 0 ]; then
  echo "bench: no benchmarks exist yet (they come with the image, BMC, boot-service and engine subsystems)" >&2
  exit 3
fi
cargo build --quiet --release --workspace --bins
for script in "${scripts[@]}"; do
  echo "== bench: $(basename "$script" .sh)"
  bash "$script"
done
echo "bench: reports are in target/bench/"
