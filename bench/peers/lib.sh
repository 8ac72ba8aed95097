# Sourced by the start-/stop- scripts of the peer contenders (see README.md).
#
# Common environment (the bucket must already exist):
#   PEER_ENDPOINT     S3 endpoint URL, e.g. http://127.0.0.1:9010 (path-style, region us-east-1)
#   PEER_ACCESS_KEY   PEER_SECRET_KEY   credentials
#   PEER_BUCKET       bucket
#   PEER_PREFIX       key prefix of this volume, without a trailing slash, e.g. run1/s3backer
#   PEER_SIZE         device size, bytes or with a K/M/G suffix (powers of 1024), e.g. 64M
#   PEER_OBJECT_SIZE  block/object size where the contender has one (default 1M, s3nbd's default)
#   PEER_WORKDIR      directory for the contender's pid file, log, config and cache (created)
#   PEER_SOCKET       NBD contenders: Unix socket to serve on (default $PEER_WORKDIR/nbd.sock)

peer_log() { echo "[peers] $*" >&2; }
peer_die() { echo "[peers] error: $*" >&2; exit 1; }

# Checks the common environment and sets SIZE_BYTES, OBJECT_SIZE_BYTES, SOCKET.
peer_env() {
  local v
  for v in PEER_ENDPOINT PEER_ACCESS_KEY PEER_SECRET_KEY PEER_BUCKET PEER_PREFIX PEER_SIZE PEER_WORKDIR; do
    [[ -n "${!v:-}" ]] || peer_die "$v is not set"
  done
  [[ "$PEER_ENDPOINT" == http://* || "$PEER_ENDPOINT" == https://* ]] || peer_die "PEER_ENDPOINT must be a URL"
  PEER_PREFIX="${PEER_PREFIX%/}"
  PEER_OBJECT_SIZE="${PEER_OBJECT_SIZE:-1M}"
  SIZE_BYTES="$(numfmt --from=iec "$PEER_SIZE")" || peer_die "bad PEER_SIZE: $PEER_SIZE"
  OBJECT_SIZE_BYTES="$(numfmt --from=iec "$PEER_OBJECT_SIZE")" || peer_die "bad PEER_OBJECT_SIZE"
  (( SIZE_BYTES % OBJECT_SIZE_BYTES == 0 )) || peer_die "PEER_SIZE must be a multiple of PEER_OBJECT_SIZE"
  mkdir -p "$PEER_WORKDIR"
  PEER_WORKDIR="$(cd "$PEER_WORKDIR" && pwd)"
  SOCKET="${PEER_SOCKET:-$PEER_WORKDIR/nbd.sock}"
}

# peer_wait_socket PID SOCKET LOG TIMEOUT_S: waits until an NBD server answers on SOCKET.
peer_wait_socket() {
  local pid="$1" sock="$2" log="$3" i
  for ((i = 0; i < $4 * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; peer_die "the server exited while starting (log: $log)"; }
    [[ -S "$sock" ]] && nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  peer_die "not ready within $4 s (log: $log)"
}

# peer_stop_pid PIDFILE TIMEOUT_S: SIGTERM, then waits for the process to exit (SIGKILL after
# the timeout). The pid is checked to still be the process we started (its start time).
peer_stop_pid() {
  local pidfile="$1" pid i
  [[ -f "$pidfile" ]] || { peer_log "no $pidfile: not running"; return 0; }
  read -r pid _ <"$pidfile"
  if kill -0 "$pid" 2>/dev/null && [[ "$(peer_starttime "$pid")" == "$(cut -d' ' -f2 "$pidfile")" ]]; then
    kill -TERM "$pid"
    for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { peer_log "pid $pid still alive after $2 s: SIGKILL"; kill -KILL "$pid"; }
  fi
  rm -f "$pidfile"
}

# The start time of a process (field 22 of /proc/PID/stat), to guard against pid reuse.
peer_starttime() { sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}' || true; }
peer_write_pid() { echo "$1 $(peer_starttime "$1")" >"$2"; }
