// What a new user meets on a first run, through the real CLI: every mistake with the endpoint,
// the credentials, the sizes, the cache directory, the store directory and the socket is one
// line on stderr with a stable code and a fix, exit 2, quickly, with no stack and no raw SDK
// or errno text; and a refused start leaves no volume behind in the store. S3 servers here
// are small local stand-ins (one that refuses, one that never answers, a web server); the
// answers of a real S3 server are in test/integration/first-run-s3.test.ts.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, REPO, startGateway, tempDir } from '../helpers/gateway.ts';
import { freePort, run, runOk, type RunResult } from '../helpers/tools.ts';
import { assertUserError, TEST_SECRET } from '../helpers/user-error.ts';

/** Credentials that look real to the SDK, and no instance metadata lookups (loopback only). */
const S3_ENV = { AWS_ACCESS_KEY_ID: 'AKIAFIRSTRUNTEST', AWS_SECRET_ACCESS_KEY: TEST_SECRET, AWS_EC2_METADATA_DISABLED: 'true' };

async function s3nbd(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<RunResult & { ms: number }> {
  const started = Date.now();
  const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...S3_ENV, ...env }, timeoutMs });
  return { ...r, ms: Date.now() - started };
}

/** Everything under a directory store: a refused start must leave it empty (or absent). */
function storeContents(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String) : [];
}

