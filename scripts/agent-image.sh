#!/usr/bin/env bash
# Builds the Rivet agent's bootable image from Debian packages and our binary:
#   <out>/vmlinuz          the Debian kernel (linux-image-amd64)
#   <out>/initramfs.img    busybox, rivet-agent and its libraries, storage and NIC drivers (zstd cpio)
#   <out>/rivet-agent.iso  a hybrid BIOS + UEFI ISO (GRUB) for virtual-media boot
#   <out>/build-info.txt   sizes, hashes and the build time
#
# Usage: scripts/agent-image.sh [--binary PATH] [--out DIR] [--no-iso] [--iso-cmdline "params"] [--fast]
#   --binary       use this rivet-agent instead of building `cargo build --release -p rivet-agent`
#   --out          output directory (default target/agent-image)
#   --no-iso       kernel and initramfs only
#   --iso-cmdline  parameters written to the ISO's rivet/cmdline (a job, a static address …)
#
# The ISO's rivet/cmdline is a fixed 4096-byte slot that starts with the word
# rivet-cmdline-slot-v1 and is padded with spaces. ISO 9660 stores a file in one contiguous
# extent, so the engine makes a host's ISO by overwriting that slot in a copy of this one
# (with the agent's channel parameters), without rebuilding anything.
#   --fast         compress quickly (zstd -3) rather than small (zstd -19): for tests
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/agent-image"
binary=""
make_iso=yes
iso_cmdline=""
level=19
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-iso) make_iso=no; shift ;;
    --iso-cmdline) iso_cmdline=$2; shift 2 ;;
    --fast) level=3; shift ;;
    *) echo "agent-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

started=$(date +%s.%N)
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || { echo "agent-image: $1 is missing; run \`just deps\`" >&2; exit 1; }; }
for tool in busybox cpio zstd depmod modprobe ldd objcopy; do need "$tool"; done
[ "$make_iso" = no ] || for tool in grub-mkrescue xorriso mformat; do need "$tool"; done

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "agent-image: no /boot/vmlinuz-*; run \`just deps\` (linux-image-amd64)" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || { echo "agent-image: /lib/modules/$kver is missing" >&2; exit 1; }

if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release -p rivet-agent --bin rivet-agent)
  binary="$root/target/release/rivet-agent"
fi
[ -x "$binary" ] || { echo "agent-image: $binary is not an executable" >&2; exit 1; }

mkdir -p "$out"
staging=$(mktemp -d "${TMPDIR:-/tmp}/rivet-agent-image.XXXXXX")
trap 'rm -rf "$staging"' EXIT

# busybox with one link per applet: no `--install` at boot.
mkdir -p "$staging"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,media/boot,lib64}
cp "$(command -v busybox)" "$staging/bin/busybox"
for applet in $(busybox --list); do
  [ -e "$staging/bin/$applet" ] || ln -s busybox "$staging/bin/$applet"
done
# The kernel loads modules on demand (a file system's character set) through this path.
ln -s ../bin/busybox "$staging/sbin/modprobe"

# The agent, without debug sections, and the shared libraries it links (glibc's loader too).
objcopy --strip-debug "$binary" "$staging/usr/bin/rivet-agent"
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  mkdir -p "$staging$(dirname "$lib")"
  cp -L "$lib" "$staging$lib"
done

# Prove the staged binary finds everything it links before anything boots it.
if [ "$(id -u)" -eq 0 ]; then
  chroot "$staging" /usr/bin/rivet-agent --version >/dev/null \
    || { echo "agent-image: the staged rivet-agent does not start (missing libraries?)" >&2; exit 1; }
fi

