// The S3 store's retry loop: one request, tried until it succeeds, fails in a way retrying cannot
// fix (s3-errors.ts says which) or runs out of attempts or time; every attempt counted, every
// failure logged, a hang warned about while it lasts. Apart from the store, on an injectable clock (src/clock.ts).

import type { Logger } from 'pino';
import { type Clock, realClock } from '../../../clock.ts';
import { LogThrottle } from '../../../log-throttle.ts';
import { StorageError } from '../../storage-error.ts';
import { classify, codeOf, type Failure, statusOf } from './s3-errors.ts';
import type { VolumeTelemetry } from '../../../telemetry.ts';

/** Requests sent (every attempt counts), and how they went. */
export interface S3RequestStats {
  /** GetObject, for get() and getTagged(). */
  get: number;
  /** PutObject, for put() and putIf(). */
  put: number;
  /** DeleteObjects, one per batch of up to 1000 keys. */
  delete: number;
  /** ListObjectsV2, one per page. */
  list: number;
  /** Attempts that failed and were tried again. */
  retries: number;
  /** Of those, the ones S3 throttled. */
  throttled: number;
  /** Operations that gave up after a retryable failure. */
  exhausted: number;
}

export type Operation = 'get' | 'put' | 'delete' | 'list';

/** The S3 API's names of the operations, for the metrics. */
const API_NAMES: Readonly<Record<Operation, string>> = { get: 'GetObject', put: 'PutObject', delete: 'DeleteObjects', list: 'ListObjectsV2' };

/** A failed attempt's status for the metrics: the HTTP status, else the error's code ("timeout" when it took too long). */
function failedStatus(err: unknown, timedOut: boolean): string {
  if (timedOut) return 'timeout';
  const status = statusOf(err);
  if (status !== undefined) return String(status);
  return codeOf(err) ?? (err instanceof Error ? err.name : 'error');
}

/** How one operation retries. */
export interface Policy {
  readonly maxAttempts: number;
  readonly signal: AbortSignal | undefined;
  /** Total time for the operation, retries included; undefined: no limit but the attempts. */
  readonly budgetMs?: number | undefined;
  /** No "waiting for S3" warnings: the caller bounds the wait and reports its outcome itself. */
  readonly quiet?: boolean | undefined;
}

export interface S3RetryOptions {
  /** Counted into: the store's stats. */
  readonly stats: S3RequestStats;
  /** Ends every operation (the store's close()). */
  readonly closing: AbortSignal;
  /** Time limit for one attempt, body included. */
  readonly requestTimeoutMs: number;
  /** A request unanswered this long is logged at warn level (rate-limited). */
  readonly stallWarnMs: number;
  /** First backoff ceiling, doubled per retry up to retryCapMs. */
  readonly retryBaseMs: number;
  readonly retryCapMs: number;
  readonly log?: Logger | undefined;
  /** Backoff waits, jitter and time budgets. Default: the real clock. */
  readonly clock?: Clock | undefined;
  /** Told of every attempt: operation, status, time, whether it was a retry. */
  readonly telemetry?: VolumeTelemetry | undefined;
}

/** At most one "waiting for S3" line per this many ms, however many requests wait. */
const STALL_LOG_INTERVAL_MS = 10_000;

export class S3Retry {
  private readonly options: S3RetryOptions;
  private readonly stats: S3RequestStats;
  private readonly stallLog: LogThrottle | undefined;
  private readonly clock: Clock;

  constructor(options: S3RetryOptions) {
    this.options = options;
    this.stats = options.stats;
    this.stallLog = options.log && new LogThrottle(options.log, 'warn', { intervalMs: STALL_LOG_INTERVAL_MS });
    this.clock = options.clock ?? realClock;
  }

