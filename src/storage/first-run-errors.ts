// What goes wrong on a first run, turned into errors users can act on (UserError, src/errors.ts).
//
// The storage layers throw what they meet: the SDK's exceptions, network and TLS errors,
// errno errors of the file system, wrapped in StorageError. That text ("ENOENT: no such file or
// directory, mkdir '/c'", "write EPROTO ...:wrong version number:...") names neither the option
// nor the fix, and sometimes not even the problem: a recursive mkdir on a read-only file system
// reports ENOENT, and libuv reports a Unix socket in a missing directory as EACCES. So the
// translation looks again: at the nearest directory that exists, at its owner and mode, at
// which credential sources are set. Nothing here ever prints a secret: only the names of the
// variables and files that were tried.

import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { Errors, UserError } from '../errors.ts';

// ---- S3 --------------------------------------------------------------------------------

export interface S3Place {
  /** The store as the user sees it, e.g. "s3://b/p at http://127.0.0.1:9000". */
  readonly description: string;
  readonly bucket: string;
  readonly endpoint: string | undefined;
}

const BAD_CREDENTIALS: Record<string, string> = {
  InvalidAccessKeyId: 'the access key ID is not one it knows (InvalidAccessKeyId)',
  SignatureDoesNotMatch: 'the secret key does not belong to the access key ID (SignatureDoesNotMatch)',
  InvalidToken: 'the session token is not valid (InvalidToken)',
  ExpiredToken: 'the session token has expired (ExpiredToken)',
  TokenRefreshRequired: 'the session token has expired (TokenRefreshRequired)',
};
const NOT_TLS = /wrong version number|packet length too long|unknown protocol|http request/i;
const CERTIFICATE_CODES: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'it is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'it is signed by a CA this machine does not trust',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'it is signed by a CA this machine does not trust',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its signature cannot be verified (an unknown CA, or a missing intermediate)',
  CERT_HAS_EXPIRED: 'it has expired',
  CERT_NOT_YET_VALID: 'it is not valid yet (check the clock)',
  ERR_TLS_CERT_ALTNAME_INVALID: 'it is for another host name',
};
const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: 'nothing listens there (connection refused)',
  ENOTFOUND: 'the host name does not resolve (ENOTFOUND)',
  EAI_AGAIN: 'the host name cannot be resolved right now (EAI_AGAIN)',
  EHOSTUNREACH: 'there is no route to the host (EHOSTUNREACH)',
  ENETUNREACH: 'the network is unreachable (ENETUNREACH)',
  ETIMEDOUT: 'the connection timed out (ETIMEDOUT)',
  ECONNRESET: 'the server closed every connection before answering (ECONNRESET)',
  EPIPE: 'the server closed every connection before answering (EPIPE)',
};
/** Error codes that mean "an HTTP answer without an S3 error document". */
const NOT_S3_CODES = /^(NotFound|UnknownError|Unknown|HTTP\d{3})$/;

interface Cause {
  code?: unknown;
  Code?: unknown;
  name?: unknown;
  message?: unknown;
  cause?: unknown;
  errors?: unknown;
  $metadata?: { httpStatusCode?: number };
}

/** The innermost error: StorageError wraps the SDK's or the network's. */
function rootCause(err: unknown): Cause | undefined {
  let e = err as Cause | undefined;
  for (let depth = 0; depth < 5 && e?.cause !== undefined && (e as { name?: unknown }).name === 'StorageError'; depth++) e = e.cause as Cause;
  return e;
}

function codeOf(e: Cause | undefined): string | undefined {
  const code = e?.Code ?? e?.code;
  if (typeof code === 'string') return code;
  // Several addresses (localhost is ::1 and 127.0.0.1) fail as one AggregateError.
  const first = Array.isArray(e?.errors) ? (e.errors[0] as Cause | undefined) : undefined;
  return typeof first?.code === 'string' ? first.code : undefined;
}

