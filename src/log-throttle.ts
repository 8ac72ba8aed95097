// Rate-limited log lines. A condition that repeats many times a second (the dirty limit under
// load, a fuzzer's bad connections, every request failing while S3 is down) is one line per
// interval that says how often it happened since the last one, instead of a line per event
// that drowns what matters. The first event is logged at once, so a new condition is never
// hidden behind the interval.

import type { Logger } from 'pino';

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug';

export interface ThrottleOptions {
  /** At most one line per this many milliseconds. */
  readonly intervalMs: number;
  /** The clock, injectable for tests. */
  readonly now?: () => number;
}

export class LogThrottle {
  private readonly log: Logger;
  private readonly level: Level;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private lastAt = -Infinity;
  private suppressed = 0;

  constructor(log: Logger, level: Level, options: ThrottleOptions) {
    this.log = log;
    this.level = level;
    this.intervalMs = options.intervalMs;
    this.now = options.now ?? Date.now;
  }

  /**
   * Logs `msg` unless a line went out less than the interval ago; then it only counts. The
   * line that does go out carries `repeated`, the events folded into it since the last line.
   * Returns whether a line was written.
   */
  write(fields: Record<string, unknown>, msg: string): boolean {
    const t = this.now();
    if (t - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return false;
    }
    const repeated = this.suppressed;
    this.lastAt = t;
    this.suppressed = 0;
    this.log[this.level](repeated > 0 ? { ...fields, repeated } : fields, msg);
    return true;
  }
}
