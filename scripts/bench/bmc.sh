#!/usr/bin/env bash
# IPMI power-status polling of 50 simulated BMCs (25 OpenIPMI ipmi_sim, 25 pyghmi) for
# SECONDS seconds each way, side by side:
#   - Rivet: one process, one RMCP+ session per BMC kept open, all 50 polled concurrently,
#     min_command_interval 0 (Ironic's default 5 s spacing would cap it at 10 ops/s);
#   - ipmitool: one `ipmitool -I lanplus … power status` process per call, the way Ironic's
#     ipmitool driver runs it (-L ADMINISTRATOR -R 1 -N 5 -f <password file>), 8 at a time
#     like Ironic's sync power-state workers. `-C 3` is ipmitool's best case: without it
#     every call against ipmi_sim spends ~10 s asking for cipher suites.
# CPU is user+sys of the client processes (GNU time on each side's parent, which waits for
# every child). Report: target/bench/bmc.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
seconds=${SECONDS_PER_SIDE:-10}
count_sim=${IPMI_SIMS:-25}
count_pyghmi=${PYGHMI_BMCS:-25}
workers=${IPMITOOL_WORKERS:-8}
python="$root/target/venv/bin/python"
out="$root/target/bench"
work=$(mktemp -d /tmp/rivet-bench-bmc.XXXXXX)
mkdir -p "$out"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in ipmi_sim ipmitool "$python" /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench/bmc: $tool is missing; run just deps" >&2; exit 1; }
done
cargo build --quiet --release -p rivet-bmc --example ipmi_poll
poll="$root/target/release/examples/ipmi_poll"

free_udp_ports() {
  "$python" - "$1" <<'PY'
import socket, sys
sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
PY
}
read -r -a ports < <(free_udp_ports $((count_sim + count_pyghmi)))
printf 'password' > "$work/password"
chmod 600 "$work/password"

# ipmi_sim: power lives in a file behind a chassis_control program.
cat > "$work/chassis-control" <<'SH'
#!/bin/sh
dir=$1; op=$2; shift 2
case $op in
  get) for p in "$@"; do case $p in power) echo "power:$(cat "$dir/power")" ;; boot) echo "boot:none" ;; *) exit 1 ;; esac; done ;;
  set) [ "$1" = power ] && echo "$2" > "$dir/power" ;;
esac
SH
chmod +x "$work/chassis-control"
cat > "$work/bmc.emu" <<'EMU'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
EMU
# pyghmi: its Bmc server class on loopback, power in memory.
cat > "$work/pyghmi-bmc.py" <<'PY'
import sys
import pyghmi.ipmi.bmc as bmc

class Bmc(bmc.Bmc):
    power = 'on'
    def get_power_state(self):
        return self.power

Bmc({'admin': 'password'}, port=int(sys.argv[1]), address='127.0.0.1').listen()
PY

targets=()
for i in "${!ports[@]}"; do
  port=${ports[$i]}
  targets+=("127.0.0.1:$port")
  if [ "$i" -lt "$count_sim" ]; then
    dir="$work/sim$i"
    mkdir -p "$dir/state"
    echo 1 > "$dir/power"
    cat > "$dir/lan.conf" <<CONF
name "bench$i"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789ab$(printf '%04x' "$i")
    lan_config_program "/bin/true"
  endlan
  chassis_control "$work/chassis-control $dir"
  user 2 true "admin" "password" admin 10 none md2 md5 straight
CONF
    ipmi_sim -c "$dir/lan.conf" -f "$work/bmc.emu" -s "$dir/state" -n >"$dir/log" 2>&1 </dev/null &
  else
    "$python" "$work/pyghmi-bmc.py" "$port" >"$work/pyghmi$i.log" 2>&1 </dev/null &
  fi
  pids+=($!)
done

deadline=$((SECONDS + 60))
for port in "${ports[@]}"; do
  until ss -Hlun "sport = :$port" | grep -q .; do
    [ $SECONDS -lt $deadline ] || { echo "bench/bmc: BMC on port $port did not start" >&2; exit 1; }
    sleep 0.2
  done
done
echo "bench/bmc: ${#ports[@]} BMCs up ($count_sim ipmi_sim, $count_pyghmi pyghmi)"

# Rivet.
/usr/bin/time -f '%U %S %e' -o "$work/rivet.time" \
  "$poll" --seconds "$seconds" --password-file "$work/password" --interval-ms 0 \
  "${targets[@]}" >"$work/rivet.json" 2>"$work/rivet.err" || {
  cat "$work/rivet.err" >&2; exit 1; }
rivet_ok=$(jq -r .ok "$work/rivet.json")
rivet_failed=$(jq -r .failed "$work/rivet.json")
rivet_wall=$(jq -r .seconds "$work/rivet.json")
rivet_login=$(jq -r .login_seconds "$work/rivet.json")
read -r rivet_user rivet_sys _ < "$work/rivet.time"

