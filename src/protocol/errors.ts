// Two families of failure, as in ZeroFS: a ProtocolError means the peer broke the protocol
// and the session must end; any other error thrown by a BlockDevice becomes an errno reply
// to that one request and the session goes on.

import { NbdErrno, type NbdErrnoName } from './constants.ts';

/** The client broke the protocol (bad magic, impossible length): end the session. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/** A request that cannot be served; carries the errno the client receives. */
export class CommandError extends Error {
  override readonly name = 'CommandError';
  readonly errno: NbdErrnoName;
  constructor(errno: NbdErrnoName, message: string) {
    super(message);
    this.errno = errno;
  }
}

/**
 * The single errno mapping of the server. Storage layers throw errors whose `errno` (or `code`)
 * is a POSIX name such as 'ENOSPC'; anything unknown is reported as EIO.
 */
export function nbdErrnoOf(err: unknown): number {
  if (typeof err === 'object' && err !== null) {
    for (const field of ['errno', 'code'] as const) {
      const name = (err as Record<string, unknown>)[field];
      if (typeof name === 'string' && Object.hasOwn(NbdErrno, name)) {
        return NbdErrno[name as NbdErrnoName];
      }
    }
  }
  return NbdErrno.EIO;
}
