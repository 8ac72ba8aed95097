// Where the admin endpoint listens and the token that guards it, checked before anything
// listens: a bare PORT means 127.0.0.1:PORT, and an address reachable from other machines is
// refused without a token (metrics and volume status are not for everyone on the network, and
// the admin API deletes volumes).

import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { Errors } from '../errors.ts';

export interface AdminConfig {
  readonly host: string;
  readonly port: number;
  /** Absent: no authentication (loopback only). */
  readonly token?: string;
}

/** The shortest token accepted: a guessable one protects nothing. */
const MIN_TOKEN_LENGTH = 16;

export function parseAdminListen(text: string): { host: string; port: number } {
  const trimmed = text.trim();
  const match = /^(?:(?:\[([^\]]+)\]|([^:[\]]+)):)?(\d{1,5})$/.exec(trimmed);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw Errors.badAdminListen(text);
  return { host: match[1] ?? match[2] ?? '127.0.0.1', port };
}

/** 127.0.0.0/8, ::1 and localhost: only processes on this machine can connect. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || /^::ffff:127\./i.test(host);
}

function checkToken(token: string, source: string): string {
  if (token.length < MIN_TOKEN_LENGTH) throw Errors.badAdminToken(source, `the token is shorter than ${MIN_TOKEN_LENGTH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(token)) throw Errors.badAdminToken(source, 'the token holds spaces or control characters, which an Authorization header cannot carry');
  return token;
}

/** The token from --admin-token-file (one line; its trailing newline dropped) or S3NBD_ADMIN_TOKEN. */
export async function readAdminToken(file: string | undefined, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw Errors.badAdminToken(`--admin-token-file ${file}`, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    return checkToken(text.replace(/\r?\n$/, ''), `--admin-token-file ${file}`);
  }
  const fromEnv = env.S3NBD_ADMIN_TOKEN;
  if (fromEnv === undefined || fromEnv === '') return undefined;
  return checkToken(fromEnv, 'S3NBD_ADMIN_TOKEN');
}

/** The admin endpoint's settings, or undefined when --admin-listen was not given. */
export async function adminConfigOf(listen: string | undefined, tokenFile: string | undefined, env: NodeJS.ProcessEnv): Promise<AdminConfig | undefined> {
  if (listen === undefined || listen === '') return undefined;
  const { host, port } = parseAdminListen(listen);
  const token = await readAdminToken(tokenFile, env);
  // The environment's copy is not needed any more, and child processes should not inherit it.
  delete env.S3NBD_ADMIN_TOKEN;
  if (token === undefined && !isLoopback(host)) throw Errors.adminTokenRequired(`${host}:${port}`);
  return token === undefined ? { host, port } : { host, port, token };
}
