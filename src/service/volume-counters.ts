// What a volume's status (VolumeStatus) counts since start, kept from the telemetry events: reads
// by where they were served from, S3 requests, failures and retries, uploaded bytes, and when
// the store last answered or failed (readiness.ts).

import type { VolumeTelemetry } from '../telemetry.ts';

export class VolumeCounters implements VolumeTelemetry {
  readonly reads = { memory: 0, disk: 0, miss: 0 };
  readonly s3 = { requests: 0, errors: 0, retries: 0 };
  uploadedBytes = 0;
  /** performance.now() of the last store request that succeeded, and of the last that failed. */
  lastSuccessAt = -Infinity;
  lastFailureAt = -Infinity;
  /** The last failure's status (an HTTP status or an error code). */
  lastFailure = '';
  private readonly now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.now = now;
  }

  nbdRequest(): void {
    // Counted by the metrics alone.
  }

  s3Request(_operation: string, status: string, _seconds: number, retry: boolean): void {
    this.s3.requests++;
    if (retry) this.s3.retries++;
    if (!/^2\d\d$/.test(status)) this.s3.errors++;
    // Any answer below 500 (a 404 "no such key", a 412 lost race) shows the store reachable;
    // a 5xx or a transport error (ECONNREFUSED, a timeout) does not.
    if (/^[1-4]\d\d$/.test(status)) {
      this.lastSuccessAt = this.now();
    } else {
      this.lastFailureAt = this.now();
      this.lastFailure = status;
    }
  }

  upload(_seconds: number, bytes: number): void {
    this.uploadedBytes += bytes;
  }

  fetch(): void {
    // Counted by the metrics alone.
  }

  cacheLookup(where: 'memory' | 'disk' | 'miss'): void {
    this.reads[where]++;
  }
}

/** Several telemetries as one: every event goes to each. */
export function teeTelemetry(...parts: readonly VolumeTelemetry[]): VolumeTelemetry {
  return {
    nbdRequest: (...a) => { for (const p of parts) p.nbdRequest(...a); },
    s3Request: (...a) => { for (const p of parts) p.s3Request(...a); },
    upload: (...a) => { for (const p of parts) p.upload(...a); },
    fetch: (...a) => { for (const p of parts) p.fetch(...a); },
    cacheLookup: (...a) => { for (const p of parts) p.cacheLookup(...a); },
  };
}
