// The suite-wide secret sweep (test/helpers/log-sweep.ts, test/sweep-secrets.ts) finds a
// secret in any kept output, names the output and the secret's label but never the secret,
// and passes when there is none.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sweep } from '../sweep-secrets.ts';

describe('the secret sweep', () => {
  it('finds a registered secret in kept output, and names only its label', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sweep-'));
    try {
      const key = Buffer.from('0123456789abcdef0123456789abcdef');
      writeFileSync(join(dir, 'secrets-1.jsonl'), [
        { label: 'passphrase', value: 'correct horse battery' },
        { label: 'data key (hex)', value: key.toString('hex') },
      ].map((r) => JSON.stringify(r)).join('\n'));
      writeFileSync(join(dir, 'output-1.jsonl'), `${JSON.stringify({ what: 'gateway log', text: '{"msg":"volume opened"}' })}\n`);
      assert.deepEqual(sweep(dir).leaks, []);
      writeFileSync(join(dir, 'output-2.jsonl'), `${JSON.stringify({ what: 's3nbd serve', text: `key ${key.toString('hex')}` })}\n`);
      const found = sweep(dir);
      assert.deepEqual(found.leaks, ['s3nbd serve: holds data key (hex)']);
      assert.equal(found.outputs, 2);
      assert.equal(found.secrets, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
