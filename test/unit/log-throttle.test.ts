// A throttled log line: the first event is written at once, repeats within the interval are
// only counted, and the next line says how many were folded into it.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { LogThrottle } from '../../src/log-throttle.ts';

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

describe('LogThrottle', () => {
  it('writes the first event, counts repeats within the interval, and reports them on the next line', async () => {
    const { log, lines } = capture();
    let now = 1_000;
    const throttle = new LogThrottle(log, 'warn', { intervalMs: 5_000, now: () => now });
    assert.equal(throttle.write({ a: 1 }, 'dirty limit reached'), true);
    for (let i = 0; i < 142; i++) {
      now += 10;
      assert.equal(throttle.write({ a: 1 }, 'dirty limit reached'), false);
    }
    now = 6_000;
    assert.equal(throttle.write({ a: 2 }, 'dirty limit reached'), true);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(lines.length, 2);
    assert.equal(lines[0]!.repeated, undefined);
    assert.equal(lines[0]!.level, 40);
    assert.equal(lines[1]!.repeated, 142);
    assert.equal(lines[1]!.a, 2);
  });
});
