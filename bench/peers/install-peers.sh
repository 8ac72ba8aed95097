#!/usr/bin/env bash
# install-peers.sh - installs what the peer contenders (README.md) need; idempotent.
#   Debian packages: s3backer (1.5.4), nbdkit + its Python plugin host (the S3 plugin) +
#   python3-boto3, and the clients used to check and drive them (libnbd-bin: nbdinfo, nbdcopy;
#   qemu-utils: qemu-io; fio, which has the nbd engine in Debian).
#   ZeroFS 0.19.1 (crates.io) built with `cargo install --locked` into
#   ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-0.19.1 (about 5.5 min on 2 cores, under
#   nice -n 19); skipped when that binary already reports 0.19.1. Needs Rust >= 1.88 (the
#   crate uses let chains, edition 2024); verified with rustc 1.95.0.
# Logs to stderr.
set -euo pipefail
log() { echo "[install-peers] $*" >&2; }

ZEROFS_VERSION=0.19.1
ZEROFS_ROOT="${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-$ZEROFS_VERSION"
PACKAGES=(s3backer nbdkit nbdkit-plugin-python python3-boto3 libnbd-bin qemu-utils fio)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
else
  log "Debian packages already installed: ${PACKAGES[*]}"
fi

# nbdkit's S3 plugin runs in nbdkit's embedded Python (Debian's python3), so boto3 must be
# importable there, whatever python3 comes first in PATH (pyenv, venvs).
/usr/bin/python3 -c 'import boto3' || { log "/usr/bin/python3 cannot import boto3"; exit 1; }
[[ -e /dev/fuse ]] || log "warning: /dev/fuse missing: s3backer (FUSE) will not mount"

if [[ "$("$ZEROFS_ROOT/bin/zerofs" --version 2>/dev/null)" == "zerofs $ZEROFS_VERSION" ]]; then
  log "zerofs $ZEROFS_VERSION already in $ZEROFS_ROOT"
else
  CARGO="${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}"
  [[ -x "$CARGO" ]] || { log "cargo not found (set CARGO=...)"; exit 1; }
  log "building zerofs $ZEROFS_VERSION into $ZEROFS_ROOT (nice -n 19; takes minutes)"
  start=$SECONDS
  nice -n 19 "$CARGO" install zerofs --version "$ZEROFS_VERSION" --locked --root "$ZEROFS_ROOT" >&2
  log "zerofs built in $((SECONDS - start)) s"
fi
log "ok: s3backer $(s3backer --version 2>&1 | awk 'NR==1{print $3}'), $(nbdkit --version), $("$ZEROFS_ROOT/bin/zerofs" --version)"
