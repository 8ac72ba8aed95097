#!/usr/bin/env bash
# Stops the nbdkit started by start-nbdkit-s3.sh (PEER_WORKDIR). Nothing to flush: every
# write was already a completed PutObject when it was acknowledged.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -n "${PEER_WORKDIR:-}" ]] || peer_die "PEER_WORKDIR is not set"
peer_stop_pid "$PEER_WORKDIR/nbdkit.pid" 30
rm -f "${PEER_SOCKET:-$PEER_WORKDIR/nbd.sock}"
