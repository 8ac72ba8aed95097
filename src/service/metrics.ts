// The admin endpoint's /metrics, in Prometheus' text format through prom-client, on a registry of
// its own. Events (VolumeTelemetry, one per served volume from forVolume()) feed the counters and
// histograms as they happen; the gauges (connections, dirty data, journal, lease, readiness) are
// read from each volume's status when Prometheus scrapes. Every series has the label
// `volume`, the export name. docs/monitoring.md lists every metric; a test keeps the two equal.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { VolumeTelemetry } from '../telemetry.ts';
import type { GatewayView, VolumeStatus } from './gateway-view.ts';
import { VolumeCounters } from './volume-counters.ts';

/** NBD requests: from a cached read (well under a millisecond) to one waiting on S3 for a minute. */
const REQUEST_BUCKETS = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** S3 requests, uploads and fetches: tens of milliseconds to the 30 s attempt timeout. */
const S3_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

type Where = 'memory' | 'disk' | 'miss';

/** One volume's telemetry: its series in the registry, and the counters its status shows. */
export class VolumeMetrics implements VolumeTelemetry {
  readonly name: string;
  readonly counters: VolumeCounters;
  private readonly metrics: Metrics;
  /** Label children by command and result, made once: the NBD path is hot. */
  private readonly nbd = new Map<string, { count: Counter.Internal; seconds: Histogram.Internal<'volume' | 'command'> }>();

  constructor(metrics: Metrics, name: string, counters = new VolumeCounters()) {
    this.metrics = metrics;
    this.name = name;
    this.counters = counters;
  }

  nbdRequest(command: string, result: string, seconds: number, bytes: number): void {
    const key = `${command} ${result}`;
    let children = this.nbd.get(key);
    if (!children) {
      children = {
        count: this.metrics.nbdRequests.labels({ volume: this.name, command, result }),
        seconds: this.metrics.nbdSeconds.labels({ volume: this.name, command }),
      };
      this.nbd.set(key, children);
    }
    children.count.inc();
    children.seconds.observe(seconds);
    if (bytes > 0 && command === 'read') this.metrics.readBytes.inc({ volume: this.name }, bytes);
    if (bytes > 0 && command === 'write') this.metrics.writtenBytes.inc({ volume: this.name }, bytes);
  }

  s3Request(operation: string, status: string, seconds: number, retry: boolean): void {
    this.counters.s3Request(operation, status, seconds, retry);
    this.metrics.s3Requests.inc({ volume: this.name, operation, status });
    this.metrics.s3Seconds.observe({ volume: this.name, operation }, seconds);
    if (retry) this.metrics.s3Retries.inc({ volume: this.name, operation });
  }

  upload(seconds: number, bytes: number): void {
    this.counters.upload(seconds, bytes);
    this.metrics.uploadSeconds.observe({ volume: this.name }, seconds);
    this.metrics.uploadedBytes.inc({ volume: this.name }, bytes);
  }

  fetch(seconds: number, bytes: number): void {
    this.metrics.fetchSeconds.observe({ volume: this.name }, seconds);
    this.metrics.fetchedBytes.inc({ volume: this.name }, bytes);
  }

  cacheLookup(where: Where): void {
    this.counters.cacheLookup(where);
    this.metrics.cacheLookups.inc({ volume: this.name, where });
  }
}

export interface MetricsOptions {
  readonly gateway: GatewayView;
  /** prom-client's process metrics (CPU, memory, event loop, GC). Default true. */
  readonly processMetrics?: boolean;
}

