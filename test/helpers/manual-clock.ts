// A clock that moves only when the test says so, for the write-back flusher's upload policy
// and retries, and the S3 store's retry loop (src/clock.ts): no real sleeps, no timing flakes. Real
// I/O (the journal, the slot file) still runs on real time, so advance() lets the event loop
// turn after each timer it fires.

import { type Clock, realClock } from '../../src/clock.ts';

interface Timer {
  at: number;
  readonly every: number | undefined;
  readonly fire: () => void;
}

export class ManualClock implements Clock {
  private time = 1_000_000;
  private readonly timers = new Set<Timer>();
  /** What random() returns: 1 makes every backoff its full ceiling. */
  randomValue = 0.999;
  /** Every sleep asked for, in ms, in order. */
  readonly sleeps: number[] = [];

  now(): number {
    return this.time;
  }

  random(): number {
    return this.randomValue;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return new Promise((resolve) => {
      const timer: Timer = { at: this.time + ms, every: undefined, fire: resolve };
      this.timers.add(timer);
      signal?.addEventListener('abort', () => {
        this.timers.delete(timer);
        resolve();
      }, { once: true });
    });
  }

  every(ms: number, fn: () => void): () => void {
    const timer: Timer = { at: this.time + ms, every: ms, fire: fn };
    this.timers.add(timer);
    return () => this.timers.delete(timer);
  }

  /** Moves time forward by `ms`, firing every timer due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      const next = [...this.timers].filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      this.time = next.at;
      if (next.every === undefined) this.timers.delete(next);
      else next.at += next.every;
      next.fire();
      await settle();
    }
    this.time = end;
    await settle();
  }
}

/** Lets promise callbacks and pending real I/O (journal writes, slot writes) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Waits, on real time, until `condition` holds (for real I/O to finish); fails after `ms`. */
export async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  for (const deadline = Date.now() + ms; !condition();) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * The real clock, but sleeps that only record how long they would have been and return at
 * once (through `onSleep`, which may also hold them), and a fixed random().
 */
export function recordingClock(options: { waits?: number[]; random?: number; onSleep?: (ms: number) => Promise<void> }): Clock {
  return {
    ...realClock,
    random: () => options.random ?? 0.5,
    sleep: (ms) => {
      options.waits?.push(ms);
      return options.onSleep ? options.onSleep(ms) : Promise.resolve();
    },
  };
}
