// Buffer comparison that reports where two buffers first differ. assert.deepEqual on large
// buffers builds a diff that can take minutes; this stays linear.

import assert from 'node:assert/strict';

export function assertSameBytes(actual: Buffer, expected: Buffer, message: string): void {
  if (actual.equals(expected)) return;
  let i = 0;
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++;
  assert.fail(`${message}: lengths ${actual.length}/${expected.length}, first difference at byte ${i} `
    + `(got ${actual[i]}, want ${expected[i]})`);
}
