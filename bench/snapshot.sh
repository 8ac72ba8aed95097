#!/usr/bin/env bash
# snapshot.sh - write latency while a running gateway takes a snapshot of 1 GiB of dirty data
# (issue 16: the snapshot must not stop client I/O while its data is uploaded).
#
# Per run: a fresh gateway on a local MinIO (fresh key prefix, empty cache dir, --size 2G
# --max-dirty 4G --cache-size 6G --upload-concurrency 16 --upload-delay 3600000, so nothing is
# uploaded until asked); nbdcopy writes BENCH_DATA_MIB (1 GiB) of random data at the start of the
# device, no FLUSH: all of it dirty, only in the journal and the cache. Then fio (nbd engine)
# writes 4 KiB at random offsets of that same region for BENCH_RUNTIME seconds at BENCH_RATE
# writes a second (iodepth BENCH_IODEPTH), logging every write's latency, and BENCH_START
# seconds after fio starts one of:
#   none:     nothing (the baseline);
#   snapshot: `s3nbd snapshot create --cache-dir <the gateway's>` (through its control socket),
#             timed until it returns, i.e. until every extent's version at the cut is uploaded;
#             a write to an extent whose cut version is not uploaded yet costs a local copy;
#   flush:    a FLUSH on a second connection (flush mode s3: returns once every dirty extent
#             is uploaded), the same uploads without a cut: what uploading 1 GiB costs the
#             writes on this machine, to tell the cut's own cost from the upload's.
# Modes take turns within a round (the order rotates each round). Reported per mode: the
# medians over rounds of the write latency percentiles (p50, p90, p99, p99.9, max) within the
# window the snapshot (or FLUSH) ran, and over the whole run; the writes done; the snapshot's
# (FLUSH's) seconds, and the dirty data over them in MiB/s; MinIO's PutObject count in the run;
# the gateway's CPU seconds. For `none`, the window is the same seconds as the snapshot run of
# its round.
#
# Environment:
#   BENCH_REPEAT    rounds (default 3)
#   BENCH_RUNTIME   seconds of the latency workload (default 30)
#   BENCH_START     seconds into it when the snapshot or FLUSH starts (default 2)
#   BENCH_RATE      writes per second (default 500; 0: as fast as they go)
#   BENCH_IODEPTH   writes in flight (default 1)
#   BENCH_DATA_MIB  dirty data written first, MiB (default 1024)
#   BENCH_MODES     modes measured (default "none snapshot flush")
#   BENCH_COUNT     count MinIO's requests per run, 1 or 0 (default 1; each reading waits 11 s)
#   BENCH_OUT       report file (default bench/results/snapshot-latest.md)
#   S3NBD_NODE      node binary
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPEAT="${BENCH_REPEAT:-3}"
RUNTIME="${BENCH_RUNTIME:-30}"
START="${BENCH_START:-2}"
RATE="${BENCH_RATE:-500}"
IODEPTH="${BENCH_IODEPTH:-1}"
DATA_MIB="${BENCH_DATA_MIB:-1024}"
read -r -a MODES <<<"${BENCH_MODES:-none snapshot flush}"
COUNT="${BENCH_COUNT:-1}"
BUCKET=bench
GW_ARGS=(--size 2G --max-dirty 4G --cache-size 6G --upload-concurrency 16 --upload-delay 3600000)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'snapshot.sh: error: %s\n' "$*" >&2; exit 1; }

for v in REPEAT RUNTIME START RATE IODEPTH DATA_MIB COUNT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, got '${!v}'"
done
(( REPEAT >= 1 && RUNTIME > START && IODEPTH >= 1 && DATA_MIB >= 1 && DATA_MIB <= 2048 )) \
  || die "need BENCH_REPEAT >= 1, BENCH_RUNTIME > BENCH_START, BENCH_IODEPTH >= 1, 1 <= BENCH_DATA_MIB <= 2048"
for m in "${MODES[@]}"; do [[ "$m" =~ ^(none|snapshot|flush)$ ]] || die "BENCH_MODES: unknown mode '$m' (none, snapshot, flush)"; done

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUT="${BENCH_OUT:-$SCRIPT_DIR/results/snapshot-latest.md}"

