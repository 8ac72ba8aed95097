// TLS on the NBD connection (NBD_OPT_STARTTLS), with nbdkit's conventions: --tls off|on|require,
// X.509 files in a directory (server-cert.pem, server-key.pem, and ca-cert.pem to verify
// clients' certificates), or a PSK file of `username:hexkey` lines as GnuTLS's psktool writes.
//
// The files are read and checked once, at start-up: a missing, unreadable or malformed one is a
// UserError then, never a surprise at the first client. What is kept is only what
// tls.createServer needs; key material is never logged.
//
// The upgrade hands the accepted socket to a tls.Server (one per STARTTLS, about a millisecond,
// less than the handshake's own signature): only tls.Server checks a client's certificate
// against the CA (a bare TLSSocket accepts any), and it tells its failures apart.

import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { Errors } from '../errors.ts';

export const TLS_MODES = ['off', 'on', 'require'] as const;
export type TlsMode = (typeof TLS_MODES)[number];

/** Credentials and policy of a server that offers TLS (--tls on or require). */
export interface TlsSettings {
  /** require: every option before STARTTLS is refused with NBD_REP_ERR_TLS_REQD (the spec's FORCEDTLS). */
  readonly mode: 'on' | 'require';
  readonly auth: 'x509' | 'psk';
  /** X.509 only: a client must present a certificate signed by ca-cert.pem. */
  readonly verifyPeer: boolean;
  /** For tls.createServer: certificate and key, or the PSK suites (startTls adds the key look-up). */
  readonly serverOptions: tls.TlsOptions;
  /** PSK only: the keys by user name. */
  readonly pskKeys?: ReadonlyMap<string, Buffer>;
}

export interface TlsOptions {
  readonly mode: TlsMode;
  /** Whether --tls was given (or S3NBD_TLS set), rather than left at its default. */
  readonly modeGiven: boolean;
  readonly certificates?: string;
  readonly psk?: string;
  readonly verifyPeer: boolean;
}

export const X509_FILES = { cert: 'server-cert.pem', key: 'server-key.pem', ca: 'ca-cert.pem' } as const;

/**
 * TLS 1.2 suites for PSK (OpenSSL's names): with ephemeral ECDH first, for forward secrecy.
 * Node leaves PSK suites out by default. TLS 1.3 keeps its own suites, and OpenSSL serves an
 * external PSK over TLS 1.3 too when the client offers it.
 */
const PSK_CIPHERS = [
  'ECDHE-PSK-CHACHA20-POLY1305', 'ECDHE-PSK-AES256-CBC-SHA384', 'ECDHE-PSK-AES128-CBC-SHA256',
  'PSK-AES256-GCM-SHA384', 'PSK-AES128-GCM-SHA256', 'PSK-CHACHA20-POLY1305',
].join(':');

/** Reads and checks the credentials; undefined with --tls off. Throws UserError. */
export async function loadTls(options: TlsOptions): Promise<TlsSettings | undefined> {
  const given = options.certificates !== undefined || options.psk !== undefined;
  if (options.mode === 'off') {
    // Credentials without --tls would serve plain text to someone who meant to encrypt.
    if (given && !options.modeGiven) throw Errors.tlsNotEnabled(options.psk !== undefined ? '--tls-psk' : '--tls-certificates');
    return undefined;
  }
  if (!given) throw Errors.tlsNoCredentials(options.mode);
  // As in nbdkit, a PSK file overrides certificates.
  if (options.psk !== undefined) {
    const keys = parsePskFile(options.psk, await readTlsFile('--tls-psk', options.psk));
    return {
      mode: options.mode, auth: 'psk', verifyPeer: false, pskKeys: keys,
      serverOptions: { ciphers: PSK_CIPHERS },
    };
  }
  const dir = options.certificates!;
  const read = (name: string): Promise<Buffer> => readTlsFile('--tls-certificates', join(dir, name));
  const cert = await read(X509_FILES.cert);
  const key = await read(X509_FILES.key);
  const ca = options.verifyPeer ? await read(X509_FILES.ca) : undefined;
  const serverOptions: tls.TlsOptions = { cert, key, ...(ca ? { ca, requestCert: true, rejectUnauthorized: false } : {}) };
  try {
    tls.createSecureContext(serverOptions);
  } catch (err) {
    throw Errors.tlsBadCertificate(dir, certificateProblem(err, options.verifyPeer));
  }
  return { mode: options.mode, auth: 'x509', verifyPeer: options.verifyPeer, serverOptions };
}

async function readTlsFile(option: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    // The container image runs as uid 1000; mounted key files keep the host's owner and mode.
    throw Errors.tlsFileUnreadable(option, path, FILE_ERRORS[code] ?? code, code === 'EACCES' && process.getuid?.() === 1000);
  }
}

const FILE_ERRORS: Record<string, string> = {
  ENOENT: 'it does not exist (ENOENT)',
  EACCES: 'permission denied (EACCES)',
  EISDIR: 'it is a directory (EISDIR)',
  ENOTDIR: 'a part of the path is not a directory (ENOTDIR)',
};

