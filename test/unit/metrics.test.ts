// The Prometheus metrics (src/service/metrics.ts): events counted per volume, gauges read from
// each volume's status when scraped, a deleted volume's series gone, the text parsed as
// Prometheus reads it; and docs/monitoring.md listing every s3nbd metric with its type.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { GatewayView, VolumeStatus, VolumeView } from '../../src/service/gateway-view.ts';
import { Metrics } from '../../src/service/metrics.ts';
import { REPO } from '../helpers/tools.ts';
import { parseMetrics } from '../helpers/admin.ts';

function status(name: string, overrides: Partial<VolumeStatus> = {}): VolumeStatus {
  return {
    name, volumeId: 'v', store: 'directory /x', size: 1 << 30, extentSize: 1 << 20, readOnly: false, lease: 'held', connections: 2, storedExtents: 5,
    cache: {
      dirtyBytes: 3 << 20, dirtyExtents: 3, oldestDirtySeconds: 12.5, uploadsInFlight: 2, uploadedExtents: 9, uploadedBytes: 9 << 20,
      uploadFailures: 1, journalBytes: 4 << 20, cachedExtents: 7, cacheSlots: 4096,
    },
    reads: { memory: 0, disk: 0, miss: 0 }, s3: { requests: 0, errors: 0, retries: 0 }, snapshots: [],
    ...overrides,
  };
}

function gatewayOf(statuses: Map<string, VolumeStatus>, ready: Map<string, boolean>): GatewayView {
  return {
    volumes: () => [...statuses.keys()].map((name): VolumeView => ({
      name, status: () => Promise.resolve(statuses.get(name)!), readiness: () => Promise.resolve({ ready: ready.get(name) ?? true }),
    })),
    skipped: () => [{ name: 'bad', error: 'x' }],
  };
}

