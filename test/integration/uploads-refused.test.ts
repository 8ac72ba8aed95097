// A real gateway whose uploads S3 refuses with 403 AccessDenied (a bucket policy that lost
// s3:PutObject), through the fault proxy in front of MinIO, driven by libnbd: one error line
// with S3NBD_UPLOADS_REFUSED (not a warn line every few seconds for ever), FLUSH answered
// with EPERM instead of hanging, writes still acknowledged, and once S3 accepts PUTs again
// the gateway uploads by itself (a retry a minute), after which FLUSH succeeds and a fresh
// gateway reads back every write. One server is enough: the refusal is the proxy's answer.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { type S3TestServer, startMinio } from '../helpers/minio.ts';
import { kindIs, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { requireTool, runOk, TOOL_ENV } from '../helpers/tools.ts';
import { spawn } from 'node:child_process';

const MIB = 1024 * 1024;

/**
 * Reads commands on stdin, one per line: "write EXTENT SEED" writes 1 MiB of pattern SEED at
 * extent EXTENT; "flush" flushes. Answers each with a JSON line: {"ok": cmd} or
 * {"error": cmd, "errno": "EPERM"}.
 */
const CLIENT = String.raw`
import errno, json, random, sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == 'write':
            h.pwrite(random.Random(int(cmd[2])).randbytes(${MIB}), int(cmd[1]) * ${MIB})
        elif cmd[0] == 'flush':
            h.flush()
        print(json.dumps({'ok': cmd[0]}), flush=True)
    except nbd.Error as e:
        print(json.dumps({'error': cmd[0], 'errno': errno.errorcode.get(e.errno, str(e.errno))}), flush=True)
h.shutdown()
`;

const CHECK = String.raw`
import json, random, sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
bad = [e for e, s in json.loads(sys.argv[2]) if h.pread(${MIB}, e * ${MIB}) != random.Random(s).randbytes(${MIB})]
print(json.dumps(bad))
`;

/** A python client that answers each command it is sent. */
function client(uri: string) {
  const child = spawn('python3', ['-c', CLIENT, uri], { env: TOOL_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
  const answers: Array<Record<string, string>> = [];
  let waiting: (() => void) | undefined;
  let partial = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') answers.push(JSON.parse(line) as Record<string, string>);
    waiting?.();
  });
  return {
    async send(command: string): Promise<Record<string, string>> {
      const before = answers.length;
      child.stdin.write(`${command}\n`);
      const deadline = Date.now() + 20_000;
      while (answers.length === before) {
        if (Date.now() > deadline) throw new Error(`no answer to "${command}" within 20 s: ${stderr}`);
        await new Promise<void>((resolve) => { waiting = resolve; setTimeout(resolve, 100); });
      }
      return answers[before]!;
    },
    close(): void {
      child.stdin.end();
    },
  };
}

async function waitFor(what: string, ready: () => boolean, ms: number): Promise<void> {
  for (const deadline = Date.now() + ms; !ready();) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('uploads refused by S3 (403 AccessDenied) on a real gateway', () => {
  let s3: S3TestServer;
  let proxy: S3FaultProxy;
  const dir = tempDir('refused');

  before(async () => {
    requireTool('python3');
    s3 = await startMinio();
    proxy = await startFaultProxy(s3.endpoint);
  });
  after(async () => {
    await proxy?.close();
    await s3?.stop();
    dir.remove();
  });

  it('says so once, fails FLUSH with EPERM, keeps taking writes, and uploads everything once S3 accepts again', { timeout: 150_000 }, async () => {
    const bucket = `refused-${randomBytes(4).toString('hex')}`;
    await s3.createBucket(bucket);
    const store = `s3://${bucket}/vol`;
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    const args = ['--store', store, '--s3-endpoint', proxy.endpoint, '--size', '16M', '--extent-size', '1M', '--upload-delay', '0'];
    const gw = await startGateway(args, { socket: join(dir.path, 'a.sock'), env, timeoutMs: 30_000 });
    const nbd = client(gw.uri);
    try {
      // The first attempt of each of the four extents' uploads is refused.
      proxy.failNext(4, 403, 'AccessDenied', kindIs('PUT object', 'extents/'));
      assert.deepEqual(await nbd.send('write 0 10'), { ok: 'write' });
      assert.deepEqual(await nbd.send('write 1 11'), { ok: 'write' });
      assert.deepEqual(await nbd.send('flush'), { error: 'flush', errno: 'EPERM' }, 'FLUSH fails instead of hanging');
      assert.deepEqual(await nbd.send('write 2 12'), { ok: 'write' }, 'writes are still acknowledged');
      assert.deepEqual(await nbd.send('write 3 13'), { ok: 'write' });
      const extentPuts = () => proxy.requests.filter((r) => r.kind === 'PUT object' && r.key.includes('/extents/')).length;
      await waitFor('the four refused PUTs', () => extentPuts() >= 4, 10_000);
      assert.deepEqual(await nbd.send('flush'), { error: 'flush', errno: 'EPERM' });
      const refusals = gw.logs().split('\n').filter((l) => l.includes('"code":"S3NBD_UPLOADS_REFUSED"'));
      assert.equal(refusals.length, 1, 'one error line');
      assert.match(refusals[0]!, /"level":50.*AccessDenied \(HTTP 403\).*Fix: give the credentials s3:PutObject/);
      assert.doesNotMatch(gw.logs(), /failed; retrying/, 'no warn line per retry');
      assert.equal(extentPuts(), 4, 'no retry at full speed');

      // S3 accepts PUTs again (failNext is used up): within a minute the retries go through.
      await waitFor('uploads resumed', () => gw.logs().includes('uploads resumed'), 75_000);
      assert.deepEqual(await nbd.send('flush'), { ok: 'flush' });
    } finally {
      nbd.close();
    }
    assert.equal(await gw.stop('SIGTERM'), 0, gw.logs().slice(-2000));

    const fresh = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint], { socket: join(dir.path, 'b.sock'), env, timeoutMs: 30_000 });
    try {
      const bad = await runOk('python3', ['-c', CHECK, fresh.uri, JSON.stringify([[0, 10], [1, 11], [2, 12], [3, 13]])], { timeoutMs: 30_000 });
      assert.deepEqual(JSON.parse(bad.trim()), [], 'extents that differ in the store');
    } finally {
      await fresh.stop('SIGTERM');
    }
  });
});
