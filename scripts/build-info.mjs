// Run by `npm run build` after tsc: writes dist/build-info.json with the commit being built, for
// `s3nbd --version`. The commit comes from S3NBD_COMMIT if set (the container build, whose
// context has no .git, passes it as a build argument), else from git, else "unknown".
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let commit = process.env.S3NBD_COMMIT || '';
if (commit === '') {
  try {
    commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    commit = 'unknown';
  }
}
mkdirSync(join(root, 'dist'), { recursive: true });
writeFileSync(join(root, 'dist/build-info.json'), `${JSON.stringify({ commit, builtAt: new Date().toISOString() })}\n`);
