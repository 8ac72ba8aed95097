// The shell scripts the VM tests run in the guest. They use the commands of the user guide
// (docs/kernel-client.md) verbatim, with GATEWAY set to the address QEMU forwards to the
// gateway; test/unit/user-guide.test.ts checks that every client command in the guide
// appears in one of these scripts. Each step prints a marker on the serial console.

/** The start of the error nbd-client prints when the nbd module is not loaded (quoted in the guide). */
export const NETLINK_ERROR = "Error: Couldn't resolve the nbd netlink family, make sure the nbd module is loaded";

const PRELUDE = `
GATEWAY=10.0.2.100
step() { echo "S3NBD-STEP $1"; }
# Prints "<prefix> <sha256>  ./<path>" for every file under a directory.
sums() { (cd "$1" && find . -type f | sort | xargs sha256sum) | sed "s|^|$2 |"; }
disconnect() {
  nbd-client -d /dev/nbd0
  # The kernel takes the device down asynchronously.
  i=0
  while [ -e /sys/block/nbd0/pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ ! -e /sys/block/nbd0/pid ]
}
`;

/** The client's TLS files: the test puts them at the guest's root, the script copies them to the guide's directory. */
export const TLS_CLIENT_FILES = ['ca-cert.pem', 'client-cert.pem', 'client-key.pem'] as const;
const TLS_DIR = '/etc/nbd-client';

export interface ConnectOptions {
  /** nbd-client with -certfile/-keyfile/-cacertfile (the guide's TLS section). */
  readonly tls?: boolean;
}

/** The guide's connect command, with one or four connections, with or without TLS. */
function connect(connections: 1 | 4, options: ConnectOptions): string {
  const tls = options.tls ? ` -certfile ${TLS_DIR}/client-cert.pem -keyfile ${TLS_DIR}/client-key.pem -cacertfile ${TLS_DIR}/ca-cert.pem` : '';
  const command = `nbd-client -b 4096${connections === 4 ? ' -C 4' : ''}${tls} $GATEWAY 10809 /dev/nbd0`;
  // The files arrive at the root of the guest; users keep them in the guide's directory.
  return options.tls ? `mkdir -p ${TLS_DIR} && cp ${TLS_CLIENT_FILES.map((f) => `/${f}`).join(' ')} ${TLS_DIR}/\n${command}` : command;
}

const CONNECT_AND_TUNE = (connections: 1 | 4, options: ConnectOptions = {}): string => `
step modprobe
modprobe nbd
step connect
${connect(connections, options)}
echo 1024 > /sys/block/nbd0/queue/max_sectors_kb
echo "S3NBD-INFO size-sectors $(cat /sys/block/nbd0/size) block-size $(cat /sys/block/nbd0/queue/logical_block_size) max_sectors_kb $(cat /sys/block/nbd0/queue/max_sectors_kb)"
`;

/**
 * A tree of files of mixed sizes in /srv/data: 240 notes of 0 to 24 000 bytes, 16 photos of
 * 64 KiB to 2 MiB, two archives of 24 and 12 MiB and a file with a 16 MiB hole (about 58 MiB).
 */
const MAKE_TREE = `
mkdir -p /srv/data/docs /srv/data/photos /srv/data/db
i=0
while [ $i -lt 240 ]; do head -c $(( (i * 7919) % 24000 )) /dev/urandom > /srv/data/docs/note-$i.txt; i=$((i + 1)); done
i=0
while [ $i -lt 16 ]; do head -c $(( 65536 + (i * 104729) % 1900000 )) /dev/urandom > /srv/data/photos/img-$i.jpg; i=$((i + 1)); done
dd if=/dev/urandom of=/srv/data/db/archive-1.bin bs=1M count=24 2>/dev/null
dd if=/dev/urandom of=/srv/data/db/archive-2.bin bs=1M count=12 2>/dev/null
dd if=/dev/urandom of=/srv/data/db/sparse.img bs=1M count=1 seek=16 2>/dev/null
`;

/** What the backup deletes before its second rsync: 6 photos, 100 notes and the 12 MiB archive. */
export const DELETED = ['./photos/img-10.jpg', './docs/note-100.txt', './db/archive-2.bin'];

/**
 * The guide's backup, from a fresh volume: (optionally first the error without the module,)
 * modprobe, connect, mkfs, mount, rsync a tree and sync (the first backup); delete some
 * files, rsync again, fstrim, sync (the next one); checksums (S3NBD-SUM), umount, disconnect.
 */