command -v nbdcopy >/dev/null 2>&1 || die "nbdcopy not found; install it: apt-get install -y libnbd-bin"
command -v fio >/dev/null 2>&1 || die "fio not found; install it: apt-get install -y fio"
fio --enghelp=nbd >/dev/null 2>&1 || die "fio has no nbd ioengine; install the Debian build: apt-get install -y fio"
find_python
find_node
MAIN_JS="$(ensure_built "$ROOT")"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/s3nbd-snapbench.XXXXXX")"
GW_PID="" FIO_PID="" ACT_PID=""
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  # fio and the action run under timeout, which passes SIGTERM on to them.
  for p in "$ACT_PID" "$FIO_PID"; do if [[ -n "$p" ]]; then kill -TERM "$p" 2>/dev/null || true; fi; done
  if [[ -n "$GW_PID" ]]; then kill -KILL "$GW_PID" 2>/dev/null || true; fi
  stop_pid "$MINIO_PID" minio 10 || true
  rm -rf "$TMP"
  exit "$rc"
}
bench_traps

minio_start "$ROOT" "$TMP/minio" "$BUCKET"
SRC="$TMP/source.bin"
random_file "$SRC" "$DATA_MIB"

requests() { if (( COUNT )); then sleep 11; raw requests || die "could not read MinIO's request counters"; else echo '{}'; fi; }

# RESULT[mode,round]: a JSON object per run, read by the report below.
declare -A RESULT
run() {  # mode round
  local m="$1" r="$2" prefix="$1-$2" cache="$TMP/cache-$1-$2" sock="$TMP/s3nbd.sock" uri i
  local store=(--store "s3://$BUCKET/$prefix" --s3-endpoint "$ENDPOINT")
  rm -f "$sock"
  "$NODE" "$MAIN_JS" serve "${store[@]}" --socket "$sock" --cache-dir "$cache" "${GW_ARGS[@]}" \
    --log-level warn >>"$TMP/gateway.log" 2>&1 &
  GW_PID=$!
  for ((i = 0; i < 300; i++)); do [[ -S "$sock" ]] && break; kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
  [[ -S "$sock" ]] || { tail -n 5 "$TMP/gateway.log" >&2; die "the gateway did not start (see above)"; }
  uri="nbd+unix:///?socket=$sock"
  timeout 900 nbdcopy --connections=1 --requests=16 --request-size=1048576 "$SRC" "$uri" 2>"$TMP/nbdcopy.err" \
    || { cat "$TMP/nbdcopy.err" >&2; die "nbdcopy failed (see above)"; }
  local before after gw0 t0 t1 t2 act_rc=0 fio_rc=0 action=""
  before="$(requests)"
  local fio_args=(--name=lat --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth="$IODEPTH" --numjobs=1
    --size="${DATA_MIB}M" --time_based --runtime="$RUNTIME" --randrepeat=0
    --write_lat_log="$TMP/lat-$m-$r" --log_avg_msec=0 --output-format=json --output="$TMP/fio-$m-$r.json")
  (( RATE > 0 )) && fio_args+=(--rate_iops="$RATE")
  gw0="$(cpu_of "$GW_PID")"
  t0="$(now)"
  timeout "$((RUNTIME + 120))" fio "${fio_args[@]}" >"$TMP/fio.err" 2>&1 &
  FIO_PID=$!
  sleep "$START"
  case "$m" in
    snapshot) action=(timeout 900 "$NODE" "$MAIN_JS" snapshot create "${store[@]}" --cache-dir "$cache" "s$r") ;;
    flush) action=(timeout 900 "$PY" -c 'import nbd, sys; h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.flush(); h.shutdown()' "$uri") ;;
    none) action=(true) ;;
  esac
  t1="$(now)"
  "${action[@]}" >"$TMP/action.out" 2>&1 &
  ACT_PID=$!
  wait "$ACT_PID" || act_rc=$?
  t2="$(now)"
  ACT_PID=""
  wait "$FIO_PID" || fio_rc=$?
  FIO_PID=""
  (( act_rc == 0 )) || { cat "$TMP/action.out" >&2; die "$m failed with status $act_rc (see above)"; }
  (( fio_rc == 0 )) || { cat "$TMP/fio.err" >&2; die "fio failed with status $fio_rc (see above)"; }
  [[ "$m" != snapshot ]] || grep -q "^created snapshot s$r: $DATA_MIB extents" "$TMP/action.out" \
    || { cat "$TMP/action.out" >&2; die "the snapshot does not hold the $DATA_MIB extents written"; }
  local gwcpu; gwcpu="$("$PY" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$gw0" "$(cpu_of "$GW_PID")")"
  after="$(requests)"
  kill -KILL "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null || true
  GW_PID=""
  rm -rf "$cache"
  # The action's window in fio's clock (ms since fio started; fio's own start-up, a few ms, is
  # counted in it).
  RESULT[$m,$r]="$("$PY" - "$(secs "$t0" "$t1")" "$(secs "$t0" "$t2")" "$gwcpu" "$m" "$before" "$after" <<'PY'
