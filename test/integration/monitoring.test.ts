// Monitoring on a real S3 server (MinIO): a real Prometheus (Debian's package) scrapes the
// gateway's /metrics every second with its bearer token during a fio workload, and queries
// through Prometheus' HTTP API return the NBD write requests fio made, dirty data while it
// waited for upload, and the uploads; Prometheus loads the shipped alert rules, which
// promtool checks. And /readyz turns 503 when MinIO is killed and 200 when it is back.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminGet, parseMetrics, waitFor } from '../helpers/admin.ts';
import { startGateway, tempDir, type Gateway } from '../helpers/gateway.ts';
import { keepOutput, registerSecret } from '../helpers/log-sweep.ts';
import { credentialsEnv, type S3TestServer, startMinio, watchdog } from '../helpers/minio.ts';
import { freePort, REPO, requireTool, runOk } from '../helpers/tools.ts';

const BUCKET = 's3nbd-monitoring';
const TOKEN = 'prometheus-scrape-token-8c1d4e2f7a';
registerSecret('admin token (monitoring test)', TOKEN);
const ALERT_RULES = join(REPO, 'docs/s3nbd-alerts.yml');
/** fio's workload: this many 64 KiB writes, at 4 MiB/s (8 s: several scrapes see it). */
const WRITES = 512;

interface Vector { metric: Record<string, string>; value: [number, string] }

