#!/usr/bin/env bash
# `npm start`: the embedded default. A 1 GiB device on 127.0.0.1:10809, stored in ./s3nbd-data.
# Extra arguments go to `s3nbd serve` (e.g. npm start -- --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh
s3nbd_use_node
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund >&2; fi
if [ ! -f dist/cli/main.js ] || [ -n "$(find src -newer dist/cli/main.js -print -quit)" ]; then npm run --silent build; fi
exec node dist/cli/main.js serve --store "${S3NBD_STORE:-./s3nbd-data}" --size "${S3NBD_SIZE:-1G}" "$@"
