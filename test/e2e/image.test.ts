// The container image without a Docker engine: the Dockerfile is linted with hadolint, its
// build stage's files are copied into a fresh directory and built by the same script the
// image runs, and the result is started through the image's entrypoint with the image's
// environment (only the paths and the listen address point at this machine), then used by a
// client.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO, tempDir } from '../helpers/gateway.ts';
import { freePort, run, runOk } from '../helpers/tools.ts';

const DOCKERFILE = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
const HADOLINT = join(process.env.S3NBD_CACHE_DIR ?? join(homedir(), '.cache/s3nbd'), 'hadolint/bin/hadolint');

/** The Dockerfile's instructions, continuation lines joined, comments dropped. */
function instructions(): string[][] {
  return DOCKERFILE.replace(/\\\n/g, ' ').split('\n')
    .map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(/\s+/));
}


describe('the container image, built and started by its own scripts', () => {
  const dir = tempDir('image');
  after(() => dir.remove());

  it('passes hadolint', async () => {
    const r = await run(HADOLINT, [join(REPO, 'Dockerfile')]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr} (hadolint is installed by scripts/install-test-deps.sh)`);
  });

  it('builds from the build stage\'s files alone, and its entrypoint serves a client', async () => {
    const all = instructions();
    const stages = all.map((ins, i) => (ins[0] === 'FROM' ? i : -1)).filter((i) => i >= 0);
    assert.equal(stages.length, 2, 'a build stage and a runtime stage');
    const build = all.slice(stages[0], stages[1]);
    const runtime = all.slice(stages[1]);
    // The build context holds only what the build stage copies.
    const context = join(dir.path, 'context');
    for (const ins of build.filter((i) => i[0] === 'COPY')) {
      const target = ins.at(-1)!;
      for (const source of ins.slice(1, -1)) {
        const to = target.endsWith('/') ? join(context, target, source.endsWith('/') ? '' : source.split('/').pop()!) : join(context, target);
        mkdirSync(dirname(to), { recursive: true });
        cpSync(join(REPO, source), source.endsWith('/') ? join(context, target) : to, { recursive: true });
      }
    }
    assert.ok(build.some((i) => i[0] === 'ARG' && i[1]!.startsWith('S3NBD_COMMIT')), 'the commit for --version is a build argument');
    const buildRun = build.find((i) => i[0] === 'RUN')!;
    assert.deepEqual(buildRun.slice(1, 3), ['bash', 'scripts/image-build.sh']);
    const app = join(dir.path, 'app');
    // The context has no .git: the commit comes in as the Dockerfile's build argument.
    await runOk('bash', ['scripts/image-build.sh', app], { cwd: context, timeoutMs: 300_000, env: { ...process.env, S3NBD_COMMIT: 'feedc0ffee12' } });
    assert.ok(readFileSync(join(app, 'dist/cli/main.js')).length > 0, 'built from the context');
    assert.match(await runOk(process.execPath, [join(app, 'dist/cli/main.js'), '--version']), /^s3nbd \d+\.\d+\.\d+ \(commit feedc0ffee12\)\n$/);
    assert.throws(() => readFileSync(join(app, 'node_modules/typescript/package.json')), 'no dev dependencies in the image');
    // The status page's files (not compiled by tsc) are in the image, where the admin endpoint looks.
    const page = join(REPO, 'src/service/status-page');
    for (const file of existsSync(page) ? readdirSync(page, { withFileTypes: true }).filter((f) => f.isFile()) : []) {
      assert.deepEqual(readFileSync(join(app, 'dist/service/status-page', file.name)), readFileSync(join(REPO, 'src/service/status-page', file.name)), file.name);
    }
    mkdirSync(join(app, 'scripts'), { recursive: true });
    cpSync(join(REPO, 'scripts/image-start.sh'), join(app, 'scripts/image-start.sh'));

    // The runtime stage's environment, entrypoint and command.
    const env: Record<string, string> = {};
    for (const ins of runtime.filter((i) => i[0] === 'ENV')) {
      for (const pair of ins.slice(1)) {
        const [k, v] = pair.split('=');
        env[k!] = v!;
      }
    }
    assert.equal(env.S3NBD_LISTEN, '0.0.0.0:10809', 'the image listens on all interfaces');
    const entrypoint = JSON.parse(runtime.find((i) => i[0] === 'ENTRYPOINT')!.slice(1).join(' ')) as string[];
    const cmd = JSON.parse(runtime.find((i) => i[0] === 'CMD')!.slice(1).join(' ')) as string[];
    assert.deepEqual(entrypoint, ['/app/scripts/image-start.sh']);
    const port = await freePort();
    // The admin endpoint is on by default, on loopback only, for the HEALTHCHECK.
    assert.equal(env.S3NBD_ADMIN_LISTEN, '127.0.0.1:9101');
    const healthcheck = runtime.find((i) => i[0] === 'HEALTHCHECK')!;
    const check = (JSON.parse(healthcheck.slice(healthcheck.indexOf('CMD') + 1).join(' ')) as string[])
      .map((a) => a.replace(/^\/app\//, `${app}/`));
    const container = {
      ...process.env, ...env,
      // What `docker run -p 127.0.0.1:PORT:10809 -v ... -e S3NBD_SIZE=64M` would map:
      S3NBD_LISTEN: `127.0.0.1:${port}`, S3NBD_CACHE_DIR: join(dir.path, 'cache'), S3NBD_STORE: join(dir.path, 'data'), S3NBD_SIZE: '64M',
      S3NBD_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    };
    const child = spawn(join(app, 'scripts/image-start.sh'), cmd, {
      env: container,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let logs = '';
    child.stderr.on('data', (d: Buffer) => { logs += d.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      for (let i = 0; i < 200 && !/"msg":"volume created"/.test(logs); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(logs, /"msg":"volume created"/);
      const info = JSON.parse(await runOk('nbdinfo', ['--json', `nbd://127.0.0.1:${port}`])) as { exports: Array<Record<string, unknown>> };
      assert.equal(info.exports[0]!['export-size'], 64 << 20);
      const io = await run('qemu-io', ['-f', 'raw', `nbd://127.0.0.1:${port}`, '-c', 'write -P 0x5a 0 1M', '-c', 'flush', '-c', 'read -P 0x5a 0 1M']);
      assert.equal(io.code, 0, io.stdout + io.stderr);
      // `docker exec s3nbd /app/scripts/image-start.sh snapshot create s1` (docs/kernel-client.md):
      // the container's environment names the store and the cache directory, so the running
      // gateway takes the snapshot.
      const made = await run(join(app, 'scripts/image-start.sh'), ['snapshot', 'create', 's1'], { env: container });
      assert.equal(made.code, 0, made.stderr);
      assert.match(made.stdout, /^created snapshot s1: 1 extents/);
      assert.match(logs, /"msg":"snapshot created"/);
      // The HEALTHCHECK's command, without curl: healthy while the gateway runs.
      const healthy = await run(check[0]!, check.slice(1), { env: container, timeoutMs: 15_000 });
      assert.equal(healthy.code, 0, healthy.stdout + healthy.stderr);
      assert.match(healthy.stdout, /^s3nbd health: alive \(http:\/\/127\.0\.0\.1:\d+\/healthz\)\n$/);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, logs);
    const gone = await run(check[0]!, check.slice(1), { env: container, timeoutMs: 15_000 });
    assert.equal(gone.code, 1, 'unhealthy once the gateway is gone');
    assert.match(gone.stderr, /^s3nbd health: not alive \(http:\/\/127\.0\.0\.1:\d+\/healthz\): connect ECONNREFUSED/);
  });
});
