// systemd socket activation (sd_listen_fds(3)), as nbdkit supports it: systemd (or
// systemd-socket-activate) listens, starts the service on the first connection, and hands it
// the listening sockets as file descriptors 3, 4, ..., named in LISTEN_FDS and addressed to
// one process by LISTEN_PID. The connection that started the service waits in the socket's
// backlog until the gateway accepts it.

import { readFileSync, readlinkSync } from 'node:fs';
import type { Endpoint } from '../protocol/server.ts';
import { Errors } from '../errors.ts';

/** The first inherited descriptor (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

/**
 * The sockets systemd passed to this process, or [] when it passed none. The LISTEN_*
 * variables are removed either way (as sd_listen_fds(1) does), so that no child process
 * takes them as its own.
 */
export function activatedSockets(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): Array<{ fd: number; socketPath: string | undefined }> {
  const { LISTEN_PID: forPid, LISTEN_FDS: count } = env;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (forPid === undefined || Number(forPid) !== pid) return [];
  const n = Number(count);
  if (count === undefined || !/^\d+$/.test(count) || n < 1 || n > 1024) {
    throw Errors.socketActivation(`LISTEN_FDS="${count ?? ''}" is not a number of sockets`, 'start s3nbd from a .socket unit with ListenStream= lines (see docs/systemd.md)');
  }
  return Array.from({ length: n }, (_, i) => ({ fd: LISTEN_FDS_START + i, socketPath: unixSocketPath(LISTEN_FDS_START + i) }));
}

/**
 * The path of the Unix socket on `fd`, which Node cannot tell for an inherited one (its
 * address() is null): the socket's inode, looked up in /proc/net/unix. Undefined for a TCP
 * socket, or where /proc does not say.
 */
export function unixSocketPath(fd: number): string | undefined {
  try {
    const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
    if (inode === undefined) return undefined;
    // Num RefCount Protocol Flags Type St Inode Path
    for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
      const columns = line.trim().split(/\s+/);
      if (columns[6] === inode && columns[7] !== undefined) return columns[7];
    }
  } catch {
    // No /proc, or the descriptor is not open: the caller says "inherited socket N".
  }
  return undefined;
}

/** Where serve listens: the activated sockets, refused together with --listen or --socket. */
export function activatedEndpoints(explicit: readonly string[], env?: NodeJS.ProcessEnv, pid?: number): Endpoint[] {
  const sockets = activatedSockets(env, pid);
  if (sockets.length > 0 && explicit.length > 0) {
    throw Errors.socketActivation(`it passed ${sockets.length} listening socket${sockets.length === 1 ? '' : 's'}, and ${explicit.join(' and ')} asks for another`,
      `drop ${explicit.join(' and ')} from the service (the .socket unit's ListenStream= says where to listen)`);
  }
  return sockets;
}