  /**
   * Runs `attempt` until it succeeds, fails in a way retrying cannot fix, or runs out of
   * attempts or of the policy's time budget. Each attempt gets a signal that aborts at its
   * time limit (no later than the budget's end), on `closing` and on the policy's signal.
   */
  async run<T>(operation: Operation, what: string, policy: Policy, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const { closing, requestTimeoutMs, retryBaseMs, retryCapMs } = this.options;
    const stop = policy.signal ? AbortSignal.any([closing, policy.signal]) : closing;
    const started = this.clock.now();
    const deadline = policy.budgetMs === undefined ? Infinity : started + policy.budgetMs;
    let n = 1;
    let lastError: string | undefined;
    // Visible while it lasts: a request (and its retries) still unanswered after stallWarnMs.
    const stallTimer = policy.quiet ? undefined : this.stallLog && setInterval(() => {
      this.stallLog!.write({ operation: what, waitingMs: this.clock.now() - started, attempt: n, ...lastError === undefined ? {} : { lastError },
        ...deadline === Infinity ? {} : { givesUpInMs: Math.max(0, deadline - this.clock.now()) } }, 'waiting for S3: no answer yet');
    }, this.options.stallWarnMs);
    try {
      for (;; n++) {
        if (stop.aborted) throw new StorageError('EIO', `${what}: ${reasonOf(stop)}`, { cause: stop.reason });
        this.stats[operation]++;
        // Not AbortSignal.timeout(): its signal (and any signal combined with it) lives until the
        // timer fires, long after a quick request is done.
        const timeout = new AbortController();
        const limitMs = Math.max(1, Math.min(requestTimeoutMs, deadline - this.clock.now()));
        const timer = setTimeout(() => timeout.abort(), limitMs);
        let failure: Failure;
        const sent = performance.now();
        try {
          const result = await attempt(AbortSignal.any([timeout.signal, stop]));
          // The SDK hides a success's status; every success is a 2xx.
          this.options.telemetry?.s3Request(API_NAMES[operation], '200', (performance.now() - sent) / 1000, n > 1);
          return result;
        } catch (err) {
          this.options.telemetry?.s3Request(API_NAMES[operation], stop.aborted ? 'aborted' : failedStatus(err, timeout.signal.aborted),
            (performance.now() - sent) / 1000, n > 1);
          if (stop.aborted) throw new StorageError('EIO', `${what}: ${reasonOf(stop)}`, { cause: err });
          failure = classify(err, timeout.signal.aborted, limitMs);
          lastError = failure.text;
          if (!failure.retryable) throw new StorageError(failure.errno, `${what}: ${failure.text}`, { cause: err, permanent: failure.permanent });
          if (n >= policy.maxAttempts) {
            this.stats.exhausted++;
            throw new StorageError('EIO', `${what}: ${failure.text} (gave up after ${n} attempts)`, { cause: err });
          }
        } finally {
          clearTimeout(timer);
        }
        // Full jitter: a random wait up to a ceiling that doubles per attempt, capped.
        const ceiling = Math.min(retryCapMs, retryBaseMs * 2 ** Math.min(n - 1, 30));
        const wait = Math.floor(this.clock.random() * ceiling);
        if (this.clock.now() + wait >= deadline) {
          this.stats.exhausted++;
          throw new StorageError('EIO', `${what}: ${failure.text} (gave up after ${n} attempts in ${this.clock.now() - started} ms: the read timeout is ${policy.budgetMs} ms)`);
        }
        await this.backoff(what, n, failure, wait, stop);
      }
    } finally {
      clearInterval(stallTimer);
    }
  }

  /** Counts a failed attempt, logs it, and waits `wait` ms before the next. */
  private async backoff(what: string, n: number, failure: Failure, wait: number, stop: AbortSignal): Promise<void> {
    this.stats.retries++;
    if (failure.throttled) this.stats.throttled++;
    // Quiet while a retry or two sorts it out; louder as it drags on (attempts 4, 8, 16, ...).
    // A request that hangs is reported by the stall warning in run() meanwhile.
    const level = n >= 4 && (n & (n - 1)) === 0 ? 'warn' : 'debug';
    this.options.log?.[level]({ operation: what, attempt: n, error: failure.text, waitMs: wait }, 'S3 request failed, retrying');
    await this.clock.sleep(wait, stop);
    if (stop.aborted) throw new StorageError('EIO', `${what}: ${reasonOf(stop)}`, { cause: stop.reason });
  }
}

function reasonOf(signal: AbortSignal): string {
  return signal.reason instanceof Error ? signal.reason.message : 'aborted';
}
