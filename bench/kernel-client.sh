#!/usr/bin/env bash
# kernel-client.sh - the Linux kernel's NBD client (nbd-client + /dev/nbd0 in a QEMU VM, TCG,
# no nbd module needed on the host) against s3nbd --store memory:, s3nbd on an S3 volume in a
# local MinIO (default cache settings) and `nbdkit memory`: dd writes and reads with bs=4k and
# bs=1M (through the page cache; writes end with fsync, reads start with the caches dropped), timed in the guest, one boot per contender and
# repeat, contenders alternating. Details: the top of bench/kernel-client.ts and bench/README.md.
#
# Environment:
#   BENCH_REPEAT          boots per contender (default 3); medians are reported
#   BENCH_KERNEL_MIB      MiB per 1M dd (default 512)
#   BENCH_KERNEL_4K_MIB   MiB per 4K dd (default BENCH_KERNEL_MIB)
#   BENCH_KERNEL_ONLY     comma-separated contenders ("s3nbd memory,s3nbd S3,nbdkit memory")
#   BENCH_KERNEL_VERBOSE  1: the guest's serial console on stderr
#   S3NBD_CACHE_DIR       where the VM image and MinIO are cached (default ~/.cache/s3nbd)
#
# Writes bench/results/kernel-client-latest.json (samples) and kernel-client-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
. scripts/node-env.sh
s3nbd_use_node

log() { echo "[bench] $*" >&2; }

# The kernel, initramfs, QEMU, socat and nbd-client (installed from Debian if missing).
bash scripts/vm/build-initramfs.sh >/dev/null
for pkg in nbdkit libnbd-bin; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && continue
  log "installing $pkg"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >&2
done
for tool in qemu-system-x86_64 socat timeout nbdkit nbdinfo busybox; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/vm/build-initramfs.sh installs the VM's tools; nbdkit and libnbd-bin from Debian)" >&2; exit 1; }
done
[ -d node_modules/@aws-sdk/client-s3 ] || { echo "bench: node_modules is missing: run npm ci first" >&2; exit 1; }
bash scripts/install-minio.sh >/dev/null
ensure_built "$PWD" >/dev/null

node bench/kernel-client.ts