# Drivers for common storage and NICs, their dependencies, the file systems of boot
# media and config drives, and the ACPI power button with the event interface the agent
# reads it through (both modules in Debian's kernel). modprobe resolves the dependencies;
# depmod indexes the result.
modules=(
  button evdev
  virtio_pci virtio_blk virtio_scsi virtio_net
  nvme ahci ata_piix sd_mod sr_mod megaraid_sas mpt3sas
  usb-storage uas xhci_pci ehci_pci ohci_pci uhci_hcd
  e1000 e1000e igb ixgbe i40e ice mlx5_core bnxt_en tg3
  isofs vfat nls_cp437 nls_ascii nls_iso8859_1 nls_utf8 efivarfs
)
modprobe -S "$kver" --show-depends -a "${modules[@]}" | awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
  mkdir -p "$staging$(dirname "$ko")"
  cp "$ko" "$staging$ko"
done
for index in modules.order modules.builtin modules.builtin.modinfo; do
  cp "/lib/modules/$kver/$index" "$staging/lib/modules/$kver/"
done
depmod -b "$staging" "$kver"

install -m 0755 "$root/agent/image/init" "$staging/init"
install -m 0755 "$root/agent/image/udhcpc.script" "$staging/etc/udhcpc.script"
mkdir -p "$staging/etc/modprobe.d"
echo "options scsi_mod scan=sync" > "$staging/etc/modprobe.d/rivet.conf"
echo "root:x:0:0:root:/root:/bin/sh" > "$staging/etc/passwd"
echo "root:x:0:" > "$staging/etc/group"
# The system's CA bundle: image downloads over HTTPS are verified against it (the HTTP
# client also refuses to start without any trusted roots, even for plain HTTP).
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$staging/etc/ssl/certs/ca-certificates.crt"

(cd "$staging" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
  | zstd -q -"$level" -T0 > "$out/initramfs.img.tmp"
mv "$out/initramfs.img.tmp" "$out/initramfs.img"
cp "$kernel" "$out/vmlinuz"

if [ "$make_iso" = yes ]; then
  iso_root="$staging.iso"
  trap 'rm -rf "$staging" "$iso_root"' EXIT
  mkdir -p "$iso_root/boot/grub" "$iso_root/rivet"
  cp "$kernel" "$iso_root/boot/vmlinuz"
  cp "$out/initramfs.img" "$iso_root/boot/initramfs.img"
  slot="rivet-cmdline-slot-v1 $iso_cmdline"
  [ "${#slot}" -lt 4096 ] || { echo "agent-image: --iso-cmdline is longer than the 4096-byte slot" >&2; exit 2; }
  printf '%-4095s\n' "$slot" > "$iso_root/rivet/cmdline"
  cat > "$iso_root/boot/grub/grub.cfg" <<'GRUB'
set timeout=0
set gfxpayload=text
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
menuentry "Rivet agent" {
  linux /boot/vmlinuz console=tty0 console=ttyS0,115200n8 quiet panic=30 rivet.media=RIVET_AGENT
  initrd /boot/initramfs.img
}
GRUB
  grub-mkrescue -o "$out/rivet-agent.iso.tmp" "$iso_root" -- -volid RIVET_AGENT >/dev/null 2>&1 \
    || { echo "agent-image: grub-mkrescue failed" >&2; grub-mkrescue -o "$out/rivet-agent.iso.tmp" "$iso_root" -- -volid RIVET_AGENT; exit 1; }
  mv "$out/rivet-agent.iso.tmp" "$out/rivet-agent.iso"
fi

finished=$(date +%s.%N)
{
  echo "kernel $kver"
  echo "binary $(sha256sum "$binary" | cut -d' ' -f1)"
  echo "initramfs_bytes $(stat -c %s "$out/initramfs.img")"
  echo "initramfs_unpacked_bytes $(du -sb "$staging" | cut -f1)"
  [ "$make_iso" = no ] || echo "iso_bytes $(stat -c %s "$out/rivet-agent.iso")"
  echo "build_seconds $(echo "$finished - $started" | bc 2>/dev/null || awk "BEGIN {print $finished - $started}")"
} > "$out/build-info.txt"
cat "$out/build-info.txt"
