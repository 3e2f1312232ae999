#!/usr/bin/env bash
# Per-host agent ISOs for virtual media: the engine's slot rewrite (engine/examples/
# agent_iso_bench.rs) side by side with rebuilding the hybrid BIOS+UEFI ISO per host with
# grub-mkrescue (xorriso) from the template's own files with the host's rivet/cmdline —
# what a tool-based builder does (Ironic, too, rebuilds a node's ISO from its files).
# xorriso cannot patch the template in place (`-boot_image any replay` refuses
# grub-mkrescue's GPT: "Overlapping GPT entries requested"). The rebuilt ISO is checked to
# carry the host's cmdline.
#
# Knobs: AGENT_ISO_BENCH_HOSTS (default 1000, the engine side), AGENT_ISO_BENCH_REBUILDS
# (default 10, per-host grub-mkrescue runs). Report: target/bench/agent_iso.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

HOSTS=${AGENT_ISO_BENCH_HOSTS:-1000}
RUNS=${AGENT_ISO_BENCH_REBUILDS:-10}
OUT=target/bench/agent_iso
mkdir -p "$OUT"
for tool in xorriso grub-mkrescue; do
  command -v "$tool" >/dev/null || { echo "bench agent_iso: $tool is missing; run just deps" >&2; exit 1; }
done

template=target/agent-image/rivet-agent.iso
if ! grep -qa rivet-cmdline-slot-v1 "$template" 2>/dev/null; then
  scripts/agent-image.sh --fast >/dev/null
fi

cargo build --quiet --release -p rivet-engine --example agent_iso_bench
engine_json="$OUT/engine.json"
target/release/examples/agent_iso_bench "$template" "$HOSTS" "$engine_json" >/dev/null

# The same parameters xorriso writes for one host, in the slot's format.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
params="rivet.url=https://10.77.0.1:8443 rivet.token=0000000000000000000000000000000000000000000 rivet.host=0"
printf '%-4095s\n' "$params" > "$work/cmdline"
# The template's files, without the boot loader files grub-mkrescue adds itself.
xorriso -osirrox on -indev "$template" -extract /boot "$work/tree/boot" \
  -extract /rivet "$work/tree/rivet" >/dev/null 2>&1
chmod -R u+w "$work/tree"
rm -rf "$work/tree/boot/grub/i386-pc" "$work/tree/boot/grub/x86_64-efi" "$work/tree/boot/grub/fonts"
start=$(date +%s.%N)
for i in $(seq 1 "$RUNS"); do
  cp "$work/cmdline" "$work/tree/rivet/cmdline"
  grub-mkrescue -o "$work/host-$i.iso" "$work/tree" -- -volid RIVET_AGENT >/dev/null 2>&1
done
end=$(date +%s.%N)
xorriso -osirrox on -indev "$work/host-1.iso" -extract /rivet/cmdline "$work/check" >/dev/null 2>&1
cmp -s "$work/cmdline" "$work/check" || { echo "bench agent_iso: the rebuilt ISO lost the cmdline" >&2; exit 1; }
host_iso_bytes=$(stat -c %s "$work/host-1.iso")

python3 - "$engine_json" "$start" "$end" "$RUNS" "$host_iso_bytes" > target/bench/agent_iso.md <<'PY'
import json, sys
engine = json.load(open(sys.argv[1]))
start, end, runs, iso_bytes = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
xorriso_ms = (end - start) / runs * 1e3
rivet_ms = engine["render_us_p50"] / 1e3
print("# Per-host agent ISOs\n")
print(f"Template {engine['template_bytes'] / 2**20:.1f} MiB, read and checked in {engine['template_load_ms']:.1f} ms.\n")
print("| | per host ISO | bytes held per host |")
print("|---|---|---|")
print(f"| rivet (slot rewrite, {engine['hosts']} hosts) | {rivet_ms * 1e3:.1f} µs p50, {engine['render_us_p99']:.1f} µs p99 ({engine['isos_per_second']:.0f}/s) | {engine['bytes_per_host']} |")
print(f"| grub-mkrescue rebuild ({runs} hosts) | {xorriso_ms:.1f} ms | {iso_bytes} |")
print(f"\nrivet is {xorriso_ms / rivet_ms:.0f}× faster per host and holds {iso_bytes / engine['bytes_per_host']:.0f}× less per host.")
PY
cat target/bench/agent_iso.md
