#!/usr/bin/env bash
# The reliability soak: the crash loop (directory store and MinIO, alternating) and the
# protocol fuzzer (a real gateway on the memory store), side by side for DURATION seconds,
# niced so a shared machine stays usable. Each writes its own log; the totals are printed at
# the end. Exit status 1 if either found a violation or failed.
#
#   bash bench/soak/soak.sh [DURATION_SECONDS] [LOG_DIR]      # default: 3600 s, bench/results
#   SOAK_CRASH_ARGS="--stores dir" SOAK_FUZZ_ARGS="--store dir --hostile" bash bench/soak/soak.sh 600
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/node-env.sh
s3nbd_use_node

duration=${1:-3600}
logs=${2:-bench/results}
mkdir -p "$logs"
crash_log="$logs/soak-crash-loop.log"
fuzz_log="$logs/soak-fuzz.log"
# MinIO must be there before the clock starts (it is built from source the first time).
bash scripts/install-minio.sh >/dev/null

# shellcheck disable=SC2086 # the extra arguments are meant to split
nice -n "${SOAK_NICE:-10}" node bench/soak/crash-loop.ts --duration "$duration" ${SOAK_CRASH_ARGS:-} >"$crash_log" 2>&1 &
crash=$!
# shellcheck disable=SC2086
nice -n "${SOAK_NICE:-10}" node bench/soak/fuzz.ts --duration "$duration" ${SOAK_FUZZ_ARGS:---workers 3 --pause 2000 --hostile} >"$fuzz_log" 2>&1 &
fuzz=$!
trap 'kill "$crash" "$fuzz" 2>/dev/null || true' INT TERM
echo "soak: $duration s; logs $crash_log (pid $crash), $fuzz_log (pid $fuzz)"

status=0
wait "$crash" || status=1
wait "$fuzz" || status=1
grep -h 'TOTAL' "$crash_log" "$fuzz_log" || { echo 'soak: a run ended without its totals; see the logs'; status=1; }
exit "$status"
