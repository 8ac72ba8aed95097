#!/usr/bin/env bash
# selftest.sh - end-to-end check of the start-/stop- scripts against a throw-away MinIO on
# 127.0.0.1 (a free port): per contender, on a 64 MiB device, write 8 MiB of random data +
# 1 MiB of 0xab at 32 MiB, FLUSH (fsync for s3backer), list the objects, stop, restart in a new
# work directory (empty local caches, as bench/compare does), read back and compare, stop.
# Small and short (seconds per contender).
#   bash bench/peers/selftest.sh [s3backer] [nbdkit-s3] [zerofs]     (default: all three)
# MinIO: $MINIO, or the newest ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/minio-*/minio
# (scripts/install-minio.sh builds it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"
CONTENDERS=("$@")
((${#CONTENDERS[@]})) || CONTENDERS=(s3backer nbdkit-s3 zerofs)
MINIO="${MINIO:-$(ls -d "${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}"/minio-*/minio 2>/dev/null | tail -n 1)}"
[[ -x "$MINIO" ]] || peer_die "no MinIO binary (set MINIO=...)"
PY=/usr/bin/python3

TMP="$(mktemp -d /tmp/peers-selftest.XXXXXX)"
MINIO_PID=
cleanup() {
  local c
  for c in "${CONTENDERS[@]}"; do
    for w in "$TMP/$c" "$TMP/$c.cold"; do
      [[ -d "$w" ]] && PEER_WORKDIR="$w" "$HERE/stop-$c.sh" >/dev/null 2>&1 || true
    done
  done
  [[ -n "$MINIO_PID" ]] && kill "$MINIO_PID" 2>/dev/null && wait "$MINIO_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT="$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export PEER_ENDPOINT="http://127.0.0.1:$PORT" PEER_ACCESS_KEY=peerstest PEER_SECRET_KEY=peerstestsecret
export PEER_BUCKET=peers PEER_SIZE=64M
mkdir -p "$TMP/minio"
env -i PATH="$PATH" HOME="$TMP/minio" MINIO_ROOT_USER="$PEER_ACCESS_KEY" MINIO_ROOT_PASSWORD="$PEER_SECRET_KEY" \
  MINIO_BROWSER=off MINIO_UPDATE=off "$MINIO" server "$TMP/minio/data" --address "127.0.0.1:$PORT" --quiet \
  >"$TMP/minio.log" 2>&1 &
MINIO_PID=$!
for ((i = 0; ; i++)); do
  curl -sf "$PEER_ENDPOINT/minio/health/live" >/dev/null && break
  ((i < 300)) || peer_die "MinIO not live within 30 s"
  sleep 0.1
done

# s3 mb BUCKET | s3 count PREFIX: boto3, path-style.
s3() {
  $PY - "$@" <<'PY'
import os, sys, boto3
from botocore.config import Config
c = boto3.client("s3", endpoint_url=os.environ["PEER_ENDPOINT"], region_name="us-east-1",
                 aws_access_key_id=os.environ["PEER_ACCESS_KEY"],
                 aws_secret_access_key=os.environ["PEER_SECRET_KEY"],
                 config=Config(s3={"addressing_style": "path"}))
if sys.argv[1] == "mb":
    c.create_bucket(Bucket=sys.argv[2])
else:
    n = size = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=os.environ["PEER_BUCKET"], Prefix=sys.argv[2] + "/"):
        for o in page.get("Contents", []):
            n, size = n + 1, size + o["Size"]
    print(f"{n} objects, {size} bytes")
PY
}
s3 mb "$PEER_BUCKET"
head -c 8M /dev/urandom >"$TMP/src"
RESULTS=()

for c in "${CONTENDERS[@]}"; do
  export PEER_PREFIX="selftest/$c" PEER_WORKDIR="$TMP/$c"
  peer_log "== $c"
  ready="$("$HERE/start-$c.sh")"
  echo "$ready" >&2
  if [[ "$c" == s3backer ]]; then
    dev="$(awk '{print $2}' <<<"$ready")"
    dd if="$TMP/src" of="$dev" bs=1M oflag=direct conv=fsync status=none
    $PY -c 'import sys; sys.stdout.buffer.write(b"\xab" * 1048576)' |
      dd of="$dev" bs=1M seek=32 oflag=direct conv=fsync status=none
  else
    read -r _ sock export <<<"$ready"
    uri="nbd+unix:///${export:-}?socket=$sock"
    nbdcopy --flush "$TMP/src" "$uri"
    qemu-io -f raw "$uri" -c 'write -P 0xab 32M 1M' -c flush >/dev/null
  fi
  after_flush="$(s3 count "$PEER_PREFIX")"
  t0=$SECONDS
  "$HERE/stop-$c.sh"
  stop_s=$((SECONDS - t0))
  after_stop="$(s3 count "$PEER_PREFIX")"
  export PEER_WORKDIR="$TMP/$c.cold"      # no cache files: the restart reads from S3
  ready="$("$HERE/start-$c.sh")"
  if [[ "$c" == s3backer ]]; then
    dev="$(awk '{print $2}' <<<"$ready")"
    dd if="$dev" of="$TMP/out" bs=1M count=64 iflag=direct status=none
  else
    read -r _ sock export <<<"$ready"
    uri="nbd+unix:///${export:-}?socket=$sock"
    nbdcopy "$uri" "$TMP/out"
  fi
  cmp -n 8388608 "$TMP/src" "$TMP/out" &&
    cmp -i 33554432:0 -n 1048576 "$TMP/out" <($PY -c 'import sys; sys.stdout.buffer.write(b"\xab" * 1048576)') &&
    read_ok=ok || read_ok=MISMATCH
  "$HERE/stop-$c.sh"
  RESULTS+=("$c | $after_flush | $after_stop (stop took ${stop_s}s) | $read_ok")
done

echo
echo "contender | in S3 after write+FLUSH | in S3 after stop | cold read-back"
printf '%s\n' "${RESULTS[@]}"
! printf '%s\n' "${RESULTS[@]}" | grep -q MISMATCH