describe('monitoring on MinIO', () => {
  const dir = tempDir('monitoring');
  let s3: S3TestServer;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    for (const tool of ['fio', 'prometheus', 'promtool'] as const) requireTool(tool);
    s3 = await startMinio();
    await s3.createBucket(BUCKET);
    env = credentialsEnv(s3);
  });
  after(async () => {
    await s3.stop();
    dir.remove();
  });

  async function gateway(name: string, adminPort: number, extra: string[] = []): Promise<Gateway> {
    return await startGateway(['--store', `s3://${BUCKET}/${name}`, '--s3-endpoint', s3.endpoint, '--size', '256M', '--export-name', name,
      '--admin-listen', `127.0.0.1:${adminPort}`, ...extra], { socket: join(dir.path, `${name}.sock`), env });
  }

  it('promtool accepts the shipped alert rules', async () => {
    const out = await runOk('promtool', ['check', 'rules', ALERT_RULES]);
    assert.match(out, /SUCCESS: \d+ rules found/);
  });

  it('a real Prometheus scrapes /metrics with the token during a fio workload; its API returns the requests, dirty data and uploads', async () => {
    const adminPort = await freePort();
    const tokenFile = join(dir.path, 'admin-token');
    writeFileSync(tokenFile, TOKEN);
    // Dirty extents wait 3 s before their upload: dirty data is there for scrapes to see.
    const gw = await gateway('vm1', adminPort, ['--admin-token-file', tokenFile, '--upload-delay', '3000']);
    const promPort = await freePort();
    const config = join(dir.path, 'prometheus.yml');
    writeFileSync(config, [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${ALERT_RULES}`,
      'scrape_configs:',
      '  - job_name: s3nbd',
      '    authorization:',
      '      type: Bearer',
      `      credentials_file: ${tokenFile}`,
      '    static_configs:',
      `      - targets: ['127.0.0.1:${adminPort}']`,
      '',
    ].join('\n'));
    await runOk('promtool', ['check', 'config', config]);
    const prom = spawnPrometheus(config, join(dir.path, 'tsdb'), promPort);
    const api = `http://127.0.0.1:${promPort}/`;
    const query = async (promql: string): Promise<Vector[]> => {
      const answer = await adminGet(api, `api/v1/query?query=${encodeURIComponent(promql)}`);
      assert.equal(answer.status, 200, answer.text);
      return answer.json<{ data: { result: Vector[] } }>().data.result;
    };
    const scalar = async (promql: string): Promise<number | undefined> => {
      const result = await query(promql);
      return result.length === 0 ? undefined : Number(result[0]!.value[1]);
    };
    try {
      // The target is up: Prometheus sent the token and got the metrics.
      await waitFor(async () => (await scalar('up{job="s3nbd"}')) === 1, 'Prometheus scraped the gateway', 60_000);
      await runOk('fio', ['--name=backup', '--ioengine=nbd', `--uri=nbd+unix:///vm1?socket=${gw.socket}`, '--rw=write', '--bs=64k',
        `--size=${WRITES * 64}k`, '--rate=4m', '--iodepth=4'], { timeoutMs: 300_000 });
      // Everything uploaded, then scraped once more: the gateway's own counters are final.
      await waitFor(async () => parseMetrics((await adminGet(`http://127.0.0.1:${adminPort}/`, '/metrics', TOKEN)).text).get('s3nbd_dirty_bytes{volume="vm1"}') === 0,
        'the gateway uploaded everything', 120_000);
      await waitFor(async () => (await scalar('s3nbd_dirty_bytes{volume="vm1"}')) === 0, 'Prometheus saw the dirty data gone', 60_000);

      assert.equal(await scalar('sum(s3nbd_nbd_requests_total{volume="vm1",command="write",result="ok"})'), WRITES);
      assert.equal(await scalar('s3nbd_nbd_written_bytes_total{volume="vm1"}'), WRITES * 65536);
      assert.equal(await scalar('sum(s3nbd_nbd_requests_total{volume="vm1",result!="ok"})'), undefined, 'no request failed');
      assert.ok((await scalar('s3nbd_nbd_request_duration_seconds_count{volume="vm1",command="write"}'))! >= WRITES);
      // Dirty data was there while fio wrote, and went away by uploads.
      assert.ok((await scalar('max_over_time(s3nbd_dirty_bytes{volume="vm1"}[10m])'))! > 0, 'non-zero dirty bytes were scraped');
      assert.ok((await scalar('max_over_time(s3nbd_oldest_dirty_seconds{volume="vm1"}[10m])'))! > 0);
      assert.ok((await scalar('s3nbd_uploaded_bytes_total{volume="vm1"}'))! > 0, 'uploads counted');
      assert.equal(await scalar('s3nbd_upload_duration_seconds_count{volume="vm1"}'), WRITES * 65536 / (1 << 20), 'one upload per 1 MiB extent');
      const puts = await query('s3nbd_s3_requests_total{volume="vm1",operation="PutObject",status="200"}');
      assert.equal(puts.length, 1);
      assert.ok(Number(puts[0]!.value[1]) >= WRITES * 65536 / (1 << 20));
      assert.equal(await scalar('s3nbd_lease_held{volume="vm1"}'), 1);
      assert.equal(await scalar('s3nbd_volume_ready{volume="vm1"}'), 1);
      // Prometheus evaluates the shipped rules: loaded, and none firing on a healthy gateway.
      const rules = (await adminGet(api, 'api/v1/rules')).json<{ data: { groups: Array<{ rules: Array<{ name: string; state: string }> }> } }>();
      const loaded = rules.data.groups.flatMap((g) => g.rules);
      assert.ok(loaded.some((r) => r.name === 'S3nbdLeaseLost'));
      assert.deepEqual(loaded.filter((r) => r.state === 'firing').map((r) => r.name), []);
    } finally {
      prom.child.kill('SIGTERM');
      await prom.exited;
      keepOutput('prometheus', prom.output());
      assert.equal(await gw.stop(), 0, gw.logs());
    }
    assert.ok(!gw.logs().includes(TOKEN));
  });

  it('/readyz turns 503 when S3 is killed and 200 when it is back', async () => {
    const adminPort = await freePort();
    const base = `http://127.0.0.1:${adminPort}/`;
    const gw = await gateway('vm2', adminPort);
    const readyz = async (): Promise<{ status: number; body: { volumes: Array<{ ready: boolean; reason?: string }> } }> => {
      const answer = await adminGet(base, '/readyz');
      return { status: answer.status, body: answer.json() };
    };
    try {
      await waitFor(async () => (await readyz()).status === 200, 'ready on MinIO', 30_000);
      let reason = '';
      await s3.restart(async () => {
        // Unready within about 10 s of the last answer; the bound here is generous for a loaded machine.
        await waitFor(async () => {
          const r = await readyz();
          reason = r.body.volumes[0]?.reason ?? '';
          return r.status === 503;
        }, '/readyz said 503 with MinIO gone', 60_000);
        const m = parseMetrics((await adminGet(base, '/metrics')).text);
        assert.equal(m.get('s3nbd_volume_ready{volume="vm2"}'), 0);
      });
      assert.match(reason, /^S3 unreachable: /);
      await waitFor(async () => (await readyz()).status === 200, '/readyz said 200 with MinIO back', 60_000);
      assert.equal((await adminGet(base, '/healthz')).status, 200, 'alive all along');
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
  });
});

function spawnPrometheus(config: string, tsdb: string, port: number): { child: ChildProcess; exited: Promise<void>; output(): string } {
  const child = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${tsdb}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const dog = child.pid === undefined ? undefined : watchdog(child.pid);
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    dog?.kill('SIGKILL');
    resolve();
  }));
  process.once('exit', () => child.kill('SIGKILL'));
  return { child, exited, output: () => output };
}
