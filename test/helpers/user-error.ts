// The error contract of the command line, as tests check it: exit 2, one line on stderr with
// the stable code and a fix, and nothing raw (no stack, no SDK or errno dump, no secret).

import assert from 'node:assert/strict';
import type { RunResult } from './tools.ts';

/** A secret the tests hand to the CLI: it must never appear in what the CLI prints. */
export const TEST_SECRET = 'first-run-secret-never-printed';

export function assertUserError(r: RunResult, code: string, ...say: RegExp[]): void {
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, new RegExp(`^s3nbd: .*\\(${code}\\)\\. Fix: .+\\.$`));
  for (const re of say) assert.match(lines[0]!, re);
  assert.doesNotMatch(r.stderr, /^\s+at |CredentialsProviderError|UnknownError|Invalid URL|EPROTO|openssl|no such file or directory, |gave up after/m);
  assert.doesNotMatch(r.stderr + r.stdout, new RegExp(TEST_SECRET));
}
