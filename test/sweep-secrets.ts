// Run by scripts/test.sh after the whole suite: no output any test kept (test/helpers/log-sweep.ts)
// holds any secret any test registered. Exits 1 naming the output and the secret's label.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Secret { label: string; value: string }
interface Output { what: string; text: string }

export function sweep(dir: string): { outputs: number; secrets: number; leaks: string[] } {
  const read = <T>(prefix: string): T[] => readdirSync(dir).filter((f) => f.startsWith(prefix))
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T));
  const secrets = read<Secret>('secrets-');
  const outputs = read<Output>('output-');
  const leaks: string[] = [];
  for (const o of outputs) {
    for (const s of secrets) if (o.text.includes(s.value)) leaks.push(`${o.what}: holds ${s.label}`);
  }
  return { outputs: outputs.length, secrets: new Set(secrets.map((s) => s.value)).size, leaks: [...new Set(leaks)] };
}

if (import.meta.main) {
  const dir = process.argv[2] ?? process.env.S3NBD_TEST_LOG_DIR;
  if (!dir) {
    process.stderr.write('usage: node test/sweep-secrets.ts DIR\n');
    process.exit(2);
  }
  const { outputs, secrets, leaks } = sweep(dir);
  if (outputs === 0 || secrets === 0) {
    process.stderr.write(`secret sweep: nothing to check (${outputs} outputs, ${secrets} secrets kept in ${dir}): the suite did not record them\n`);
    process.exit(1);
  }
  if (leaks.length > 0) {
    process.stderr.write(`secret sweep: ${leaks.length} leaks in the suite's output:\n${leaks.map((l) => `  ${l}`).join('\n')}\n`);
    process.exit(1);
  }
  process.stdout.write(`secret sweep: ${outputs} outputs of the suite hold none of its ${secrets} secrets\n`);
}
