#!/usr/bin/env bash
# Demo of `rivet image`: a small GPT disk with an ext4 root becomes a compressed qcow2,
# is served over HTTP, inspected, streamed to a file with its sha256 verified inline, and
# compared with qemu-img's own conversion; then an image whose backing file points at
# /etc/passwd (CVE-2024-44082) is refused. Self-contained; cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
rivet=${RIVET:-target/debug/rivet}
[ -x "$rivet" ] || cargo build --quiet -p rivet-engine --bin rivet

for tool in qemu-img sgdisk mkfs.ext4 busybox sha256sum cmp; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run just deps" >&2; exit 1; }
done

work=$(mktemp -d /tmp/rivet-demo-images.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Build a small bootable-looking disk: GPT with an EFI system partition and an ext4 root"
mkdir -p "$work/root/etc" "$work/root/boot"
echo "rivet-demo" > "$work/root/etc/hostname"
head -c 3M /dev/urandom > "$work/root/boot/vmlinuz"
seq 1 200000 > "$work/root/etc/numbers"
truncate -s 64M "$work/disk.raw"
show sgdisk --clear --new=1:2048:+8M --typecode=1:ef00 --change-name=1:ESP \
  --new=2:0:0 --typecode=2:8300 --change-name=2:root "$work/disk.raw" >/dev/null
root_start=$(sgdisk -i 2 "$work/disk.raw" | awk '/First sector/ {print $3}')
root_end=$(sgdisk -i 2 "$work/disk.raw" | awk '/Last sector/ {print $3}')
truncate -s $(( (root_end - root_start + 1) * 512 )) "$work/root.ext4"
mkfs.ext4 -q -F -d "$work/root" "$work/root.ext4"
dd if="$work/root.ext4" of="$work/disk.raw" bs=512 seek="$root_start" conv=notrunc,sparse status=none
show qemu-img convert -c -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
sha=$(sha256sum "$work/disk.qcow2" | cut -c1-64)
echo "sha256 of the published qcow2: $sha"
echo "$sha  disk.qcow2" > "$work/SHA256SUMS"

step "Serve it over HTTP (BusyBox httpd, which supports Range requests)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
busybox httpd -f -p "127.0.0.1:$port" -h "$work" &
server_pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port/disk.qcow2"
echo "$url"

step "rivet image inspect: format, sizes, compression and the safety verdict"
show "$rivet" image inspect "$url"

step "rivet image write: one pass over HTTP, sha256 from the SHA256SUMS file, verified inline"
show "$rivet" image write "$url" "$work/written.raw" --checksum "http://127.0.0.1:$port/SHA256SUMS"

step "Compare with qemu-img's own conversion"
show qemu-img convert -f qcow2 -O raw "$work/disk.qcow2" "$work/qemu.raw"
show cmp "$work/written.raw" "$work/qemu.raw" && echo "byte-identical to qemu-img convert -O raw"
show sgdisk --print "$work/written.raw" | tail -3

step "A malicious image: its backing file is /etc/passwd (the CVE-2024-44082 attack)"
show qemu-img create -q -f qcow2 -F raw -b /etc/passwd "$work/evil.qcow2"
set +e
show "$rivet" image inspect "$work/evil.qcow2"
echo "(exit code $?: refused)"
echo precious > "$work/target.raw"
show "$rivet" image write "$work/evil.qcow2" "$work/target.raw" --progress none
code=$?
set -e
echo "(exit code $code: refused; the target still holds: $(cat "$work/target.raw"))"