import json, sys
start, end, cpu, mode = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
a, b = json.loads(sys.argv[5]), json.loads(sys.argv[6])
req = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
print(json.dumps({'start': start, 'end': end, 'seconds': end - start if mode != 'none' else 0, 'cpu': cpu,
                  'requests': {k: v for k, v in sorted(req.items()) if v}}))
PY
)"
  log "round $r $m: $(printf '%s' "${RESULT[$m,$r]}")"
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= REPEAT; r++)); do
  n=${#MODES[@]}
  for ((i = 0; i < n; i++)); do run "${MODES[(i + r - 1) % n]}" "$r"; done
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- report ----------------------------------------------------------------
RUNS_JSON="$TMP/runs.json"
{
  echo '{'
  first=1
  for key in "${!RESULT[@]}"; do
    (( first )) || echo ','
    first=0
    printf '"%s": %s' "$key" "${RESULT[$key]}"
  done
  echo '}'
} >"$RUNS_JSON"
REPORT="$("$PY" - "$RUNS_JSON" "$TMP" "$REPEAT" "$DATA_MIB" "${MODES[@]}" <<'PY'
import json, statistics, sys
runs = json.load(open(sys.argv[1]))
tmp, repeat, data_mib, modes = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
PCT = [50, 90, 99, 99.9]

def lat_log(mode, r):
    # fio 3.x: "time (ms), latency (ns), direction, block size, offset[, priority]" per write.
    out = []
    with open(f"{tmp}/lat-{mode}-{r}_lat.1.log") as f:
        for line in f:
            p = line.split(',')
            if len(p) >= 2 and p[2].strip() == '1':
                out.append((int(p[0]), int(p[1]) / 1e6))
    return out

def pcts(lat):
    if not lat:
        return None
    s = sorted(lat)
    return [s[min(len(s) - 1, int(len(s) * p / 100))] for p in PCT] + [s[-1]]

def window(mode, r):
    ref = runs.get(f"{'snapshot' if 'snapshot' in modes else modes[-1]},{r}") if mode == 'none' else runs[f"{mode},{r}"]
    return (ref['start'] * 1000, ref['end'] * 1000) if ref and ref['seconds'] else None

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, unit=''):
    if x is None:
        return '—'
    return f"{x:.2f}{unit}" if x < 10 else f"{x:.1f}{unit}" if x < 100 else f"{x:.0f}{unit}"

rows, samples, per = [], [], {}
for m in modes:
    per[m] = {'win': [], 'all': [], 'writes': [], 'secs': [], 'mibps': [], 'puts': [], 'cpu': [], 'rate_win': []}
    for r in range(1, repeat + 1):
        run = runs[f"{m},{r}"]
        log = lat_log(m, r)
        w = window(m, r)
        inside = [l for t, l in log if w and w[0] <= t <= w[1]]
        per[m]['all'].append(pcts([l for _, l in log]))
        per[m]['win'].append(pcts(inside))
        per[m]['writes'].append(len(log))
        per[m]['rate_win'].append(len(inside) / ((w[1] - w[0]) / 1000) if w and w[1] > w[0] else None)
        puts = run['requests'].get('putobject')
        per[m]['puts'].append(puts)
        per[m]['cpu'].append(run['cpu'])
        if run['seconds']:
            per[m]['secs'].append(run['seconds'])
            per[m]['mibps'].append(data_mib / run['seconds'])
        samples.append(f"- {m}, round {r}: window {fmt(w[0] / 1000) if w else '—'}–{fmt(w[1] / 1000) if w else '—'} s of the run; "
                       f"write latency ms in it p50/p90/p99/p99.9/max {'/'.join(fmt(x) for x in per[m]['win'][-1] or [None])}, "
                       f"whole run {'/'.join(fmt(x) for x in per[m]['all'][-1] or [None])}; {len(log)} writes "
                       f"({len(inside)} in the window); {m} took {fmt(run['seconds'])} s; gateway CPU {run['cpu']:.2f} s; "
                       f"S3 requests {', '.join(f'{k} {v:.0f}' for k, v in run['requests'].items()) or 'not counted'}")

