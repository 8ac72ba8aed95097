#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, builds, type-checks, lints,
# then runs the unit tests, the end-to-end tests with real NBD clients, the integration tests
# against a real S3 server, and the Linux kernel's NBD client in a QEMU VM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
. scripts/node-env.sh
s3nbd_use_node

# Real S3 servers for the integration tests: MinIO built from source once and cached
# (scripts/install-minio.sh), unless S3NBD_TEST_S3_ENDPOINT points at one you run yourself,
# and Ceph RGW from Debian's packages (installed above by install-test-deps.sh, which has
# scripts/install-ceph.sh check them).
if [ -z "${S3NBD_TEST_S3_ENDPOINT:-}" ]; then bash scripts/install-minio.sh >/dev/null; fi

npm run --silent build
npm run --silent typecheck
npm run --silent lint
# Every gateway log and command output the tests see, and every secret they use, is kept
# here; after the suite, no output may hold any secret (test/helpers/log-sweep.ts).
S3NBD_TEST_LOG_DIR="$(mktemp -d -t s3nbd-test-logs.XXXXXX)"
export S3NBD_TEST_LOG_DIR
trap 'rm -rf "$S3NBD_TEST_LOG_DIR"' EXIT
node --test --test-reporter=spec --test-concurrency=1 \
  'test/unit/**/*.test.ts' 'test/e2e/**/*.test.ts' 'test/integration/**/*.test.ts' 'test/vm/**/*.test.ts'
node test/sweep-secrets.ts "$S3NBD_TEST_LOG_DIR"
