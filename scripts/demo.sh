#!/usr/bin/env bash
# The README's main demo: the most complete end-to-end run Rivet can do today. Each part
# is a self-contained script under scripts/demo/ that cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
export RIVET="$PWD/target/debug/rivet"

banner() { printf '\n\033[1;36m######## %s\033[0m\n' "$*"; }

banner "Streaming a qcow2 image over HTTP to disk, verified inline (rivet image)"
scripts/demo/images.sh

banner "A lab VM behind ipmi_sim: inspected by the agent, provisioned, booted from its disk (rivet lab)"
scripts/demo/lab.sh ipmi

banner "The same through Redfish: a libvirt VM behind sushy-tools (rivet lab --bmc redfish)"
scripts/demo/lab.sh redfish
