// The crash loop's checkers (test/helpers/crash-loop.ts) must catch every kind of damage they
// claim to: a lost acknowledged write, torn bytes, another sector's bytes, zeros where a write
// was acknowledged, a store older than a FLUSH promised; and accept exactly the acknowledged
// state or what was in flight.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SECTOR, SectorModel, checkDump, checkFlushed, parseSector, sectorBytes } from '../helpers/crash-loop.ts';

function dumpOf(sectors: Buffer[]): Buffer {
  return Buffer.concat(sectors);
}

/** Sector 0: acknowledged write 5; sector 1: write 6 acknowledged, write 9 in flight; sector 2: never written; sector 3: write 7, a TRIM in flight. */
function model(): SectorModel {
  const m = new SectorModel(4);
  m.ackedSeq[0] = 5; m.ackedWriter[0] = 1;
  m.ackedSeq[1] = 6; m.ackedWriter[1] = 1;
  m.inFlight[1] = { seq: 9, writer: 2, kind: 'W' };
  m.ackedSeq[3] = 7; m.ackedWriter[3] = 1;
  m.inFlight[3] = { seq: 10, writer: 2, kind: 'T' };
  return m;
}

const good = [sectorBytes(0, 5, 1), sectorBytes(1, 6, 1), Buffer.alloc(SECTOR), sectorBytes(3, 7, 1)];

function check(sectors: Buffer[]): string[] {
  const violations: string[] = [];
  checkDump(model(), dumpOf(sectors), 1, violations);
  return violations;
}

describe('crash loop checker', () => {
  it('accepts the acknowledged state and each request that was in flight', () => {
    assert.deepEqual(check(good), []);
    assert.deepEqual(check([good[0]!, sectorBytes(1, 9, 2), good[2]!, Buffer.alloc(SECTOR)]), []);
  });

  it('reports a write older than the acknowledged one (a lost acknowledged write)', () => {
    const v = check([sectorBytes(0, 4, 1), ...good.slice(1)]);
    assert.equal(v.length, 1);
    assert.match(v[0]!, /sector 0: write 4 .*acknowledged state is write 5/);
  });

  it('reports torn bytes, another sector\'s bytes, zeros after an acknowledged write, and data where nothing was written', () => {
    const torn = Buffer.from(good[0]!);
    torn.writeUInt8(torn[100]! ^ 1, 100);
    assert.match(check([torn, ...good.slice(1)])[0]!, /sector 0: torn/);
    assert.match(check([good[0]!, sectorBytes(0, 5, 1), ...good.slice(2)])[0]!, /sector 1: holds sector 0's bytes/);
    assert.match(check([Buffer.alloc(SECTOR), ...good.slice(1)])[0]!, /sector 0: zeros, but write 5 was acknowledged/);
    assert.match(check([...good.slice(0, 2), sectorBytes(2, 3, 1), good[3]!])[0]!, /sector 2: write 3 .*acknowledged state is zeros/);
    // The right sequence number from the wrong writer is someone else's write.
    assert.match(check([sectorBytes(0, 5, 2), ...good.slice(1)])[0]!, /sector 0: write 5 \(writer 2\)/);
  });

  it('takes what a restart showed as the next acknowledged state', () => {
    const m = model();
    checkDump(m, dumpOf([good[0]!, sectorBytes(1, 9, 2), good[2]!, Buffer.alloc(SECTOR)]), 1, []);
    assert.equal(m.ackedSeq[1], 9);
    assert.equal(m.ackedSeq[3], 0);
    assert.equal(m.inFlight[1], undefined);
    const v: string[] = [];
    // Going back to write 6 after write 9 was seen is a violation now.
    checkDump(m, dumpOf(good), 2, v);
    assert.equal(v.length, 2);
  });

  it('checks the store against the last acknowledged FLUSH: never older than what it covered', () => {
    // Two sectors starting at write 1; write 2 on sector 0 acknowledged (event 3) before the
    // FLUSH was issued (event 5), write 3 on sector 1 acknowledged after it (event 8).
    const start = { seq: Float64Array.from([1, 1]), writer: Uint32Array.from([1, 1]) };
    const ops = [
      { seq: 2, writer: 1, kind: 'W' as const, start: 0, count: 1, ackAt: 3 },
      { seq: 3, writer: 1, kind: 'W' as const, start: 1, count: 1, ackAt: 8 },
    ];
    const run = (s0: Buffer, s1: Buffer): string[] => {
      const v: string[] = [];
      checkFlushed(start, ops, 5, Buffer.concat([s0, s1]), 1, v);
      return v;
    };
    assert.deepEqual(run(sectorBytes(0, 2, 1), sectorBytes(1, 1, 1)), []);
    assert.deepEqual(run(sectorBytes(0, 2, 1), sectorBytes(1, 3, 1)), []);
    const lost = run(sectorBytes(0, 1, 1), sectorBytes(1, 1, 1));
    assert.equal(lost.length, 1);
    assert.match(lost[0]!, /sector 0, in the store after an acknowledged FLUSH: write 1 .*covered write 2/);
    assert.match(run(sectorBytes(0, 2, 1), Buffer.alloc(SECTOR))[0]!, /sector 1, .*zero.*covered write 1/);
  });

  it('decodes the sector format crash-writer.py writes', () => {
    assert.deepEqual(parseSector(sectorBytes(12345, 2 ** 40, 7)), { sector: 12345, seq: 2 ** 40, writer: 7 });
    assert.equal(parseSector(Buffer.alloc(SECTOR)), 'zero');
  });
});