def colmed(m, key, i):
    return med([p[i] if p else None for p in per[m][key]])

head = "| write latency, ms (median of rounds) | " + " | ".join(modes) + " |"
rows.append(head)
rows.append("|---|" + "---:|" * len(modes))
for i, name in enumerate(['p50', 'p90', 'p99', 'p99.9', 'max']):
    rows.append(f"| {name}, while the snapshot / FLUSH ran | " + " | ".join(fmt(colmed(m, 'win', i)) for m in modes) + " |")
for i, name in enumerate(['p50', 'p90', 'p99', 'p99.9', 'max']):
    rows.append(f"| {name}, whole run | " + " | ".join(fmt(colmed(m, 'all', i)) for m in modes) + " |")
rows.append("| writes a second while it ran | " + " | ".join(fmt(med(per[m]['rate_win'])) for m in modes) + " |")
rows.append("| writes in the run | " + " | ".join(fmt(med(per[m]['writes'])) for m in modes) + " |")
rows.append("| seconds the snapshot / FLUSH took | " + " | ".join(fmt(med(per[m]['secs'])) if per[m]['secs'] else '—' for m in modes) + " |")
rows.append(f"| the dirty data's upload, MiB/s ({data_mib} MiB / those seconds) | " + " | ".join(fmt(med(per[m]['mibps'])) if per[m]['mibps'] else '—' for m in modes) + " |")
rows.append("| PutObject in the run (snapshot: copies and their tombstones too) | " + " | ".join(fmt(med(per[m]['puts'])) for m in modes) + " |")
rows.append("| gateway CPU seconds in the run | " + " | ".join(fmt(med(per[m]['cpu'])) for m in modes) + " |")
print("\n".join(rows))
print("=====")
print("\n".join(samples))
PY
)"
SUMMARY="${REPORT%%=====*}"
SAMPLES="${REPORT#*=====}"
SUMMARY+="
Each run: a fresh gateway (${GW_ARGS[*]}) on one local MinIO; nbdcopy wrote $DATA_MIB MiB of random data (1 MiB requests, 16 in flight, no FLUSH: all dirty); then fio (nbd engine) wrote 4 KiB at random offsets of those $DATA_MIB MiB, iodepth $IODEPTH, $( (( RATE )) && echo "$RATE writes/s" || echo "unthrottled"), for ${RUNTIME} s, every write's latency logged; ${START} s in, the mode's action started: none (nothing), snapshot (\`s3nbd snapshot create --cache-dir\` of the gateway's), flush (a FLUSH on a second connection). \"While it ran\": writes completed between the action's start and its end (for none: the seconds of its round's snapshot run). Medians over $REPEAT rounds, the modes' order rotating each round."
write_report "$OUT" "s3nbd: write latency during a snapshot of dirty data" "$SUMMARY" "${SAMPLES#$'\n'}
" <<EOF
- load average (1/5/15 min): $LOAD_START at start, $LOAD_END at end
- node: $NODE_VERSION ($NODE)
- minio: $MINIO_VERSION
- fio: $(fio --version); nbdcopy: $(nbdcopy --version | head -n1)
- s3nbd: $(s3nbd_revision "$ROOT")
- settings: BENCH_REPEAT=$REPEAT BENCH_RUNTIME=$RUNTIME BENCH_START=$START BENCH_RATE=$RATE BENCH_IODEPTH=$IODEPTH BENCH_DATA_MIB=$DATA_MIB BENCH_MODES="${MODES[*]}" BENCH_COUNT=$COUNT
EOF