# ipmitool, one process per call, $workers at a time.
cat > "$work/ipmitool-worker.sh" <<'SH'
#!/bin/bash
# worker <index> <workers> <end, µs since the epoch> <password file> <result file> <ports…>
index=$1 workers=$2 end=$3 password=$4 result=$5; shift 5
ports=("$@") ok=0 failed=0 next=$index
# EPOCHREALTIME and [[ ]] keep the loop itself from forking anything but ipmitool.
while [[ ${EPOCHREALTIME/./} -lt $end ]]; do
  port=${ports[$((next % ${#ports[@]}))]}
  next=$((next + workers))
  status=$(ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$port" -L ADMINISTRATOR -U admin \
             -R 1 -N 5 -f "$password" power status 2>/dev/null)
  if [[ $status == "Chassis Power is"* ]]; then
    ok=$((ok + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "$ok $failed" > "$result"
SH
chmod +x "$work/ipmitool-worker.sh"
cat > "$work/ipmitool-run.sh" <<'SH'
#!/bin/bash
# run <workers> <seconds> <password file> <work dir> <ports…>
workers=$1 seconds=$2 password=$3 work=$4; shift 4
start=${EPOCHREALTIME/./}
end=$((start + seconds * 1000000))
for ((w = 0; w < workers; w++)); do
  "$work/ipmitool-worker.sh" "$w" "$workers" "$end" "$password" "$work/worker$w" "$@" &
done
wait
echo "$start ${EPOCHREALTIME/./}" > "$work/ipmitool.wall"
SH
chmod +x "$work/ipmitool-run.sh"
ports_for_ipmitool=()
for target in "${targets[@]}"; do ports_for_ipmitool+=("${target##*:}"); done
/usr/bin/time -f '%U %S %e' -o "$work/ipmitool.time" \
  "$work/ipmitool-run.sh" "$workers" "$seconds" "$work/password" "$work" "${ports_for_ipmitool[@]}"
read -r tool_user tool_sys _ < "$work/ipmitool.time"
read -r tool_start tool_end < "$work/ipmitool.wall"
tool_ok=0 tool_failed=0
for ((w = 0; w < workers; w++)); do
  read -r ok failed < "$work/worker$w"
  tool_ok=$((tool_ok + ok)); tool_failed=$((tool_failed + failed))
done

cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
report=$(
  python3 - "$rivet_ok" "$rivet_failed" "$rivet_wall" "$rivet_user" "$rivet_sys" "$rivet_login" \
    "$tool_ok" "$tool_failed" "$tool_start" "$tool_end" "$tool_user" "$tool_sys" \
    "$workers" "${#ports[@]}" "$count_sim" "$count_pyghmi" "$(nproc)" "$cpu_model" \
    "$(cat /etc/debian_version)" "$(ipmitool -V)" <<'PY'
import sys
(r_ok, r_fail, r_wall, r_user, r_sys, r_login, t_ok, t_fail, t_start, t_end, t_user, t_sys,
 workers, bmcs, sims, pyghmis, cores, cpu, debian, ipmitool) = sys.argv[1:]
r_ok, r_fail, t_ok, t_fail = map(int, (r_ok, r_fail, t_ok, t_fail))
r_wall, t_wall = float(r_wall), (int(t_end) - int(t_start)) / 1e6
r_cpu, t_cpu = float(r_user) + float(r_sys), float(t_user) + float(t_sys)
r_rate, t_rate = r_ok / r_wall, t_ok / t_wall
r_per, t_per = 1000 * r_cpu / max(r_ok, 1), 1000 * t_cpu / max(t_ok, 1)
print(f"""# BMC benchmark: IPMI power-status polling

{bmcs} simulated BMCs ({sims} OpenIPMI `ipmi_sim`, {pyghmis} pyghmi `Bmc`) on 127.0.0.1, polled
for about {r_wall:.0f} s by each client in turn. Machine: {cores} cores, {cpu}, Debian {debian};
the simulators share the same cores, so both clients are partly bound by the BMCs' speed.

| Client | How | Successful polls | Failed | Polls/s | Client CPU s (user+sys) | CPU ms per poll |
|---|---|---|---|---|---|---|
| Rivet `ipmi_poll` | 1 process, {bmcs} sessions kept open, all concurrent, spacing 0 | {r_ok} | {r_fail} | {r_rate:.1f} | {r_cpu:.2f} | {r_per:.3f} |
| {ipmitool} | 1 process per call (`-I lanplus -C 3 -L ADMINISTRATOR -R 1 -N 5 -f`), {workers} in parallel | {t_ok} | {t_fail} | {t_rate:.1f} | {t_cpu:.2f} | {t_per:.3f} |

- Throughput: Rivet **{r_rate / max(t_rate, 1e-9):.1f}x** the polls per second of ipmitool.
- CPU per poll: ipmitool spends **{t_per / max(r_per, 1e-9):.0f}x** the client CPU Rivet does.
- Rivet's {bmcs} logins (RMCP+ suite negotiation 17 -> 3, RAKP, privilege raise) took {float(r_login):.3f} s together.""")
PY
)
echo "$report" > "$out/bmc.md"
echo "$report"
