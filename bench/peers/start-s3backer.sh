#!/usr/bin/env bash
# Starts s3backer (Debian 1.5.4, FUSE) in the background, puts a loop device on its file and
# prints "ready /dev/loopN". Environment: see lib.sh; S3BACKER_EXTRA_ARGS adds s3backer options.
# Stop with stop-s3backer.sh, which is also the only way to get every write into S3 (below).
#
# Objects: <PEER_PREFIX>/<8 hex digit block number>, PEER_OBJECT_SIZE bytes each (default 1M),
# plus <PEER_PREFIX>/s3backer-mounted while mounted. All-zero blocks are deleted, not stored.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
peer_env
command -v s3backer >/dev/null || peer_die "s3backer missing: run install-peers.sh"
MNT="$PEER_WORKDIR/mnt"
mkdir -p "$MNT"
mountpoint -q "$MNT" && peer_die "$MNT is already mounted: stop-s3backer.sh first"

# Credentials in a file rather than --accessKey (ps would show it).
( umask 077; echo "$PEER_ACCESS_KEY:$PEER_SECRET_KEY" >"$PEER_WORKDIR/passwd" )

# Options, and why (s3backer(1) of 1.5.4 unless noted):
# --baseURL         a non-AWS endpoint; it must end in "/". No --region and no --vhost: path-style
#                   requests, signed (aws4, the default) for region us-east-1, the default region.
# --prefix          "<prefix>/": s3backer prepends the prefix to the block number verbatim.
# --blockSize       the man page: "The default block size of 4k is non-optimal from a compression
#                   and cost perspective. Typically, users will want a larger value to maximize
#                   compression and minimize transaction costs, e.g., 1m." 1M is also s3nbd's
#                   default extent size, so both store the same objects.
# --listBlocks      "useful when creating a new backed file": one listing at startup, then reads
#                   of absent blocks return zeroes without a GET.
# --md5CacheSize=0 --md5CacheTime=0 --minWriteDelay=0
#                   the MD5 cache and the 500 ms minimum delay between two writes of one block
#                   exist only for S3's old eventual consistency; s3backer 2.0.0 disables the MD5
#                   cache by default "now that Amazon S3 is consistent" (CHANGES, issue #183), and
#                   MinIO is strongly consistent. With the defaults, rewriting a block within
#                   500 ms waits.
# Block cache: the defaults, which the man page leaves as they are: --blockCacheSize=1000 blocks
#   (in memory; about 1 GB with 1M blocks), --blockCacheThreads=20 parallel uploads,
#   --blockCacheWriteDelay=250 ms (write-back: a dirty block is uploaded 250 ms after its
#   write), --blockCacheMaxDirty=0 (no limit), --readAhead=4 --readAheadTrigger=2.
# -f                foreground (we background it ourselves and keep its pid; logs to stderr).
# FUSE options s3backer adds by itself: kernel_cache, max_readahead=0, allow_other, ...
setsid s3backer -f \
  --baseURL="${PEER_ENDPOINT%/}/" --accessFile="$PEER_WORKDIR/passwd" \
  --prefix="$PEER_PREFIX/" --size="$SIZE_BYTES" --blockSize="$OBJECT_SIZE_BYTES" \
  --listBlocks --md5CacheSize=0 --md5CacheTime=0 --minWriteDelay=0 \
  ${S3BACKER_EXTRA_ARGS:-} \
  "$PEER_BUCKET" "$MNT" </dev/null >>"$PEER_WORKDIR/s3backer.log" 2>&1 &
PID=$!
peer_write_pid "$PID" "$PEER_WORKDIR/s3backer.pid"
for ((i = 0; i < 300; i++)); do
  kill -0 "$PID" 2>/dev/null || { tail -n 20 "$PEER_WORKDIR/s3backer.log" >&2; peer_die "s3backer exited while starting"; }
  mountpoint -q "$MNT" && [[ -f "$MNT/file" ]] && break
  sleep 0.1
done
mountpoint -q "$MNT" || peer_die "s3backer did not mount $MNT within 30 s"

# A loop device over the FUSE file. --direct-io=on: the loop device opens the file with
# O_DIRECT, so blocks are not cached twice (page cache of the loop device and of the FUSE file)
# and each request goes to s3backer as it comes (up to 128 KiB per FUSE request).
DEV="$(losetup --find --show --direct-io=on "$MNT/file")"
echo "$DEV" >"$PEER_WORKDIR/loopdev"
echo "ready $DEV"
