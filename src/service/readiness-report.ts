// /readyz's answer: the gateway is ready when every volume it serves is (open, lease held, the
// store answering). Volumes skipped at start are listed but do not make it unready: they are
// reported in the log and /api/status, and a restart would not mend them.

import type { GatewayView } from './gateway-view.ts';

export interface ReadinessReport {
  readonly ready: boolean;
  readonly volumes: ReadonlyArray<{ readonly name: string; readonly ready: boolean; readonly reason?: string }>;
  readonly skipped: ReadonlyArray<{ readonly name: string; readonly error: string }>;
}

/** A readiness check that does not answer in this time counts as not ready. */
export const READINESS_ANSWER_MS = 8_000;

async function bounded<T>(work: Promise<T>, ms: number, late: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<T>((resolve) => { timer = setTimeout(() => resolve(late), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

export async function gatewayReadiness(gateway: GatewayView, answerMs = READINESS_ANSWER_MS): Promise<ReadinessReport> {
  const volumes = await Promise.all(gateway.volumes().map(async (v) => {
    const r = await bounded(v.readiness().catch((err: unknown) => ({ ready: false, reason: (err as Error).message })),
      answerMs, { ready: false, reason: `no readiness answer within ${answerMs / 1000} s` });
    return r.ready ? { name: v.name, ready: true } : { name: v.name, ready: false, reason: r.reason ?? 'not ready' };
  }));
  return { ready: volumes.every((v) => v.ready), volumes, skipped: gateway.skipped() };
}
