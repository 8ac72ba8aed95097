// Which S3 failures are worth retrying, and with which errno the rest reach the NBD client:
// throttling and transient S3 codes, 5xx (but 501) and network errors are retried; 403 and
// missing credentials are EPERM; anything else is EIO at once. A 4xx answer (403 included) and
// missing credentials are also `permanent`: no retry helps until someone changes something. The S3 store's retry loop
// (s3-retry.ts) runs around this.

import { StorageError } from '../../storage-error.ts';
export interface Failure {
  readonly retryable: boolean;
  /**
   * S3 answered no in a way no retry changes until someone does something (403, a missing
   * bucket, another 4xx; missing credentials): the flusher stops retrying at full speed
   * (StorageError.permanent). Failures without an answer (an unknown error) are not.
   */
  readonly permanent: boolean;
  readonly throttled: boolean;
  readonly errno: string;
  readonly text: string;
}

const THROTTLING_CODES = new Set([
  'SlowDown', 'Throttling', 'ThrottlingException', 'ThrottledException', 'RequestThrottled',
  'RequestThrottledException', 'TooManyRequestsException', 'RequestLimitExceeded',
  'BandwidthLimitExceeded', 'ProvisionedThroughputExceededException', 'PriorRequestNotComplete',
]);
const TRANSIENT_CODES = new Set([
  'InternalError', 'ServiceUnavailable', 'RequestTimeout', 'RequestTimeoutException',
  // Another conditional write to the key was in flight: retrying gets the real answer.
  'ConditionalRequestConflict', 'OperationAborted',
  // The body arrived corrupted (its checksum or signed hash does not match): send it again.
  'BadDigest', 'XAmzContentChecksumMismatch', 'XAmzContentSHA256Mismatch',
  // The SDK corrects its clock offset from the failed response, so the next attempt signs right.
  'RequestTimeTooSkewed', 'RequestExpired', 'RequestInTheFuture',
]);
const NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN',
  'ENETUNREACH', 'EHOSTUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'ERR_STREAM_PREMATURE_CLOSE',
  // Longer than asked for: a proxy or server that garbled the answer, as a cut body is.
  'ERR_BODY_TOO_LARGE',
]);

/** How a server said it does not implement what was asked (HTTP 501, or the code NotImplemented), if it did. */
export function notImplemented(err: unknown): string | undefined {
  const cause = err instanceof StorageError ? err.cause : err;
  const status = statusOf(cause);
  const code = codeOf(cause);
  return status === 501 || code === 'NotImplemented' ? `HTTP ${status ?? '?'} ${code ?? ''}`.trim() : undefined;
}

export function isTransientCode(code: string | undefined): boolean {
  return code !== undefined && (THROTTLING_CODES.has(code) || TRANSIENT_CODES.has(code));
}

export function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** The S3 error code (SDK exceptions) or Node error code (network errors). */
export function codeOf(err: unknown): string | undefined {
  const e = err as { Code?: unknown; code?: unknown; name?: unknown } | undefined;
  const code = e?.Code ?? e?.code;
  return typeof code === 'string' ? code : undefined;
}

export function classify(err: unknown, timedOut: boolean, timeoutMs: number): Failure {
  const status = statusOf(err);
  const code = codeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  const text = timedOut ? `no answer within ${timeoutMs} ms`
    : `${code ?? (err instanceof Error ? err.name : 'error')}${status === undefined ? '' : ` (HTTP ${status})`}: ${message}`;
  const result = (retryable: boolean, errno = 'EIO', throttled = false, permanent = false): Failure => ({ retryable, permanent, throttled, errno, text });
  if (timedOut) return result(true);
  if (code !== undefined && THROTTLING_CODES.has(code)) return result(true, 'EIO', true);
  if (status === 429) return result(true, 'EIO', true);
  if (code !== undefined && TRANSIENT_CODES.has(code)) return result(true);
  if (status === 403 || code === 'AccessDenied') return result(false, 'EPERM', false, true);
  if (status !== undefined && status >= 400 && status < 500) return result(false, 'EIO', false, true);
  if (status !== undefined) return result(status >= 500 && status !== 501);
  // No HTTP status: the request or its response never made it.
  if (code !== undefined && NETWORK_CODES.has(code)) return result(true);
  if (err instanceof Error && err.name === 'TimeoutError') return result(true);
  if (err instanceof Error && err.name === 'CredentialsProviderError') return result(false, 'EPERM', false, true);
  return result(false);
}
