#!/usr/bin/env bash
# Stops the ZeroFS started by start-zerofs.sh (PEER_WORKDIR): on SIGTERM it flushes its
# memtable to S3 and closes the database, then exits; we wait for that (up to 300 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -n "${PEER_WORKDIR:-}" ]] || peer_die "PEER_WORKDIR is not set"
peer_stop_pid "$PEER_WORKDIR/zerofs.pid" "${PEER_STOP_TIMEOUT:-300}"
rm -f "${PEER_SOCKET:-$PEER_WORKDIR/nbd.sock}" "$PEER_WORKDIR/9p.sock"
