// Asking a gateway's admin endpoint (docs/monitoring.md) from tests: GETs with an optional
// token, the Prometheus text format parsed, and waiting on an asynchronous condition.

import assert from 'node:assert/strict';

export interface AdminAnswer {
  readonly status: number;
  readonly text: string;
  json<T = Record<string, unknown>>(): T;
}

export async function adminGet(base: string, path: string, token?: string): Promise<AdminAnswer> {
  const res = await fetch(new URL(path, base), { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  return { status: res.status, text, json: <T>() => JSON.parse(text) as T };
}

/** Sample lines of the text format as a map from `name{labels}` (labels sorted by name) to the value. */
export function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels = m[2] ? [...m[2].matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((l) => `${l[1]}="${l[2]}"`).sort().join(',') : '';
    samples.set(labels ? `${m[1]}{${labels}}` : m[1]!, Number(m[3]));
  }
  return samples;
}

/** Polls `condition` (real time) until it resolves true; a rejection counts as false (a server still starting). Fails after `ms`. */
export async function waitFor(condition: () => Promise<boolean>, what: string, ms: number, everyMs = 200): Promise<void> {
  let last = '';
  for (const deadline = Date.now() + ms; ;) {
    try {
      if (await condition()) return;
    } catch (err) {
      last = `: last error ${(err as Error).message}`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}${last}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
