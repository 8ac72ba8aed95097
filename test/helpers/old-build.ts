// Another build of s3nbd, from a commit of this repository, built once into the cache
// (bench/lib.sh's base_setup: git archive, this checkout's node_modules, tsc), for tests that
// run an older release beside this one.

import { execFileSync } from 'node:child_process';
import { REPO } from './gateway.ts';

/** The commit that wrote volumes of format 1, the last before immutable generations. */
export const FORMAT_1_BUILD = 'ce574f5';

/** Builds `rev` (once; cached) and returns its dist/cli/main.js. */
export function oldBuild(rev: string): string {
  const script = 'log() { echo "$@" >&2; }; source bench/lib.sh; base_setup "$PWD" && echo "$BASE_MAIN"';
  const out = execFileSync('bash', ['-c', script], { cwd: REPO, env: { ...process.env, BENCH_BASE: rev }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const main = out.trim().split('\n').pop();
  if (!main) throw new Error(`building ${rev} printed no path`);
  return main;
}
