#!/usr/bin/env bash
# Starts ZeroFS (zerofs run, NBD + 9P on Unix sockets) in the background, creates its NBD device
# and prints "ready <nbd socket> <export name>": connect with nbd+unix:///<export>?socket=<socket>.
# Environment: see lib.sh (PEER_OBJECT_SIZE does not apply: ZeroFS stores 256 KiB chunks in an
# LSM tree (SlateDB), not one object per block), plus
#   ZEROFS_BIN             default ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-0.19.1/bin/zerofs
#   ZEROFS_EXPORT          NBD export (device file) name, default "device"
#   ZEROFS_DISK_CACHE_GB   default 10.0  } what `zerofs init` writes into a new config
#   ZEROFS_MEMORY_CACHE_GB default 1.0   }
# Stop with stop-zerofs.sh (SIGTERM: ZeroFS flushes to S3 and closes the database).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
peer_env
ZEROFS_BIN="${ZEROFS_BIN:-${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-0.19.1/bin/zerofs}"
EXPORT="${ZEROFS_EXPORT:-device}"
[[ -x "$ZEROFS_BIN" ]] || peer_die "$ZEROFS_BIN missing: run install-peers.sh"
NINEP="$PEER_WORKDIR/9p.sock"
rm -f "$SOCKET" "$NINEP"
mkdir -p "$PEER_WORKDIR/cache"

# The secrets stay in the environment: the config refers to them (${VAR} is expanded by ZeroFS).
# [aws] keys are object_store's AmazonS3 options: endpoint + allow_http for MinIO over http,
# path-style requests (object_store's default). Encryption (ChaCha20-Poly1305 + lz4) cannot be
# turned off, so a fixed password is set. [lsm] keeps its defaults (flush every 30 s, or at
# 1 GB of unflushed data). No NFS server (TCP only); 9P only to create the device file.
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
EOF

env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL -u AWS_CONFIG_FILE -u AWS_SHARED_CREDENTIALS_FILE \
  AWS_ACCESS_KEY_ID="$PEER_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$PEER_SECRET_KEY" \
  ZEROFS_PASSWORD=s3nbd-bench-password RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
  setsid "$ZEROFS_BIN" run -c "$PEER_WORKDIR/zerofs.toml" </dev/null >>"$PEER_WORKDIR/zerofs.log" 2>&1 &
PID=$!
peer_write_pid "$PID" "$PEER_WORKDIR/zerofs.pid"
for ((i = 0; i < 600; i++)); do
  kill -0 "$PID" 2>/dev/null || { tail -n 20 "$PEER_WORKDIR/zerofs.log" >&2; peer_die "zerofs exited while starting"; }
  [[ -S "$NINEP" && -S "$SOCKET" ]] && break
  sleep 0.1
done
[[ -S "$NINEP" ]] || peer_die "zerofs did not listen within 60 s (log: $PEER_WORKDIR/zerofs.log)"
/usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/zerofs-mkdev.py" "$NINEP" "$EXPORT" "$SIZE_BYTES"
for ((i = 0; i < 300; i++)); do
  nbdinfo --size "nbd+unix:///$EXPORT?socket=$SOCKET" >/dev/null 2>&1 && break
  sleep 0.1
done
nbdinfo --size "nbd+unix:///$EXPORT?socket=$SOCKET" >/dev/null || peer_die "no NBD export $EXPORT"
echo "ready $SOCKET $EXPORT"
