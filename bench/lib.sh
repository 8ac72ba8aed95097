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
  trap _bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
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
