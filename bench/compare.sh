#!/usr/bin/env bash
# compare.sh - s3nbd against s3backer, nbdkit's S3 plugin and ZeroFS, and against the limits
# (nbdkit memory, raw S3 requests), side by side in one run on one local MinIO. Installs what
# it needs first (test tools and Node, MinIO, the peers, matplotlib in a venv), then runs
# bench/compare/main.ts and writes docs/benchmarks.md and docs/benchmarks.png.
# Settings: see the top of bench/compare/main.ts (BENCH_REPEAT, BENCH_DATA_MIB, ...).
# Needs root (loop devices, mounts, FUSE).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
. scripts/node-env.sh
s3nbd_use_node
bash bench/peers/install-peers.sh
bash scripts/install-minio.sh >/dev/null
npm run build >&2

# The chart: matplotlib from PyPI in a venv of Debian's python3.
VENV="$S3NBD_CACHE_DIR/bench-venv"
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'install ok installed' \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check matplotlib==3.9.2 >&2
fi

node bench/compare/main.ts
node bench/compare/report.ts
"$VENV/bin/python" bench/compare/chart.py bench/results/compare-latest.json docs/benchmarks.png
echo "[bench] wrote docs/benchmarks.md and docs/benchmarks.png" >&2
