// The status page of a real gateway (dist/, directory stores, the write-back cache) in Debian's
// headless Chromium. A gateway serving --volumes (two volumes and one that cannot be opened):
// the page loads with no console error and no failed request, shows every volume that
// /api/status lists and the skipped one with its error, and while a libnbd client writes to each
// volume, the numbers move (connections, dirty data, uploaded bytes) and the upload charts get
// points; a screenshot of it is kept as a test artifact; when the gateway stops, the page says
// the connection is lost. A gateway serving one volume (--store) with --admin-token-file: the
// page asks for the token and then shows the volume.

import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'puppeteer-core';
import type { VolumeStatus } from '../../src/service/gateway-view.ts';
import { adminGet } from '../helpers/admin.ts';
import { artifactDir, type Chromium, launchChromium, type PageProblems, pngSize, watchedPage } from '../helpers/chromium.ts';
import { cli, type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { keepOutput, registerSecret } from '../helpers/log-sweep.ts';
import { type ShownPage, type ShownVolume, untilShown } from '../helpers/status-page.ts';
import { freePort, requireTool, TOOL_ENV } from '../helpers/tools.ts';

// Writes 1 MiB about every 100 ms until its stdin closes, then FLUSHes: the test decides how
// long the write lasts by what the page shows, not by a clock.
const WRITER = String.raw`
import nbd, os, select, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
chunk = os.urandom(1 << 20)
off = 0
print('CONNECTED', flush=True)
while True:
    ready, _, _ = select.select([sys.stdin], [], [], 0.1)
    if ready and not sys.stdin.read(1):
        break
    h.pwrite(chunk, off)
    off = (off + len(chunk)) % size
h.flush()
h.shutdown()
print('DONE', flush=True)
`;

interface Writer {
  readonly child: ChildProcessWithoutNullStreams;
  /** Closes its stdin; resolves with its exit code once it has flushed and gone. */
  stop(): Promise<number | null>;
}

function startWriter(uri: string): Writer {
  const child = spawn('python3', ['-c', WRITER, uri], { env: TOOL_ENV });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => {
    keepOutput('status-page writer', output);
    resolve(code);
  }));
  return {
    child,
    async stop() {
      child.stdin.end();
      const code = await exited;
      assert.equal(code, 0, `the writer failed:\n${output}`);
      return code;
    },
  };
}

interface ApiStatus {
  readonly volumes: VolumeStatus[];
  readonly skipped: Array<{ name: string; error: string }>;
}

/** The admin endpoint's own answer, as a script would read it. */
async function apiStatus(base: string, token?: string): Promise<ApiStatus> {
  const answer = await adminGet(base, 'api/status', token);
  assert.equal(answer.status, 200, answer.text);
  return answer.json<ApiStatus>();
}

interface AdminGateway {
  readonly gw: Gateway;
  /** The admin endpoint, http://127.0.0.1:PORT/. */
  readonly base: string;
  /** The NBD URI of the volume /api/status calls `name`. */
  uriOf(name: string): string;
}

// Uploads wait 2 s: while a client writes, there is always dirty data to see.
const UPLOAD_DELAY = ['--upload-delay', '2000'];

/** serve --volumes on a directory: vm1 and vm2 (1 GiB each), and "broken", whose metadata is not JSON. */
async function startVolumesGateway(dir: string): Promise<AdminGateway> {
  const volumes = join(dir, 'vols');
  for (const name of ['vm1', 'vm2']) {
    const created = await cli(['volume', 'create', name, '--volumes', volumes, '--size', '1G']);
    assert.equal(created.code, 0, created.stderr);
  }
  mkdirSync(join(volumes, 'broken'));
  writeFileSync(join(volumes, 'broken', 's3nbd-volume.json'), '{not json');
  const port = await freePort();
  const socket = join(dir, 'sock');
  const gw = await startGateway(['--volumes', volumes, ...UPLOAD_DELAY, '--admin-listen', `127.0.0.1:${port}`], { socket, readyLine: /"msg":"volumes opened"/ });
  return { gw, base: `http://127.0.0.1:${port}/`, uriOf: (name) => `nbd+unix:///${name}?socket=${socket}` };
}

