// The start line that says what to connect to: the NBD URI of each export on each address
// (the syntax of https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md, which
// nbdinfo, nbdcopy, qemu and nbdkit read) and the nbd-client command for the Linux kernel's
// client. A pure function of what the server bound, so it is tested without a server.

import type { AddressInfo } from 'node:net';

/** What a listener is bound to: a TCP address, or a Unix socket's path (net.Server.address()). */
export type BoundAddress = AddressInfo | string;

export interface HintTls {
  readonly mode: 'on' | 'require';
  readonly auth: 'x509' | 'psk';
  readonly verifyPeer: boolean;
}

export interface ConnectHintInput {
  readonly addresses: readonly BoundAddress[];
  readonly exportName: string;
  readonly tls?: HintTls;
  /** This machine's name (os.hostname()), said instead of a wildcard address. */
  readonly hostname: string;
}

export interface ConnectHint {
  readonly export: string;
  readonly uris: string[];
  readonly nbdClient: string[];
  /** The whole hint as one line. */
  readonly message: string;
}

const WILDCARDS = new Set(['0.0.0.0', '::', '::0', '0:0:0:0:0:0:0:0']);

export function connectHint(input: ConnectHintInput): ConnectHint {
  const tlsRequired = input.tls?.mode === 'require';
  const path = `/${encodeURIComponent(input.exportName).replace(/%2F/gi, '/').replace(/%40/g, '@').replace(/%3A/gi, ':')}`;
  const uris: string[] = [];
  const nbdClient: string[] = [];
  const name = input.exportName === '' ? [] : ['-N', shellWord(input.exportName)];
  // nbd-client speaks X.509 only; these are the files it needs (the CA that signed the
  // server's certificate, and with --tls-verify-peer a client certificate of that CA).
  const tlsArgs = input.tls?.auth === 'x509' && tlsRequired
    ? ['-cacertfile', 'ca-cert.pem', ...input.tls.verifyPeer ? ['-certfile', 'client-cert.pem', '-keyfile', 'client-key.pem'] : []]
    : [];
  for (const address of input.addresses) {
    if (typeof address === 'string') {
      uris.push(`nbd${tlsRequired ? 's' : ''}+unix://${path}?socket=${encodeURIComponent(address).replace(/%2F/gi, '/')}`);
      nbdClient.push(['nbd-client', '-unix', shellWord(address), '/dev/nbd0', ...name, ...tlsArgs].join(' '));
      continue;
    }
    const host = WILDCARDS.has(address.address) ? input.hostname : address.address;
    const uriHost = host.includes(':') ? `[${host}]` : host;
    uris.push(`nbd${tlsRequired ? 's' : ''}://${uriHost}:${address.port}${path}`);
    nbdClient.push(['nbd-client', shellWord(host), String(address.port), '/dev/nbd0', ...name, ...tlsArgs].join(' '));
  }
  const pskNote = tlsRequired && input.tls?.auth === 'psk' ? ' (nbd-client has no TLS-PSK: use nbdinfo, nbdcopy or qemu with tls-psk-file=)' : '';
  const commands = pskNote === '' ? `; or: ${nbdClient.join(' | ')}` : pskNote;
  const what = input.exportName === '' ? 'the default export' : `export ${JSON.stringify(input.exportName)}`;
  return { export: input.exportName, uris, nbdClient: pskNote === '' ? nbdClient : [], message: `connect to ${what}: ${uris.join(' or ')}${commands}` };
}

/** A word as a POSIX shell reads it: bare when it is safe, else single-quoted. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
