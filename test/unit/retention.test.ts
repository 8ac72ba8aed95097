// The retention rules (src/storage/snapshots/retention.ts) on fixed timestamps: restic's
// `forget` semantics, rule by rule and combined, with the reasons given.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type DatedSnapshot, applyRetention, hasRules } from '../../src/storage/snapshots/retention.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Saturday 2026-12-05 23:30 UTC. */
const T0 = Date.parse('2026-12-05T23:30:00Z');

function at(name: string, ms: number): DatedSnapshot {
  return { name, createdAt: new Date(ms).toISOString() };
}

/** Snapshots every `step` ms back from T0, named s0 (newest) … s(n-1). */
function series(n: number, step: number): DatedSnapshot[] {
  return Array.from({ length: n }, (_, i) => at(`s${i}`, T0 - i * step));
}

const kept = (snapshots: DatedSnapshot[], policy: Parameters<typeof applyRetention>[1]): string[] =>
  applyRetention(snapshots, policy).filter((d) => d.keep).map((d) => d.name);

describe('retention (restic forget rules)', () => {
  it('keeps nothing without rules, and says a policy has none', () => {
    assert.deepEqual(kept(series(5, HOUR), {}), []);
    assert.equal(hasRules({}), false);
    assert.equal(hasRules({ last: 0, daily: 0 }), false);
    assert.equal(hasRules({ weekly: 1 }), true);
  });

  it('last N: the N most recent, whatever the input order', () => {
    const s = series(6, 10 * 60_000).reverse();
    assert.deepEqual(kept(s, { last: 3 }), ['s0', 's1', 's2']);
    assert.deepEqual(kept(s, { last: 10 }), ['s0', 's1', 's2', 's3', 's4', 's5']);
  });

  it('hourly N: the most recent snapshot of each of the last N hours that have one', () => {
    // Every 20 minutes from 23:30 back: 23:30 23:10 | 22:50 22:30 22:10 | 21:50 ...
    const s = series(9, 20 * 60_000);
    assert.deepEqual(kept(s, { hourly: 3 }), ['s0', 's2', 's5']);
    const reasons = applyRetention(s, { hourly: 3 }).filter((d) => d.keep).map((d) => d.reasons);
    assert.deepEqual(reasons, [['hourly 2026-12-05T23'], ['hourly 2026-12-05T22'], ['hourly 2026-12-05T21']]);
  });

  it('counts periods that have snapshots, not calendar periods', () => {
    // Today, 3 days ago and 10 days ago: daily 3 keeps all three.
    const s = [at('a', T0), at('b', T0 - 3 * DAY), at('c', T0 - 10 * DAY), at('d', T0 - 10 * DAY - HOUR)];
    assert.deepEqual(kept(s, { daily: 3 }), ['a', 'b', 'c']);
  });

  it('daily N: days in UTC', () => {
    // 23:30 and 00:30 UTC are different days.
    const s = [at('late', Date.parse('2026-12-05T23:30:00Z')), at('early', Date.parse('2026-12-05T00:30:00Z')), at('prev', Date.parse('2026-12-04T23:59:59Z'))];
    assert.deepEqual(kept(s, { daily: 1 }), ['late']);
    assert.deepEqual(kept(s, { daily: 2 }), ['late', 'prev']);
  });

  it('weekly N: ISO weeks, Monday to Sunday, across a year end', () => {
    const s = [
      at('sun', Date.parse('2027-01-03T12:00:00Z')), // Sunday of 2026-W53
      at('mon', Date.parse('2026-12-28T00:00:00Z')), // Monday of 2026-W53
      at('sun-before', Date.parse('2026-12-27T23:59:00Z')), // Sunday of 2026-W52
      at('thu', Date.parse('2026-12-24T10:00:00Z')), // 2026-W52
      at('old', Date.parse('2026-01-01T10:00:00Z')), // Thursday of 2026-W01
      at('older', Date.parse('2025-12-29T10:00:00Z')), // Monday of 2026-W01
    ];
    const decided = applyRetention(s, { weekly: 3 });
    assert.deepEqual(decided.filter((d) => d.keep).map((d) => [d.name, d.reasons[0]]),
      [['sun', 'weekly 2026-W53'], ['sun-before', 'weekly 2026-W52'], ['old', 'weekly 2026-W01']]);
  });

  it('monthly N', () => {
    const s = [at('dec', Date.parse('2026-12-01T00:00:00Z')), at('nov-late', Date.parse('2026-11-30T23:59:59Z')),
      at('nov', Date.parse('2026-11-01T00:00:00Z')), at('oct', Date.parse('2026-10-15T00:00:00Z'))];
    assert.deepEqual(kept(s, { monthly: 2 }), ['dec', 'nov-late']);
  });

  it('a snapshot kept by several rules lists every reason; one kept by any rule is kept', () => {
    const s = series(48, HOUR); // two days of hourly snapshots
    const decided = applyRetention(s, { last: 2, hourly: 3, daily: 2, weekly: 1, monthly: 1 });
    const byName = new Map(decided.map((d) => [d.name, d]));
    assert.deepEqual(byName.get('s0')!.reasons, ['last 1', 'hourly 2026-12-05T23', 'daily 2026-12-05', 'weekly 2026-W49', 'monthly 2026-12']);
    assert.deepEqual(byName.get('s1')!.reasons, ['last 2', 'hourly 2026-12-05T22']);
    assert.deepEqual(byName.get('s2')!.reasons, ['hourly 2026-12-05T21']);
    // The newest of the previous day (23:30 on the 4th is 24 hours back).
    assert.deepEqual(byName.get('s24')!.reasons, ['daily 2026-12-04']);
    assert.deepEqual(decided.filter((d) => d.keep).map((d) => d.name), ['s0', 's1', 's2', 's24']);
    assert.equal(decided.length, 48);
    assert.ok(decided.filter((d) => !d.keep).every((d) => d.reasons.length === 0));
  });

  it('the recipe of the backup journey: hourly 24, daily 7, weekly 4, monthly 12 over a year of hourly snapshots', () => {
    const s = series(366 * 24, HOUR); // s<n>: n hours before Saturday 2026-12-05 23:30
    const keep = new Set(kept(s, { hourly: 24, daily: 7, weekly: 4, monthly: 12 }));
    const hours = Array.from({ length: 24 }, (_, i) => `s${i}`);
    const days = [0, 1, 2, 3, 4, 5, 6].map((d) => `s${d * 24}`); // 23:30 of Dec 5 back to Nov 29
    // Sundays 23:30 before each ISO week ends: Nov 29 (6 days back), Nov 22, Nov 15.
    const weeks = ['s0', 's144', 's312', 's480'];
    // The last snapshot of each month: Dec 5, then 23:30 of Nov 30, Oct 31, Sep 30, ... Jan 31.
    const months = ['s0', ...['11-30', '10-31', '09-30', '08-31', '07-31', '06-30', '05-31', '04-30', '03-31', '02-28', '01-31']
      .map((d) => `s${(T0 - Date.parse(`2026-${d}T23:30:00Z`)) / HOUR}`)];
    assert.deepEqual([...keep].sort(), [...new Set([...hours, ...days, ...weeks, ...months])].sort());
    assert.equal(keep.size, 24 + 6 + 2 + 10);
  });

  it('same second: the later name is the more recent', () => {
    const s = [at('auto-a', T0), at('auto-b', T0)];
    assert.deepEqual(kept(s, { last: 1 }), ['auto-b']);
  });
});
