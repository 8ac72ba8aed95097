#!/usr/bin/env bash
# install-ceph.sh - install Ceph's RADOS Gateway and the two daemons it needs (monitor, OSD)
# from Debian's own packages, for the integration tests' second S3 server (test/helpers/ceph.ts
# starts a throw-away single-node cluster from them). Checks that the tools run and prints
# the version on stdout; logging goes to stderr. Safe to run again: installed packages are
# not touched. Nothing is started here: the packages' own units need a configured cluster,
# which a bare machine does not have.
set -euo pipefail

CEPH_PACKAGES=(radosgw ceph-mon ceph-osd)
# What test/helpers/ceph.ts runs (ceph and radosgw-admin come with ceph-common).
CEPH_TOOLS=(ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph)
# The oldest release the helper's configuration is known to work with (Debian 12's).
MIN_VERSION=16.2

log() { printf '[install-ceph] %s\n' "$*" >&2; }
die() { printf 'install-ceph: error: %s\n' "$*" >&2; exit 1; }

missing=()
for pkg in "${CEPH_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} (Ceph ${MIN_VERSION} or later) by other means"
  log "installing Debian packages: ${missing[*]} (about 50 packages, 150 MB with their dependencies)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Another apt run (e.g. install-test-deps.sh in a parallel job) may hold the lock for a while.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
  # Under systemd the packages start ceph-crash, a collector for a system cluster that this
  # machine does not run; the tests start daemons of their own and leave nothing running.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now ceph-crash.service >/dev/null 2>&1 || true
  fi
fi

for tool in "${CEPH_TOOLS[@]}"; do
  PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH" command -v "$tool" >/dev/null 2>&1 || die "$tool is missing after installing ${CEPH_PACKAGES[*]}"
done
version="$(/usr/bin/ceph-mon --version 2>/dev/null)" || die "ceph-mon --version failed"
number="$(printf '%s\n' "$version" | sed -n 's/^ceph version \([0-9][0-9.]*\).*/\1/p')"
[ -n "$number" ] || die "cannot read the Ceph version from: $version"
if [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$number" | sort -V | head -n1)" != "$MIN_VERSION" ]; then
  die "Ceph $number is older than $MIN_VERSION"
fi
log "$version"
printf '%s\n' "$version"
