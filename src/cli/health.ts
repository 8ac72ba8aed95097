// `s3nbd health`: asks a running gateway's admin endpoint whether it is alive (/healthz) or,
// with --ready, ready (/readyz), and exits 0 or 1: the container image's HEALTHCHECK, which
// must not need curl. The address defaults to S3NBD_ADMIN_LISTEN, the gateway's own setting
// (an all-interfaces address is asked on loopback), so in the image it needs no option.

import { request } from 'node:http';
import { Errors } from '../errors.ts';
import { parseAdminListen, readAdminToken } from '../service/admin-config.ts';

interface HealthOptions {
  admin?: string;
  adminTokenFile?: string;
  ready?: boolean;
  timeout: number;
}

/** The endpoint's base URL: --admin URL or HOST:PORT, else S3NBD_ADMIN_LISTEN. */
export function adminUrlOf(given: string | undefined, env: NodeJS.ProcessEnv): URL {
  const text = given ?? env.S3NBD_ADMIN_LISTEN;
  if (text === undefined || text === '') throw Errors.noAdminAddress();
  if (/^https?:\/\//i.test(text)) {
    if (!URL.canParse(text)) throw Errors.badAdminListen(text);
    return new URL(text);
  }
  const { host, port } = parseAdminListen(text);
  const asked = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return new URL(`http://${asked.includes(':') ? `[${asked}]` : asked}:${port}/`);
}

function get(url: URL, token: string | undefined, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { if (body.length < 65536) body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Why /readyz said no, in one line: each unready volume with its reason. */
function reasons(body: string): string {
  try {
    const report = JSON.parse(body) as { volumes?: Array<{ name: string; ready: boolean; reason?: string }> };
    return (report.volumes ?? []).filter((v) => !v.ready).map((v) => `${v.name}: ${v.reason ?? 'not ready'}`).join('; ');
  } catch {
    return body.slice(0, 200);
  }
}

export async function runHealth(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as HealthOptions;
  const base = adminUrlOf(opts.admin, process.env);
  const url = new URL(opts.ready ? 'readyz' : 'healthz', base);
  const token = opts.ready ? await readAdminToken(opts.adminTokenFile, process.env) : undefined;
  const what = opts.ready ? 'ready' : 'alive';
  try {
    const { status, body } = await get(url, token, opts.timeout * 1000);
    if (status === 200) {
      process.stdout.write(`s3nbd health: ${what} (${url.href})\n`);
      return;
    }
    const why = status === 503 ? reasons(body) : status === 401 ? 'the admin token is missing or wrong (--admin-token-file, S3NBD_ADMIN_TOKEN)' : `HTTP ${status}`;
    process.stderr.write(`s3nbd health: not ${what} (${url.href}): ${why}\n`);
  } catch (err) {
    process.stderr.write(`s3nbd health: not ${what} (${url.href}): ${(err as Error).message}\n`);
  }
  process.exitCode = 1;
}
