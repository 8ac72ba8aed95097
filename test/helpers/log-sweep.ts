// The suite-wide check that no secret leaks (issue 17): every gateway's log and every
// command's output that the tests see is kept under $S3NBD_TEST_LOG_DIR (set by
// scripts/test.sh; without it nothing is kept), and every secret the tests use (S3 secret
// keys, passphrases, key files, TLS private keys, pre-shared keys, data keys) is registered
// there too. After the last test, test/sweep-secrets.ts reads all of it and fails, naming
// the file and the secret's label (never the secret), if any output holds any secret.

import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env.S3NBD_TEST_LOG_DIR;
const file = (kind: 'output' | 'secrets'): string => join(dir!, `${kind}-${process.pid}.jsonl`);

function append(kind: 'output' | 'secrets', record: unknown): void {
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  appendFileSync(file(kind), `${JSON.stringify(record)}\n`);
}

/** Keeps what a gateway or command printed, for the sweep. */
export function keepOutput(what: string, text: string): void {
  if (text.length > 0) append('output', { what, text });
}

/** Registers a secret the sweep must find in no output (its label is what a failure names); key material as hex and base64 too. */
export function registerSecret(label: string, value: string | Buffer): void {
  if (typeof value === 'string') {
    if (value.length >= 8) append('secrets', { label, value });
    return;
  }
  append('secrets', { label: `${label} (hex)`, value: value.toString('hex') });
  append('secrets', { label: `${label} (base64)`, value: value.toString('base64') });
}