/** A UserError for a failure met while first talking to S3, or undefined when it is none of those. */
export function explainS3Error(err: unknown, place: S3Place): UserError | undefined {
  if (err instanceof UserError) return err;
  const e = rootCause(err);
  if (e === undefined) return undefined;
  const code = codeOf(e);
  const name = typeof e.name === 'string' ? e.name : '';
  const message = typeof e.message === 'string' ? e.message : '';
  const status = e.$metadata?.httpStatusCode;
  if (code !== undefined && BAD_CREDENTIALS[code]) return Errors.badCredentials(place.description, BAD_CREDENTIALS[code], credentialSource());
  if (name === 'CredentialsProviderError' || /could not load credentials/i.test(message)) {
    return Errors.noCredentials(place.description, credentialSourcesTried());
  }
  if (code === 'NoSuchBucket') return Errors.noBucket(place.description, place.bucket);
  if (code === 'AccessDenied' || status === 403) return Errors.accessDenied(place.description, `access (${code ?? 'HTTP 403'})`);
  if (code !== undefined && CERTIFICATE_CODES[code]) return Errors.s3BadCertificate(place.description, `${CERTIFICATE_CODES[code]} (${code})`);
  if ((code === 'EPROTO' || code?.startsWith('ERR_SSL_')) && NOT_TLS.test(`${code} ${message}`)) return Errors.s3NotTls(place.description);
  if (code === 'ERR_HTTP_PARSE') return Errors.notS3(place.description, 'with something that is not HTTP');
  if (status !== undefined && (code === undefined || NOT_S3_CODES.test(code))) {
    return Errors.notS3(place.description, `HTTP ${status} without an S3 error document`);
  }
  if (code !== undefined && UNREACHABLE[code]) return Errors.s3Unreachable(place.description, UNREACHABLE[code]);
  if (name === 'TimeoutError' || /no answer within/.test(String((err as Error | undefined)?.message))) {
    return Errors.s3Unreachable(place.description, 'it did not answer in time');
  }
  return undefined;
}

/** Where the credentials that S3 refused came from, by name only. */
function credentialSource(): string {
  const env = process.env;
  if (env.AWS_ACCESS_KEY_ID) return 'AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
  if (env.AWS_PROFILE) return `the profile "${env.AWS_PROFILE}" (AWS_PROFILE) of ${sharedFiles()}`;
  return `${sharedFiles()}, or the role that supplied them`;
}

function sharedFiles(): string {
  return `${process.env.AWS_SHARED_CREDENTIALS_FILE ?? join(homedir(), '.aws/credentials')} and ${process.env.AWS_CONFIG_FILE ?? join(homedir(), '.aws/config')}`;
}

/** The AWS SDK's default chain, in its order, with what each source found. */
function credentialSourcesTried(): string {
  const env = process.env;
  const set = (name: string): string => `${name} ${env[name] ? 'set' : 'not set'}`;
  const profile = env.AWS_PROFILE ?? 'default';
  const container = env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI || env.AWS_CONTAINER_CREDENTIALS_FULL_URI ? 'set, but gave none' : 'not set';
  const instance = /^true$/i.test(env.AWS_EC2_METADATA_DISABLED ?? '') ? 'disabled by AWS_EC2_METADATA_DISABLED' : 'no answer';
  return [
    `the environment (${set('AWS_ACCESS_KEY_ID')}, ${set('AWS_SECRET_ACCESS_KEY')})`,
    `the profile "${profile}" in ${sharedFiles()}`,
    `web identity (${set('AWS_WEB_IDENTITY_TOKEN_FILE')})`,
    `the container role (AWS_CONTAINER_CREDENTIALS_*: ${container})`,
    `and the instance role (instance metadata: ${instance})`,
  ].join(', ');
}

// ---- Local paths -----------------------------------------------------------------------

export interface LocalPlace {
  /** The option that named the path: --cache-dir, --store, --socket. */
  readonly option: string;
  readonly path: string;
}

