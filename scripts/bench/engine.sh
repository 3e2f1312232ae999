#!/usr/bin/env bash
# Engine control-plane benchmark: N hosts through enroll → available → provisioned →
# deprovisioned → deleted via the REST API, Rivet (simulated drivers, zero latency) side by
# side with OpenStack Ironic 39.0.0 standalone (fake-hardware, zero fake delays), driven by
# the same load generator (engine/examples/engine_bench.rs) with the same concurrency.
#
# Knobs (environment):
#   ENGINE_BENCH_SIZES        host counts for Rivet            (default "100 1000 10000")
#   ENGINE_BENCH_IRONIC_MAX   largest N Ironic is run with     (default 1000; 10000 takes
#                             Ironic about an hour on the reference machine)
#   ENGINE_BENCH_CONCURRENCY  requests in flight, both tools   (default 10: Ironic's embedded
#                             server resets connections beyond about 10 clients)
#   ENGINE_BENCH_WIDE         extra Rivet-only concurrency     (default 64; empty to skip)
# Results: target/bench/engine/*.json and the report target/bench/engine.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${ENGINE_BENCH_SIZES:-"100 1000 10000"}
IRONIC_MAX=${ENGINE_BENCH_IRONIC_MAX:-1000}
C=${ENGINE_BENCH_CONCURRENCY:-10}
WIDE=${ENGINE_BENCH_WIDE-64}
OUT=target/bench/engine
VENV=target/ironic-venv
mkdir -p "$OUT"
rm -f "$OUT"/*.json

cargo build --quiet --release -p rivet-engine --bin rivet --example engine_bench \
  --example agent_channel_bench
RIVET=target/release/rivet
BENCH=target/release/examples/engine_bench

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 1 1200); do
    if (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: nothing listens on port $1" >&2
  return 1
}

stop() { # pid: SIGTERM the process group, then SIGKILL what is left
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true
}

run_rivet() { # hosts concurrency
  local n=$1 c=$2 dir port pid
  dir=$(mktemp -d "$OUT/rivet-XXXXXX")
  port=$(free_port)
  cat > "$dir/rivet.toml" <<EOF
state_dir = "state"
[api]
listen = "127.0.0.1:$port"
[engine]
provisioning_limit = 0
power_sync_interval_secs = 0
power_poll_interval_ms = 1
[drivers]
kind = "simulated"
[drivers.simulated]
bmc_latency_ms = 0
boot_latency_ms = 0
agent_latency_ms = 0
EOF
  setsid "$RIVET" -q serve --config "$dir/rivet.toml" 2> "$dir/serve.log" &
  pid=$!
  wait_port "$port"
  until [ -f "$dir/state/api-token" ]; do sleep 0.1; done
  echo "bench engine: rivet N=$n C=$c"
  "$BENCH" rivet --url "https://127.0.0.1:$port" --token-file "$dir/state/api-token" \
    --ca-file "$dir/state/tls/ca.pem" --hosts "$n" --concurrency "$c" --pid "$pid" \
    --out "$OUT/rivet-$n-c$c.json"
  stop "$pid"
  rm -rf "$dir"
}

ensure_ironic() {
  if [ ! -x "$VENV/bin/ironic" ]; then
    echo "bench engine: installing Ironic 39.0.0 into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet ironic==39.0.0 python-ironicclient
  fi
}

run_ironic() { # hosts concurrency
  local n=$1 c=$2 work port pid
  ensure_ironic
  work=$(cd "$(mktemp -d "$OUT/ironic-XXXXXX")" && pwd)
  port=$(free_port)
  mkdir -p "$work/locks" "$work/www/ironic"
  # The configuration of test-peers §5 (fake-hardware benchmark), on a free port.
  cat > "$work/ironic.conf" <<EOF
[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = peer-ironic
use_stderr = false
log_file = $work/ironic.log
enabled_hardware_types = fake-hardware,redfish
enabled_bios_interfaces = no-bios,fake
enabled_boot_interfaces = fake,redfish-virtual-media
enabled_console_interfaces = no-console,fake
enabled_deploy_interfaces = fake,ramdisk
enabled_firmware_interfaces = no-firmware,fake
enabled_inspect_interfaces = no-inspect,fake,redfish
enabled_management_interfaces = fake,redfish
enabled_network_interfaces = noop
enabled_power_interfaces = fake,redfish
enabled_raid_interfaces = no-raid,fake
enabled_rescue_interfaces = no-rescue,fake
enabled_storage_interfaces = noop
enabled_vendor_interfaces = no-vendor,fake
default_network_interface = noop

[api]
host_ip = 127.0.0.1
port = $port

[database]
connection = sqlite:///$work/ironic.sqlite

[dhcp]
dhcp_provider = none

[conductor]
automated_clean = false

[oslo_concurrency]
lock_path = $work/locks

[oslo_messaging_notifications]
driver = noop

[deploy]
http_url = http://127.0.0.1:8080/ironic
http_root = $work/www/ironic

[redfish]
use_swift = false
EOF
  "$VENV/bin/ironic-dbsync" --config-file "$work/ironic.conf" create_schema > "$work/dbsync.log" 2>&1
  setsid "$VENV/bin/ironic" --config-file "$work/ironic.conf" > "$work/ironic.out" 2>&1 &
  pid=$!
  wait_port "$port"
  echo "bench engine: ironic N=$n C=$c"
  "$BENCH" ironic --url "http://127.0.0.1:$port" --hosts "$n" --concurrency "$c" --pid "$pid" \
    --out "$OUT/ironic-$n-c$c.json"
  stop "$pid"
  rm -rf "$work"
}

for n in $SIZES; do
  run_rivet "$n" "$C"
  if [ -n "$WIDE" ] && [ "$n" -ge 1000 ]; then run_rivet "$n" "$WIDE"; fi
  if [ "$n" -le "$IRONIC_MAX" ]; then run_ironic "$n" "$C"; fi
done

machine="$(nproc)-core $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), \
$(free -g | awk '/^Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), \
Rivet $(git rev-parse --short HEAD 2>/dev/null || echo unknown), Ironic 39.0.0 (SQLite), $(date -u +%Y-%m-%d)"
"$BENCH" report "$OUT"/*.json --machine "$machine" > target/bench/engine.md

# Agent channel: inspect round trips over one TLS WebSocket against HTTPS exchanges on the
# same listener (a new connection each, and one kept-alive connection).
echo "bench engine: agent channel"
channel=$(target/release/examples/agent_channel_bench "${ENGINE_BENCH_CHANNEL_COMMANDS:-10000}")
printf '\n## Agent channel round trips\n\n```json\n%s\n```\n' "$channel" >> target/bench/engine.md
echo "bench engine: report in target/bench/engine.md"
