#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, builds, type-checks, lints,
# then runs the unit tests and the end-to-end tests with real NBD clients.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
. scripts/node-env.sh
s3nbd_use_node

npm run --silent build
npm run --silent typecheck
npm run --silent lint
node --test --test-reporter=spec 'test/unit/**/*.test.ts' 'test/e2e/**/*.test.ts' --test-concurrency=1
