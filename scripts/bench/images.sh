#!/usr/bin/env bash
# Image pipeline benchmark: `rivet image write` side by side with the tools it replaces, in
# one run, on a generated 2 GiB disk (512 × 4 MiB chunks: 190 random, 95 text, 227 holes)
# as qcow2, zlib-compressed qcow2, zstd-compressed qcow2, raw.gz and raw.zst.
#
#  1. Local files: rivet vs `qemu-img convert -O raw -t writeback` (both fsync at the end);
#     for raw.gz/raw.zst, which qemu-img cannot read, vs `pigz -dc`/`zstd -dc` + sync.
#
# The target is a file in /dev/shm: this VM's disk is shared with other builds and its
# flush times vary by 5× from run to run, which would measure the neighbours, not the tools.
# On tmpfs every row measures the pipeline itself (and fsync costs nothing for anyone).
#  2. HTTP: rivet streaming from BusyBox httpd (Range) and python http.server (no Range),
#     verifying sha256 inline, vs the IPA path: download into tmpfs (the ramdisk), sha256sum,
#     then `qemu-img convert -t directsync -W -O raw` (qcow2) or pigz/zstd (raw.*).
#
# Wall time is the median of $RUNS runs (interleaved between the tools compared); peak RSS
# (/usr/bin/time's maximum resident set) the largest of them.
# Results: target/bench/images.md. Needs ~7 GiB free on disk and 4 GiB in /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
rivet=$root/target/release/rivet
[ -x "$rivet" ] || cargo build --quiet --release -p rivet-engine --bin rivet
work=$root/target/bench/images-work
report=$root/target/bench/images.md
runs=${RUNS:-5}
target=/dev/shm/rivet-bench-target.raw
download=/dev/shm/rivet-bench-download
mkdir -p "$work"
cd "$work"

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing; run just deps" >&2; exit 1; }; }
for tool in qemu-img pigz zstd curl busybox python3 sha256sum; do need "$tool"; done
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing; run just deps" >&2; exit 1; }

