// Drain progress on SIGTERM: while the gateway uploads its dirty data before exiting, a line
// every 2 s with the bytes left, the upload rate over the last interval and when it should be
// done, and a final line; so whoever waits on `systemctl stop` sees it move, or see it stuck.

import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import { formatBytes } from './parse.ts';

export const DRAIN_PROGRESS_INTERVAL_MS = 2_000;

export interface DrainProgressOptions {
  readonly clock: Clock;
  /** The dirty data left to upload (the cache's status().dirtyBytes). */
  readonly dirtyBytes: () => number;
  readonly log: Pick<Logger, 'info'>;
  readonly intervalMs?: number;
}

/** Starts the lines; the function returned stops them and says how the drain ended. */
export function startDrainProgress(options: DrainProgressOptions): (drained: boolean) => void {
  const { clock, dirtyBytes, log } = options;
  const startedAt = clock.now();
  const startBytes = dirtyBytes();
  let last = { at: startedAt, bytes: startBytes };
  const stopTicks = startBytes === 0 ? () => undefined : clock.every(options.intervalMs ?? DRAIN_PROGRESS_INTERVAL_MS, () => {
    const now = clock.now();
    const bytesLeft = dirtyBytes();
    // Bytes that left the dirty set per second; writes have stopped, so it only shrinks.
    const bytesPerSecond = Math.round(Math.max(0, last.bytes - bytesLeft) / (Math.max(1, now - last.at) / 1000));
    last = { at: now, bytes: bytesLeft };
    const etaSeconds = bytesPerSecond > 0 ? Math.ceil(bytesLeft / bytesPerSecond) : null;
    const eta = etaSeconds === null ? 'no upload finished in the last interval' : `about ${etaSeconds} s to go`;
    log.info({ bytesLeft, bytesPerSecond, etaSeconds }, `draining: ${formatBytes(bytesLeft)} left to upload, ${formatBytes(bytesPerSecond)}/s, ${eta}`);
  });
  return (drained) => {
    stopTicks();
    if (startBytes === 0) return;
    const bytesLeft = dirtyBytes();
    const seconds = Math.max(1, clock.now() - startedAt) / 1000;
    const uploaded = Math.max(0, startBytes - bytesLeft);
    const bytesPerSecond = Math.round(uploaded / seconds);
    log.info({ bytesLeft, bytesPerSecond, uploadedBytes: uploaded, seconds, drained },
      drained
        ? `drain done: ${formatBytes(uploaded)} uploaded in ${seconds.toFixed(1)} s (${formatBytes(bytesPerSecond)}/s)`
        : `drain stopped: ${formatBytes(bytesLeft)} not uploaded (the journal keeps it for the next start)`);
  };
}

/** Runs the drain with its progress lines, stopped however the drain ends. */
export async function withDrainProgress(options: DrainProgressOptions, drain: () => Promise<boolean>): Promise<boolean> {
  const stop = startDrainProgress(options);
  let drained = false;
  try {
    drained = await drain();
    return drained;
  } finally {
    stop(drained);
  }
}