/** serve --store: one volume, the default export. */
async function startStoreGateway(dir: string, extra: readonly string[]): Promise<AdminGateway> {
  const port = await freePort();
  const gw = await startGateway(
    ['--store', join(dir, 'store'), '--size', '1G', ...UPLOAD_DELAY, '--admin-listen', `127.0.0.1:${port}`, ...extra],
    { socket: join(dir, 'sock') },
  );
  return { gw, base: `http://127.0.0.1:${port}/`, uriOf: () => gw.uri };
}

const byName = (shown: ShownPage, name: string): ShownVolume | undefined => shown.volumes.find((v) => v.name === name);
const nonZero = (text: string | undefined): boolean => text !== undefined && !/^0 B\b/.test(text);

describe('the status page of a real gateway in headless Chromium', () => {
  const dir = tempDir('status-page');
  let chromium: Chromium | undefined;
  let gateway: AdminGateway | undefined;
  let base = '';
  let page: Page;
  let problems: PageProblems;
  const writers: Writer[] = [];
  before(async () => {
    requireTool('nbdsh');
    gateway = await startVolumesGateway(dir.path);
    base = gateway.base;
    chromium = await launchChromium();
  });
  after(async () => {
    for (const w of writers) w.child.kill('SIGKILL');
    await chromium?.close();
    await gateway?.gw.stop();
    dir.remove();
  });

  it('loads without console errors or failed requests and shows every volume /api/status lists, and the skipped one', async () => {
    const status = await apiStatus(base);
    const names = status.volumes.map((v) => v.name).sort();
    assert.deepEqual(names, ['vm1', 'vm2']);
    assert.deepEqual(status.skipped.map((v) => v.name), ['broken']);
    ({ page, problems } = await watchedPage(chromium!.browser));
    await page.setViewport({ width: 1280, height: 800 });
    await page.goto(base, { waitUntil: 'load' });
    const shown = await untilShown(page, 'every volume', (s) => s.volumes.length === names.length);
    assert.deepEqual(shown.volumes.map((v) => v.name).sort(), names);
    assert.equal(shown.connection, 'ok');
    assert.match(shown.gateway, /^s3nbd \d+\.\d+\.\d+.* · up \d+ s · 2 volumes$/);
    assert.deepEqual(shown.skipped, status.skipped.map((v) => ({ name: v.name, text: `${v.name} ${v.error}` })));
    assert.match(shown.skipped[0]!.text, /S3NBD_BAD_VOLUME/);
    for (const v of shown.volumes) {
      assert.equal(v.fields.lease, 'lease held');
      assert.match(v.fields.size!, /^1\.00 GiB · [\d.]+ [KM]iB extents · 0 stored$/);
      assert.equal(v.fields.connections, '0');
    }
    assert.deepEqual(problems, { consoleErrors: [], failedRequests: [] });
  });

  it('shows the numbers moving while a client writes, draws the chart, and keeps a screenshot', async (t) => {
    const names = (await apiStatus(base)).volumes.map((v) => v.name);
    // A client on each volume, all at once.
    for (const n of names) writers.push(startWriter(gateway!.uriOf(n)));
    // What each volume was seen to show while the writer ran: the numbers must move.
    const seen = new Map(names.map((n) => [n, { dirty: false, uploaded: new Set<string>(), rate: false }]));
    const during = await untilShown(page, 'connections, dirty data, uploads and the chart moving on every volume', (s) => names.every((n) => {
      const v = byName(s, n);
      const mark = seen.get(n)!;
      if (v?.fields.connections !== '1') return false;
      mark.dirty ||= nonZero(v.fields.dirty);
      mark.uploaded.add(v.fields.uploaded!);
      mark.rate ||= nonZero(v.fields.throughput);
      // Two different uploaded totals seen, both non-zero: uploads happened while we watched.
      const uploads = [...mark.uploaded].filter(nonZero).length >= 2;
      return mark.dirty && uploads && mark.rate && v.chartPoints >= 3;
    }), 180_000);

    const path = join(artifactDir(), 'status-page-during-write.png');
    await page.screenshot({ path, fullPage: true });
    t.diagnostic(`screenshot of the status page during the write: ${path}`);
    const png = pngSize(path);
    assert.ok(png.width >= 1280 && png.height >= 400, `${png.width}x${png.height}`);
    // A blank page compresses to a few KiB; cards, text and a chart do not.
    assert.ok(png.bytes > 20_000, `${png.bytes} bytes`);

    for (const w of writers.splice(0)) await w.stop();
    // Client gone, its FLUSH done and everything uploaded: the page says so.
    const quiet = await untilShown(page, 'no connection and no dirty data', (s) => names.every((n) => {
      const v = byName(s, n);
      return v?.fields.connections === '0' && v.fields.dirty === '0 B in 0 extents' && v.fields['uploads-in-flight'] === '0';
    }), 120_000);
    for (const n of names) {
      const now = byName(quiet, n)!;
      assert.match(now.fields.size!, /^1\.00 GiB · [\d.]+ [KM]iB extents · [1-9][\d,]* stored$/);
      assert.ok(nonZero(now.fields.uploaded), now.fields.uploaded);
      // The chart keeps its points (5 minutes of them) after the write.
      assert.ok(now.chartPoints >= byName(during, n)!.chartPoints);
    }
    assert.deepEqual(problems, { consoleErrors: [], failedRequests: [] });
  });

  it('says the connection is lost when the gateway stops, and keeps the last numbers', async () => {
    const before = await untilShown(page, 'the connection up', (s) => s.connection === 'ok');
    assert.equal(await gateway!.gw.stop(), 0);
    const lost = await untilShown(page, 'the connection lost', (s) => s.connection === 'lost');
    assert.match(lost.banner ?? '', /^Connection lost since \d\d:\d\d:\d\d: Failed to fetch\. Retrying every second…$/);
    assert.deepEqual(lost.volumes.map((v) => v.name), before.volumes.map((v) => v.name));
    // Only status requests failed, refused (or cut off, if one was under way as the gateway closed).
    assert.ok(problems.failedRequests.length > 0);
    assert.deepEqual(problems.failedRequests.filter((f) => !f.startsWith(`${base}api/status: net::ERR_`)), []);
    assert.ok(problems.failedRequests.includes(`${base}api/status: net::ERR_CONNECTION_REFUSED`), problems.failedRequests.join('\n'));
  });
});

