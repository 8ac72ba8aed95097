#!/usr/bin/env bash
# Stops the ZeroFS started by start-zerofs.sh (PEER_WORKDIR): on SIGTERM ZeroFS 1.4.5 stops its
# servers, flushes its memtable to S3 ("Performing final flush and closing database") and
# closes the database; we wait for its exit (up to PEER_STOP_TIMEOUT, default 300 s), and fail
# unless its log then says "Shutdown complete" without a failed final flush (a failed flush
# is only logged: its exit status would not show it, and it is not our child anyway).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -n "${PEER_WORKDIR:-}" ]] || peer_die "PEER_WORKDIR is not set"
LOG="$PEER_WORKDIR/zerofs.log"
# The log is appended to by every start: look only at what this stop adds.
from=$(($(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1))
running=0
[[ -f "$PEER_WORKDIR/zerofs.pid" ]] && running=1
peer_stop_pid "$PEER_WORKDIR/zerofs.pid" "${PEER_STOP_TIMEOUT:-300}"
# A start that failed half-way may have left its FUSE mount behind.
mountpoint -q "$PEER_WORKDIR/mnt" 2>/dev/null && { fusermount3 -u "$PEER_WORKDIR/mnt" || true; }
rm -f "${PEER_SOCKET:-$PEER_WORKDIR/nbd.sock}" "$PEER_WORKDIR/9p.sock"
if ((running)); then
  tail -c +"$from" "$LOG" | grep -E 'Final flush failed|Database close failed' >&2 &&
    peer_die "zerofs did not flush and close cleanly (log: $LOG)"
  tail -c +"$from" "$LOG" | grep -q 'Shutdown complete' ||
    peer_die "zerofs did not report a clean shutdown (log: $LOG)"
fi
exit 0
