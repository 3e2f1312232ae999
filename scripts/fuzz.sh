#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds. The machine has only the stable toolchain;
# RUSTC_BOOTSTRAP lets it accept the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! grep -q "^\[\[bin\]\]" fuzz/Cargo.toml; then
  echo "fuzz: no fuzz targets exist yet (they come with the qcow2, DHCP, TFTP, RMCP+ and address parsers)" >&2
  exit 3
fi
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds"
done
