// docs/errors.md and src/errors.ts must list the same error codes.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { REPO } from '../helpers/gateway.ts';

it('documents every error code, and no other', () => {
  const source = readFileSync(join(REPO, 'src/errors.ts'), 'utf8');
  const docs = readFileSync(join(REPO, 'docs/errors.md'), 'utf8');
  const inCode = new Set([...source.matchAll(/'(S3NBD_[A-Z0-9_]+)'/g)].map((m) => m[1]));
  const inDocs = new Set([...docs.matchAll(/^\| `(S3NBD_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]));
  assert.ok(inCode.size >= 10);
  assert.deepEqual([...inDocs].sort(), [...inCode].sort());
});
