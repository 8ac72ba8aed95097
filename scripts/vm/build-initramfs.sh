#!/usr/bin/env bash
# Builds (or reuses) a tiny initramfs for booting Debian's kernel under QEMU (TCG) as a real
# Linux NBD client: busybox-static, the nbd/virtio-net/ext4 modules, and nbd-client, mkfs.ext4,
# e2fsck, rsync, mount, umount and fstrim with their shared libraries. Its /init brings up eth0
# (static 10.0.2.15, QEMU user networking), loads the ext4 module (the guest script loads nbd
# itself) and runs /guest.sh if one is present; the caller appends its own guest.sh as a
# second cpio archive (concatenated archives are unpacked in order). Markers on the serial
# console: S3NBD-STEP <name> (printed by guest.sh), S3NBD-RESULT ok|fail, then
# /init powers the VM off.
#
# Prints on stdout:
#   kernel=/path/to/vmlinuz
#   initrd=/path/to/initramfs.cpio.gz
# Cached under ${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/vm/<kernel version>-<script hash>/.
set -euo pipefail

PACKAGES=(linux-image-amd64 qemu-system-x86 busybox-static cpio nbd-client e2fsprogs socat rsync)
MODULES=(virtio_pci virtio_net nbd ext4)
BINARIES=(/usr/sbin/nbd-client /sbin/mkfs.ext4 /sbin/e2fsck /usr/bin/rsync /bin/mount /bin/umount /sbin/fstrim)

log() { echo "build-initramfs: $*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The newest installed Debian kernel that has its modules (not necessarily the running one).
KVER=""
for m in $(ls -1 /lib/modules 2>/dev/null | sort -V); do
  [ -f "/boot/vmlinuz-$m" ] && [ -f "/lib/modules/$m/modules.dep" ] && KVER="$m"
done
[ -n "$KVER" ] || { log "no kernel with modules found in /boot and /lib/modules"; exit 1; }

SCRIPT_HASH=$(sha256sum "$0" | cut -c1-12)
CACHE="${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}/vm/$KVER-$SCRIPT_HASH"
KERNEL="$CACHE/vmlinuz"
INITRD="$CACHE/initramfs.cpio.gz"

if [ ! -s "$KERNEL" ] || [ ! -s "$INITRD" ]; then
  log "building initramfs for kernel $KVER in $CACHE"
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  root="$work/root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,mnt,etc}

  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done

  # Modules at their usual paths (decompressed) with a modules.dep from depmod, so busybox's
  # modprobe works in the guest: /init loads the network and ext4 drivers, and the guest
  # script loads nbd itself with `modprobe nbd`, as users do.
  moddir="$root/lib/modules/$KVER"
  for mod in "${MODULES[@]}"; do
    modprobe -S "$KVER" --show-depends "$mod" | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
      rel=${ko#/lib/modules/$KVER/}; rel=${rel%.xz}; rel=${rel%.zst}; rel=${rel%.gz}
      mkdir -p "$moddir/$(dirname "$rel")"
      case "$ko" in
        *.xz) xz -dc "$ko" > "$moddir/$rel" ;;
        *.zst) zstd -qdc "$ko" > "$moddir/$rel" ;;
        *.gz) gzip -dc "$ko" > "$moddir/$rel" ;;
        *) cp "$ko" "$moddir/$rel" ;;
      esac
    done
  done
  cp "/lib/modules/$KVER/modules.order" "/lib/modules/$KVER/modules.builtin" "$moddir/" 2>/dev/null || true
  depmod -b "$root" "$KVER"

  # Dynamic binaries and every library they load, at the same paths as on the host.
  copy_with_libs() {
    local bin=$1
    mkdir -p "$root$(dirname "$bin")"
    rm -f "$root$bin" # a busybox applet link: cp would write through it
    cp -L "$bin" "$root$bin"
    ldd "$bin" | awk '/=>/ { print $3 } /^\t\// { print $1 }' | while read -r lib; do
      [ -n "$lib" ] && [ -e "$lib" ] || continue
      mkdir -p "$root$(dirname "$lib")"
      [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
    done
  }
  for bin in "${BINARIES[@]}"; do copy_with_libs "$bin"; done
  # The real e2fsprogs, not busybox's mke2fs, and util-linux's mount, umount and fstrim
  # (which detect the file system type as users expect); busybox provides the rest.
  rm -f "$root/bin/mkfs.ext4" "$root/bin/mke2fs"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"

  cat > "$root/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "S3NBD-BOOT kernel $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s"

result=fail
finish() {
  sync
  echo "S3NBD-RESULT $result"
  poweroff -f
  sleep 5
  echo o > /proc/sysrq-trigger
}

# crc32c first: ext4 asks for it through request_module, which finds no /sbin/modprobe here.
for m in virtio_pci virtio_net crc32c_intel crc32c_generic ext4; do
  modprobe "$m" || echo "S3NBD-WARN modprobe $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
  || { echo "S3NBD-ERROR no network"; finish; }

if [ -x /guest.sh ] || [ -f /guest.sh ]; then
  if sh -e /guest.sh; then result=ok; else echo "S3NBD-ERROR guest.sh exited $?"; fi
else
  echo "S3NBD-ERROR no /guest.sh"
fi
finish
EOF
  chmod 755 "$root/init"

  (cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 > "$work/initramfs.cpio.gz"
  cp "/boot/vmlinuz-$KVER" "$work/vmlinuz"
  chmod 644 "$work/vmlinuz" "$work/initramfs.cpio.gz"
  mv "$work/vmlinuz" "$KERNEL.tmp" && mv "$KERNEL.tmp" "$KERNEL"
  mv "$work/initramfs.cpio.gz" "$INITRD.tmp" && mv "$INITRD.tmp" "$INITRD"
  log "initramfs: $(du -h "$INITRD" | cut -f1), modules: $(cd "$moddir" && find . -name '*.ko' | wc -l)"
fi

echo "kernel=$KERNEL"
echo "initrd=$INITRD"
