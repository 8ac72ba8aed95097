// The admin endpoint over real HTTP on loopback, against a GatewayView of plain objects: its
// routes and JSON shapes, the token (Bearer only, 401 otherwise, never echoed), the Host check
// without a token, bad requests (statuses, the server staying up), bounded bodies, the status
// page's files and no path out of their folder, and the address and token rules of --admin-listen.

import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { AdminServer } from '../../src/service/admin-server.ts';
import { MAX_BODY_BYTES } from '../../src/service/admin-http.ts';
import { adminConfigOf, isLoopback, parseAdminListen } from '../../src/service/admin-config.ts';
import type { GatewayView, VolumeAdmin, VolumeStatus, VolumeView } from '../../src/service/gateway-view.ts';
import { registerSecret } from '../helpers/log-sweep.ts';

const TOKEN = 'admin-unit-token-0123456789abcdef';
registerSecret('admin unit test token', TOKEN);

function statusOf(name: string, size = 1 << 20): VolumeStatus {
  return {
    name, volumeId: `id-${name}`, store: `directory /x/${name}`, size, extentSize: 65536, readOnly: false, lease: 'held', connections: 1, storedExtents: 2,
    reads: { memory: 1, disk: 2, miss: 3 }, s3: { requests: 4, errors: 0, retries: 0 }, snapshots: [],
  };
}

function fakeGateway(withAdmin: boolean): GatewayView & { ready: Map<string, boolean>; calls: string[] } {
  const ready = new Map([['vm1', true], ['vm2', true]]);
  const sizes = new Map([['vm1', 1 << 20], ['vm2', 2 << 20]]);
  const calls: string[] = [];
  const view = (name: string): VolumeView => ({
    name,
    status: () => Promise.resolve(statusOf(name, sizes.get(name))),
    readiness: () => Promise.resolve(ready.get(name)! ? { ready: true } : { ready: false, reason: 'S3 unreachable: connect ECONNREFUSED' }),
  });
  const admin: VolumeAdmin = {
    create: (name, size) => {
      calls.push(`create ${name} ${size}`);
      if (sizes.has(name)) return Promise.reject(new UserError('S3NBD_VOLUME_EXISTS', `a volume already exists in ${name}`, 'choose another name'));
      sizes.set(name, size);
      ready.set(name, true);
      return Promise.resolve(statusOf(name, size));
    },
    resize: (name, size) => {
      calls.push(`resize ${name} ${size}`);
      sizes.set(name, size);
      return Promise.resolve(statusOf(name, size));
    },
    delete: (name) => {
      calls.push(`delete ${name}`);
      sizes.delete(name);
      ready.delete(name);
      return Promise.resolve();
    },
  };
  return {
    ready, calls,
    volumes: () => [...sizes.keys()].map(view),
    skipped: () => [{ name: 'broken', error: 'the volume metadata in x is unusable: not JSON (S3NBD_BAD_VOLUME)' }],
    ...withAdmin ? { admin } : {},
  };
}

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; text: string; json: () => Record<string, unknown> }

function ask(port: number, method: string, path: string, options: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: options.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, unknown> });
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function quietLog(lines: string[] = []): pino.Logger {
  return pino({ level: 'debug' }, new Writable({ write(chunk: Buffer, _e, done) { lines.push(chunk.toString()); done(); } }));
}