/** What OpenSSL found wrong, in words (its message names no file, and never a key). */
function certificateProblem(err: unknown, verifyPeer: boolean): string {
  const text = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string }).code ?? '';
  if (/key values mismatch/i.test(text)) return `${X509_FILES.key} is not the key of ${X509_FILES.cert}`;
  if (/PEM|no start line|bad base64|ASN1|DECODER/i.test(text + code)) {
    return `${verifyPeer ? `${X509_FILES.cert}, ${X509_FILES.key} or ${X509_FILES.ca}` : `${X509_FILES.cert} or ${X509_FILES.key}`} is not PEM (${text.replace(/^error:[0-9A-F]+:/, '')})`;
  }
  return text;
}

/**
 * `username:hexkey` lines, as `psktool -u NAME -p FILE` writes them (blank lines are skipped).
 * The error names the line number, never its text: the line holds a key.
 */
export function parsePskFile(path: string, data: Buffer): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = data.toString('utf8').split(/\r?\n/);
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    const m = /^([^:]+):((?:[0-9a-fA-F]{2})+)$/.exec(line.trim());
    if (!m) throw Errors.tlsBadPsk(path, `line ${i + 1} is not username:hexkey`);
    keys.set(m[1]!, Buffer.from(m[2]!, 'hex'));
  }
  if (keys.size === 0) throw Errors.tlsBadPsk(path, 'it holds no username:hexkey line');
  return keys;
}

/** The TLS handshake failed: the connection is closed, and the reason logged. */
export class TlsHandshakeError extends Error {
  override readonly name = 'TlsHandshakeError';
}

/**
 * Runs the server side of the TLS handshake on a socket whose NBD_OPT_STARTTLS we just
 * acknowledged (the socket must be paused, its earlier reader detached). Resolves with the
 * encrypted socket; rejects with TlsHandshakeError, the socket destroyed, when the handshake
 * fails or the connection closes first. The caller bounds the time it may take.
 */
export function startTls(raw: Socket, settings: TlsSettings): Promise<tls.TLSSocket> {
  let unknownUser: string | undefined;
  const options: tls.TlsOptions = settings.pskKeys === undefined ? settings.serverOptions : {
    ...settings.serverOptions,
    pskCallback: (_socket, identity) => {
      const key = settings.pskKeys!.get(identity);
      if (key === undefined) unknownUser = identity;
      return key ?? null;
    },
  };
  const server = tls.createServer(options);
  return new Promise((resolve, reject) => {
    const fail = (reason: string): void => {
      raw.destroy();
      reject(new TlsHandshakeError(reason));
    };
    const closed = (): void => fail('the connection closed during the TLS handshake');
    server.once('secureConnection', (socket: tls.TLSSocket) => {
      raw.off('close', closed);
      if (!settings.verifyPeer || socket.authorized) return resolve(socket);
      // Checked here rather than by tls.Server's rejectUnauthorized, which closes the
      // connection without saying why.
      const sent = Object.keys(socket.getPeerCertificate()).length > 0;
      socket.destroy();
      fail(sent ? `client certificate refused: ${String(socket.authorizationError)}` : 'the client sent no certificate, and this server requires one');
    });
    server.once('tlsClientError', (err: Error) => {
      if (unknownUser !== undefined) fail(`unknown PSK username ${JSON.stringify(unknownUser.slice(0, 64))}`);
      else fail(opensslReason(err));
    });
    raw.once('close', closed);
    // Errors of the raw socket reach the TLS socket, and through it tlsClientError.
    server.emit('connection', raw);
  });
}

/** OpenSSL's reasons that mean something to whoever reads the log. */
const TLS_REASONS: Record<string, string> = {
  // A wrong pre-shared key: over TLS 1.3, and over TLS 1.2 (where it could also be damage).
  ERR_SSL_BINDER_DOES_NOT_VERIFY: 'wrong pre-shared key for the username',
  ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC: 'wrong pre-shared key for the username, or data damaged on the way',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'the client does not trust the server certificate (unknown CA)',
  // GnuTLS clients that refuse our certificate hang up without an alert.
  ECONNRESET: 'the client broke off the handshake (often: it does not trust the server certificate, or the certificate does not name the host it connected to)',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'the client refused the server certificate',
  ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM: 'no credentials in common (e.g. a client with certificates at a PSK server)',
  ERR_SSL_NO_SHARED_CIPHER: 'no cipher in common (e.g. a client with certificates at a PSK server)',
  ERR_SSL_WRONG_VERSION_NUMBER: 'the client did not speak TLS after NBD_OPT_STARTTLS',
  ERR_SSL_HTTP_REQUEST: 'the client did not speak TLS after NBD_OPT_STARTTLS',
};

/** "what it means (ERR_SSL_..., OpenSSL's reason)", from OpenSSL's long message. */
function opensslReason(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const reason = /:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):/.exec(err.message)?.[1] ?? err.message;
  const detail = code && code !== reason ? `${code}, ${reason}` : reason;
  return TLS_REASONS[code] ? `${TLS_REASONS[code]} (${detail})` : detail;
}
