#!/usr/bin/env bash
# The container image's entrypoint, also run by CI outside Docker. exec: node becomes PID 1
# and receives SIGTERM itself.
set -euo pipefail
exec node "$(dirname "$0")/../dist/cli/main.js" "$@"