export function backupScript(connections: 1 | 4, options: { probeMissingModule?: boolean } & ConnectOptions = {}): string {
  const probe = options.probeMissingModule ? `
step without-module
if nbd-client -b 4096 $GATEWAY 10809 /dev/nbd0 > /tmp/out 2>&1; then echo "nbd-client worked without the module"; exit 1; fi
sed 's/^/S3NBD-NOMODULE /' /tmp/out
` : '';
  return `${PRELUDE}${probe}${CONNECT_AND_TUNE(connections, options)}
step mkfs
mkfs.ext4 /dev/nbd0
step mount
mkdir -p /mnt/backup
mount /dev/nbd0 /mnt/backup
step make-tree
${MAKE_TREE}
step rsync
rsync -a --delete /srv/data/ /mnt/backup/
sync
step delete-some
rm /srv/data/photos/img-1?.jpg /srv/data/docs/note-1??.txt /srv/data/db/archive-2.bin
rsync -a --delete /srv/data/ /mnt/backup/
sync
step fstrim
fstrim -v /mnt/backup
step sync
sync
sums /srv/data S3NBD-SOURCE > /tmp/source
sums /mnt/backup S3NBD-SOURCE > /tmp/backup
cmp /tmp/source /tmp/backup
sums /mnt/backup S3NBD-SUM
step umount
umount /mnt/backup
step disconnect
disconnect
`;
}

export const BACKUP_STEPS = ['modprobe', 'connect', 'mkfs', 'mount', 'make-tree', 'rsync', 'delete-some', 'fstrim', 'sync', 'umount', 'disconnect'];

/**
 * The guide's restore, with the expected checksums in /sums: connect, e2fsck -fn, mount
 * read-only, rsync everything out, compare every checksum and the file count, umount,
 * disconnect.
 */
export function restoreScript(connections: 1 | 4, options: ConnectOptions = {}): string {
  return `${PRELUDE}${CONNECT_AND_TUNE(connections, options)}
step e2fsck
e2fsck -fn /dev/nbd0
step mount
mkdir -p /mnt/backup /srv/restore
mount -o ro /dev/nbd0 /mnt/backup
step restore
rsync -a /mnt/backup/ /srv/restore/
step verify
(cd /srv/restore && sha256sum -c /sums > /tmp/check) || { cat /tmp/check; exit 1; }
[ "$(cd /srv/restore && find . -type f | wc -l)" -eq "$(wc -l < /sums)" ]
step umount
umount /mnt/backup
step disconnect
disconnect
`;
}

export const RESTORE_STEPS = ['modprobe', 'connect', 'e2fsck', 'mount', 'restore', 'verify', 'umount', 'disconnect'];

/**
 * A backup that is cut off: mkfs, rsync the tree, sync, checksums (S3NBD-SUM), S3NBD-STEP
 * synced; then it keeps writing 2 MiB files (S3NBD-COPYING n) with the page cache written
 * back every 0.2 s, until the test kills the gateway and the VM.
 */
export function interruptedBackupScript(): string {
  return `${PRELUDE}${CONNECT_AND_TUNE(4)}
mkfs.ext4 /dev/nbd0
mkdir -p /mnt/backup
mount /dev/nbd0 /mnt/backup
${MAKE_TREE}
rsync -a --delete /srv/data/ /mnt/backup/
sync
sums /mnt/backup S3NBD-SUM
step synced
echo 20 > /proc/sys/vm/dirty_writeback_centisecs
echo 20 > /proc/sys/vm/dirty_expire_centisecs
mkdir -p /mnt/backup/more
i=0
while true; do
  dd if=/dev/urandom of=/mnt/backup/more/file-$i bs=1M count=2 2>/dev/null
  echo "S3NBD-COPYING $i"
  i=$((i + 1))
done
`;
}

/**
 * After the crash, with the synced checksums in /sums: mount (ext4 replays its journal),
 * compare the checksums, umount, e2fsck -fn, disconnect.
 */
export function afterCrashScript(): string {
  return `${PRELUDE}${CONNECT_AND_TUNE(4)}
step mount
mkdir -p /mnt/backup
mount /dev/nbd0 /mnt/backup
dmesg | grep 'EXT4-fs (nbd0)' | sed 's/^/S3NBD-KERNEL /'
step verify
(cd /mnt/backup && sha256sum -c /sums > /tmp/check) || { cat /tmp/check; exit 1; }
echo "S3NBD-INFO files-after-the-sync $(ls /mnt/backup/more | wc -l)"
step umount
umount /mnt/backup
step e2fsck
e2fsck -fn /dev/nbd0
step disconnect
disconnect
`;
}

export const AFTER_CRASH_STEPS = ['modprobe', 'connect', 'mount', 'verify', 'umount', 'e2fsck', 'disconnect'];
