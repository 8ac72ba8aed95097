// The status page (src/service/status-page/) in headless Chromium against a stand-in for the
// admin endpoint: the page's files served as they are, under the strictest CSP (nothing
// inline, nothing from elsewhere), and an /api/status whose answers the test sets. What a
// gateway cannot easily be made to show is checked here: skipped volumes, a read-only volume
// without cache, a name that looks like HTML, a volume that goes away, the connection lost and
// back, and a token asked for, refused and accepted. test/e2e/status-page.test.ts loads the
// page from a real gateway.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'puppeteer-core';
import type { VolumeStatus } from '../../src/service/gateway-view.ts';
import { type Chromium, launchChromium, type PageProblems, watchedPage } from '../helpers/chromium.ts';
import { untilShown } from '../helpers/status-page.ts';
import { REPO } from '../helpers/tools.ts';

const PAGE_DIR = join(REPO, 'src/service/status-page');
const TYPES: Record<string, string> = { html: 'text/html', js: 'text/javascript', css: 'text/css', svg: 'image/svg+xml' };
const MiB = 1024 * 1024;

const ago = (seconds: number): string => new Date(Date.now() - seconds * 1000).toISOString();

function volume(name: string, changes: Partial<VolumeStatus> = {}): VolumeStatus {
  return {
    name, volumeId: `id-${name}`, store: `file:///srv/volumes/${name}`, size: 10 * 1024 * MiB, extentSize: 4 * MiB, readOnly: false,
    lease: 'held', connections: 2, storedExtents: 100,
    cache: {
      dirtyBytes: 12 * MiB, dirtyExtents: 3, oldestDirtySeconds: 75, uploadsInFlight: 4, uploadedExtents: 10, uploadedBytes: 400 * MiB,
      uploadFailures: 0, journalBytes: 13 * MiB, cachedExtents: 20, cacheSlots: 256,
    },
    reads: { memory: 50, disk: 30, miss: 20 },
    s3: { requests: 1234, errors: 5, retries: 3 },
    // The newest 3 d 4 h 30 min ago: shown as "3 d 4 h ago" for the next half hour.
    snapshots: [{ name: 'nightly-1', createdAt: ago(4 * 86400) }, { name: 'nightly-2', createdAt: ago(3 * 86400 + 4.5 * 3600) }],
    ...changes,
  };
}

/** The stand-in admin endpoint: what /api/status answers is whatever the test puts in `status`. */
class FakeAdmin {
  status: { gateway: Record<string, unknown>; volumes: VolumeStatus[]; skipped: Array<{ name: string; error: string }> } = {
    gateway: { version: 's3nbd 0.1.0 (commit abc1234)', uptimeSeconds: 3725 }, volumes: [], skipped: [],
  };
  /** up: answers; down: closes each connection without an answer. */
  mode: 'up' | 'down' = 'up';
  token: string | undefined;
  readonly authHeaders: string[] = [];
  readonly server: Server = createServer((req, res) => {
    void (async () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/api/status') {
        if (this.mode === 'down') {
          req.socket.destroy();
          return;
        }
        this.authHeaders.push(req.headers.authorization ?? '');
        if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"code":"S3NBD_ADMIN_UNAUTHORIZED"}}');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(this.status));
        return;
      }
      const name = path === '/' ? 'index.html' : path.slice(1);
      const type = TYPES[name.split('.').pop() ?? ''];
      const body = /^[\w.-]+$/.test(name) && type ? await readFile(join(PAGE_DIR, name)).catch(() => undefined) : undefined;
      if (!body) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': type, 'content-security-policy': "default-src 'self'" }).end(body);
    })();
  });

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const address = this.server.address();
    assert.ok(address && typeof address === 'object');
    return `http://127.0.0.1:${address.port}/`;
  }
}

