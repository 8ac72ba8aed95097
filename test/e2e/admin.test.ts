// The admin endpoint of a real gateway (the built CLI): /metrics after NBD traffic from real
// clients (nbdcopy, qemu-io), /api/status and /readyz, the token (refused start beyond
// loopback without one, 401 without it, never in the log), `s3nbd health`, and a clean stop.

import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { VolumeStatus } from '../../src/service/gateway-view.ts';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { adminGet, parseMetrics } from '../helpers/admin.ts';
import { registerSecret } from '../helpers/log-sweep.ts';
import { freePort, requireTool, run, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const TOKEN = 'e2e-admin-token-5f0c2b7a9d1e4c3b';
registerSecret('e2e admin token', TOKEN);

describe('the admin endpoint of a running gateway', () => {
  const dir = tempDir('admin');
  after(() => dir.remove());

  it('counts real NBD traffic in /metrics, shows it in /api/status, is ready, and stops with the gateway', async () => {
    requireTool('nbdcopy');
    requireTool('qemu-io');
    const port = await freePort();
    const base = `http://127.0.0.1:${port}/`;
    const gw = await startGateway(['--store', join(dir.path, 'store1'), '--size', '64M', '--export-name', 'vm1', '--admin-listen', String(port)], { socket: join(dir.path, 'nbd1.sock') });
    try {
      assert.match(gw.logs(), new RegExp(`"admin":"http://127\\.0\\.0\\.1:${port}/"`), 'the start line says where');
      const data = join(dir.path, 'data');
      writeFileSync(data, Buffer.alloc(4 << 20, 0x5a));
      await runOk('nbdcopy', ['--flush', data, `nbd+unix:///vm1?socket=${gw.socket}`]);
      const io = await run('qemu-io', ['-f', 'raw', `nbd+unix:///vm1?socket=${gw.socket}`, '-c', 'read -P 0x5a 0 1M', '-c', 'read -P 0 32M 64k']);
      assert.equal(io.code, 0, io.stdout + io.stderr);

      const m = parseMetrics((await adminGet(base, '/metrics')).text);
      const writes = [...m].filter(([k]) => k.startsWith('s3nbd_nbd_requests_total{command="write",result="ok",volume="vm1"}'));
      assert.equal(writes.length, 1);
      assert.ok(writes[0]![1] >= 1, 'write requests counted');
      assert.equal(m.get('s3nbd_nbd_written_bytes_total{volume="vm1"}'), 4 << 20);
      assert.equal(m.get('s3nbd_nbd_read_bytes_total{volume="vm1"}'), (1 << 20) + 65536);
      assert.ok((m.get('s3nbd_nbd_requests_total{command="flush",result="ok",volume="vm1"}') ?? 0) >= 1);
      assert.ok((m.get('s3nbd_nbd_request_duration_seconds_count{command="write",volume="vm1"}') ?? 0) >= 1);
      // The flush waited for the uploads (--flush-mode s3): all four extents are in the store.
      assert.equal(m.get('s3nbd_uploaded_bytes_total{volume="vm1"}') !== undefined, true);
      assert.equal(m.get('s3nbd_upload_duration_seconds_count{volume="vm1"}'), 4);
      assert.equal(m.get('s3nbd_stored_extents{volume="vm1"}'), 4);
      assert.equal(m.get('s3nbd_lease_held{volume="vm1"}'), 1);
      assert.equal(m.get('s3nbd_volume_ready{volume="vm1"}'), 1);
      assert.equal(m.get('s3nbd_connections{volume="vm1"}'), 0);
      assert.ok((m.get('process_resident_memory_bytes') ?? 0) > 0);

      const status = (await adminGet(base, '/api/status')).json<{ gateway: { pid: number }; volumes: VolumeStatus[] }>();
      assert.equal(status.gateway.pid, gw.process.pid);
      const vm1 = status.volumes[0]!;
      assert.equal(vm1.name, 'vm1');
      assert.equal(vm1.size, 64 << 20);
      assert.equal(vm1.lease, 'held');
      assert.equal(vm1.cache!.dirtyBytes, 0);
      assert.equal(vm1.cache!.uploadedExtents, 4);
      assert.equal(vm1.reads.memory + vm1.reads.disk + vm1.reads.miss, 1, 'one extent read (the 64 KiB read is of an unwritten one)');
      assert.deepEqual((await adminGet(base, '/api/volumes/vm1')).json<VolumeStatus>().volumeId, vm1.volumeId);
      const ready = await adminGet(base, '/readyz');
      assert.equal(ready.status, 200, ready.text);

      const health = await cli(['health', '--admin', `127.0.0.1:${port}`]);
      assert.equal(health.code, 0, health.stderr);
      const readyHealth = await cli(['health', '--ready'], { S3NBD_ADMIN_LISTEN: `127.0.0.1:${port}` });
      assert.equal(readyHealth.code, 0, readyHealth.stderr);
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
    // Stopped with the gateway: nothing listens any more.
    const gone = await cli(['health', '--admin', `127.0.0.1:${port}`]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^s3nbd health: not alive \(http:\/\/127\.0\.0\.1:\d+\/healthz\): connect ECONNREFUSED/);
  });

  it('refuses to start beyond loopback without a token, before anything listens', async () => {
    const socket = join(dir.path, 'refused.sock');
    const r = await cli(['serve', '--store', join(dir.path, 'store2'), '--size', '64M', '--socket', socket, '--cache-dir', join(dir.path, 'c2'), '--admin-listen', `0.0.0.0:${await freePort()}`]);
    assertUserError(r, 'S3NBD_ADMIN_TOKEN_REQUIRED', /--admin-listen 0\.0\.0\.0:\d+/, /--admin-token-file/);
    const bad = await cli(['serve', '--store', join(dir.path, 'store2'), '--size', '64M', '--socket', socket, '--cache-dir', join(dir.path, 'c2'), '--admin-listen', 'nine'], {});
    assertUserError(bad, 'S3NBD_BAD_ADMIN_LISTEN');
    assert.ok(!existsSync(socket), 'the NBD socket was never made');
    const info = await cli(['info', '--store', join(dir.path, 'store2')]);
    assert.notEqual(info.code, 0, 'no volume was created');
    assert.match(info.stderr, /S3NBD_NO_VOLUME/);
  });

  it('with a token: 401 without it, everything with it, /healthz always, and the token in no log or answer', async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}/`;
    const tokenFile = join(dir.path, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`);
    const gw = await startGateway(['--store', join(dir.path, 'store3'), '--size', '64M', '--admin-listen', `0.0.0.0:${port}`, '--admin-token-file', tokenFile],
      { socket: join(dir.path, 'nbd3.sock') });
    try {
      for (const path of ['/metrics', '/api/status', '/readyz', '/api/volumes/default']) {
        const refused = await adminGet(base, path);
        assert.equal(refused.status, 401, path);
        assert.equal(refused.json<{ error: { code: string } }>().error.code, 'S3NBD_ADMIN_UNAUTHORIZED');
        assert.equal((await adminGet(base, path, 'not-the-token-0000000')).status, 401, path);
        const ok = await adminGet(base, path, TOKEN);
        assert.equal(ok.status, 200, `${path}: ${ok.text}`);
        assert.ok(!ok.text.includes(TOKEN), path);
      }
      assert.equal((await adminGet(base, '/healthz')).status, 200);
      const unready = await cli(['health', '--ready', '--admin', base]);
      assert.equal(unready.code, 1, 'readiness needs the token');
      assert.match(unready.stderr, /admin token is missing or wrong/);
      const withToken = await cli(['health', '--ready', '--admin', base, '--admin-token-file', tokenFile]);
      assert.equal(withToken.code, 0, withToken.stderr);
      assert.ok(!(unready.stdout + unready.stderr + withToken.stdout + withToken.stderr).includes(TOKEN));
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
    assert.ok(!gw.logs().includes(TOKEN), 'the token is never logged');
  });
});