describe('Metrics', () => {
  it('counts each volume\'s events under its own label, and keeps the counters its status shows', async () => {
    const statuses = new Map([['vm1', status('vm1')], ['vm2', status('vm2', { lease: 'lost', cache: undefined, connections: 0 })]]);
    const metrics = new Metrics({ gateway: gatewayOf(statuses, new Map([['vm2', false]])), processMetrics: false });
    const vm1 = metrics.forVolume('vm1');
    assert.equal(metrics.forVolume('vm1'), vm1);
    for (let i = 0; i < 3; i++) vm1.nbdRequest('write', 'ok', 0.002, 65536);
    vm1.nbdRequest('read', 'ok', 0.0004, 4096);
    vm1.nbdRequest('read', 'EIO', 2, 0);
    vm1.s3Request('PutObject', '200', 0.05, false);
    vm1.s3Request('GetObject', 'ECONNREFUSED', 0.001, false);
    vm1.s3Request('GetObject', '503', 0.2, true);
    vm1.upload(0.05, 1 << 20);
    vm1.fetch(0.03, 500_000);
    vm1.cacheLookup('memory');
    vm1.cacheLookup('miss');
    vm1.cacheLookup('miss');
    metrics.forVolume('vm2').nbdRequest('flush', 'ok', 0.01, 0);

    const s = parseMetrics(await metrics.render());
    const v = (key: string): number | undefined => s.get(key);
    assert.equal(v('s3nbd_nbd_requests_total{command="write",result="ok",volume="vm1"}'), 3);
    assert.equal(v('s3nbd_nbd_requests_total{command="read",result="EIO",volume="vm1"}'), 1);
    assert.equal(v('s3nbd_nbd_requests_total{command="flush",result="ok",volume="vm2"}'), 1);
    assert.equal(v('s3nbd_nbd_request_duration_seconds_count{command="read",volume="vm1"}'), 2);
    assert.equal(v('s3nbd_nbd_request_duration_seconds_bucket{command="read",le="0.0005",volume="vm1"}'), 1);
    assert.equal(v('s3nbd_nbd_written_bytes_total{volume="vm1"}'), 3 * 65536);
    assert.equal(v('s3nbd_nbd_read_bytes_total{volume="vm1"}'), 4096);
    assert.equal(v('s3nbd_s3_requests_total{operation="GetObject",status="ECONNREFUSED",volume="vm1"}'), 1);
    assert.equal(v('s3nbd_s3_requests_total{operation="PutObject",status="200",volume="vm1"}'), 1);
    assert.equal(v('s3nbd_s3_retries_total{operation="GetObject",volume="vm1"}'), 1);
    assert.equal(v('s3nbd_upload_duration_seconds_count{volume="vm1"}'), 1);
    assert.equal(v('s3nbd_uploaded_bytes_total{volume="vm1"}'), 1 << 20);
    assert.equal(v('s3nbd_fetched_bytes_total{volume="vm1"}'), 500_000);
    assert.equal(v('s3nbd_cache_lookups_total{volume="vm1",where="miss"}'), 2);
    // Gauges, from each volume's status at the scrape.
    assert.equal(v('s3nbd_dirty_bytes{volume="vm1"}'), 3 << 20);
    assert.equal(v('s3nbd_oldest_dirty_seconds{volume="vm1"}'), 12.5);
    assert.equal(v('s3nbd_uploads_in_flight{volume="vm1"}'), 2);
    assert.equal(v('s3nbd_journal_bytes{volume="vm1"}'), 4 << 20);
    assert.equal(v('s3nbd_connections{volume="vm1"}'), 2);
    assert.equal(v('s3nbd_lease_held{volume="vm1"}'), 1);
    assert.equal(v('s3nbd_lease_held{volume="vm2"}'), 0);
    assert.equal(v('s3nbd_volume_ready{volume="vm1"}'), 1);
    assert.equal(v('s3nbd_volume_ready{volume="vm2"}'), 0);
    assert.equal(v('s3nbd_dirty_bytes{volume="vm2"}'), undefined, 'no cache, no dirty gauge');
    assert.equal(v('s3nbd_volumes_skipped'), 1);
    assert.ok(![...s.keys()].some((k) => k.startsWith('process_')), 'process metrics only when asked for');

    assert.deepEqual(vm1.counters.reads, { memory: 1, disk: 0, miss: 2 });
    assert.deepEqual(vm1.counters.s3, { requests: 3, errors: 2, retries: 1 });
    assert.equal(vm1.counters.uploadedBytes, 1 << 20);

    // vm2 is deleted: its series go, vm1's stay.
    statuses.delete('vm2');
    await metrics.removeVolume('vm2');
    const after = parseMetrics(await metrics.render());
    assert.ok(![...after.keys()].some((k) => k.includes('volume="vm2"')), [...after.keys()].filter((k) => k.includes('vm2')).join(' '));
    assert.equal(after.get('s3nbd_nbd_requests_total{command="write",result="ok",volume="vm1"}'), 3);
  });

  it('adds the process metrics (CPU, memory, event loop) by default', async () => {
    const metrics = new Metrics({ gateway: gatewayOf(new Map(), new Map()) });
    const s = parseMetrics(await metrics.render());
    assert.ok((s.get('process_resident_memory_bytes') ?? 0) > 0);
    assert.ok(s.has('nodejs_eventloop_lag_seconds'));
  });

  it('is documented: docs/monitoring.md lists every s3nbd metric with its type, and no other', async () => {
    const metrics = new Metrics({ gateway: gatewayOf(new Map(), new Map()), processMetrics: false });
    const inCode = new Map((await metrics.registry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]));
    const docs = readFileSync(join(REPO, 'docs/monitoring.md'), 'utf8');
    const inDocs = new Map([...docs.matchAll(/^\| `(s3nbd_[a-z0-9_]+)` \| (counter|gauge|histogram) \|/gm)].map((m) => [m[1]!, m[2]!]));
    assert.deepEqual([...inDocs].sort(), [...inCode].sort());
  });
});
