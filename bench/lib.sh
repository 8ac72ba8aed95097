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