describe('admin endpoint, no token (loopback)', () => {
  let server: AdminServer;
  let port: number;
  const gateway = fakeGateway(true);
  let pageDir: string;
  before(async () => {
    pageDir = await mkdtemp(join(tmpdir(), 's3nbd-page-'));
    await writeFile(join(pageDir, 'index.html'), '<!doctype html><title>s3nbd</title>');
    await writeFile(join(pageDir, 'status.js'), 'console.log(1);');
    await writeFile(join(pageDir, 'style.css'), 'body{}');
    await writeFile(join(pageDir, 'notes'), 'no extension');
    server = await AdminServer.listen({ host: '127.0.0.1', port: 0 }, {
      gateway, log: quietLog(), version: 's3nbd test', staticDir: pageDir,
      metrics: { contentType: 'text/plain; version=0.0.4', render: () => Promise.resolve('s3nbd_up 1\n') },
    });
    port = Number(server.address.split(':').pop());
  });
  after(() => server.close());

  it('answers /healthz and /readyz (200 while every volume is ready, 503 with the reason when one is not)', async () => {
    assert.deepEqual((await ask(port, 'GET', '/healthz')).json(), { status: 'ok' });
    const ok = await ask(port, 'GET', '/readyz');
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json(), { ready: true, volumes: [{ name: 'vm1', ready: true }, { name: 'vm2', ready: true }], skipped: gateway.skipped() });
    gateway.ready.set('vm2', false);
    const not = await ask(port, 'GET', '/readyz');
    assert.equal(not.status, 503);
    assert.deepEqual(not.json().volumes, [{ name: 'vm1', ready: true }, { name: 'vm2', ready: false, reason: 'S3 unreachable: connect ECONNREFUSED' }]);
    gateway.ready.set('vm2', true);
  });

  it('serves /metrics, /api/status, /api/volumes and one volume\'s status', async () => {
    const metrics = await ask(port, 'GET', '/metrics');
    assert.equal(metrics.text, 's3nbd_up 1\n');
    assert.match(String(metrics.headers['content-type']), /^text\/plain/);
    const status = (await ask(port, 'GET', '/api/status')).json();
    const g = status.gateway as Record<string, unknown>;
    assert.equal(g.version, 's3nbd test');
    assert.equal(g.pid, process.pid);
    assert.equal(g.admin, true);
    assert.equal(typeof g.uptimeSeconds, 'number');
    assert.deepEqual(status.volumes, [statusOf('vm1'), statusOf('vm2', 2 << 20)]);
    assert.deepEqual(status.skipped, gateway.skipped());
    assert.deepEqual((await ask(port, 'GET', '/api/volumes')).json().volumes, status.volumes);
    assert.deepEqual((await ask(port, 'GET', '/api/volumes/vm2')).json(), statusOf('vm2', 2 << 20));
    const missing = await ask(port, 'GET', '/api/volumes/nope');
    assert.equal(missing.status, 404);
    assert.equal((missing.json().error as Record<string, unknown>).code, 'S3NBD_ADMIN_NO_VOLUME');
  });

  it('creates, resizes and deletes volumes through the admin API, with JSON errors and 4xx for bad requests', async () => {
    const json = { 'content-type': 'application/json' };
    const created = await ask(port, 'POST', '/api/volumes', { headers: json, body: '{"name":"vm3","size":"2M"}' });
    assert.equal(created.status, 201);
    assert.equal(created.json().size, 2 << 20);
    const exists = await ask(port, 'POST', '/api/volumes', { headers: json, body: '{"name":"vm3","size":1048576}' });
    assert.equal(exists.status, 409);
    assert.deepEqual(Object.keys(exists.json().error as object).sort(), ['code', 'fix', 'message']);
    assert.equal((exists.json().error as Record<string, unknown>).code, 'S3NBD_VOLUME_EXISTS');
    const resized = await ask(port, 'POST', '/api/volumes/vm3/resize', { headers: json, body: '{"size":"4M"}' });
    assert.equal(resized.status, 200);
    assert.equal(resized.json().size, 4 << 20);
    assert.equal((await ask(port, 'DELETE', '/api/volumes/vm3')).status, 200);
    assert.deepEqual(gateway.calls, ['create vm3 2097152', 'create vm3 1048576', 'resize vm3 4194304', 'delete vm3']);

    const bad: Array<[string, string, Record<string, string>, string | undefined, number, string]> = [
      ['POST', '/api/volumes', json, '{"name":"x","size":"ten"}', 400, 'S3NBD_BAD_SIZE'],
      ['POST', '/api/volumes', json, '{"size":"1G"}', 400, 'S3NBD_ADMIN_BAD_REQUEST'],
      ['POST', '/api/volumes', json, '{not json', 400, 'S3NBD_ADMIN_BAD_REQUEST'],
      ['POST', '/api/volumes', json, '[1]', 400, 'S3NBD_ADMIN_BAD_REQUEST'],
      // A page elsewhere can send text/plain without a preflight: refused.
      ['POST', '/api/volumes', { 'content-type': 'text/plain' }, '{"name":"x","size":"1G"}', 400, 'S3NBD_ADMIN_BAD_REQUEST'],
      ['PUT', '/api/status', {}, undefined, 405, 'S3NBD_ADMIN_METHOD'],
      ['GET', '/api/volumes/%E0%A4%A', {}, undefined, 400, 'S3NBD_ADMIN_BAD_REQUEST'],
      ['GET', '/nothing-here', {}, undefined, 404, 'S3NBD_ADMIN_NOT_FOUND'],
    ];
    for (const [method, path, headers, body, status, code] of bad) {
      const answer = await ask(port, method, path, { headers, ...body === undefined ? {} : { body } });
      assert.equal(answer.status, status, `${method} ${path} ${body}`);
      assert.equal((answer.json().error as Record<string, unknown>).code, code, `${method} ${path} ${body}`);
    }
    assert.equal(gateway.calls.length, 4, 'no bad request reached the gateway');
    const big = await ask(port, 'POST', '/api/volumes', { headers: json, body: Buffer.alloc(MAX_BODY_BYTES + 1, 0x20) });
    assert.equal(big.status, 413);
    assert.equal((await ask(port, 'GET', '/healthz')).status, 200, 'still up');
  });

  it('serves the status page\'s files with their types, and nothing outside their folder', async () => {
    const index = await ask(port, 'GET', '/');
    assert.equal(index.status, 200);
    assert.equal(index.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(index.text, /<title>s3nbd<\/title>/);
    assert.equal((await ask(port, 'GET', '/status.js')).headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal((await ask(port, 'GET', '/style.css')).headers['content-type'], 'text/css; charset=utf-8');
    for (const path of ['/notes', '/../package.json', '/%2e%2e/package.json', '/..%2fpackage.json', '/.hidden', '/status-page/../../etc/passwd', '//etc/passwd']) {
      const answer = await ask(port, 'GET', path);
      assert.equal(answer.status, 404, path);
      assert.doesNotMatch(answer.text, /"name": "s3nbd"|root:/, path);
    }
  });

  it('refuses a Host header that is not an address or localhost (DNS rebinding)', async () => {
    const answer = await ask(port, 'GET', '/api/status', { headers: { host: 'attacker.example:80' } });
    assert.equal(answer.status, 421);
    assert.equal((await ask(port, 'GET', '/api/status', { headers: { host: `localhost:${port}` } })).status, 200);
  });
});

describe('admin endpoint with a token', () => {
  let server: AdminServer;
  let port: number;
  const lines: string[] = [];
  before(async () => {
    server = await AdminServer.listen({ host: '127.0.0.1', port: 0, token: TOKEN }, {
      gateway: fakeGateway(false), log: quietLog(lines), version: 's3nbd test',
      metrics: { contentType: 'text/plain', render: () => Promise.resolve('x 1\n') },
    });
    port = Number(server.address.split(':').pop());
  });
  after(() => server.close());

  it('wants "Authorization: Bearer TOKEN" on every route but /healthz, and never echoes what it was sent', async () => {
    assert.equal((await ask(port, 'GET', '/healthz')).status, 200);
    for (const path of ['/readyz', '/metrics', '/api/status', '/api/volumes/vm1']) {
      for (const authorization of [undefined, 'Bearer wrong-token-wrong-token', `Bearer ${TOKEN}x`, `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`, TOKEN]) {
        const answer = await ask(port, 'GET', path, { headers: authorization === undefined ? {} : { authorization } });
        assert.equal(answer.status, 401, `${path} ${authorization}`);
        assert.equal(answer.headers['www-authenticate'], 'Bearer realm="s3nbd"');
        assert.ok(!answer.text.includes(TOKEN) && !answer.text.includes('wrong-token'));
      }
      assert.equal((await ask(port, 'GET', path, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200, path);
    }
    // Any Host is fine once the token is required.
    assert.equal((await ask(port, 'GET', '/api/status', { headers: { host: 'gateway.example', authorization: `Bearer ${TOKEN}` } })).status, 200);
    assert.ok(!lines.join('').includes(TOKEN));
  });

  it('answers the admin API of a one-volume gateway with 409 and the fix', async () => {
    const answer = await ask(port, 'DELETE', '/api/volumes/vm1', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(answer.status, 409);
    assert.equal((answer.json().error as Record<string, unknown>).code, 'S3NBD_ADMIN_SINGLE_VOLUME');
  });
});

describe('--admin-listen and the token', () => {
  it('reads a bare port as 127.0.0.1, and HOST:PORT and [v6]:PORT as given', () => {
    assert.deepEqual(parseAdminListen('9101'), { host: '127.0.0.1', port: 9101 });
    assert.deepEqual(parseAdminListen('0.0.0.0:9101'), { host: '0.0.0.0', port: 9101 });
    assert.deepEqual(parseAdminListen('[::1]:9101'), { host: '::1', port: 9101 });
    for (const bad of ['', 'abc', '1.2.3.4:', '70000', ':9101', 'host:port']) assert.throws(() => parseAdminListen(bad), { code: 'S3NBD_BAD_ADMIN_LISTEN' }, bad);
  });

  it('knows loopback addresses', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) assert.ok(isLoopback(host), host);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.1', 'example.com']) assert.ok(!isLoopback(host), host);
  });

  it('requires a token beyond loopback, reads it from the file or S3NBD_ADMIN_TOKEN (which it then drops), and refuses weak ones without showing them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 's3nbd-token-'));
    const file = join(dir, 'token');
    await writeFile(file, `${TOKEN}\n`);
    assert.equal(await adminConfigOf(undefined, undefined, {}), undefined);
    assert.deepEqual(await adminConfigOf('9101', undefined, {}), { host: '127.0.0.1', port: 9101 });
    await assert.rejects(adminConfigOf('0.0.0.0:9101', undefined, {}), { code: 'S3NBD_ADMIN_TOKEN_REQUIRED' });
    assert.deepEqual(await adminConfigOf('0.0.0.0:9101', file, {}), { host: '0.0.0.0', port: 9101, token: TOKEN });
    const env: NodeJS.ProcessEnv = { S3NBD_ADMIN_TOKEN: TOKEN };
    assert.deepEqual(await adminConfigOf('10.1.2.3:9101', undefined, env), { host: '10.1.2.3', port: 9101, token: TOKEN });
    assert.equal(env.S3NBD_ADMIN_TOKEN, undefined);
    const weak = 'short-secret';
    await writeFile(file, weak);
    await assert.rejects(adminConfigOf('9101', file, {}), (err: UserError) => err.code === 'S3NBD_BAD_ADMIN_TOKEN' && !err.message.includes(weak));
    await assert.rejects(adminConfigOf('9101', undefined, { S3NBD_ADMIN_TOKEN: `${TOKEN} x` }), { code: 'S3NBD_BAD_ADMIN_TOKEN' });
    await assert.rejects(adminConfigOf('9101', join(dir, 'missing'), {}), { code: 'S3NBD_BAD_ADMIN_TOKEN' });
  });
});