# --- the test images (kept between runs; regenerated when this generator changes) ----------
generator_version=1
if [ "$(cat version 2>/dev/null)" != "$generator_version" ]; then
  echo "bench: generating the 2 GiB image and its variants (about a minute)"
  rm -f ./*.raw ./*.qcow2 ./*.gz ./*.zst
  python3 - base.raw <<'PY'
import random, sys
rng = random.Random(42)
kinds = ['r'] * 190 + ['t'] * 95 + ['z'] * 227
rng.shuffle(kinds)
text = b''.join(b'line %08d: Rivet streams images straight to disk, verifying them inline.\n' % i
                for i in range(60000))
chunk = 4 << 20
with open(sys.argv[1], 'wb') as f:
    for i, kind in enumerate(kinds):
        if kind == 'r':
            f.write(rng.randbytes(chunk))
        elif kind == 't':
            offset = (i * 7919) % (len(text) - chunk)
            f.write(text[offset:offset + chunk])
        else:
            f.seek(chunk, 1)
    f.truncate(len(kinds) * chunk)
PY
  qemu-img convert -f raw -O qcow2 base.raw plain.qcow2
  qemu-img convert -c -f raw -O qcow2 base.raw zlib.qcow2
  qemu-img convert -c -o compression_type=zstd -f raw -O qcow2 base.raw zstd.qcow2
  pigz -6 -k -f base.raw
  zstd -q -3 -T0 -k -f base.raw
  echo "$generator_version" > version
fi
images=(plain.qcow2 zlib.qcow2 zstd.qcow2 base.raw.gz base.raw.zst)
declare -A label=([plain.qcow2]="qcow2" [zlib.qcow2]="qcow2, zlib clusters" [zstd.qcow2]="qcow2, zstd clusters"
                  [base.raw.gz]="raw.gz" [base.raw.zst]="raw.zst")
logical=$(stat -c %s base.raw)
reference_sha=$(sha256sum base.raw | cut -c1-64)

# --- servers ------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
range_port=$(free_port)
busybox httpd -f -p "127.0.0.1:$range_port" -h "$work" & range_pid=$!
plain_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work" "$plain_port" >/dev/null 2>&1 & plain_pid=$!
cleanup() {
  kill "$range_pid" "$plain_pid" 2>/dev/null || true
  rm -f "$download" "$target"
}
trap cleanup EXIT
for port in "$range_port" "$plain_port"; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

# --- measuring ----------------------------------------------------------------------------
# Tools compared with each other run interleaved (A B C, A B C, …) so that the load other
# builds put on this shared machine falls on all of them alike.
rows=()
names=() commands=() checks=() kinds=()
add() { names+=("$1"); commands+=("$2"); checks+=("$3"); kinds+=("$4"); }

one_run() { # command → sets t (s) and m (KiB)
  local out
  rm -f "$target" "$download"
  sync
  out=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$out" bash -c "$1" >/dev/null 2>"$out.err" || {
    echo "bench: failed: $1" >&2; cat "$out.err" >&2; exit 1; }
  read -r t m < <(tail -1 "$out")
  rm -f "$out" "$out.err"
}

check_output() {
  local got
  got=$(sha256sum "$target" | cut -c1-64)
  [ "$got" = "$reference_sha" ] || { echo "bench: $1 wrote a different disk" >&2; exit 1; }
}

row() { # image case tool wall rss baseline_wall
  local mbs ratio
  mbs=$(awk -v b="$logical" -v t="$4" 'BEGIN {printf "%.0f", b / 1048576 / t}')
  ratio=$(awk -v r="$6" -v t="$4" 'BEGIN {printf "%.2f×", r / t}')
  rows+=("| $1 | $2 | $3 | $4 | $mbs | $(( $5 / 1024 )) | $ratio |")
  printf '%-22s %-22s %-40s %6ss %6s MiB/s %4s MiB  %s\n' "$1" "$2" "$3" "$4" "$mbs" "$(( $5 / 1024 ))" "$ratio"
}

# Runs the cases added since the last call; the first one is the baseline of each group.
measure_group() { # image-label case-label
  local n=${#commands[@]} r i
  local -a walls rss
  for ((i = 0; i < n; i++)); do walls[i]=""; rss[i]=0; done
  for ((r = 0; r < runs; r++)); do
    for ((i = 0; i < n; i++)); do
      one_run "${commands[i]}"
      [ "${checks[i]}" = yes ] && check_output "${names[i]}"
      walls[i]+="$t "
      [ "$m" -gt "${rss[i]}" ] && rss[i]=$m
    done
  done
  local base
  for ((i = 0; i < n; i++)); do
    local median
    median=$(printf '%s\n' ${walls[i]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    [ "$i" -eq 0 ] && base=$median
    row "$1" "$2" "${names[i]}" "$median" "${rss[i]}" "$base"
  done
  names=() commands=() checks=() kinds=()
}

# IPA's qemu-img uses -t directsync on the device; tmpfs has no O_DIRECT, so writeback here.
ipa_path() { # url sha image
  local url=$1 sha=$2 image=$3
  curl -sf -o "$download" "$url"
  [ "$(sha256sum "$download" | cut -c1-64)" = "$sha" ]
  case $image in
    *.qcow2) qemu-img convert -f qcow2 -O raw -t writeback -W "$download" "$target" ;;
    *.gz) pigz -dc "$download" > "$target" && sync "$target" ;;
    *.zst) zstd -q -dc "$download" > "$target" && sync "$target" ;;
  esac
  rm -f "$download"
}
export -f ipa_path
export target download

echo "bench: images, $runs runs each, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for image in "${images[@]}"; do
  sha=$(sha256sum "$image" | cut -c1-64)
  name=${label[$image]}

  # 1. local file → file
  case $image in
    *.qcow2) add "qemu-img convert -O raw" "qemu-img convert -t writeback -f qcow2 -O raw $image $target" yes base ;;
    *.gz) add "pigz -dc > file; sync" "pigz -dc $image > $target && sync $target" yes base ;;
    *.zst) add "zstd -dc > file; sync" "zstd -q -dc $image > $target && sync $target" yes base ;;
  esac
  add "rivet image write" "$rivet -q image write $image $target --progress none" yes rivet
  measure_group "$name" "file → file"

  # 2. HTTP → file, verified
  add "IPA path (tmpfs + sha256sum + convert)" "ipa_path http://127.0.0.1:$range_port/$image $sha $image" yes base
  add "rivet (BusyBox httpd, Range)" \
    "$rivet -q image write http://127.0.0.1:$range_port/$image $target --checksum $sha --progress none" yes rivet
  add "rivet (python http.server, no Range)" \
    "$rivet -q image write http://127.0.0.1:$plain_port/$image $target --checksum $sha --progress none" yes rivet
  measure_group "$name" "HTTP → file, sha256"
done

{
  echo "# Image pipeline benchmark"
  echo
  echo "Machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(( $(grep MemTotal /proc/meminfo | awk '{print $2}') / 1048576 )) GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME"); load at start $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ). qemu-img $(qemu-img --version | head -1 | awk '{print $3}'). Median of $runs runs, interleaved between the tools compared; RSS is the peak of all runs."
  echo
  echo "Disk: 2 GiB virtual ($(( logical >> 20 )) MiB), 190 random + 95 text + 227 empty 4 MiB chunks."
  echo "Sizes: $(for i in "${images[@]}"; do printf '%s %s MiB; ' "${label[$i]}" "$(( $(stat -c %s "$i") >> 20 ))"; done)"
  echo "MiB/s is of the 2048 MiB virtual disk. The ratio is the baseline's wall time over the row's."
  echo "Every run's output was checked byte for byte (sha256) against the original raw disk."
  echo
  echo "| Image | Case | Tool | Wall (s) | MiB/s | Peak RSS (MiB) | Speed-up vs baseline |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Targets are files in /dev/shm (see the script's header for why). The IPA path also holds the whole"
  echo "downloaded image in the ramdisk (tmpfs) while it converts; its RSS column does not show that memory."
} > "$report"
echo "bench: report written to $report"