const ERRNO_WORDS: Record<string, string> = {
  ENOSPC: 'no space is left on the device (ENOSPC)',
  EDQUOT: 'the disk quota is exceeded (EDQUOT)',
  EIO: 'the disk or file system reports an I/O error (EIO)',
  ENAMETOOLONG: 'the path is too long (ENAMETOOLONG)',
  ELOOP: 'it loops through symbolic links (ELOOP)',
  EMFILE: 'too many files are open (EMFILE)',
  ENFILE: 'too many files are open (ENFILE)',
  EBUSY: 'it is busy (EBUSY)',
  ENOENT: 'a file vanished while it was being used (ENOENT)',
  EXDEV: 'it spans file systems (EXDEV)',
  EINVAL: 'the file system does not support what is needed (EINVAL)',
  ENOTSUP: 'the file system does not support what is needed (ENOTSUP)',
};
const FS_CODES = new Set(['EROFS', 'EACCES', 'EPERM', 'ENOTDIR', 'EEXIST', ...Object.keys(ERRNO_WORDS)]);

/**
 * A UserError for a file-system failure on one of `places`, or undefined when `err` is not a
 * file-system error on any of them. `fallback` is the path to assume when the error names none
 * (listen() errors carry an address, not a path).
 */
export async function explainLocalError(err: unknown, places: readonly LocalPlace[], fallback?: string): Promise<UserError | undefined> {
  if (err instanceof UserError) return err;
  // The directory store wraps the file system's error in a StorageError: look at the errno one.
  const e = rootCause(err) as NodeJS.ErrnoException | undefined;
  const code = e?.code;
  if (code === undefined || !FS_CODES.has(code)) return undefined;
  const path = resolve(e?.path ?? fallback ?? '');
  const place = placeOf(path, places);
  if (!place) return undefined;
  const shown = place.path;
  // What the failure really was: look at the deepest part of the path that exists.
  const existing = await nearestExisting(path);
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EROFS' || code === 'EPERM') {
    const writable = await access(existing, constants.W_OK).then(() => undefined, (why: NodeJS.ErrnoException) => why.code);
    if (code === 'EROFS' || writable === 'EROFS') return Errors.readOnlyFs(place.option, shown);
    if (place.option === '--socket' && existing !== dirname(path) && existing !== path) {
      return Errors.noSuchDirectory(place.option, shown, dirname(path));
    }
    if (code === 'EACCES' || code === 'EPERM' || writable === 'EACCES' || writable === 'EPERM') {
      const denied = writable !== undefined ? existing : path;
      return permissionDenied(place, denied);
    }
  }
  if (code === 'ENOTDIR' || code === 'EEXIST') {
    const file = await firstFileIn(path);
    if (file !== undefined) return Errors.notADirectory(place.option, shown, file);
  }
  return Errors.localFsError(place.option, shown, ERRNO_WORDS[code] ?? code);
}

function placeOf(path: string, places: readonly LocalPlace[]): LocalPlace | undefined {
  let best: LocalPlace | undefined;
  for (const place of places) {
    const root = resolve(place.path);
    const inside = path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
    if (inside && (!best || root.length > resolve(best.path).length)) best = place;
  }
  return best;
}

async function nearestExisting(path: string): Promise<string> {
  for (let p = path; ; p = dirname(p)) {
    if (await stat(p).then(() => true, () => false)) return p;
    if (p === dirname(p)) return p;
  }
}

/** The first component of `path` that is a file where a directory was needed. */
async function firstFileIn(path: string): Promise<string | undefined> {
  const parts: string[] = [];
  for (let p = path; p !== dirname(p); p = dirname(p)) parts.unshift(p);
  for (const p of parts) {
    const st = await stat(p).catch(() => undefined);
    if (st === undefined) return undefined;
    if (!st.isDirectory()) return p;
  }
  return undefined;
}

async function permissionDenied(place: LocalPlace, denied: string): Promise<UserError> {
  const uid = process.getuid?.() ?? -1;
  const st = await stat(denied).catch(() => undefined);
  const owner = st === undefined ? '' : `, owned by uid ${st.uid}${st.uid === 0 ? ' (root)' : ''} with mode ${(st.mode & 0o7777).toString(8)}`;
  const detail = `${denied}${owner}, does not let this process (uid ${uid}) write or read it`;
  // The container image runs as uid 1000; a bind mount keeps the host's owner, usually root.
  return Errors.permissionDenied(place.option, place.path, detail, uid === 1000 && st !== undefined && st.uid !== uid);
}