describe('first-run errors', () => {
  const dir = tempDir('first-run');
  const servers: Array<{ close(): unknown }> = [];
  const sockets = new Set<net.Socket>();
  let silentPort = 0;
  let webPort = 0;
  before(async () => {
    // Accepts connections and never answers: a firewall that drops, a stuck proxy.
    const silent = net.createServer((s) => { sockets.add(s); s.on('error', () => undefined); });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentPort = (silent.address() as net.AddressInfo).port;
    // A web server that is not S3: HTML 404 for everything.
    const web = http.createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/html' });
      res.end('<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>');
    });
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    webPort = (web.address() as net.AddressInfo).port;
    servers.push(silent, web);
  });
  after(() => {
    for (const s of sockets) s.destroy();
    for (const s of servers) s.close();
    dir.remove();
  });

  it('says a size above 1 PiB is too large, not that it is no size', async () => {
    assertUserError(await s3nbd(['serve', '--store', join(dir.path, 's0'), '--size', '100P']), 'S3NBD_BAD_DEVICE_SIZE', /larger than the 1 PiB maximum/);
  });

  it('asks for http:// or https:// on an endpoint without a scheme', async () => {
    for (const endpoint of ['127.0.0.1:9000', 'localhost:9000']) {
      assertUserError(await s3nbd(['info', '--store', 's3://bucket/vol', '--s3-endpoint', endpoint]), 'S3NBD_BAD_ENDPOINT', new RegExp(`http://${endpoint}`));
    }
    assertUserError(await s3nbd(['info', '--store', 's3://bucket/vol'], { AWS_ENDPOINT_URL_S3: 'minio:9000' }), 'S3NBD_BAD_ENDPOINT', /AWS_ENDPOINT_URL_S3/);
  });

  it('names every credential source it tried when there are none, and no secret', async () => {
    const home = join(dir.path, 'home');
    mkdirSync(home, { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, AWS_EC2_METADATA_DISABLED: 'true' };
    for (const k of Object.keys(env)) if (/^AWS_(ACCESS|SECRET|SESSION|PROFILE|CONTAINER|WEB_IDENTITY|SHARED|CONFIG)/.test(k)) delete env[k];
    const port = await freePort();
    const r = await run(process.execPath, [CLI, 'info', '--store', 's3://bucket/vol', '--s3-endpoint', `http://127.0.0.1:${port}`], { env, timeoutMs: 30_000 });
    assertUserError(r, 'S3NBD_NO_CREDENTIALS', /AWS_ACCESS_KEY_ID not set/, /profile "default"/, /container role/, /instance role/);
  });

  it('reports an endpoint where nothing listens at once', async () => {
    const port = await freePort();
    const r = await s3nbd(['serve', '--store', 's3://bucket/vol', '--s3-endpoint', `http://127.0.0.1:${port}`, '--size', '1G',
      '--cache-dir', join(dir.path, 'c-refused'), '--socket', join(dir.path, 'refused.sock')]);
    assertUserError(r, 'S3NBD_S3_UNREACHABLE', /connection refused/);
    assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
  });

  it('gives up on an endpoint that never answers within its bound, not after minutes', async () => {
    const r = await s3nbd(['serve', '--store', 's3://bucket/vol', '--s3-endpoint', `http://127.0.0.1:${silentPort}`, '--size', '1G',
      '--cache-dir', join(dir.path, 'c-silent'), '--socket', join(dir.path, 'silent.sock')], {}, 40_000);
    assertUserError(r, 'S3NBD_S3_UNREACHABLE', /no answer within 10 s/);
    assert.ok(r.ms < 20_000, `took ${r.ms} ms`);
  });

  it('says https:// was spoken to a plain-HTTP server', async () => {
    assertUserError(await s3nbd(['info', '--store', 's3://bucket/vol', '--s3-endpoint', `https://127.0.0.1:${webPort}`]), 'S3NBD_S3_NOT_TLS', /http:\/\//);
  });

  it('says a web server is not S3, instead of "no volume" or "UnknownError"', async () => {
    const endpoint = `http://127.0.0.1:${webPort}`;
    assertUserError(await s3nbd(['info', '--store', 's3://bucket/vol', '--s3-endpoint', endpoint]), 'S3NBD_NOT_S3', /HTTP 404/, /9001/);
    assertUserError(await s3nbd(['serve', '--store', 's3://bucket/vol', '--s3-endpoint', endpoint, '--size', '1G',
      '--cache-dir', join(dir.path, 'c-web'), '--socket', join(dir.path, 'web.sock')]), 'S3NBD_NOT_S3');
  });

  it('names a missing socket directory, and creates no volume', async () => {
    const store = join(dir.path, 'sock-store');
    const r = await s3nbd(['serve', '--store', store, '--size', '1G', '--cache-dir', join(dir.path, 'c-sock'), '--socket', join(dir.path, 'no/such/dir/s.sock')]);
    assertUserError(r, 'S3NBD_NO_SUCH_DIRECTORY', /mkdir -p .*no\/such\/dir/);
    assert.deepEqual(storeContents(store), []);
  });

  it('refuses a cache directory of another volume before creating a new one', async () => {
    const first = join(dir.path, 'vol-a');
    const cache = join(dir.path, 'c-shared');
    const a = await startGateway(['--store', first, '--size', '64M', '--cache-dir', cache], { socket: join(dir.path, 'a.sock') });
    assert.equal(await a.stop(), 0);
    const other = join(dir.path, 'vol-b');
    const b = await s3nbd(['serve', '--store', other, '--size', '64M', '--cache-dir', cache, '--socket', join(dir.path, 'b.sock')]);
    assertUserError(b, 'S3NBD_CACHE_DIR_IN_USE', /holds no volume/, /--cache-dir/);
    assert.deepEqual(storeContents(other), [], 'no volume created in the wrong store');
  });

  it('never writes to the store with --read-only: no volume is an error, --size or not', async () => {
    const store = join(dir.path, 'ro-store');
    for (const size of [['--size', '1G'], []]) {
      const r = await s3nbd(['serve', '--store', store, ...size, '--read-only', '--socket', join(dir.path, 'ro.sock')]);
      assertUserError(r, 'S3NBD_NO_VOLUME', /--read-only never creates one/);
    }
    assert.deepEqual(storeContents(store), []);
  });

  it('shows the cache directory\'s state without S3 first, and says in one line that S3 is unreachable', async () => {
    const cache = join(dir.path, 'c-info');
    const gw = await startGateway(['--store', join(dir.path, 'info-store'), '--size', '64M', '--cache-dir', cache, '--upload-delay', '600000', '--flush-mode', 'local'],
      { socket: join(dir.path, 'info.sock') });
    await runOk('qemu-io', ['-f', 'raw', gw.uri, '-c', 'write -P 3 0 3M']);
    const volume = (JSON.parse(readFileSync(join(cache, 'cache.json'), 'utf8')) as { volume: string }).volume;
    await new Promise((r) => setTimeout(r, 2_500)); // the gateway writes its status every 2 s
    const s3 = ['--store', 's3://bucket/vol', '--s3-endpoint', `http://127.0.0.1:${silentPort}`, '--cache-dir', cache];
    const human = await s3nbd(['info', ...s3], {}, 40_000);
    assertUserError({ ...human, stdout: '' }, 'S3NBD_S3_UNREACHABLE', /no answer within 5 s/);
    assert.ok(human.ms < 15_000, `took ${human.ms} ms`);
    assert.match(human.stdout, new RegExp(`volume id: +${volume}`));
    assert.match(human.stdout, new RegExp(`pid ${gw.process.pid}, running`));
    assert.match(human.stdout, /dirty: +3 MiB in 3 extents/);
    assert.match(human.stdout, /journal: +3(\.\d+)? MiB/);
    const json = await s3nbd(['info', ...s3, '--json'], {}, 40_000);
    assert.equal(json.code, 2);
    const parsed = JSON.parse(json.stdout) as { cacheDir: { identity: { volume: string } }; gateway: { dirtyExtents: number }; storeError: { code: string } };
    assert.equal(parsed.cacheDir.identity.volume, volume);
    assert.equal(parsed.gateway.dirtyExtents, 3);
    assert.equal(parsed.storeError.code, 'S3NBD_S3_UNREACHABLE');
    assert.equal(await gw.stop(), 0);
  });

  it('prints the version and the commit it was built from', async () => {
    const r = await s3nbd(['--version']);
    assert.equal(r.code, 0, r.stderr);
    const commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
    const version = (JSON.parse(execFileSync('git', ['show', 'HEAD:package.json'], { cwd: REPO, encoding: 'utf8' })) as { version: string }).version;
    assert.equal(r.stdout.trim(), `s3nbd ${version} (commit ${commit})`);
  });
});

