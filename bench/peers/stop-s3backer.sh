#!/usr/bin/env bash
# Stops what start-s3backer.sh started (PEER_WORKDIR) so that every write is in S3:
# detaches the loop device (which writes back its dirty pages first), unmounts the FUSE file
# system, and waits for s3backer to exit. s3backer uploads its dirty blocks when it is unmounted
# ("unmount ...: flushing dirty data" in its log), but umount returns before that is done
# (s3backer(1), BUGS): only the exit of the process says that the cache is in S3.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -n "${PEER_WORKDIR:-}" ]] || peer_die "PEER_WORKDIR is not set"
MNT="$PEER_WORKDIR/mnt"
TIMEOUT="${PEER_STOP_TIMEOUT:-300}"   # seconds to wait for the upload of the dirty blocks

if [[ -f "$PEER_WORKDIR/loopdev" ]]; then
  DEV="$(cat "$PEER_WORKDIR/loopdev")"
  if losetup "$DEV" 2>/dev/null | grep -qF "$MNT/file"; then
    blockdev --flushbufs "$DEV" || true
    losetup -d "$DEV"
    # losetup -d only marks the device for autoclear while something still holds it open.
    for ((i = 0; i < 100; i++)); do losetup "$DEV" >/dev/null 2>&1 || break; sleep 0.1; done
    losetup "$DEV" >/dev/null 2>&1 && peer_die "$DEV is still attached (in use?)"
  fi
  rm -f "$PEER_WORKDIR/loopdev"
fi

LOG="$PEER_WORKDIR/s3backer.log"
SEEN="$(wc -l <"$LOG" 2>/dev/null || echo 0)"   # check only what this stop adds to the log
if mountpoint -q "$MNT"; then
  umount "$MNT"
fi
if [[ -f "$PEER_WORKDIR/s3backer.pid" ]]; then
  read -r PID START <"$PEER_WORKDIR/s3backer.pid"
  if [[ "$(peer_starttime "$PID")" == "$START" ]]; then
    for ((i = 0; i < TIMEOUT * 10; i++)); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && peer_die "s3backer (pid $PID) still running after $TIMEOUT s"
  fi
  rm -f "$PEER_WORKDIR/s3backer.pid"
fi
NEW="$(tail -n "+$((SEEN + 1))" "$LOG" 2>/dev/null || true)"
grep 'flushing filesystem failed' <<<"$NEW" >&2 && peer_die "s3backer could not flush its cache (see $LOG)"
grep -q 'unmount .*: completed' <<<"$NEW" || peer_log "warning: no 'unmount ...: completed' in $LOG"
exit 0
