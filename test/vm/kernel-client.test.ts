// The Linux kernel's own NBD client (nbd.ko + nbd-client), as users run it, in a QEMU VM
// (TCG, no KVM needed) booted from Debian's kernel and the initramfs that
// scripts/vm/build-initramfs.sh builds. The VM's only way out is QEMU's restricted user
// networking with one forward (10.0.2.100:10809 in the guest) to the gateway on 127.0.0.1.
//
// In the guest: connect, mkfs.ext4, mount, write files, sync, umount, disconnect; reconnect
// with four connections (nbd-client -C 4), verify every checksum, fstrim, umount,
// e2fsck -fn, disconnect. Every step prints a marker on the serial console.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { REPO, startGateway, tempDir } from '../helpers/gateway.ts';
import { freePort, requireTool, runOk, TOOL_ENV } from '../helpers/tools.ts';

const STEPS = [
  'connect', 'mkfs', 'mount', 'write', 'umount', 'disconnect',
  'connect-multi', 'mount-again', 'verify', 'fstrim', 'umount-again', 'e2fsck', 'disconnect-again',
] as const;

/** Runs inside the VM with `sh -e`; /init prints S3NBD-RESULT ok if it exits 0. */
const GUEST_SCRIPT = `
step() { echo "S3NBD-STEP $1"; }
wait_disconnected() {
  i=0
  while [ -e /sys/block/nbd0/pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ ! -e /sys/block/nbd0/pid ]
}

step connect
nbd-client 10.0.2.100 10809 /dev/nbd0
echo "S3NBD-INFO size-sectors $(cat /sys/block/nbd0/size)"
step mkfs
mkfs.ext4 -F -q /dev/nbd0
step mount
mkdir -p /mnt
mount -t ext4 /dev/nbd0 /mnt
step write
mkdir -p /mnt/dir/sub
dd if=/dev/urandom of=/mnt/small.bin bs=1000 count=3 2>/dev/null
dd if=/dev/urandom of=/mnt/dir/one-mib.bin bs=1M count=1 2>/dev/null
dd if=/dev/urandom of=/mnt/dir/sub/big.bin bs=1M count=24 2>/dev/null
echo "hello from the kernel client" > /mnt/hello.txt
(cd /mnt && find . -type f ! -path './lost+found/*' | sort | xargs sha256sum) > /tmp/sums
sed 's/^/S3NBD-SUM /' /tmp/sums
sync
step umount
umount /mnt
step disconnect
nbd-client -d /dev/nbd0
wait_disconnected

step connect-multi
nbd-client -C 4 10.0.2.100 10809 /dev/nbd0
echo "S3NBD-INFO hw-queues $(ls /sys/block/nbd0/mq | wc -l) (capped at the CPU count)"
step mount-again
mount -t ext4 /dev/nbd0 /mnt
step verify
(cd /mnt && sha256sum -c /tmp/sums)
step fstrim
fstrim -v /mnt
step umount-again
umount /mnt
step e2fsck
e2fsck -fn /dev/nbd0
step disconnect-again
nbd-client -d /dev/nbd0
wait_disconnected
`;

/** A newc cpio archive (what the kernel unpacks as an initramfs) of regular files at the root. */
function newcArchive(files: ReadonlyMap<string, Buffer>): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const entry = (name: string, mode: number, data: Buffer): void => {
    const fields = [0x070701, ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = '070701' + fields.slice(1).map((f) => f.toString(16).padStart(8, '0')).join('');
    const head = Buffer.from(`${header}${name}\0`, 'latin1');
    parts.push(head, pad4(head.length), data, pad4(data.length));
  };
  for (const [name, data] of files) entry(name, 0o100755, data);
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}


/** Boots the VM; resolves with everything it printed on the serial console and its exit code. */
function bootVm(kernel: string, initrd: string, port: number, timeoutSeconds: number): Promise<{ code: number | null; console: string }> {
  const args = [
    '--kill-after=10', String(timeoutSeconds), 'qemu-system-x86_64',
    '-M', 'q35', '-cpu', 'max', '-smp', '2', '-m', '512',
    '-nographic', '-no-reboot', '-serial', 'stdio', '-monitor', 'none',
    '-kernel', kernel, '-initrd', initrd, '-append', 'console=ttyS0 quiet panic=-1',
    '-netdev', `user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:10809-cmd:socat STDIO TCP:127.0.0.1:${port}`,
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
  ];
  const child = spawn('timeout', args, { env: TOOL_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); if (process.env.S3NBD_VM_VERBOSE) process.stderr.write(d); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const killOnExit = (): void => { child.kill('SIGKILL'); };
  process.on('exit', killOnExit);
  return new Promise((resolve) => child.on('close', (code) => {
    process.off('exit', killOnExit);
    resolve({ code, console: output.replaceAll('\r', '') });
  }));
}

describe('the Linux kernel NBD client in a VM', () => {
  const dir = tempDir('vm');
  after(() => dir.remove());

  it('mkfs, writes, reconnects with -C 4, verifies, trims and fscks ext4 on s3nbd', { timeout: 420_000 }, async () => {
    for (const tool of ['qemu-system-x86_64', 'socat', 'timeout']) requireTool(tool);
    const built = await runOk('bash', [join(REPO, 'scripts/vm/build-initramfs.sh')], { timeoutMs: 600_000 });
    const paths = Object.fromEntries(built.trim().split('\n').map((line) => line.split('=', 2) as [string, string]));
    const kernel = paths.kernel;
    const baseInitrd = paths.initrd;
    assert.ok(kernel && baseInitrd, built);

    // The cached initramfs plus a second (gzipped) archive with the guest script.
    const initrd = join(dir.path, 'initrd.img');
    writeFileSync(initrd, Buffer.concat([
      readFileSync(baseInitrd),
      gzipSync(newcArchive(new Map([['guest.sh', Buffer.from(GUEST_SCRIPT)]]))),
    ]));

    const port = await freePort();
    const gateway = await startGateway(
      ['--store', join(dir.path, 'store'), '--size', '1G', '--listen', `127.0.0.1:${port}`],
      { socket: join(dir.path, 'sock') },
    );

    const started = Date.now();
    const vm = await bootVm(kernel, initrd, port, 300);
    const seconds = (Date.now() - started) / 1000;
    const context = `VM exited ${vm.code} after ${seconds.toFixed(1)} s; console:\n${vm.console}\n--- gateway log (tail):\n${gateway.logs().slice(-4000)}`;

    const steps = [...vm.console.matchAll(/^S3NBD-STEP (\S+)/gm)].map((m) => m[1]);
    assert.deepEqual(steps, [...STEPS], context);
    assert.match(vm.console, /^S3NBD-RESULT ok$/m, context);
    assert.equal(vm.code, 0, context);
    assert.match(vm.console, /^S3NBD-INFO size-sectors 2097152$/m, context);
    assert.equal([...vm.console.matchAll(/^S3NBD-SUM /gm)].length, 4, context);
    assert.doesNotMatch(vm.console, /I\/O error|EXT4-fs error|blk_update_request|Buffer I\/O/, context);
    // One connection, then four (nbd-client -C 4).
    const connections = [...gateway.logs().matchAll(/"msg":"connection opened"/g)].length;
    assert.ok(connections >= 5, `${connections} connections\n${context}`);
    assert.ok(seconds < 180, `the VM run took ${seconds} s`);
    console.log(`# VM run: ${seconds.toFixed(1)} s, ${connections} NBD connections`);

    assert.equal(await gateway.stop('SIGTERM'), 0, gateway.logs());
  });
});
