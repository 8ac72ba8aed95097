// fio's nbd engine with crc32c verification: several jobs, each its own connection, writing
// random blocks of mixed sizes and reading every one back.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, runOk } from '../helpers/tools.ts';

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

describe('fio --verify=crc32c', () => {
  const dir = tempDir('fio');
  let gw: Gateway;
  before(async () => {
    requireTool('fio');
    gw = await startGateway(['--store', join(dir.path, 'store'), '--size', '512M'], { socket: join(dir.path, 'sock') });
  });
  after(async () => {
    await gw.stop();
    dir.remove();
  });

  it('verifies every block written by 4 concurrent jobs at queue depth 16', async () => {
    const report = join(dir.path, 'fio.json');
    await runOk('fio', [
      '--output-format=json', `--output=${report}`,
      '--ioengine=nbd', `--uri=nbd+unix:///?socket=${gw.socket}`,
      '--name=small', '--rw=randwrite', '--bsrange=512-64k', '--size=64M', '--offset=0',
      '--iodepth=16', '--numjobs=2', '--offset_increment=64M', '--verify=crc32c', '--verify_state_save=0', '--verify_fatal=1', '--do_verify=1',
      '--name=large', '--rw=write', '--bs=1M', '--size=128M', '--offset=256M',
      '--iodepth=8', '--numjobs=2', '--offset_increment=128M', '--verify=crc32c', '--verify_state_save=0', '--verify_fatal=1', '--do_verify=1',
    ], { timeoutMs: 600_000 });
    const jobs = (JSON.parse(readFileSync(report, 'utf8')) as { jobs: FioJob[] }).jobs;
    assert.equal(jobs.length, 4);
    for (const job of jobs) {
      assert.equal(job.error, 0, job.jobname);
      assert.ok(job.write.io_bytes > 0, `${job.jobname} wrote`);
      assert.equal(job.read.io_bytes, job.write.io_bytes, `${job.jobname} read back everything it wrote`);
    }
  });
});