describe('local file-system errors', () => {
  const dir = tempDir('first-run-fs');
  const ro = join(dir.path, 'ro');
  before(() => {
    mkdirSync(join(ro), { recursive: true });
    // A read-only file system, as a ":ro" bind mount gives a container.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
  });
  after(() => {
    execFileSync('umount', [ro]);
    dir.remove();
  });

  it('says read-only file system for --cache-dir, --store and --socket (not ENOENT), and creates no volume', async () => {
    const store = join(dir.path, 'store');
    const sock = join(dir.path, 's.sock');
    assertUserError(await s3nbd(['serve', '--store', store, '--size', '1G', '--cache-dir', join(ro, 'cache'), '--socket', sock]),
      'S3NBD_READ_ONLY_FS', /--cache-dir .*ro\/cache is on a read-only file system/, /:ro/);
    assert.deepEqual(storeContents(store), [], 'no volume created');
    assertUserError(await s3nbd(['serve', '--store', join(ro, 'store'), '--size', '1G', '--cache-dir', join(dir.path, 'c1'), '--socket', sock]),
      'S3NBD_READ_ONLY_FS', /--store .*ro\/store is on a read-only file system/);
    assertUserError(await s3nbd(['serve', '--store', store, '--size', '1G', '--cache-dir', join(dir.path, 'c2'), '--socket', join(ro, 's.sock')]),
      'S3NBD_READ_ONLY_FS', /--socket /);
    assert.deepEqual(storeContents(store), [], 'no volume created');
  });

  it('says permission denied with the owner and uid 1000 for a root-owned directory, and creates no volume', async () => {
    // The container image runs as uid 1000; a bind mount keeps the host's owner (root). The
    // process may read everything (to load the CLI wherever the checkout is), but not write.
    // access(2) checks with the real uid and no capabilities: the path must be searchable.
    chmodSync(dir.path, 0o755);
    const owned = join(dir.path, 'root-owned');
    mkdirSync(owned, { recursive: true, mode: 0o755 });
    const open = join(dir.path, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const store = join(open, 'store');
    const sock = join(open, 'u.sock');
    const asUid1000 = (args: string[]): Promise<RunResult> => run('setpriv', [
      '--reuid', '1000', '--regid', '1000', '--clear-groups', '--inh-caps', '+dac_read_search', '--ambient-caps', '+dac_read_search',
      process.execPath, CLI, ...args], { env: { ...process.env, HOME: dir.path }, timeoutMs: 30_000 });
    for (const cache of [owned, join(owned, 'sub')]) {
      const r = await asUid1000(['serve', '--store', store, '--size', '1G', '--cache-dir', cache, '--socket', sock]);
      assertUserError(r, 'S3NBD_PERMISSION_DENIED', /owned by uid 0 \(root\) with mode 755/, /uid 1000/, /chown 1000:1000/, /named volume/);
    }
    assert.deepEqual(storeContents(store), [], 'no volume created');
    const r = await asUid1000(['serve', '--store', join(owned, 'data'), '--size', '1G', '--cache-dir', join(open, 'cache'), '--socket', sock]);
    assertUserError(r, 'S3NBD_PERMISSION_DENIED', /--store /, /uid 1000/);
    const s = await asUid1000(['serve', '--store', store, '--size', '1G', '--cache-dir', join(open, 'cache'), '--socket', join(owned, 'u.sock')]);
    assertUserError(s, 'S3NBD_PERMISSION_DENIED', /--socket .*owned by uid 0 \(root\)/, /chown 1000:1000/);
    assert.deepEqual(storeContents(store), [], 'no volume created');
  });
});
