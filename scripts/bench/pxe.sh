#!/usr/bin/env bash
# Boot services, side by side with the real tools in the same run:
#   1. TFTP throughput (atftp client, 64 MiB file) at blksize 512/1468/8192 and with
#      windowsize, rivet vs tftpd-hpa (`in.tftpd`), on loopback; median of 5 runs;
#   2. TFTP concurrency: 50 atftp clients fetching an 8 MiB file at once; median of 3;
# Medians, because the reference machine is shared: another build's burst hits one run,
# not the typical one.
#   3. DHCP: perfdhcp 4-way exchanges/s between two namespaces, rivet (redb, group commit,
#      fsync per batch) vs dnsmasq with a lease file (and without one, for reference);
#   4. PXE boot of a QEMU (TCG) guest to an initramfs marker: rivet vs dnsmasq + python's
#      http.server (test-peers.md §4.2), and rivet without router advertisements.
# Writes target/bench/pxe.md. Needs root (namespaces) and `just deps`.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
rivet="$root/target/release/rivet"
report="$root/target/bench/pxe.md"
work=$(mktemp -d /tmp/rivet-bench-pxe.XXXXXX)
tag="rvb$$"
pids=()
namespaces=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$rivet" ] || cargo build --quiet --release -p rivet-engine
mkdir -p "$(dirname "$report")"
log() { echo "bench pxe: $*" >&2; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mib_s() { awk -v bytes="$1" -v secs="$2" 'BEGIN { printf "%.1f", bytes / 1048576 / secs }'; }

# ---------------------------------------------------------------- TFTP, single client
tftp_root="$work/tftp"
mkdir -p "$tftp_root"
head -c $((64 << 20)) /dev/urandom > "$tftp_root/big"
head -c $((8 << 20)) /dev/urandom > "$tftp_root/kernel"
echo '{}' > "$work/hosts.json"

"$rivet" -q boot serve --mode off --no-router-advertisements --hosts "$work/hosts.json" \
  --tftp-root "$tftp_root" --tftp-listen 127.0.0.1:16970 --listen 127.0.0.1:18089 \
  --http-base http://127.0.0.1:18089 &
pids+=($!)
in.tftpd -L -a 127.0.0.1:16969 -s "$tftp_root" &
pids+=($!)
sleep 1

tftp_rows=""
for options in "blksize 512" "blksize 1468" "blksize 8192" "blksize 1468|windowsize 8" "blksize 8192|windowsize 8"; do
  IFS='|' read -r -a opts <<< "$options"
  cmd_opts=""
  for o in "${opts[@]}"; do cmd_opts+=" --option '$o'"; done
  ours=$(hyperfine --runs 5 --warmup 1 --style none --export-json "$work/o.json" \
    "atftp --get -r big -l $work/out-o$cmd_opts 127.0.0.1 16970" >/dev/null 2>&1 && jq -r '.results[0].median' "$work/o.json")
  cmp -s "$work/out-o" "$tftp_root/big" || { log "rivet served a corrupt file ($options)"; exit 1; }
  theirs=$(hyperfine --runs 5 --warmup 1 --style none --export-json "$work/t.json" \
    "atftp --get -r big -l $work/out-t$cmd_opts 127.0.0.1 16969" >/dev/null 2>&1 && jq -r '.results[0].median' "$work/t.json")
  cmp -s "$work/out-t" "$tftp_root/big" || { log "tftpd-hpa served a corrupt file ($options)"; exit 1; }
  bytes=$((64 << 20))
  log "TFTP $options: rivet ${ours}s, tftpd-hpa ${theirs}s"
  tftp_rows+="| ${options//|/, } | $(mib_s $bytes "$ours") | $(mib_s $bytes "$theirs") | $(ratio "$theirs" "$ours") |"$'\n'
done

# ---------------------------------------------------------------- TFTP, 50 clients
concurrent() {
  local port=$1 start end
  start=$(date +%s.%N)
  for i in $(seq 1 50); do
    atftp --get -r kernel -l "$work/c$i" --option "blksize 1468" 127.0.0.1 "$port" >/dev/null 2>&1 &
  done
  wait # this runs in a command substitution: only the clients are its children
  end=$(date +%s.%N)
  for i in $(seq 1 50); do
    cmp -s "$work/c$i" "$tftp_root/kernel" || { log "client $i got a corrupt file from port $port"; exit 1; }
    rm -f "$work/c$i"
  done
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ours_runs=(); theirs_runs=()
for _ in 1 2 3; do
  ours_runs+=("$(concurrent 16970)")
  theirs_runs+=("$(concurrent 16969)")
done
ours_50=$(median "${ours_runs[@]}")
theirs_50=$(median "${theirs_runs[@]}")
log "TFTP 50 clients: rivet ${ours_50}s, tftpd-hpa ${theirs_50}s"
total=$((50 * (8 << 20)))

for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

# ---------------------------------------------------------------- DHCP: perfdhcp
server_ns="${tag}s"; client_ns="${tag}c"
ip netns add "$server_ns"; namespaces+=("$server_ns")
ip netns add "$client_ns"; namespaces+=("$client_ns")
ip link add vdhs netns "$server_ns" type veth peer name vdhc netns "$client_ns"
ip -n "$server_ns" addr add 10.98.0.1/16 dev vdhs
ip -n "$client_ns" addr add 10.98.0.2/16 dev vdhc
for ns in "$server_ns" "$client_ns"; do ip -n "$ns" link set lo up; done
ip -n "$server_ns" link set vdhs up
ip -n "$client_ns" link set vdhc up

# "rate achieved drops%" for one perfdhcp run at the offered rate.
perf() {
  local rate=$1 output
  output=$(ip netns exec "$client_ns" perfdhcp -4 -l vdhc -r "$rate" -R 60000 -p 10 2>&1 || true)
  local achieved drops
  achieved=$(echo "$output" | awk '/^Rate:/ { print $2; exit }')
  drops=$(echo "$output" | awk '/drops ratio/ { gsub("%", "", $3); sum += $3 } END { printf "%.1f", sum / 2 }')
  echo "${achieved:-0} ${drops:-100}"
}

dhcp_rows=""
echo '{"unknown": "address"}' > "$work/dhcp-hosts.json"
for rate in 2000 5000 8000 12000; do
  rm -f "$work/leases.redb"
  ip netns exec "$server_ns" "$rivet" -q boot serve --interface vdhs --mode authoritative \
    --no-tftp --no-router-advertisements --hosts "$work/dhcp-hosts.json" \
    --pool 10.98.1.0-10.98.254.254 --lease-db "$work/leases.redb" --lease-time 3600 &
  pids+=($!)
  sleep 1
  read -r achieved drops <<< "$(perf "$rate")"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
  log "DHCP rivet (durable) at $rate/s: $achieved exchanges/s, drops $drops%"
  dhcp_rows+="| rivet, redb lease database (fsync per group commit) | $rate | $achieved | $drops % |"$'\n'
  echo "rivet $rate $achieved $drops" >> "$work/dhcp.txt"
done

dnsmasq_run() {
  local label=$1 lease_line=$2 rate=$3
  cat > "$work/dnsmasq.conf" <<EOF
port=0
interface=vdhs
bind-interfaces
dhcp-range=10.98.1.0,10.98.254.254,255.255.0.0,1h
dhcp-lease-max=100000
dhcp-authoritative
no-ping
quiet-dhcp
$lease_line
EOF
  rm -f "$work/dnsmasq.leases"
  ip netns exec "$server_ns" dnsmasq --keep-in-foreground --conf-file="$work/dnsmasq.conf" \
    --pid-file="$work/dnsmasq.pid" &
  pids+=($!)
  sleep 1
  read -r achieved drops <<< "$(perf "$rate")"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
  log "DHCP dnsmasq ($label) at $rate/s: $achieved exchanges/s, drops $drops%"
  dhcp_rows+="| dnsmasq 2.90, $label | $rate | $achieved | $drops % |"$'\n'
  echo "dnsmasq-${label%% *} $rate $achieved $drops" >> "$work/dhcp.txt"
}
for rate in 1000 3000; do dnsmasq_run "lease file" "dhcp-leasefile=$work/dnsmasq.leases" "$rate"; done
for rate in 1000 3000; do dnsmasq_run "no lease file (leasefile-ro)" "leasefile-ro" "$rate"; done

# Durable leases: rivet's database and dnsmasq's lease file.
rivet_best=$(awk '$1 == "rivet" && $3 > max { max = $3 } END { printf "%.0f", max }' "$work/dhcp.txt")
dnsmasq_best=$(awk '$1 == "dnsmasq-lease" && $3 > max { max = $3 } END { printf "%.0f", max }' "$work/dhcp.txt")

ip netns del "$server_ns"; ip netns del "$client_ns"
namespaces=()

# ---------------------------------------------------------------- PXE boot to a marker
kernel=$(ls /boot/vmlinuz-* | sort | tail -1)
http_root="$work/http"
mkdir -p "$http_root" "$work/initrd/bin" "$work/initrd/proc"
cp "$kernel" "$http_root/vmlinuz"
cp "$(command -v busybox)" "$work/initrd/bin/busybox"
cat > "$work/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo RIVET-BENCH-MARKER
/bin/busybox poweroff -f
EOF
chmod +x "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc 2>/dev/null) > "$http_root/initrd.img"
cat > "$http_root/boot.ipxe" <<'EOF'
#!ipxe
kernel http://10.99.0.1:8080/vmlinuz initrd=initrd.img console=ttyS0 quiet panic=-1
initrd http://10.99.0.1:8080/initrd.img
boot
EOF
mac=52:54:00:12:34:02
cat > "$work/pxe-hosts.json" <<EOF
{"agent": {"kernel": "vmlinuz", "initrds": ["initrd.img"], "cmdline": "console=ttyS0 quiet panic=-1"},
 "hosts": [{"mac": "$mac", "boot": "agent"}]}
EOF
pxe_ns="${tag}p"
ip netns add "$pxe_ns"; namespaces+=("$pxe_ns")
ip netns exec "$pxe_ns" ip link set lo up
ip netns exec "$pxe_ns" ip link add br0 type bridge
ip netns exec "$pxe_ns" ip addr add 10.99.0.1/24 dev br0
ip netns exec "$pxe_ns" ip -6 addr add fd00:99::1/64 dev br0
ip netns exec "$pxe_ns" ip link set br0 up
ip netns exec "$pxe_ns" ip tuntap add dev tap0 mode tap
ip netns exec "$pxe_ns" ip link set tap0 master br0 up
printf '\xf8\x03' > "$work/sercon"

# Seconds from QEMU start to the marker on its serial console.
boot_time() {
  local serial="$work/serial.log" start end
  rm -f "$serial"
  start=$(date +%s.%N)
  ip netns exec "$pxe_ns" qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot \
    -m 512 -M pc -serial "file:$serial" -fw_cfg "name=etc/sercon-port,file=$work/sercon" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device "virtio-net-pci,netdev=n0,mac=$mac" -boot n >/dev/null 2>&1 &
  local qemu=$!
  for _ in $(seq 1 1200); do
    grep -q RIVET-BENCH-MARKER "$serial" 2>/dev/null && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  kill "$qemu" 2>/dev/null || true; wait "$qemu" 2>/dev/null || true
  grep -q RIVET-BENCH-MARKER "$serial" || { log "guest never reached the marker"; echo 0; return; }
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }'
}

boot_with_rivet() {
  ip netns exec "$pxe_ns" "$rivet" -q boot serve --interface br0 --mode authoritative \
    --hosts "$work/pxe-hosts.json" --http-root "$http_root" --lease-db "$work/pxe-leases.redb" \
    --pool 10.99.0.100-10.99.0.200 "$@" &
  pids+=($!)
  sleep 2
  boot_time
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
}

boot_with_dnsmasq() {
  cat > "$work/pxe-dnsmasq.conf" <<EOF
port=0
interface=br0
bind-interfaces
dhcp-range=10.99.0.100,10.99.0.200,255.255.255.0,1h
dhcp-leasefile=$work/pxe-dnsmasq.leases
dhcp-match=set:ipxe,175
dhcp-userclass=set:ipxe,iPXE
dhcp-boot=tag:ipxe,http://10.99.0.1:8080/boot.ipxe
dhcp-boot=tag:!ipxe,undionly.kpxe
enable-ra
dhcp-range=fd00:99::,ra-stateless,64
EOF
  ip netns exec "$pxe_ns" dnsmasq --keep-in-foreground --conf-file="$work/pxe-dnsmasq.conf" &
  pids+=($!)
  local dnsmasq=$!
  (cd "$http_root" && exec ip netns exec "$pxe_ns" python3 -m http.server 8080 --bind 10.99.0.1 >/dev/null 2>&1) &
  pids+=($!)
  local http=$!
  sleep 2
  boot_time
  kill "$dnsmasq" "$http" 2>/dev/null || true; wait "$dnsmasq" "$http" 2>/dev/null || true
  pids=("${pids[@]:0:${#pids[@]}-2}")
}

declare -a rivet_boots dnsmasq_boots nora_boots
for run in 1 2; do
  rivet_boots+=("$(boot_with_rivet)")
  dnsmasq_boots+=("$(boot_with_dnsmasq)")
done
nora_boots+=("$(boot_with_rivet --no-router-advertisements)")
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.1f", s / NR }'; }
rivet_boot=$(mean "${rivet_boots[@]}")
dnsmasq_boot=$(mean "${dnsmasq_boots[@]}")
nora_boot=$(mean "${nora_boots[@]}")
log "PXE boot: rivet ${rivet_boot}s, dnsmasq+http.server ${dnsmasq_boot}s, rivet without RAs ${nora_boot}s"

# ---------------------------------------------------------------- report
cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
cat > "$report" <<EOF
# Boot services benchmark

Machine: $(nproc) × $cpu, $os, kernel $(uname -r). $(date -u +%Y-%m-%d).
Peers: tftpd-hpa $(dpkg-query -W -f='${Version}' tftpd-hpa), atftp $(dpkg-query -W -f='${Version}' atftp) (client),
dnsmasq $(dpkg-query -W -f='${Version}' dnsmasq-base), perfdhcp ($(dpkg-query -W -f='${Version}' kea-admin)), QEMU $(qemu-system-x86_64 --version | awk 'NR==1 { print $4 }') TCG.

## TFTP, one client (atftp, 64 MiB, loopback, median of 5)

| Options | rivet MiB/s | tftpd-hpa MiB/s | rivet ÷ tftpd-hpa |
|---|---|---|---|
$tftp_rows
tftpd-hpa does not implement windowsize (RFC 7440) and ignores the option.

## TFTP, 50 clients at once (atftp, blksize 1468, 8 MiB each, median of 3)

| Server | Wall time | Aggregate MiB/s |
|---|---|---|
| rivet | ${ours_50} s | $(mib_s $total "$ours_50") |
| tftpd-hpa | ${theirs_50} s | $(mib_s $total "$theirs_50") |

rivet ÷ tftpd-hpa (throughput): $(ratio "$theirs_50" "$ours_50").

## DHCP, perfdhcp 4-way exchanges between two namespaces (10 s per rate)

| Server | Offered /s | Achieved 4-way exchanges/s | Drops |
|---|---|---|---|
$dhcp_rows
Best durable rate: rivet ${rivet_best}/s vs dnsmasq with a lease file ${dnsmasq_best}/s
(ratio $(ratio "$rivet_best" "$dnsmasq_best")). rivet commits each batch of lease changes with
fsync (redb, quick-repair) before the ACKs of that batch leave; dnsmasq rewrites its whole
lease file and fsyncs it on every change.

## PXE boot to an initramfs marker (BIOS, QEMU TCG, iPXE ROM, mean of 2)

| Server | Seconds |
|---|---|
| rivet boot serve (authoritative, router advertisements) | $rivet_boot |
| dnsmasq + python3 http.server (enable-ra) | $dnsmasq_boot |
| rivet boot serve --no-router-advertisements | $nora_boot |
EOF
log "report written to $report"
cat "$report"
