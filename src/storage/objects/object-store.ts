// The bottom of the storage stack: a flat namespace of keys to whole objects, which is all
// that S3 offers. Implementations: S3 (s3/), a local directory (the embedded default) and
// memory (tests and benchmarks). Anything above this interface is the same whichever is used.
//
// Every method rejects with a StorageError (storage-error.ts): each store translates its own
// failures, with the errno the NBD client will see and whether retrying can help, so the
// layers above pass them on unchanged. (UserErrors that explain a refused start, such as
// S3NBD_NO_CONDITIONAL_WRITES, are the one exception.)

/** The largest object the gateway stores (an extent of the largest size): a GET's default limit. */
export const MAX_OBJECT_BYTES = 32 * 1024 * 1024;

/**
 * What put() stores: one buffer, or the object's bytes in parts, in order (an extent's header
 * and its payload), which a store sends or writes one after the other instead of joining them:
 * joining an extent's header to its payload was a copy of every extent uploaded.
 */
export type ObjectBody = Buffer | readonly Buffer[];

/** The body's parts in order. */
export function bodyParts(body: ObjectBody): readonly Buffer[] {
  return Buffer.isBuffer(body) ? [body] : body;
}

/** The body as one buffer: itself, or its parts joined (a copy). */
export function joinedBody(body: ObjectBody): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.concat(body);
}

export interface TaggedObject {
  readonly data: Buffer;
  readonly tag: string;
}

/** One version of a key, in a store that keeps them (S3 with versioning or Object Lock). */
export interface ObjectVersion {
  readonly key: string;
  readonly versionId: string;
  /** A delete marker: the key reads as absent while this is its current version. */
  readonly deleteMarker: boolean;
  /** The key's current version. */
  readonly latest: boolean;
  /** When it was written, as the server keeps it (AWS: to the second). */
  readonly lastModified: Date;
}

export interface VersionRef {
  readonly key: string;
  readonly versionId: string;
}

export interface ObjectStore {
  /** Where the objects live, safe to log: never contains credentials. */
  readonly description: string;

  /**
   * True when get() returns a new buffer every time, which the caller may keep and change
   * (a server's response, a file read). The extent layer then keeps the extent in the body
   * it came in instead of copying it out. Absent (the memory store, wrappers that do not
   * know): the body may be shared, and is copied.
   */
  readonly freshBodies?: boolean;

  /**
   * The object's bytes, or undefined when there is no such key. The buffer may be the one the
   * store holds (the memory store shares it): treat it like a buffer you have put (below).
   * From a server (S3), an object longer than `maxBytes` (default MAX_OBJECT_BYTES) is an
   * error (EIO, after retries), found out before its bytes are read, so that a broken or
   * hostile server cannot make us allocate what it likes. Local stores may ignore the limit:
   * their files are ours (the extent layer checks every extent's length anyway).
   */
  get(key: string, maxBytes?: number): Promise<Buffer | undefined>;

  /**
   * Creates or replaces the object atomically: readers see the old or the new bytes, never a
   * mix. The parts of `data` must not change until the put settles. The store may keep a
   * single buffer by reference (the memory store does; parts it joins). A caller that
   * modifies such a buffer afterwards must put() it under the same key before it lets anyone
   * else read the key, so the change looks like a put in flight; DirectExtentStore does
   * exactly this, under the extent's lock.
   */
  put(key: string, data: ObjectBody): Promise<void>;

  /** Like get(), with the object's version tag, which changes whenever the object is replaced. */
  getTagged(key: string, maxBytes?: number): Promise<TaggedObject | undefined>;

  /**
   * A compare-and-swap: writes the object only if its current tag is `expectedTag`, or, with
   * `expectedTag` undefined, only if the key is absent. Resolves the new tag, or undefined
   * when the condition failed (and nothing was written). Volume creation and the writer
   * lease rely on it.
   */
  putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined>;

  /**
   * Throws UserError S3NBD_NO_CONDITIONAL_WRITES if the store accepts a putIf() whose
   * condition fails. Only stores whose conditions someone else evaluates (an S3 server) have
   * it. `key` exists and holds `data`; the check writes nothing else.
   */
  checkConditionalWrites?(key: string, data: Buffer): Promise<void>;

  /** Deletes the keys; keys that do not exist are not an error. */
  deleteMany(keys: readonly string[]): Promise<void>;

  /** Every key that starts with `prefix`, in no particular order. */
  list(prefix: string): AsyncIterable<string>;

  /**
   * The names one level below `prefix` ('' or ending in '/') that hold keys: for the key
   * `prefix` + "a/b", "a". One LIST request per 1000 names on S3 (a delimiter listing: the
   * keys below each name are not listed), one readdir in a directory. Stores without it are
   * listed in full (volume-ops.ts, for `volume list`). A directory store may also give names
   * of empty directories.
   */
  listPrefixes?(prefix: string): AsyncIterable<string>;

  /**
   * Every version and delete marker of the keys that start with `prefix`, key by key in the
   * server's order (all of one key's together, in no particular order among themselves); one
   * request per 1000 of them, and `onPage` called after each with the number listed so far.
   * Only stores that keep versions have it (S3); in a bucket without versioning each key has
   * one version, "null".
   */
  listVersions?(prefix: string, onPage?: (listed: number) => void): AsyncIterable<ObjectVersion>;

  /**
   * Deletes these versions for good, in requests of up to 1000; a version that does not exist
   * is not an error, one that the server keeps (Object Lock) is. Deleting a delete marker makes
   * the version below it current again: nothing is copied.
   */
  deleteVersions?(versions: readonly VersionRef[]): Promise<void>;

  /** The bytes of one version of the key (not a delete marker), or undefined when there is none; like get(). */
  getVersion?(key: string, versionId: string, maxBytes?: number): Promise<Buffer | undefined>;

  /** Resolves once every put and delete that resolved before the call survives a power loss. */
  flush(): Promise<void>;

  close(): Promise<void>;
}
