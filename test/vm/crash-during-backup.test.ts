// kill -9 of the gateway while the kernel NBD client in a VM is copying onto ext4, with MinIO
// behind it. After the guest's sync, the guest keeps writing; the gateway is killed with
// unuploaded writes in its journal, and the client machine goes down with it. A gateway
// restarted on the same cache directory replays its journal; a new VM boot mounts the file
// system (ext4 replays its own journal), finds every file synced before the kill intact,
// and e2fsck -fn is clean.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { adminGet, parseMetrics, waitFor } from '../helpers/admin.ts';
import { startGateway } from '../helpers/gateway.ts';
import { freePort } from '../helpers/tools.ts';
import { bootVm, checksumsOf, GUEST_IO_ERRORS, stepsOf } from '../helpers/vm.ts';
import { vmFixture } from '../helpers/vm-fixture.ts';
import { AFTER_CRASH_STEPS, afterCrashScript, interruptedBackupScript } from './guest-scripts.ts';

const BUCKET = 's3nbd-vm-crash';

describe('kill -9 of the gateway during a backup from the kernel NBD client', () => {
  const vmTest = vmFixture('vm-crash', BUCKET);

  it('keeps everything synced before the kill; ext4 mounts and fscks clean after journal replay', { timeout: 900_000 }, async () => {
    const { dir } = vmTest;
    const image = vmTest.image();
    const s3 = vmTest.s3();
    const port = await freePort();
    const adminPort = await freePort();
    const args = [
      '--store', `s3://${BUCKET}/crash`, '--size', '1G', '--s3-endpoint', s3.endpoint, '--listen', `127.0.0.1:${port}`,
      '--cache-dir', join(dir, 'cache'),
      // Dirty extents wait 2 s before upload (FLUSH still uploads at once), so the kill
      // lands with writes that exist only in the journal.
      '--upload-delay', '2000',
    ];
    const env = vmTest.env();
    const socket = join(dir, 'sock');
    // The first gateway also answers /metrics, so the kill can wait until the journal holds
    // writes that are not in S3 yet: how fast the guest's page cache reaches the gateway, and
    // when ext4's journal commit (a FLUSH) uploads them, depends on the machine's speed.
    const first = await startGateway([...args, '--admin-listen', `127.0.0.1:${adminPort}`], { socket, env });
    const unuploaded = async (): Promise<boolean> => {
      const metrics = parseMetrics((await adminGet(`http://127.0.0.1:${adminPort}/`, '/metrics')).text);
      return [...metrics].some(([name, value]) => name.startsWith('s3nbd_dirty_bytes') && value > 0);
    };

    const vm = bootVm(image, { guestScript: interruptedBackupScript(), port, workDir: dir, timeoutSeconds: 400 });
    try {
      await vm.waitFor(/^S3NBD-STEP synced$/m, 300_000);
      // A few files into the copy after the sync.
      await vm.waitFor(/^S3NBD-COPYING 4$/m, 120_000);
      await waitFor(unuploaded, 'the gateway holds writes not yet uploaded', 120_000, 20);
    } catch (err) {
      vm.kill();
      throw new Error(`${(err as Error).message}\n--- gateway log (tail):\n${first.logs().slice(-4000)}`, { cause: err });
    }
    assert.equal(await first.stop('SIGKILL'), -1);
    // The client machine goes down too: what its page cache held is gone, as after a power cut.
    await new Promise((r) => setTimeout(r, 1000));
    vm.kill();
    const crashed = await vm.exited;
    const synced = checksumsOf(crashed.console);
    assert.ok(synced.size > 200, crashed.console);

    const second = await startGateway(args, { socket, env });
    const recovered = second.logs().match(/"records":(\d+),"replayed":(\d+)[^\n]*recovered unuploaded writes from the journal/);
    assert.ok(recovered && Number(recovered[2]) > 0, `the journal held no unuploaded writes at the kill:\n${second.logs()}`);

    const lines = [...synced].map(([path, hash]) => `${hash}  ${path}\n`).join('');
    const check = await bootVm(image, { guestScript: afterCrashScript(), files: new Map([['sums', lines]]), port, workDir: dir, timeoutSeconds: 400 }).exited;
    const context = `VM exited ${check.code}; console:\n${check.console}\n--- gateway log (tail):\n${second.logs().slice(-4000)}`;
    assert.deepEqual(stepsOf(check.console), AFTER_CRASH_STEPS, context);
    assert.match(check.console, /^S3NBD-RESULT ok$/m, context);
    assert.equal(check.code, 0, context);
    assert.doesNotMatch(check.console, GUEST_IO_ERRORS, context);
    // The file system was mounted when the gateway died: the kernel replayed its journal.
    assert.match(check.console, /^S3NBD-KERNEL .*EXT4-fs \(nbd0\): recovery complete/m, context);
    const more = check.console.match(/^S3NBD-INFO files-after-the-sync (\d+)$/m);
    console.log(`# ${recovered[2]} journal records replayed; ${synced.size} synced files intact; ${more?.[1]} files written after the sync survive in the file system`);

    assert.equal(await second.stop('SIGTERM'), 0, second.logs());
  });
});
