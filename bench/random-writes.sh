#!/usr/bin/env bash
# random-writes.sh - 4 KiB random writes over a region as large as --max-dirty, under upload
# policies (--max-dirty) and extent sizes side by side in one run on one local MinIO
# (bench/random-writes.ts says what and why). Installs what it needs first, builds, and with
# BENCH_BASE="<revision> ..." also measures those builds' defaults beside them.
# Settings: BENCH_REPEAT (default 3), BENCH_RANDOM_SECONDS (default 10), BENCH_REGION_MIB
# (default 1024; 256 for the hot region), BENCH_VARIANTS, BENCH_OUT, BENCH_BASE.
# Writes bench/results/random-writes-latest.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
log() { printf '[bench] %s\n' "$*" >&2; }

bash scripts/install-test-deps.sh
. scripts/node-env.sh
s3nbd_use_node
bash scripts/install-minio.sh >/dev/null
npm run --silent build >&2
bases=""
for rev in ${BENCH_BASE:-}; do
  BENCH_BASE="$rev" base_setup "$PWD"
  bases="$bases${bases:+,}$BASE_NAME|$BASE_MAIN"
done

BENCH_BASES="$bases" BENCH_COMMIT="$(git rev-parse --short HEAD)" node bench/random-writes.ts