export class Metrics {
  readonly registry = new Registry();
  readonly contentType: string = this.registry.contentType;
  private readonly gateway: GatewayView;
  private readonly volumes = new Map<string, VolumeMetrics>();

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram<L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]): Histogram<L> {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  readonly nbdRequests = this.counter('s3nbd_nbd_requests_total', 'NBD requests answered, by command and result (ok or the errno\'s name)', ['volume', 'command', 'result']);
  readonly nbdSeconds = this.histogram('s3nbd_nbd_request_duration_seconds', 'Time from an NBD request\'s arrival to its reply, by command', ['volume', 'command'], REQUEST_BUCKETS);
  readonly readBytes = this.counter('s3nbd_nbd_read_bytes_total', 'Bytes read by NBD clients (successful reads)', ['volume']);
  readonly writtenBytes = this.counter('s3nbd_nbd_written_bytes_total', 'Bytes written by NBD clients (successful writes)', ['volume']);
  readonly s3Requests = this.counter('s3nbd_s3_requests_total', 'S3 requests (every attempt), by operation and status (HTTP status, or the error\'s code: timeout, ECONNREFUSED, ...)', ['volume', 'operation', 'status']);
  readonly s3Retries = this.counter('s3nbd_s3_retries_total', 'S3 attempts that were retries of a failed one', ['volume', 'operation']);
  readonly s3Seconds = this.histogram('s3nbd_s3_request_duration_seconds', 'Time of one S3 attempt, by operation', ['volume', 'operation'], S3_BUCKETS);
  readonly uploadSeconds = this.histogram('s3nbd_upload_duration_seconds', 'Time to upload one dirty extent (its PUT, retries excluded)', ['volume'], S3_BUCKETS);
  readonly uploadedBytes = this.counter('s3nbd_uploaded_bytes_total', 'Bytes of extents uploaded (after compression and encryption)', ['volume']);
  readonly fetchSeconds = this.histogram('s3nbd_fetch_duration_seconds', 'Time to fetch one extent from the store on a read miss (GET and decode)', ['volume'], S3_BUCKETS);
  readonly fetchedBytes = this.counter('s3nbd_fetched_bytes_total', 'Bytes of extent objects fetched from the store', ['volume']);
  readonly cacheLookups = this.counter('s3nbd_cache_lookups_total', 'Extent reads by where they were found: memory, disk (the cache directory) or miss (fetched from the store)', ['volume', 'where']);

  private readonly gauges = {
    connections: this.gauge('s3nbd_connections', 'NBD connections open', ['volume']),
    size: this.gauge('s3nbd_volume_size_bytes', 'The volume\'s size', ['volume']),
    storedExtents: this.gauge('s3nbd_stored_extents', 'Extents with an object in the store', ['volume']),
    dirtyBytes: this.gauge('s3nbd_dirty_bytes', 'Data written but not yet uploaded (in the journal and cache directory)', ['volume']),
    dirtyExtents: this.gauge('s3nbd_dirty_extents', 'Extents written but not yet uploaded', ['volume']),
    oldestDirty: this.gauge('s3nbd_oldest_dirty_seconds', 'Age of the oldest data not yet uploaded (0 when none)', ['volume']),
    uploadsInFlight: this.gauge('s3nbd_uploads_in_flight', 'Extent uploads under way', ['volume']),
    uploadFailures: this.gauge('s3nbd_upload_failures', 'Uploads that failed since start (each retried until it succeeds)', ['volume']),
    journalBytes: this.gauge('s3nbd_journal_bytes', 'Size of the journal on local disk', ['volume']),
    cachedExtents: this.gauge('s3nbd_cache_extents', 'Extents held in the cache directory (dirty and clean)', ['volume']),
    cacheSlots: this.gauge('s3nbd_cache_slots', 'Extents the cache directory has room for (--cache-size)', ['volume']),
    lease: this.gauge('s3nbd_lease_held', 'The writer lease: 1 held, 0 lost to another gateway (absent without a lease: read-only, memory store)', ['volume']),
    ready: this.gauge('s3nbd_volume_ready', 'Readiness as /readyz reports it: 1 ready, 0 not', ['volume']),
    skipped: this.gauge('s3nbd_volumes_skipped', 'Volumes the gateway could not open and skipped', []),
  };

  constructor(options: MetricsOptions) {
    this.gateway = options.gateway;
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** The telemetry of the volume served as `name` (the same object for the same name). */
  forVolume(name: string): VolumeMetrics {
    let volume = this.volumes.get(name);
    if (!volume) {
      volume = new VolumeMetrics(this, name);
      this.volumes.set(name, volume);
    }
    return volume;
  }

  /** A volume was deleted or is served no more: its series go. */
  async removeVolume(name: string): Promise<void> {
    this.volumes.delete(name);
    for (const metric of this.registry.getMetricsAsArray() as unknown as Array<Gauge<string>>) {
      const seen = new Set<string>();
      for (const { labels } of (await metric.get()).values) {
        if (labels.volume !== name) continue;
        const { le: _bucket, ...rest } = labels;
        const key = JSON.stringify(rest);
        if (seen.has(key)) continue;
        seen.add(key);
        metric.remove(rest as Record<string, string>);
      }
    }
  }

  private setGauges(status: VolumeStatus, ready: boolean): void {
    const g = this.gauges;
    const volume = { volume: status.name };
    g.connections.set(volume, status.connections);
    g.size.set(volume, status.size);
    g.storedExtents.set(volume, status.storedExtents);
    if (status.lease !== 'none') g.lease.set(volume, status.lease === 'held' ? 1 : 0);
    g.ready.set(volume, ready ? 1 : 0);
    const c = status.cache;
    if (!c) return;
    g.dirtyBytes.set(volume, c.dirtyBytes);
    g.dirtyExtents.set(volume, c.dirtyExtents);
    g.oldestDirty.set(volume, c.oldestDirtySeconds);
    g.uploadsInFlight.set(volume, c.uploadsInFlight);
    g.uploadFailures.set(volume, c.uploadFailures);
    g.journalBytes.set(volume, c.journalBytes);
    g.cachedExtents.set(volume, c.cachedExtents);
    g.cacheSlots.set(volume, c.cacheSlots);
  }

  /** The text Prometheus scrapes: the gauges read from every volume's status now, then everything. */
  async render(): Promise<string> {
    const volumes = this.gateway.volumes();
    const read = await Promise.all(volumes.map(async (v) => {
      try {
        const [status, readiness] = await Promise.all([v.status(), v.readiness()]);
        return { status, ready: readiness.ready };
      } catch {
        return undefined; // still opening: no gauges yet
      }
    }));
    // Reset first, so a volume served no more leaves no stale gauge behind.
    for (const gauge of Object.values(this.gauges)) gauge.reset();
    for (const r of read) if (r) this.setGauges(r.status, r.ready);
    this.gauges.skipped.set(this.gateway.skipped().length);
    return await this.registry.metrics();
  }
}
