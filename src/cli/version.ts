// `s3nbd --version`: the package version and the commit it was built from. The build writes the
// commit into dist/build-info.json (scripts/build-info.mjs, from `git rev-parse`, or from
// S3NBD_COMMIT where there is no .git, as in the container build); "unknown" when neither was
// there, or when running the sources directly.

import { readFileSync } from 'node:fs';

function readJson(url: URL): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(url, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export function versionText(): string {
  // From dist/cli/main.js (or src/cli/main.ts): ../../package.json, ../build-info.json.
  const version = readJson(new URL('../../package.json', import.meta.url))?.version;
  const commit = readJson(new URL('../build-info.json', import.meta.url))?.commit;
  return `s3nbd ${typeof version === 'string' ? version : 'unknown'} (commit ${typeof commit === 'string' && commit !== '' ? commit : 'unknown'})`;
}
