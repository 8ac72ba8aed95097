// Every error a user can meet at the command line, in one registry (as fastify does): a stable
// code, a message naming the problem, and the fix. docs/errors.md lists the same codes, and a
// test fails when the two disagree.

export class UserError extends Error {
  override readonly name = 'UserError';
  readonly code: string;
  readonly fix: string;
  constructor(code: string, message: string, fix: string) {
    super(message);
    this.code = code;
    this.fix = fix;
  }
}

export const Errors = {
  badSize: (option: string, text: string) => new UserError('S3NBD_BAD_SIZE',
    `${option}: "${text}" is not a size`, 'give a whole number of bytes with an optional K, M, G or T suffix (powers of 1024), e.g. 10G'),
  badDeviceSize: (size: number) => new UserError('S3NBD_BAD_DEVICE_SIZE',
    `--size ${size} is not a positive multiple of 512 bytes, or larger than 1 PiB`, 'choose a size such as 10G'),
  badExtentSize: (size: number) => new UserError('S3NBD_BAD_EXTENT_SIZE',
    `--extent-size ${size} is not a power of two between 4K and 32M`, 'use 1M (the default), or e.g. 256K, 4M'),
  badListen: (text: string) => new UserError('S3NBD_BAD_LISTEN',
    `--listen "${text}" is not HOST:PORT`, 'use e.g. 127.0.0.1:10809, 0.0.0.0:10809 or [::1]:10809'),
  badStore: (text: string) => new UserError('S3NBD_BAD_STORE',
    `--store "${text}" is not a store this build understands`, 'use s3://BUCKET/PREFIX, a directory path, file:///absolute/path, or memory:'),
  badS3Url: (text: string, reason: string) => new UserError('S3NBD_BAD_S3_URL',
    `--store "${text}" is not a valid S3 URL: ${reason}`,
    'use s3://BUCKET or s3://BUCKET/PREFIX, where BUCKET is 3-63 lowercase letters, digits, dots and hyphens'),
  noVolume: (store: string) => new UserError('S3NBD_NO_VOLUME',
    `there is no volume in ${store}`, 'pass --size (e.g. --size 10G) to create one, or point --store at an existing volume'),
  volumeExists: (store: string) => new UserError('S3NBD_VOLUME_EXISTS',
    `a volume already exists in ${store}`, 'use "s3nbd serve" to serve it, or choose another --store'),
  volumeConflict: (store: string, field: string, existing: number, requested: number) => new UserError('S3NBD_VOLUME_CONFLICT',
    `the volume in ${store} has ${field} ${existing}, but ${requested} was requested`,
    `omit --${field === 'size' ? 'size' : 'extent-size'} to serve the existing volume as it is`),
  badVolume: (store: string, reason: string) => new UserError('S3NBD_BAD_VOLUME',
    `the volume metadata in ${store} is unusable: ${reason}`, 'check that --store points at an s3nbd volume written by a compatible version'),
  badLogLevel: (text: string) => new UserError('S3NBD_BAD_LOG_LEVEL',
    `--log-level "${text}" is not a log level`, 'use one of fatal, error, warn, info, debug, trace, silent'),
  listenFailed: (where: string, reason: string) => new UserError('S3NBD_LISTEN_FAILED',
    `cannot listen on ${where}: ${reason}`, 'stop the other server using it, or pick another --listen address or --socket path'),
  badExportName: (name: string) => new UserError('S3NBD_BAD_EXPORT_NAME',
    `--export-name "${name}" is longer than 4096 bytes`, 'use a short name'),
  volumeInUse: (store: string, holder: string, until: string) => new UserError('S3NBD_VOLUME_IN_USE',
    `the volume in ${store} is in use by gateway ${holder}, whose lease runs until ${until}`,
    'stop that gateway (its lease is released on a clean stop, or expires 30 s after a crash), or pass --take-over if it is gone for good'),
  cacheDirMismatch: (dir: string, theirs: string, ours: string) => new UserError('S3NBD_CACHE_DIR_IN_USE',
    `the cache directory ${dir} belongs to volume ${theirs}, not to volume ${ours}`,
    'give each volume its own --cache-dir (a gateway never shares one with another volume)'),
  badCacheSize: (cacheSize: number, maxDirty: number, extentSize: number) => new UserError('S3NBD_BAD_CACHE_SIZE',
    `--cache-size ${cacheSize} must be at least --max-dirty ${maxDirty} plus two extents (${2 * extentSize} bytes)`,
    'raise --cache-size or lower --max-dirty'),
  badChoice: (option: string, text: string, choices: readonly string[]) => new UserError('S3NBD_BAD_CHOICE',
    `${option} "${text}" is not one of ${choices.join(', ')}`, `use ${option} ${choices[0]}`),
  badNumber: (option: string, text: string, min: number, max: number) => new UserError('S3NBD_BAD_NUMBER',
    `${option} "${text}" is not a whole number from ${min} to ${max}`, `give ${option} a whole number in that range`),
  cacheTooSmallToRecover: (dir: string, cacheBytes: number) => new UserError('S3NBD_CACHE_TOO_SMALL',
    `the journal in ${dir} holds more unuploaded extents than --cache-size ${cacheBytes} has room for`,
    'start again with a larger --cache-size (at least what it was when the data was written)'),
  noRegion: (store: string) => new UserError('S3NBD_NO_REGION',
    `no AWS region is configured for ${store}`, 'pass --s3-region (e.g. us-east-1) or set AWS_REGION'),
  noConditionalWrites: (store: string, reason: string) => new UserError('S3NBD_NO_CONDITIONAL_WRITES',
    `the S3 server of ${store} ${reason}, so nothing would keep a second gateway from writing the volume at the same time`,
    'use an S3 service that supports conditional writes (If-None-Match: * and If-Match on PutObject: AWS S3, MinIO, Ceph RGW 16 or later; see docs/s3.md), or a directory --store'),
  cacheDirLocked: (dir: string, holder: string) => new UserError('S3NBD_CACHE_DIR_LOCKED',
    `the cache directory ${dir} is in use by another running gateway${holder ? ` (${holder})` : ''}`,
    'stop that gateway first (a gateway restarted on its cache directory resumes where it stopped), or give this one its own --cache-dir'),
  cacheDirLockFailed: (dir: string, reason: string) => new UserError('S3NBD_CACHE_DIR_NO_LOCK',
    `the cache directory ${dir} cannot be locked (${reason}), so a second gateway on it could not be refused`,
    'put --cache-dir on a local file system that supports fcntl locks (ext4, xfs, btrfs, tmpfs; NFS with locking)'),
} as const;
