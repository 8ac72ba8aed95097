// The status page's files (src/service/status-page/, copied to dist/service/status-page/ by
// scripts/copy-assets.mjs), served by the admin endpoint at / (index.html) and /NAME: only
// plain file names directly in that folder (no slash, no "..", no dot files), so no request
// reaches any other file. They hold no data (the page fetches api/status with the token), so
// they are served without the token, which the page asks for.

import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerResponse } from 'node:http';

/** Beside this module, in src/ and in dist/ alike. */
export const STATUS_PAGE_DIR = fileURLToPath(new URL('./status-page/', import.meta.url));

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** A file name the folder may hold: letters, digits, dots, dashes and underscores, a known extension. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$/;

function typeOf(name: string): string | undefined {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? undefined : TYPES[name.slice(dot).toLowerCase()];
}

/** Sends the file `name` of `dir`; false (nothing sent) when there is no such file to serve. */
export async function sendStatic(res: ServerResponse, dir: string, name: string): Promise<boolean> {
  const type = typeOf(name);
  if (!SAFE_NAME.test(name) || type === undefined) return false;
  const path = join(dir, name);
  try {
    if (!(await stat(path)).isFile()) return false;
    const data = await readFile(path);
    res.writeHead(200, {
      'content-type': type, 'content-length': data.length, 'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    });
    res.end(data);
    return true;
  } catch {
    return false;
  }
}
