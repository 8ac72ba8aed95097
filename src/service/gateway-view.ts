// What the admin endpoint (service/admin-server.ts) sees of a running gateway: its volumes,
// each with a live status and a readiness, and (when it serves a store prefix) the operations
// that create, grow and delete volumes at runtime. `s3nbd serve` implements it for one volume
// and for many (--volumes); the admin endpoint knows nothing else of the gateway.

/** One served volume, live: what `s3nbd info` shows, plus what the gateway is doing with it. */
export interface VolumeStatus {
  /** Export name. */
  readonly name: string;
  readonly volumeId: string;
  /** Where its objects live (the store's description; never credentials). */
  readonly store: string;
  readonly size: number;
  readonly extentSize: number;
  readonly readOnly: boolean;
  /** held, lost (fenced off), or none (read-only, memory store). */
  readonly lease: 'held' | 'lost' | 'none';
  readonly connections: number;
  readonly storedExtents: number;
  /** Absent when the volume has no write-back cache. */
  readonly cache?: {
    readonly dirtyBytes: number;
    readonly dirtyExtents: number;
    /** Age in seconds of the oldest dirty data; 0 when nothing is dirty. */
    readonly oldestDirtySeconds: number;
    readonly uploadsInFlight: number;
    readonly uploadedExtents: number;
    readonly uploadedBytes: number;
    readonly uploadFailures: number;
    readonly journalBytes: number;
    readonly cachedExtents: number;
    readonly cacheSlots: number;
  };
  /** Reads by where they were served from, since start. */
  readonly reads: { readonly memory: number; readonly disk: number; readonly miss: number };
  /** S3 requests since start: total, failed (any non-2xx or transport error), retries. */
  readonly s3: { readonly requests: number; readonly errors: number; readonly retries: number };
  /** The volume's snapshots, newest last (name, when taken). */
  readonly snapshots: ReadonlyArray<{ readonly name: string; readonly createdAt: string }>;
}

export interface Readiness {
  readonly ready: boolean;
  /** Why not, in one line (e.g. "S3 unreachable: connect ECONNREFUSED"). */
  readonly reason?: string;
}

export interface VolumeView {
  readonly name: string;
  status(): Promise<VolumeStatus>;
  /** Open, lease held (a writer), and the store answered recently. */
  readiness(): Promise<Readiness>;
}

/** A volume that could not be opened (unreadable metadata, lease held elsewhere): reported, not served. */
export interface SkippedVolume {
  readonly name: string;
  /** The one-line error, with its S3NBD_ code. */
  readonly error: string;
}

export interface VolumeAdmin {
  create(name: string, size: number, extentSize?: number): Promise<VolumeStatus>;
  /** Grow only. */
  resize(name: string, size: number): Promise<VolumeStatus>;
  /**
   * Stops serving the volume and deletes it (service/volume-ops.ts deleteVolume). Refused while
   * clients are connected (S3NBD_VOLUME_BUSY) unless `force` (they are dropped), and for a volume
   * with snapshots (S3NBD_VOLUME_HAS_SNAPSHOTS) unless `withSnapshots`.
   */
  delete(name: string, options?: { readonly force?: boolean; readonly withSnapshots?: boolean }): Promise<void>;
}

export interface GatewayView {
  volumes(): readonly VolumeView[];
  skipped(): readonly SkippedVolume[];
  /** Present when the gateway serves a store prefix (--volumes). */
  readonly admin?: VolumeAdmin;
}
