// What the layers report as they work, for the admin endpoint's metrics (service/metrics.ts
// implements it with prom-client, one per served volume). Every layer takes one and defaults to
// `noTelemetry`, so a layer's unit tests and the CLI's one-shot commands need none. Counts that a
// layer already keeps (dirty bytes, journal size, ...) are not reported here: the metrics read
// them from the volume's status when scraped.

/** One served volume's events. Calls must be cheap and must never throw. */
export interface VolumeTelemetry {
  /** An NBD request answered: its command (read, write, flush, trim, ...), result (ok or the errno's name), time and payload bytes. */
  nbdRequest(command: string, result: string, seconds: number, bytes: number): void;
  /** One S3 request made: operation (GetObject, PutObject, ...), status (HTTP status or the error's code), time; retry: it was a retry. */
  s3Request(operation: string, status: string, seconds: number, retry: boolean): void;
  /** One extent uploaded by the flusher: time from the start of its PUT to the end, and bytes sent. */
  upload(seconds: number, bytes: number): void;
  /** One extent fetched from the store on a read miss: time and bytes received. */
  fetch(seconds: number, bytes: number): void;
  /** A read of an extent was served from memory, from the disk cache, or had to be fetched (miss). */
  cacheLookup(where: 'memory' | 'disk' | 'miss'): void;
}

export const noTelemetry: VolumeTelemetry = {
  nbdRequest: () => undefined,
  s3Request: () => undefined,
  upload: () => undefined,
  fetch: () => undefined,
  cacheLookup: () => undefined,
};
