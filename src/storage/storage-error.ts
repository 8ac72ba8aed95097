// The one error every storage layer throws, from the object stores up to the cache: it carries
// the POSIX errno name ('EIO', 'EPERM', 'ENOSPC', ...) the NBD client will see, and whether
// trying again could help. Each backend translates its own failures into it (the S3 store in
// s3-errors.ts, the directory store in file-object-store.ts), so nothing above a backend
// needs to know how that backend fails.

export interface StorageErrorOptions extends ErrorOptions {
  /** See StorageError.permanent. Default false. */
  readonly permanent?: boolean;
}

/** The error layers throw: carries the POSIX errno name the client will see. */
export class StorageError extends Error {
  override readonly name = 'StorageError';
  readonly errno: string;
  /**
   * Trying the same call again cannot succeed until someone changes something: credentials
   * or permissions (403 AccessDenied, a directory we may not write), a missing bucket. The
   * write-back flusher then stops retrying at full speed and says what is wrong (flusher.ts).
   */
  readonly permanent: boolean;
  constructor(errno: string, message: string, options?: StorageErrorOptions) {
    super(message, options);
    this.errno = errno;
    this.permanent = options?.permanent ?? false;
  }
}
