// The one error every storage layer throws, from the object stores up to the cache: it carries
// the POSIX errno name ('EIO', 'EPERM', 'ENOSPC', ...) the NBD client will see. Each layer
// translates its own failures into it (the S3 store in s3-errors.ts, the directory store in
// file-object-store.ts), so nothing above a backend needs to know how that backend fails.

/** The error layers throw: carries the POSIX errno name the client will see. */
export class StorageError extends Error {
  override readonly name = 'StorageError';
  readonly errno: string;
  constructor(errno: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.errno = errno;
  }
}
