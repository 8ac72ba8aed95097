#!/usr/bin/env bash
# Starts nbdkit's S3 plugin (Debian nbdkit 1.32.5, Python + boto3) in the background on a Unix
# socket and prints "ready <socket>". Environment: see lib.sh. Stop with stop-nbdkit-s3.sh.
#
# Objects: <PEER_PREFIX>/<16 hex digit object number>, each PEER_OBJECT_SIZE bytes (default 1M).
# The plugin is write-through: every write is a PutObject (a GET + PUT of the whole object
# when the write does not cover it), acknowledged only after S3 answers; FLUSH is a no-op.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
peer_env
PLUGIN=/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-S3-plugin
[[ -e "$PLUGIN" ]] || peer_die "$PLUGIN missing: run install-peers.sh"
(( OBJECT_SIZE_BYTES >= 4096 )) || peer_die "PEER_OBJECT_SIZE must be at least 4K"

# boto3 config: path-style addressing and the region; the credentials come from the environment
# (not the command line, where ps would show them). Nothing is read from ~/.aws.
cat >"$PEER_WORKDIR/aws-config" <<'EOF'
[default]
region = us-east-1
s3 =
    addressing_style = path
EOF

rm -f "$SOCKET"
# Filters, outermost first:
# - blocksize: accepts any request from the client (advertises minimum 1): splits requests
#   larger than one object into object-sized pieces (maxdata), and read-modify-writes anything
#   not 4 KiB aligned (minblock) so that the plugin sees whole 4 KiB blocks.
# - blocksize-policy: the plugin reports (object, object, object) as its (min, preferred, max)
#   block size, and nbdkit 1.32 refuses a minimum above 64 KiB ("plugin must set minimum block
#   size between 1 and 64K"), i.e. any object size > 64K. This filter answers the block size
#   query instead of the plugin: minimum 4K (the plugin itself read-modify-writes partial
#   objects), preferred and maximum one object, as the plugin's man page recommends (requests
#   should match the object size).
# PYTHON* variables are cleared so that nbdkit's embedded Python (Debian's libpython3.11) uses
# the system modules, where python3-boto3 is installed.
# nbdkit runs in the foreground (so that its errors reach nbdkit.log) under a bash that waits
# for it: Debian's nbdkit 1.32.5 sets PR_SET_PDEATHSIG=SIGTERM at startup even without
# --exit-with-parent (seen with strace), so a "nbdkit -f &" dies as soon as this script exits,
# and a daemonized nbdkit (no -f) sends its errors nowhere. -P writes nbdkit's own pid once it
# listens; stop-nbdkit-s3.sh signals that pid.
rm -f "$PEER_WORKDIR/nbdkit.pid.tmp"
env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP \
  -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_S3 \
  AWS_CONFIG_FILE="$PEER_WORKDIR/aws-config" AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  AWS_ACCESS_KEY_ID="$PEER_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$PEER_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
  setsid bash -c '"$@"; exit $?' nbdkit-parent \
  nbdkit ${PEER_DEBUG:+--verbose} --foreground -P "$PEER_WORKDIR/nbdkit.pid.tmp" --unix "$SOCKET" \
    --filter=blocksize --filter=blocksize-policy \
    S3 endpoint-url="$PEER_ENDPOINT" bucket="$PEER_BUCKET" key="$PEER_PREFIX" \
    size="$SIZE_BYTES" object-size="$OBJECT_SIZE_BYTES" \
    minblock=4k maxdata="$OBJECT_SIZE_BYTES" \
    blocksize-minimum=4096 blocksize-preferred="$OBJECT_SIZE_BYTES" blocksize-maximum="$OBJECT_SIZE_BYTES" \
    </dev/null >>"$PEER_WORKDIR/nbdkit.log" 2>&1 &
PARENT=$!
for ((i = 0; i < 300; i++)); do
  [[ -s "$PEER_WORKDIR/nbdkit.pid.tmp" ]] && break
  kill -0 "$PARENT" 2>/dev/null || break
  sleep 0.1
done
[[ -s "$PEER_WORKDIR/nbdkit.pid.tmp" ]] || { tail -n 20 "$PEER_WORKDIR/nbdkit.log" >&2; peer_die "no pid file"; }
peer_write_pid "$(cat "$PEER_WORKDIR/nbdkit.pid.tmp")" "$PEER_WORKDIR/nbdkit.pid"
rm -f "$PEER_WORKDIR/nbdkit.pid.tmp"
peer_wait_socket "$(cut -d' ' -f1 "$PEER_WORKDIR/nbdkit.pid")" "$SOCKET" "$PEER_WORKDIR/nbdkit.log" 30
echo "ready $SOCKET"
