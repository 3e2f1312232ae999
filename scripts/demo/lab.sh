#!/usr/bin/env bash
# Demo of `rivet lab`: one QEMU (TCG) host behind a BMC emulator others wrote — OpenIPMI's
# ipmi_sim (`lab.sh ipmi`, the default) or sushy-tools in front of libvirt (`lab.sh
# redfish`) —, the engine with its real drivers on the lab bridge, and the Rivet agent
# booted over the network:
#   lab up → inspect (agent) → provision a generated qcow2 over HTTP with its sha256 →
#   the VM boots from the disk the agent wrote (SeaBIOS through its MBR boot code with
#   ipmi_sim; OVMF through GRUB on its ESP with Redfish) and its marker shows on the serial
#   console →
#   the host's timeline → lab down.
# Needs root. Prints the wall time of every phase. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
rivet=${RIVET:-target/debug/rivet}
[ -x "$rivet" ] || cargo build --quiet -p rivet-engine --bin rivet
rivet=$(realpath "$rivet")
bmc=${1:-ipmi}
case "$bmc" in
  ipmi) needs=ipmi_sim; bmc_name=IPMI ;;
  redfish) needs=libvirtd; bmc_name=Redfish ;;
  *) echo "usage: $0 [ipmi|redfish]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "demo: rivet lab needs root" >&2; exit 1; }
for tool in qemu-img sgdisk mkfs.fat mmd mcopy grub-mkstandalone sha256sum "$needs" qemu-system-x86_64; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run just deps" >&2; exit 1; }
done

name=demo
marker=RIVET-LAB-DISK-BOOTED
work=$(mktemp -d /tmp/rivet-demo-lab.XXXXXX)
# A Redfish lab's libvirtd runs as nobody and must reach the lab's disks.
chmod 755 "$work"
state=$work/lab
cleanup() {
  "$rivet" lab down --name "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
times=()
phase_start=0
begin() { step "$*"; phase_name=$1; phase_start=$(date +%s.%N); }
end() {
  local took
  took=$(awk -v a="$phase_start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  times+=("$(printf '%-46s %6.1f s' "$phase_name" "$took")")
  printf '\033[2m(%s: %.1f s)\033[0m\n' "$phase_name" "$took"
}

begin "lab up (1 host, $bmc_name)"
# sushy-emulator lives in the venv `just deps` made.
PATH="$PWD/target/venv/bin:$PATH" show "$rivet" lab up --name "$name" --hosts 1 --bmc "$bmc" --state-dir "$state"
end
in_lab() { ip netns exec "rivet-$name" "$rivet" "$@"; }
host() { in_lab host --url https://10.77.0.1:8443 --state-dir "$state/engine" "$@"; }
serial=$state/hosts/node-1/serial.log

begin "generate the disk image"
# A 64 MiB GPT disk that prints the marker however it is booted:
# - UEFI: its EFI system partition holds \EFI\BOOT\BOOTX64.EFI, a GRUB built by
#   grub-mkstandalone whose embedded grub.cfg echoes the marker;
# - BIOS: the protective MBR's boot code prints it on COM1 and halts: cli; xor ax,ax;
#   mov ds,ax; mov si,msg; mov dx,0x3f8; .l: lodsb; test al,al; jz .h; out dx,al; jmp .l;
#   .h: hlt; jmp .h; msg: db …, 0 (the message at 0x7c16).
truncate -s 64M "$work/disk.raw"
sgdisk -n 1:2048:+32M -t 1:ef00 -c 1:ESP "$work/disk.raw" >/dev/null
mkfs.fat -F 16 --offset=2048 "$work/disk.raw" 32768 >/dev/null
printf 'echo %s\nsleep 600\n' "$marker" > "$work/grub.cfg"
grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" \
  --install-modules="normal echo sleep configfile" --modules="" --locales="" --fonts="" --themes="" \
  "boot/grub/grub.cfg=$work/grub.cfg"
mmd -i "$work/disk.raw@@1M" ::/EFI ::/EFI/BOOT
mcopy -i "$work/disk.raw@@1M" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
{
  printf '\xfa\x31\xc0\x8e\xd8\xbe\x16\x7c\xba\xf8\x03\xac\x84\xc0\x74\x03\xee\xeb\xf8\xf4\xeb\xfd'
  printf '%s\r\n\0' "$marker"
} | dd of="$work/disk.raw" conv=notrunc status=none
mkdir -p "$state/files/images"
show qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$state/files/images/demo.qcow2"
sha=$(sha256sum "$state/files/images/demo.qcow2" | cut -c1-64)
echo "sha256 $sha, served at http://10.77.0.1:8080/files/images/demo.qcow2"
end

begin "inspect (agent over the network)"
show host inspect node-1 --wait --timeout 900
end

begin "provision, then boot from disk to the marker"
# The engine ends provisioning by setting the disk as boot device and powering the VM
# on; the boot sector prints its marker about a second later.
show host provision node-1 --image http://10.77.0.1:8080/files/images/demo.qcow2 \
  --checksum "$sha" --checksum-type sha256 --format qcow2 --wait --timeout 900
deadline=$(( $(date +%s) + 300 ))
until grep -q "$marker" "$serial" 2>/dev/null; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "demo: the marker did not show on the serial console in 300 s; its tail:" >&2
    tail -c 2000 "$serial" >&2
    exit 1
  fi
  sleep 1
done
end
echo "serial console of node-1, from its last boot:"
grep -a -e 'Booting from' -e 'BdsDxe: starting' -e "$marker" "$serial" | tail -n 2 | sed 's/^/  | /'

step "keep it on (it was enrolled offline)"
show host power node-1 on --wait --timeout 300

step "the host and its timeline"
show host show node-1
show host timeline node-1

begin "lab down"
show "$rivet" lab down --name "$name"
end

step "phase wall times"
printf '%s\n' "${times[@]}"
