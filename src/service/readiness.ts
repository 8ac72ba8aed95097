// Whether one served volume is ready: open, its writer lease held, and its store answering.
// The store counts as answering when a request of its own got an answer (below 500) within
// FRESH_MS and nothing failed since; otherwise one cheap probe (a GET of the small volume
// metadata object, one attempt, no retries) is made, bounded by PROBE_TIMEOUT_MS, so a stalled
// S3 turns the volume unready within FRESH_MS + PROBE_TIMEOUT_MS (10 s) of its last answer. No
// timer runs in the background: the probe is made when someone asks (/readyz, a scrape).

import type { Readiness } from './gateway-view.ts';
import type { VolumeCounters } from './volume-counters.ts';

export const FRESH_MS = 5_000;
export const PROBE_TIMEOUT_MS = 5_000;

export interface ReadinessSource {
  /** held, lost (fenced off), or none (read-only, memory store). */
  lease(): 'held' | 'lost' | 'none';
  /** One request to the store that rejects when it does not answer; `signal` aborts it. */
  probe(signal: AbortSignal): Promise<void>;
  /** The counters the store's telemetry feeds (lastSuccessAt, lastFailureAt). */
  readonly counters: Pick<VolumeCounters, 'lastSuccessAt' | 'lastFailureAt' | 'lastFailure'>;
  /** True once the gateway is shutting down. */
  stopping?(): boolean;
  now?(): number;
}

export class VolumeReadiness {
  private readonly source: ReadinessSource;
  private probing: Promise<Readiness> | undefined;
  /** performance.now() of the last probe that the store answered. */
  private probedOkAt = -Infinity;
  /** The last failure a successful probe came after: it is answered for. */
  private coveredFailureAt = -Infinity;
  private readonly freshMs: number;
  private readonly probeTimeoutMs: number;

  constructor(source: ReadinessSource, freshMs = FRESH_MS, probeTimeoutMs = PROBE_TIMEOUT_MS) {
    this.source = source;
    this.freshMs = freshMs;
    this.probeTimeoutMs = probeTimeoutMs;
  }

  async check(): Promise<Readiness> {
    if (this.source.stopping?.()) return { ready: false, reason: 'shutting down' };
    if (this.source.lease() === 'lost') return { ready: false, reason: 'lease lost: another gateway took the volume over (this one is fenced off)' };
    const now = (this.source.now ?? (() => performance.now()))();
    const { lastSuccessAt, lastFailureAt } = this.source.counters;
    const answered = Math.max(lastSuccessAt, this.probedOkAt);
    const failing = lastFailureAt > this.coveredFailureAt && lastFailureAt >= lastSuccessAt;
    if (now - answered < this.freshMs && !failing) return { ready: true };
    this.probing ??= this.probe().finally(() => { this.probing = undefined; });
    return await this.probing;
  }

  private async probe(): Promise<Readiness> {
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const err = new Error(`no answer within ${this.probeTimeoutMs / 1000} s`);
        // Rejected first: the aborted probe's own rejection must not win the race.
        reject(err);
        abort.abort(err);
      }, this.probeTimeoutMs);
    });
    try {
      const failureBefore = this.source.counters.lastFailureAt;
      await Promise.race([this.source.probe(abort.signal), timeout]);
      this.probedOkAt = (this.source.now ?? (() => performance.now()))();
      this.coveredFailureAt = failureBefore;
      return { ready: true };
    } catch (err) {
      return { ready: false, reason: `S3 unreachable: ${(err as Error).message.split('\n')[0]}` };
    } finally {
      clearTimeout(timer);
    }
  }
}
