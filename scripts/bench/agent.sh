#!/usr/bin/env bash
# Agent benchmarks, each next to the tool doing the same work, in the same run, on the same
# machine. Report: target/bench/agent.md (raw hyperfine JSON beside it).
#   1. the bootable image: build time and sizes; boot to "agent ready" under QEMU TCG next
#      to a bare busybox initramfs on the same kernel
#   2. inventory: rivet-agent inventory vs lsblk --json --output-all (the block part IPA shells out for)
#   3. metadata cleaning of 8 disks (GPT, 3 partitions, ext4/xfs/LVM) vs IPA's recipe
#      (wipefs -a on every partition and the disk, then sgdisk -Z)
#   4. erasing 1 GiB on a loop device vs blkdiscard -z and dd from /dev/zero
#   5. building a config drive vs xorriso -as mkisofs -J -r
#   6. deploying a 1 GiB-virtual image over HTTP onto a loop device vs IPA's path (qcow2:
#      download, then qemu-img convert; raw: streamed through dd), and inside a TCG guest
# AGENT_BENCH=deploy runs only the last.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out="$root/target/bench/agent"
report="$root/target/bench/agent.md"
agent="$root/target/release/rivet-agent"
mkdir -p "$out"
[ -x "$agent" ] || cargo build --quiet --release -p rivet-agent
work=$(mktemp -d "${TMPDIR:-/tmp}/rivet-bench-agent.XXXXXX")
loops=()
cleanup() {
  for dev in "${loops[@]}"; do losetup -d "$dev" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

hf() { hyperfine --style basic --warmup 1 "$@"; }
mean() { jq -r ".results[$2].mean * 1000 | . * 10 | round / 10 | tostring + \" ms\"" "$1"; }
mean_s() { jq -r ".results[$2].mean" "$1"; }
ratio() { awk "BEGIN {printf \"%.2f\", $(mean_s "$1" "$2") / $(mean_s "$1" "$3")}"; }

echo "# Agent benchmarks" > "$report"
{
  echo
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(. /etc/os-release; echo "$PRETTY_NAME"); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
} >> "$report"

attach() { local dev; dev=$(losetup -f --show "$@"); loops+=("$dev"); echo "$dev"; }

if [ "${AGENT_BENCH:-all}" = all ]; then
# 1. The image.
scripts/agent-image.sh --binary "$agent" --out "$out/image" --no-iso > "$out/image-build.txt"
scripts/agent-image.sh --binary "$agent" --out "$out/image" > "$out/image-build-iso.txt"
initramfs_mb=$(awk '/^initramfs_bytes/ {printf "%.1f", $2 / 1048576}' "$out/image-build.txt")
unpacked_mb=$(awk '/^initramfs_unpacked_bytes/ {printf "%.1f", $2 / 1048576}' "$out/image-build.txt")
iso_mb=$(awk '/^iso_bytes/ {printf "%.1f", $2 / 1048576}' "$out/image-build-iso.txt")
build_s=$(awk '/^build_seconds/ {printf "%.1f", $2}' "$out/image-build.txt")
build_iso_s=$(awk '/^build_seconds/ {printf "%.1f", $2}' "$out/image-build-iso.txt")

mkdir -p "$work/tiny/bin" "$work/tiny/proc"
cp "$(command -v busybox)" "$work/tiny/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\nread up _ < /proc/uptime\necho "tiny ready: uptime $up s"\n/bin/busybox poweroff -f\n' > "$work/tiny/init"
chmod +x "$work/tiny/init"
(cd "$work/tiny" && find . | cpio -o -H newc --quiet) > "$work/tiny.cpio"
boot() { # name initrd append -> prints "<wall seconds> <guest uptime at ready>"
  local log="$work/$1.log" start end
  start=$(date +%s.%N)
  qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot -m 1024 \
    -serial "file:$log" -kernel "$out/image/vmlinuz" -initrd "$2" -append "console=ttyS0 quiet panic=-1 $3" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "$(awk "BEGIN {print $end - $start}") $(grep -o 'uptime [0-9.]*' "$log" | head -n 1 | cut -d' ' -f2)"
}
agent_walls=(); agent_ups=(); tiny_walls=(); tiny_ups=()
for i in 1 2 3; do
  read -r wall up < <(boot "agent-$i" "$out/image/initramfs.img" "rivet.job=inventory rivet.after=poweroff")
  agent_walls+=("$wall"); agent_ups+=("$up")
  read -r wall up < <(boot "tiny-$i" "$work/tiny.cpio" "")
  tiny_walls+=("$wall"); tiny_ups+=("$up")
done
avg() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.2f", s / NR}'; }
{
  echo "## The bootable image (release build, zstd -19)"
  echo
  echo "| | Value |"
  echo "|---|---|"
  echo "| initramfs (compressed) | $initramfs_mb MiB |"
  echo "| initramfs (unpacked) | $unpacked_mb MiB |"
  echo "| hybrid ISO | $iso_mb MiB |"
  echo "| build time, kernel + initramfs | $build_s s |"
  echo "| build time, with the ISO | $build_iso_s s |"
  echo
  echo "Boot under QEMU TCG, direct kernel boot, 1 GiB, one virtio NIC on user networking (DHCP), 3 runs:"
  echo
  echo "| | Guest uptime at ready | Wall time to power-off |"
  echo "|---|---|---|"
  echo "| rivet-agent ready (drivers, DHCP, inventory) | $(avg "${agent_ups[@]}") s | $(avg "${agent_walls[@]}") s |"
  echo "| bare busybox init on the same kernel | $(avg "${tiny_ups[@]}") s | $(avg "${tiny_walls[@]}") s |"
  echo
} >> "$report"

# 2. Inventory.
hf --export-json "$out/inventory.json" \
  -n rivet-agent "$agent inventory --json" \
  -n lsblk "lsblk --json --output-all --bytes" > "$out/inventory.txt"
{
  echo "## Inventory"
  echo
  echo "| Command | Mean | Time relative to rivet-agent |"
  echo "|---|---|---|"
  echo "| \`rivet-agent inventory --json\` (CPU, memory, disks, NICs, DMI) | $(mean "$out/inventory.json" 0) | 1.00 |"
  echo "| \`lsblk --json --output-all --bytes\` (disks only) | $(mean "$out/inventory.json" 1) | $(ratio "$out/inventory.json" 1 0) |"
  echo
} >> "$report"

# 3. Metadata cleaning of eight disks.
template="$work/template.img"
truncate -s 1G "$template"
sgdisk -n1:0:+64M -n2:0:+400M -n3:0:+64M "$template" >/dev/null
p1=$(attach -o $((1 << 20)) --sizelimit $((64 << 20)) "$template"); mkfs.ext4 -q "$p1"
p2=$(attach -o $((65 << 20)) --sizelimit $((400 << 20)) "$template"); mkfs.xfs -q -f "$p2"
p3=$(attach -o $((465 << 20)) --sizelimit $((64 << 20)) "$template"); pvcreate -q -ff -y "$p3" >/dev/null 2>&1
for dev in "$p1" "$p2" "$p3"; do losetup -d "$dev"; done
loops=()
disks=()
for i in 1 2 3 4 5 6 7 8; do disks+=("$work/disk$i.img"); done
cat > "$work/seed.sh" <<SEED
for d in ${disks[*]}; do cp --sparse=always "$template" "\$d"; done
SEED
# IPA's recipe on partition devices (loop devices stand in for the kernel's partitions).
cat > "$work/ipa.sh" <<'IPA'
set -e
for disk in "$@"; do
  for part in "$disk".p*; do wipefs --force --all "$(cat "$part")" >/dev/null; done
  wipefs --force --all "$disk" >/dev/null
  dd if=/dev/zero of="$disk" bs=512 count=33 conv=notrunc status=none
  size=$(stat -c %s "$disk")
  dd if=/dev/zero of="$disk" bs=512 count=33 seek=$((size / 512 - 33)) conv=notrunc status=none
  sgdisk -Z "$disk" >/dev/null
done
IPA
cat > "$work/attach.sh" <<ATTACH
for d in ${disks[*]}; do
  n=1
  for range in "$((1 << 20)):$((64 << 20))" "$((65 << 20)):$((400 << 20))" "$((465 << 20)):$((64 << 20))"; do
    losetup -f --show -o "\${range%%:*}" --sizelimit "\${range##*:}" "\$d" > "\$d.p\$n"; n=\$((n + 1))
  done
done
ATTACH
cat > "$work/detach.sh" <<'DETACH'
for f in "$@"; do for p in "$f".p*; do [ -f "$p" ] && losetup -d "$(cat "$p")" 2>/dev/null; rm -f "$p"; done; done
DETACH
disk_args=$(printf -- '--disk %s ' "${disks[@]}")
hf --runs 5 --export-json "$out/clean-metadata.json" \
  --prepare "bash $work/seed.sh" \
  -n rivet-agent "$agent clean --mode metadata $disk_args" \
  --prepare "bash $work/detach.sh ${disks[*]}; bash $work/seed.sh; bash $work/attach.sh" \
  --cleanup "bash $work/detach.sh ${disks[*]}" \
  -n "IPA recipe" "bash $work/ipa.sh ${disks[*]}" > "$out/clean-metadata.txt"
{
  echo "## Metadata cleaning, 8 disks of 1 GiB (GPT; ext4, xfs and LVM partitions)"
  echo
  echo "| Command | Mean | Time relative to rivet-agent |"
  echo "|---|---|---|"
  echo "| \`rivet-agent clean --mode metadata\` (4 disks at a time, verified afterwards) | $(mean "$out/clean-metadata.json" 0) | 1.00 |"
  echo "| IPA's recipe: \`wipefs -a\` per partition and disk, \`dd\` both ends, \`sgdisk -Z\` | $(mean "$out/clean-metadata.json" 1) | $(ratio "$out/clean-metadata.json" 1 0) |"
  echo
} >> "$report"

# 4. Erasing 1 GiB.
erase_file="$work/erase.img"
head -c $((1 << 30)) /dev/urandom > "$erase_file"
erase_dev=$(attach "$erase_file")
hf --runs 3 --export-json "$out/erase.json" \
  -n rivet-agent "$agent clean --mode erase --disk $erase_dev" \
  -n "blkdiscard -z" "blkdiscard -z $erase_dev" \
  -n "dd if=/dev/zero" "dd if=/dev/zero of=$erase_dev bs=1M count=1024 oflag=direct status=none" > "$out/erase.txt"
{
  echo "## Erasing 1 GiB on a loop device"
  echo
  echo "| Command | Mean | Time relative to rivet-agent |"
  echo "|---|---|---|"
  echo "| \`rivet-agent clean --mode erase\` (write-zeroes, verified) | $(mean "$out/erase.json" 0) | 1.00 |"
  echo "| \`blkdiscard -z\` | $(mean "$out/erase.json" 1) | $(ratio "$out/erase.json" 1 0) |"
  echo "| \`dd if=/dev/zero oflag=direct\` | $(mean "$out/erase.json" 2) | $(ratio "$out/erase.json" 2 0) |"
  echo
} >> "$report"

# 5. Config drive.
mkdir -p "$work/cd/openstack/latest"
echo '{"uuid":"0f1e2d3c","hostname":"node-0","public_keys":{"k":"ssh-ed25519 AAAA"}}' > "$work/cd/openstack/latest/meta_data.json"
head -c 65536 /dev/urandom | base64 > "$work/cd/openstack/latest/user_data"
echo '{"links":[],"networks":[],"services":[]}' > "$work/cd/openstack/latest/network_data.json"
hf --export-json "$out/configdrive.json" \
  -n rivet-agent "$agent config-drive --source $work/cd --output $work/cd.iso" \
  -n xorriso "xorriso -as mkisofs -quiet -J -r -V config-2 -o $work/cd-x.iso $work/cd" > "$out/configdrive.txt"
{
  echo "## Building a config drive (ISO 9660 + Joliet, 64 KiB of user data)"
  echo
  echo "| Command | Mean | Time relative to rivet-agent |"
  echo "|---|---|---|"
  echo "| \`rivet-agent config-drive --output\` | $(mean "$out/configdrive.json" 0) | 1.00 |"
  echo "| \`xorriso -as mkisofs -J -r\` | $(mean "$out/configdrive.json" 1) | $(ratio "$out/configdrive.json" 1 0) |"
} >> "$report"
fi

# 6. Deploy. A 1 GiB disk image as a cloud image looks: GPT, an ext4 root with 300 MiB of
# files (random and text), the rest never written. Served by BusyBox httpd (Range support).
www="$work/www"; mkdir -p "$www" "$work/rootfs/usr"
head -c $((200 << 20)) /dev/urandom > "$work/rootfs/usr/blob"
(yes "rivet deploy benchmark line of compressible text" || true) | head -c $((100 << 20)) > "$work/rootfs/usr/text"
truncate -s 1G "$www/disk.raw"
sgdisk -n1:0:0 "$www/disk.raw" >/dev/null
mkfs.ext4 -q -F -d "$work/rootfs" -E offset=$((1 << 20)) "$www/disk.raw" $(((1024 - 2) * 1024))k
qemu-img convert -f raw -O qcow2 "$www/disk.raw" "$www/disk.qcow2"
raw_sum=$(sha256sum "$www/disk.raw" | cut -d' ' -f1)
qcow2_sum=$(sha256sum "$www/disk.qcow2" | cut -d' ' -f1)
qcow2_mb=$(stat -c %s "$www/disk.qcow2" | awk '{printf "%.0f", $1 / 1048576}')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
busybox httpd -f -p "127.0.0.1:$port" -h "$www" & httpd=$!
trap 'kill $httpd 2>/dev/null; cleanup' EXIT
sleep 0.5
url="http://127.0.0.1:$port"
truncate -s 2G "$work/target.img"
target=$(attach "$work/target.img")
# IPA's deploy: a qcow2 is downloaded to a file and converted onto the device; a raw image is
# streamed to the device (dd stands in for its Python write loop) and hashed as it goes.
hf --runs 3 --shell bash --export-json "$out/deploy.json" \
  -n "rivet-agent qcow2" "$agent deploy $url/disk.qcow2 --checksum $qcow2_sum --disk $target" \
  -n "IPA qcow2" "curl -sf -o $work/dl.qcow2 $url/disk.qcow2 && sha256sum $work/dl.qcow2 >/dev/null && qemu-img convert -t directsync -f qcow2 -O raw $work/dl.qcow2 $target && rm $work/dl.qcow2" \
  -n "rivet-agent raw" "$agent deploy $url/disk.raw --checksum $raw_sum --disk $target" \
  -n "IPA raw" "curl -sf $url/disk.raw | tee >(sha256sum >/dev/null) | dd of=$target bs=1M oflag=direct iflag=fullblock status=none" \
  > "$out/deploy.txt" 2>&1
{
  echo
  echo "## Deploying a 1 GiB-virtual image over HTTP onto a loop device (checksum verified)"
  echo
  echo "The image: GPT, ext4 with 200 MiB random and 100 MiB text; qcow2 $qcow2_mb MiB. Served by BusyBox httpd on loopback."
  echo
  echo "| Command | Mean | Time relative to rivet-agent |"
  echo "|---|---|---|"
  echo "| \`rivet-agent deploy\` qcow2 (streamed, sha256 inline) | $(mean "$out/deploy.json" 0) | 1.00 |"
  echo "| IPA's path: curl to a file, sha256sum, \`qemu-img convert -t directsync\` | $(mean "$out/deploy.json" 1) | $(ratio "$out/deploy.json" 1 0) |"
  echo "| \`rivet-agent deploy\` raw (zero ranges become write-zeroes) | $(mean "$out/deploy.json" 2) | 1.00 |"
  echo "| IPA's path: curl \\| sha256sum + \`dd oflag=direct\` | $(mean "$out/deploy.json" 3) | $(ratio "$out/deploy.json" 3 2) |"
  echo
} >> "$report"

# The same deploys inside the agent under QEMU TCG onto a 2 GiB virtio disk (the host's
# loopback is 10.0.2.2 to the guest); the time is the agent's own writeDuration.
[ -f "$out/image/initramfs.img" ] || scripts/agent-image.sh --binary "$agent" --out "$out/image" --no-iso > /dev/null
guest_deploy() { # image-name -> prints writeDuration seconds and total guest wall seconds
  local log="$work/deploy-$1.log" start end disk="$work/guest-disk.raw"
  rm -f "$disk"; truncate -s 2G "$disk"
  start=$(date +%s.%N)
  qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot -m 1024 -smp 2 \
    -serial "file:$log" -kernel "$out/image/vmlinuz" -initrd "$out/image/initramfs.img" \
    -append "console=ttyS0 quiet panic=-1 rivet.job=deploy rivet.image=http://10.0.2.2:$port/$1 rivet.hints=$hints" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -drive "file=$disk,format=raw,if=none,id=d0" -device virtio-blk-pci,drive=d0,serial=TARGET >/dev/null 2>&1
  end=$(date +%s.%N)
  local result
  result=$(sed -n '/RESULT BEGIN/{n;p}' "$log" | tr -d '\r')
  echo "$(echo "$result" | jq -r '.result.writeDuration // "failed"') $(awk "BEGIN {printf \"%.1f\", $end - $start}")"
}
hints=$(printf '{"serialNumber":"TARGET"}' | base64 -w0 | tr -d '=')
read -r q_write q_wall < <(guest_deploy disk.qcow2)
read -r r_write r_wall < <(guest_deploy disk.raw)
{
  echo "Inside the agent under QEMU TCG (2 vCPUs, virtio-blk, user-mode networking), one run each:"
  echo
  echo "| Image | Agent's write time | Guest wall time, boot to power-off |"
  echo "|---|---|---|"
  echo "| qcow2 ($qcow2_mb MiB file, 1 GiB virtual) | $q_write s | $q_wall s |"
  echo "| raw (1 GiB) | $r_write s | $r_wall s |"
} >> "$report"
cat "$report"