describe('the status page of a gateway with an admin token', () => {
  const dir = tempDir('status-page-token');
  const token = `status-page-token-${process.pid}-0123456789`;
  let chromium: Chromium | undefined;
  let gw: Gateway | undefined;
  let base = '';
  before(async () => {
    registerSecret('status page admin token', token);
    const tokenFile = join(dir.path, 'admin-token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    ({ gw, base } = await startStoreGateway(dir.path, ['--admin-token-file', tokenFile]));
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    await gw?.stop();
    dir.remove();
  });

  it('asks for the token, then shows the volumes', async () => {
    const names = (await apiStatus(base, token)).volumes.map((v) => v.name).sort();
    const { page, problems } = await watchedPage(chromium!.browser);
    await page.goto(base, { waitUntil: 'load' });
    const asked = await untilShown(page, 'the token form', (s) => s.tokenForm.visible);
    assert.equal(asked.volumes.length, 0);
    await page.type('#token-input', token);
    await page.click('button[type="submit"]');
    const shown = await untilShown(page, 'the volumes', (s) => s.volumes.length === names.length);
    assert.equal(shown.tokenForm.visible, false);
    assert.deepEqual(shown.volumes.map((v) => v.name).sort(), names);
    // The page's files come without the token; only the first status request was refused.
    assert.deepEqual(problems.failedRequests, [`${base}api/status: HTTP 401`]);
    assert.deepEqual(problems.consoleErrors.filter((e) => !/status of 401/.test(e)), []);
  });
});