describe('status page against a stand-in admin endpoint', () => {
  let chromium: Chromium | undefined;
  const admin = new FakeAdmin();
  let url = '';
  before(async () => {
    url = await admin.listen();
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    admin.server.closeAllConnections();
    await new Promise((resolve) => admin.server.close(resolve));
  });

  async function open(): Promise<{ page: Page; problems: PageProblems }> {
    const opened = await watchedPage(chromium!.browser);
    await opened.page.goto(url, { waitUntil: 'load' });
    return opened;
  }

  it('shows every volume, the gateway and the skipped volumes, in units for people', async () => {
    admin.token = undefined;
    admin.status.volumes = [
      volume('vm1'),
      volume('<img src=x onerror=alert(1)>', { readOnly: true, lease: 'none', connections: 0, reads: { memory: 0, disk: 0, miss: 0 }, snapshots: [] }),
    ];
    delete (admin.status.volumes[1] as { cache?: unknown }).cache;
    admin.status.skipped = [{ name: 'broken', error: 'S3NBD_LEASE_HELD: the volume is leased by another gateway' }];
    const { page, problems } = await open();
    const shown = await untilShown(page, 'both volumes', (s) => s.volumes.length === 2);
    await page.close();

    assert.equal(shown.connection, 'ok');
    assert.equal(shown.banner, null);
    assert.match(shown.gateway, /^s3nbd 0\.1\.0 \(commit abc1234\) · up 1 h 2 min · 2 volumes$/);
    const [vm1, html] = shown.volumes;
    assert.equal(vm1!.name, 'vm1');
    assert.deepEqual(
      { ...vm1!.fields },
      {
        name: 'vm1', lease: 'lease held', size: '10.0 GiB · 4.00 MiB extents · 100 stored', store: 'file:///srv/volumes/vm1',
        connections: '2', dirty: '12.0 MiB in 3 extents', 'dirty-age': '1 min 15 s', 'uploads-in-flight': '4',
        uploaded: '400 MiB in 10 extents', throughput: '0 B/s',
        reads: 'memory 50.0% · disk 30.0% · miss 20.0% (100)', s3: '1,234 · 5 errors · 3 retries',
        journal: '13.0 MiB · 20 of 256 slots', snapshots: '2 · newest nightly-2, 3 d 4 h ago',
        chart: '', 'chart-caption': 'upload rate: from the next answer on',
      },
    );
    // The name is shown as text, never parsed as HTML.
    assert.equal(html!.name, '<img src=x onerror=alert(1)>');
    assert.equal(html!.fields.name, '<img src=x onerror=alert(1)>');
    assert.equal(html!.fields.lease, 'read-only · lease none');
    assert.equal(html!.fields.dirty, 'no write-back cache');
    assert.equal(html!.fields.reads, 'no reads yet');
    assert.equal(html!.fields.snapshots, 'none');
    assert.deepEqual(shown.skipped, [{ name: 'broken', text: 'broken S3NBD_LEASE_HELD: the volume is leased by another gateway' }]);
    assert.deepEqual(problems, { consoleErrors: [], failedRequests: [] });
  });

  it('draws the upload rate from the growth of uploadedBytes, starts again when it goes back, and drops a volume that goes away', async () => {
    admin.token = undefined;
    admin.status.skipped = [];
    admin.status.volumes = [volume('a'), volume('b')];
    const { page, problems } = await open();
    await untilShown(page, 'both volumes', (s) => s.volumes.length === 2);
    // 1 MiB more on every answer the page gets: a steady, non-zero rate.
    let bytes = 400 * MiB;
    const grow = setInterval(() => {
      bytes += MiB;
      admin.status.volumes[0] = volume('a', { cache: { ...volume('a').cache!, uploadedBytes: bytes } });
    }, 250);
    try {
      const shown = await untilShown(page, 'three points on a\'s chart and a non-zero rate',
        (s) => s.volumes[0]!.chartPoints >= 3 && !/^0 B\/s$/.test(s.volumes[0]!.fields.throughput!));
      assert.match(shown.volumes[0]!.fields.throughput!, /^[\d.]+ (KiB|MiB)\/s$/);
      assert.match(shown.volumes[0]!.fields['chart-caption']!, /^upload rate over the last (\d+ min )?\d+ s · peak [\d.]+ (KiB|MiB)\/s$/);
    } finally {
      clearInterval(grow);
    }
    const polyline = await page.evaluate(`document.querySelector('[data-volume="a"] polyline').getAttribute('points')`) as string;
    const drawn = polyline.split(' ').length;
    assert.ok(drawn >= 3, `points: ${polyline}`);

    // The gateway restarted: its total starts again from 0. The chart starts again too, rather
    // than drawing a negative rate.
    admin.status.volumes[0] = volume('a', { cache: { ...volume('a').cache!, uploadedBytes: MiB } });
    const restarted = await untilShown(page, 'a\'s chart started again', (s) => s.volumes[0]!.chartPoints < drawn);
    assert.equal(restarted.volumes[0]!.fields.throughput, '0 B/s');
    assert.doesNotMatch(restarted.volumes[0]!.fields['chart-caption']!, /-/);

    admin.status.volumes = [volume('b')];
    const after = await untilShown(page, 'only b', (s) => s.volumes.length === 1);
    assert.equal(after.volumes[0]!.name, 'b');
    await page.close();
    assert.deepEqual(problems, { consoleErrors: [], failedRequests: [] });
  });

  it('says when the connection is lost, keeps trying, and recovers', async () => {
    admin.token = undefined;
    admin.status.volumes = [volume('vm1')];
    const { page, problems } = await open();
    await untilShown(page, 'vm1', (s) => s.connection === 'ok' && s.volumes.length === 1);
    admin.mode = 'down';
    const lost = await untilShown(page, 'the connection lost', (s) => s.connection === 'lost');
    assert.match(lost.banner ?? '', /^Connection lost since \d\d:\d\d:\d\d: Failed to fetch\. Retrying every second…$/);
    // The last known numbers stay, dimmed.
    assert.equal(lost.volumes.length, 1);
    admin.mode = 'up';
    admin.status.volumes = [volume('vm1', { connections: 7 })];
    const back = await untilShown(page, 'the connection back', (s) => s.connection === 'ok');
    assert.equal(back.banner, null);
    assert.equal(back.volumes[0]!.fields.connections, '7');
    await page.close();
    // Only the refused requests, nothing else.
    assert.ok(problems.failedRequests.length > 0);
    assert.deepEqual(problems.failedRequests.filter((f) => !/\/api\/status: net::ERR_EMPTY_RESPONSE$/.test(f)), []);
    assert.deepEqual(problems.consoleErrors.filter((e) => !/ERR_EMPTY_RESPONSE/.test(e)), []);
  });

  it('asks for the token once, says when it is wrong, and keeps it for the session', async () => {
    admin.token = 'the-right-token-0123456789';
    admin.status.volumes = [volume('secured')];
    admin.authHeaders.length = 0;
    const { page, problems } = await open();
    const asked = await untilShown(page, 'the token form', (s) => s.tokenForm.visible);
    assert.equal(asked.connection, 'token');
    assert.equal(asked.volumes.length, 0);
    assert.match(asked.tokenForm.message, /needs its token/);

    await page.type('#token-input', 'wrong-token');
    await page.click('button[type="submit"]');
    const refused = await untilShown(page, 'the token refused', (s) => s.tokenForm.visible && /not accepted/.test(s.tokenForm.message));
    assert.equal(refused.volumes.length, 0);

    await page.type('#token-input', admin.token);
    await page.click('button[type="submit"]');
    const shown = await untilShown(page, 'the volume', (s) => s.volumes.length === 1);
    assert.equal(shown.tokenForm.visible, false);
    assert.equal(shown.volumes[0]!.name, 'secured');
    assert.ok(admin.authHeaders.includes(`Bearer ${admin.token}`));

    // A reload in the same tab keeps the token (sessionStorage): no form again.
    const before = admin.authHeaders.length;
    await page.reload({ waitUntil: 'load' });
    const again = await untilShown(page, 'the volume after a reload', (s) => s.volumes.length === 1);
    assert.equal(again.tokenForm.visible, false);
    assert.equal(admin.authHeaders[before], `Bearer ${admin.token}`);
    await page.close();
    // The two 401s (no token, then the wrong one) and nothing else.
    assert.deepEqual(problems.failedRequests.map((f) => f.replace(url, '/')), ['/api/status: HTTP 401', '/api/status: HTTP 401']);
    assert.deepEqual(problems.consoleErrors.filter((e) => !/status of 401/.test(e)), []);
  });
});
