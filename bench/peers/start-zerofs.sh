#!/usr/bin/env bash
# Starts ZeroFS 1.4.5 (zerofs run: NBD and 9P servers on Unix sockets) in the background,
# creates its NBD device file if the volume has none yet, and prints
# "ready <nbd socket> <export name>": connect with nbd+unix:///<export>?socket=<socket>.
# Environment: see lib.sh (PEER_OBJECT_SIZE does not apply: ZeroFS stores file chunks in an
# LSM tree (SlateDB), not one object per block), plus
#   ZEROFS_BIN             default ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-1.4.5/bin/zerofs
#   ZEROFS_EXPORT          NBD export (device file) name, default "device"
#   ZEROFS_DISK_CACHE_GB   default 10.0  } what `zerofs init` writes into a new config
#   ZEROFS_MEMORY_CACHE_GB default 1.0   }
# Stop with stop-zerofs.sh (SIGTERM: ZeroFS flushes to S3 and closes the database).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
peer_env
ZEROFS_BIN="${ZEROFS_BIN:-${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-1.4.5/bin/zerofs}"
EXPORT="${ZEROFS_EXPORT:-device}"
[[ -x "$ZEROFS_BIN" ]] || peer_die "$ZEROFS_BIN missing: run install-peers.sh"
NINEP="$PEER_WORKDIR/9p.sock"
LOG="$PEER_WORKDIR/zerofs.log"
rm -f "$SOCKET" "$NINEP"
mkdir -p "$PEER_WORKDIR/cache"

# The config is `zerofs init`'s template cut down to what a local NBD export needs (the
# template also starts NFS, RPC and web UI servers on TCP ports). The secrets stay in the
# environment: ZeroFS expands ${VAR} itself. [aws] holds object_store's AmazonS3 options:
# endpoint + allow_http for MinIO over http; requests are path-style (object_store's default).
# Encryption cannot be turned off, so a fixed password is set. [filesystem] (zstd-3
# compression) and [lsm] (flush every 30 s or at 1 GB unflushed, no WAL) keep their defaults.
# NBD on a Unix socket, as its NBD docs recommend for local clients; 9P only to create the
# device file. Telemetry would send a start-up event to its authors: off.
cat >"$PEER_WORKDIR/zerofs.toml" <<EOF
[cache]
dir = "$PEER_WORKDIR/cache"
disk_size_gb = ${ZEROFS_DISK_CACHE_GB:-10.0}
memory_size_gb = ${ZEROFS_MEMORY_CACHE_GB:-1.0}

[storage]
url = "s3://$PEER_BUCKET/$PEER_PREFIX"
encryption_password = "\${ZEROFS_PASSWORD}"

[servers.ninep]
unix_socket = "$NINEP"

[servers.nbd]
unix_socket = "$SOCKET"

[aws]
access_key_id = "\${AWS_ACCESS_KEY_ID}"
secret_access_key = "\${AWS_SECRET_ACCESS_KEY}"
endpoint = "$PEER_ENDPOINT"
default_region = "us-east-1"
allow_http = "true"

[telemetry]
enabled = false
EOF

# object_store's AmazonS3Builder::from_env() reads every AWS_* variable (virtual-hosted style,
# session token, ...): pass only the two the config refers to. Log level info whatever the
# caller's RUST_LOG: stop-zerofs.sh reads the shutdown messages.
unset_aws=()
for v in $(compgen -e); do [[ "$v" == AWS_* ]] && unset_aws+=(-u "$v"); done
env "${unset_aws[@]}" AWS_ACCESS_KEY_ID="$PEER_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$PEER_SECRET_KEY" \
  ZEROFS_PASSWORD=s3nbd-bench-password RUST_LOG=info NO_COLOR=1 \
  setsid "$ZEROFS_BIN" run -c "$PEER_WORKDIR/zerofs.toml" </dev/null >>"$LOG" 2>&1 &
PID=$!
peer_write_pid "$PID" "$PEER_WORKDIR/zerofs.pid"
for ((i = 0; i < 600; i++)); do
  kill -0 "$PID" 2>/dev/null || { tail -n 20 "$LOG" >&2; peer_die "zerofs exited while starting"; }
  [[ -S "$NINEP" && -S "$SOCKET" ]] && break
  sleep 0.1
done
[[ -S "$NINEP" && -S "$SOCKET" ]] || peer_die "zerofs did not listen within 60 s (log: $LOG)"

URI="nbd+unix:///$EXPORT?socket=$SOCKET"
# ZeroFS serves each regular file in /.nbd as an export of that name. Its docs create one with
# `truncate -s SIZE /mnt/zerofs/.nbd/NAME` on an NFS or 9P mount; this kernel has neither
# client, so the mount is ZeroFS's own FUSE client of its 9P socket (`zerofs mount`),
# write-through, and only while the file is created. A restart finds the device in S3.
if ! size="$(nbdinfo --size "$URI" 2>/dev/null)"; then
  MNT="$PEER_WORKDIR/mnt"
  mkdir -p "$MNT"
  "$ZEROFS_BIN" mount --writeback false "unix:$NINEP" "$MNT" </dev/null >>"$PEER_WORKDIR/mount.log" 2>&1 &
  MOUNT_PID=$!
  for ((i = 0; i < 300; i++)); do
    mountpoint -q "$MNT" && break
    kill -0 "$MOUNT_PID" 2>/dev/null || { tail -n 20 "$PEER_WORKDIR/mount.log" >&2; peer_die "zerofs mount failed"; }
    sleep 0.1
  done
  mountpoint -q "$MNT" || peer_die "zerofs mount: $MNT not mounted within 30 s"
  truncate -s "$SIZE_BYTES" "$MNT/.nbd/$EXPORT" && created=1 || created=0
  kill -TERM "$MOUNT_PID"                 # it unmounts on SIGTERM
  wait "$MOUNT_PID" || true
  mountpoint -q "$MNT" && { fusermount3 -u "$MNT" || true; }
  ((created)) || peer_die "could not create $MNT/.nbd/$EXPORT"
  size="$(nbdinfo --size "$URI")" || peer_die "no NBD export $EXPORT after creating it"
fi
[[ "$size" == "$SIZE_BYTES" ]] || peer_die "export $EXPORT has $size bytes, not $SIZE_BYTES (ZeroFS cannot resize a device)"
echo "ready $SOCKET $EXPORT"
