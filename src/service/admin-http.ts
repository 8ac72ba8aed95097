// The admin endpoint's HTTP plumbing: JSON answers, JSON request bodies read with a bound, the
// bearer token checked in constant time, and errors as { error: { code, message, fix } }.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { UserError } from '../errors.ts';

/** The largest request body read: the admin API's bodies are a few fields. */
export const MAX_BODY_BYTES = 64 * 1024;

/** An answer other than 2xx, with the same code/message/fix as a UserError. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  readonly status: number;
  readonly code: string;
  readonly fix: string;
  readonly headers: Readonly<Record<string, string>>;
  constructor(status: number, code: string, message: string, fix: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.fix = fix;
    this.headers = headers;
  }
}

export const httpErrors = {
  notFound: (path: string) => new HttpError(404, 'S3NBD_ADMIN_NOT_FOUND', `no such resource: ${path}`,
    'see docs/monitoring.md for the routes: /healthz, /readyz, /metrics, /api/status, /api/volumes/NAME'),
  noVolume: (name: string) => new HttpError(404, 'S3NBD_ADMIN_NO_VOLUME', `this gateway serves no volume named "${name}"`,
    'GET /api/status lists the volumes it serves'),
  methodNotAllowed: (method: string, allow: readonly string[]) => new HttpError(405, 'S3NBD_ADMIN_METHOD', `${method} is not allowed here`,
    `use ${allow.join(' or ')}`, { allow: allow.join(', ') }),
  unauthorized: () => new HttpError(401, 'S3NBD_ADMIN_UNAUTHORIZED', 'missing or wrong admin token',
    'send the header "Authorization: Bearer TOKEN" with the token of --admin-token-file (or S3NBD_ADMIN_TOKEN)',
    { 'www-authenticate': 'Bearer realm="s3nbd"' }),
  badHost: (host: string) => new HttpError(421, 'S3NBD_ADMIN_BAD_HOST', `the Host header "${host}" does not name this machine`,
    'connect by IP address or "localhost" (without a token the endpoint refuses other host names, against DNS rebinding), or set --admin-token-file'),
  tooLarge: () => new HttpError(413, 'S3NBD_ADMIN_BODY_TOO_LARGE', `the request body is longer than ${MAX_BODY_BYTES} bytes`, 'send a small JSON object'),
  notJson: (reason: string) => new HttpError(400, 'S3NBD_ADMIN_BAD_REQUEST', `the request body is not a JSON object: ${reason}`,
    'send Content-Type: application/json and a JSON object, e.g. {"name":"vm1","size":"10G"}'),
  badField: (field: string, reason: string, example: string) => new HttpError(400, 'S3NBD_ADMIN_BAD_REQUEST', `"${field}" ${reason}`, `e.g. ${example}`),
  noAdmin: () => new HttpError(409, 'S3NBD_ADMIN_SINGLE_VOLUME', 'this gateway serves one volume (--store): volumes are created, resized and deleted only by a gateway serving a store prefix',
    'start the gateway with --volumes URL, or use s3nbd create / s3nbd volume for a single volume'),
};

/** UserError codes that mean "no such thing" or "already so", which HTTP has statuses for. */
const STATUS_OF_CODE: Readonly<Record<string, number>> = {
  S3NBD_NO_VOLUME: 404,
  S3NBD_VOLUME_EXISTS: 409,
  S3NBD_VOLUME_IN_USE: 409,
  S3NBD_VOLUME_CONFLICT: 409,
};

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** An error as the client reads it; undefined for an unexpected one (the caller logs it and answers 500). */
export function errorAnswer(err: unknown): { status: number; body: unknown; headers: Record<string, string> } | undefined {
  if (err instanceof HttpError) return { status: err.status, body: { error: { code: err.code, message: err.message, fix: err.fix } }, headers: { ...err.headers } };
  if (err instanceof UserError) {
    return { status: STATUS_OF_CODE[err.code] ?? 400, body: { error: { code: err.code, message: err.message, fix: err.fix } }, headers: {} };
  }
  return undefined;
}

/** The request's JSON object body, at most MAX_BODY_BYTES; a client that sends more is cut off. */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? '';
  // Only JSON: a browser page elsewhere cannot send it without a CORS preflight, which this
  // server never grants, so it cannot make a local gateway create or delete volumes.
  if (!/^application\/json\s*(;|$)/i.test(type)) throw httpErrors.notJson(`Content-Type is "${type}", not application/json`);
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw httpErrors.tooLarge();
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > MAX_BODY_BYTES) throw httpErrors.tooLarge();
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw httpErrors.notJson((err as Error).message);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw httpErrors.notJson('not an object');
  return value as Record<string, unknown>;
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/**
 * Whether the request carries the token as "Authorization: Bearer TOKEN". Compared as SHA-256
 * digests with timingSafeEqual, so neither the time taken nor a length check tells anything of
 * the token.
 */
export function authorized(req: IncomingMessage, token: string): boolean {
  const bearer = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
  if (!bearer) return false;
  return timingSafeEqual(digest(bearer[1]!), digest(token));
}
