#!/usr/bin/env bash
# install-peers.sh - installs what the peer contenders (README.md) need; idempotent.
#   Debian packages: s3backer (1.5.4), nbdkit + its Python plugin host (the S3 plugin) +
#   python3-boto3, the clients used to check and drive them (libnbd-bin: nbdinfo, nbdcopy;
#   qemu-utils: qemu-io; fio, which has the nbd engine in Debian), and fuse3 (fusermount3, for
#   `zerofs mount`, which start-zerofs.sh uses to create the NBD device file).
#   ZeroFS 1.4.5, built from the offline source tarball (ZeroFS commit 33fd43e + its slatedb
#   fork; crates.io stops at 0.19.1): extracted into ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/
#   zerofs-1.4.5-src (its target/ is kept between runs), built with
#   `cargo build --release --bin zerofs` under nice -n 19 with thin LTO and 16 codegen units
#   (its release profile asks for fat LTO and one unit: far too slow on 2 cores; about 25 min
#   this way), then copied to ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/zerofs-1.4.5/bin/zerofs,
#   the path start-zerofs.sh uses. Skipped when that binary, or the one in the source tree's
#   target/release, already reports `zerofs 1.4.5`. A cargo already building in the same tree
#   holds its lock, so a second run waits for it instead of building twice. Needs Rust >= 1.88
#   and Debian's protobuf-compiler with libprotobuf-dev (the well-known .proto files ZeroFS's
#   build imports; without them its build script fails at the very end), installed here when a
#   build is needed.
# Environment: S3NBD_CACHE_DIR; ZEROFS_TARBALL (default ../shared/peers/zerofs-1.4.5-offline-
#   src.tar.gz next to the repository); CARGO (default: cargo in PATH, else ~/.cargo/bin/cargo).
# Logs to stderr.
set -euo pipefail
log() { echo "[install-peers] $*" >&2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CACHE="${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}"
ZEROFS_VERSION=1.4.5
ZEROFS_TARBALL="${ZEROFS_TARBALL:-$(cd "$HERE/../../.." && pwd)/shared/peers/zerofs-$ZEROFS_VERSION-offline-src.tar.gz}"
ZEROFS_SRC="$CACHE/zerofs-$ZEROFS_VERSION-src"   # holds zerofs/ (the workspace) and slatedb/
ZEROFS_BUILT="$ZEROFS_SRC/zerofs/target/release/zerofs"
ZEROFS_BIN="$CACHE/zerofs-$ZEROFS_VERSION/bin/zerofs"
PACKAGES=(s3backer nbdkit nbdkit-plugin-python python3-boto3 libnbd-bin qemu-utils fio fuse3)

# apt_install PACKAGE...: installs those not installed yet.
apt_install() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
  else
    log "Debian packages already installed: $*"
  fi
}
is_zerofs() { [[ -x "$1" && "$("$1" --version 2>/dev/null)" == "zerofs $ZEROFS_VERSION" ]]; }

apt_install "${PACKAGES[@]}"

# nbdkit's S3 plugin runs in nbdkit's embedded Python (Debian's python3), so boto3 must be
# importable there, whatever python3 comes first in PATH (pyenv, venvs).
/usr/bin/python3 -c 'import boto3' || { log "/usr/bin/python3 cannot import boto3"; exit 1; }
[[ -e /dev/fuse ]] || log "warning: /dev/fuse missing: s3backer and zerofs mount (FUSE) will not work"

if is_zerofs "$ZEROFS_BIN"; then
  log "zerofs $ZEROFS_VERSION already in $ZEROFS_BIN"
else
  if ! is_zerofs "$ZEROFS_BUILT"; then
    apt_install protobuf-compiler libprotobuf-dev
    CARGO="${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}"
    [[ -x "$CARGO" ]] || { log "cargo not found (set CARGO=...)"; exit 1; }
    if [[ ! -f "$ZEROFS_SRC/zerofs/Cargo.toml" ]]; then
      [[ -f "$ZEROFS_TARBALL" ]] || { log "no $ZEROFS_TARBALL (set ZEROFS_TARBALL=...)"; exit 1; }
      log "extracting $ZEROFS_TARBALL into $ZEROFS_SRC"
      mkdir -p "$ZEROFS_SRC"
      tar -xzf "$ZEROFS_TARBALL" -C "$ZEROFS_SRC"
    fi
    log "building zerofs $ZEROFS_VERSION in $ZEROFS_SRC/zerofs (nice -n 19, thin LTO; about 25 min)"
    start=$SECONDS
    (cd "$ZEROFS_SRC/zerofs" &&
      CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        nice -n 19 "$CARGO" build --release --bin zerofs >&2)
    log "zerofs built in $((SECONDS - start)) s"
    is_zerofs "$ZEROFS_BUILT" || { log "$ZEROFS_BUILT does not report zerofs $ZEROFS_VERSION"; exit 1; }
  fi
  # A copy, not a link: a later build in the source tree must not change the contender.
  mkdir -p "$(dirname "$ZEROFS_BIN")"
  cp "$ZEROFS_BUILT" "$ZEROFS_BIN.tmp" && mv "$ZEROFS_BIN.tmp" "$ZEROFS_BIN"
  log "installed $ZEROFS_BIN"
fi
log "ok: s3backer $(s3backer --version 2>&1 | awk 'NR==1{print $3}'), $(nbdkit --version), $("$ZEROFS_BIN" --version)"
