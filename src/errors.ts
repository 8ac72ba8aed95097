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
  noVolumeReadOnly: (store: string) => new UserError('S3NBD_NO_VOLUME',
    `there is no volume in ${store}, and --read-only never creates one (it writes nothing to the store)`,
    'create it first (s3nbd create --size 10G, or serve once without --read-only), or point --store at an existing volume'),
  volumeExists: (store: string) => new UserError('S3NBD_VOLUME_EXISTS',
    `a volume already exists in ${store}`, 'use "s3nbd serve" to serve it, or choose another --store'),
  volumeConflict: (store: string, field: string, existing: number, requested: number) => new UserError('S3NBD_VOLUME_CONFLICT',
    `the volume in ${store} has ${field} ${existing}, but ${requested} was requested`,
    `omit --${field === 'size' ? 'size' : 'extent-size'} to serve the existing volume as it is`),
  badVolume: (store: string, reason: string) => new UserError('S3NBD_BAD_VOLUME',
    `the volume metadata in ${store} is unusable: ${reason}`, 'check that --store points at an s3nbd volume written by a compatible version'),
  badLogLevel: (text: string) => new UserError('S3NBD_BAD_LOG_LEVEL',
    `--log-level "${text}" is not a log level`, 'use one of fatal, error, warn, info, debug, trace, silent'),
  listenFailed: (where: string, reason: string, fix = 'stop the other server using it, or pick another --listen address or --socket path') => new UserError('S3NBD_LISTEN_FAILED',
    `cannot listen on ${where}: ${reason}`, fix),
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
  // ---- TLS on the NBD connection (src/protocol/tls.ts) ----
  tlsNoCredentials: (mode: string) => new UserError('S3NBD_TLS_NO_CREDENTIALS',
    `--tls ${mode} needs credentials, and neither --tls-certificates nor --tls-psk was given`,
    'pass --tls-certificates DIR (server-cert.pem and server-key.pem in it) or --tls-psk FILE (written by psktool)'),
  tlsNotEnabled: (option: string) => new UserError('S3NBD_TLS_NOT_ENABLED',
    `${option} was given without --tls, which is off by default: the gateway would serve without TLS`,
    'add --tls require (only TLS clients) or --tls on (TLS optional), or --tls off to serve without TLS on purpose'),
  tlsFileUnreadable: (option: string, path: string, reason: string, containerUid: boolean) => new UserError('S3NBD_TLS_FILE',
    `${option}: ${path} cannot be read: ${reason}`,
    containerUid ? 'the image runs as uid 1000: make the files readable by it on the host (chown 1000 the key files), then mount the directory read-only'
      : `check the path, and that this user may read the file (${option === '--tls-psk' ? 'psktool -u NAME -p FILE writes one' : 'server-cert.pem, server-key.pem, and ca-cert.pem for --tls-verify-peer'})`),
  tlsBadCertificate: (dir: string, reason: string) => new UserError('S3NBD_TLS_BAD_CERTIFICATE',
    `--tls-certificates ${dir}: ${reason}`,
    'put the PEM server certificate in server-cert.pem and its private key in server-key.pem (certtool or openssl write them; docs/tls.md shows how)'),
  tlsBadPsk: (path: string, reason: string) => new UserError('S3NBD_TLS_BAD_PSK',
    `--tls-psk ${path}: ${reason}`,
    'write the file with psktool -u NAME -p FILE, or by hand as lines of username:hexkey'),
  // ---- First-run errors: sizes, the endpoint, S3's answers, local paths ----
  sizeTooLarge: (option: string, text: string, max: string) => new UserError(option === '--size' ? 'S3NBD_BAD_DEVICE_SIZE' : 'S3NBD_BAD_SIZE',
    `${option} "${text}" is larger than the ${max} maximum`, `choose a size up to ${max}, e.g. 10G`),
  cacheDirNotNew: (dir: string, theirs: string, store: string) => new UserError('S3NBD_CACHE_DIR_IN_USE',
    `the cache directory ${dir} belongs to volume ${theirs}, but ${store} holds no volume (a new one would be created)`,
    `point --store at the store of volume ${theirs}, or give the new volume its own --cache-dir`),
  badEndpoint: (source: string, text: string, bare: string) => new UserError('S3NBD_BAD_ENDPOINT',
    `${source} "${text}" is not an http:// or https:// URL`,
    `write the scheme: http://${bare} for plain HTTP (MinIO's default), or https://${bare} for TLS`),
  badCredentials: (store: string, reason: string, source: string) => new UserError('S3NBD_BAD_CREDENTIALS',
    `${store} refused the credentials: ${reason}`,
    `check the access key and secret in ${source} (they must be a pair this S3 server knows; the secret is never printed)`),
  noCredentials: (store: string, tried: string) => new UserError('S3NBD_NO_CREDENTIALS',
    `no S3 credentials were found for ${store}; tried ${tried}`,
    'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in ~/.aws/credentials, or run where a container or instance role is available'),
  accessDenied: (store: string, what: string) => new UserError('S3NBD_ACCESS_DENIED',
    `${store} denied ${what}: the credentials are valid, but not allowed to use this bucket or prefix`,
    'grant them s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket and prefix, or use other credentials'),
  noBucket: (store: string, bucket: string) => new UserError('S3NBD_NO_BUCKET',
    `the bucket "${bucket}" does not exist in ${store}`,
    `create it (e.g. aws s3 mb s3://${bucket}, or mc mb ALIAS/${bucket}), or fix the bucket name in --store or the --s3-endpoint`),
  s3Unreachable: (store: string, reason: string) => new UserError('S3NBD_S3_UNREACHABLE',
    `cannot reach ${store}: ${reason}`,
    'check that the S3 server runs and that --s3-endpoint names its host and port (and that no firewall or proxy is in the way)'),
  s3NotTls: (store: string) => new UserError('S3NBD_S3_NOT_TLS',
    `${store} does not speak TLS: the server answered https:// with plain HTTP`,
    'use http:// in --s3-endpoint for a plain-HTTP server (MinIO without certificates), or the server\'s TLS port'),
  s3BadCertificate: (store: string, reason: string) => new UserError('S3NBD_S3_BAD_CERTIFICATE',
    `the TLS certificate of ${store} was not accepted: ${reason}`,
    'for a private CA, set NODE_EXTRA_CA_CERTS=/path/to/ca.pem; otherwise fix the certificate or the host name in --s3-endpoint'),
  notS3: (store: string, answer: string) => new UserError('S3NBD_NOT_S3',
    `${store} is not an S3 API: it answered ${answer}`,
    'point --s3-endpoint at the S3 API itself (MinIO: port 9000, not the console on 9001; Ceph: the radosgw port)'),
  readOnlyFs: (option: string, path: string) => new UserError('S3NBD_READ_ONLY_FS',
    `${option} ${path} is on a read-only file system`,
    `mount it read-write (in Docker: drop ":ro" from the bind mount), or choose another ${option}`),
  permissionDenied: (option: string, path: string, detail: string, containerUid: boolean) => new UserError('S3NBD_PERMISSION_DENIED',
    `${option} ${path}: permission denied (${detail})`,
    containerUid ? `the image runs as uid 1000: chown 1000:1000 the bind-mounted directory on the host, or use a named volume${option === '--cache-dir' ? ' (-v s3nbd-cache:/var/cache/s3nbd)' : ''}`
      : `let this user write there (chown or chmod the directory), or choose another ${option}`),
  noSuchDirectory: (option: string, path: string, dir: string) => new UserError('S3NBD_NO_SUCH_DIRECTORY',
    `${option} ${path}: the directory ${dir} does not exist`, `create it (mkdir -p ${dir}), or choose another ${option}`),
  notADirectory: (option: string, path: string, file: string) => new UserError('S3NBD_NOT_A_DIRECTORY',
    `${option} ${path}: ${file} is a file, not a directory`, `choose another ${option}, or move the file away`),
  localFsError: (option: string, path: string, reason: string) => new UserError('S3NBD_LOCAL_FS',
    `${option} ${path} cannot be used: ${reason}`, `fix the file system under ${path} (free space, mount options, health), or choose another ${option}`),
} as const;

/**
 * Codes of conditions a running gateway reports in its log rather than on the command line
 * (it keeps serving). docs/errors.md lists them with the others.
 */
export const LogCodes = {
  /** The store refuses uploads in a way retrying cannot fix (flusher.ts). */
  uploadsRefused: 'S3NBD_UPLOADS_REFUSED',
} as const;
