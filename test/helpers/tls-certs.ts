// TLS credentials made at test time with GnuTLS's certtool and psktool (as nbdkit-tls(1)
// tells users to make them): a CA, a server certificate for localhost, 127.0.0.1 and the
// address the VM reaches the gateway at, a client certificate, and a second CA with a client
// certificate of its own, for the "another CA" refusal. The directories are laid out as each
// client expects them.

import { registerSecret } from './log-sweep.ts';
import { readFileSync } from 'node:fs';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, runOk } from './tools.ts';

export interface TestCredentials {
  /** --tls-certificates DIR: ca-cert.pem, server-cert.pem, server-key.pem. */
  readonly serverDir: string;
  /** libnbd's tls-certificates and qemu's tls-creds-x509 dir: ca-cert.pem, client-cert.pem, client-key.pem. */
  readonly clientDir: string;
  /** The same layout with a client certificate from another CA (the server's CA is trusted). */
  readonly otherCaClientDir: string;
  /** Only ca-cert.pem: a client that trusts the server but has no certificate of its own. */
  readonly noCertClientDir: string;
  /** --tls-psk FILE, written by psktool; qemu's tls-creds-psk dir holds it as keys.psk. */
  readonly pskFile: string;
  readonly pskDir: string;
  readonly pskUser: string;
  /** A PSK file with the same user name and another key. */
  readonly wrongPskFile: string;
}

/** Address the VM tests' guest connects to (QEMU's guestfwd). */
export const VM_GATEWAY_ADDRESS = '10.0.2.100';

const CA_TEMPLATE = 'cn = s3nbd test CA\nca\ncert_signing_key\nexpiration_days = 30\n';
const SERVER_TEMPLATE = `organization = s3nbd tests\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\nip_address = ${VM_GATEWAY_ADDRESS}\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n`;
const CLIENT_TEMPLATE = 'cn = client.s3nbd.test\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 30\n';

async function certtool(...args: string[]): Promise<void> {
  await runOk('certtool', args, { timeoutMs: 60_000 });
}

export async function makeCredentials(root: string): Promise<TestCredentials> {
  requireTool('certtool');
  requireTool('psktool');
  const work = join(root, 'pki');
  const dirs = {
    serverDir: join(root, 'server'), clientDir: join(root, 'client'), otherCaClientDir: join(root, 'other-ca-client'),
    noCertClientDir: join(root, 'no-cert-client'), pskDir: join(root, 'psk'),
  };
  for (const dir of [work, ...Object.values(dirs)]) mkdirSync(dir, { recursive: true });
  const file = (name: string): string => join(work, name);
  for (const [name, text] of [['ca.info', CA_TEMPLATE], ['server.info', SERVER_TEMPLATE], ['client.info', CLIENT_TEMPLATE]]) {
    writeFileSync(file(name!), text!);
  }
  const ca = async (name: string): Promise<void> => {
    await certtool('--generate-privkey', '--outfile', file(`${name}-key.pem`));
    await certtool('--generate-self-signed', '--load-privkey', file(`${name}-key.pem`), '--template', file('ca.info'), '--outfile', file(`${name}-cert.pem`));
  };
  const issue = async (caName: string, template: string, keyOut: string, certOut: string): Promise<void> => {
    await certtool('--generate-privkey', '--outfile', keyOut);
    await certtool('--generate-certificate', '--load-ca-certificate', file(`${caName}-cert.pem`), '--load-ca-privkey', file(`${caName}-key.pem`),
      '--load-privkey', keyOut, '--template', file(template), '--outfile', certOut);
  };
  await ca('ca');
  await ca('other-ca');
  await issue('ca', 'server.info', join(dirs.serverDir, 'server-key.pem'), join(dirs.serverDir, 'server-cert.pem'));
  await issue('ca', 'client.info', join(dirs.clientDir, 'client-key.pem'), join(dirs.clientDir, 'client-cert.pem'));
  await issue('other-ca', 'client.info', join(dirs.otherCaClientDir, 'client-key.pem'), join(dirs.otherCaClientDir, 'client-cert.pem'));
  for (const dir of [dirs.serverDir, dirs.clientDir, dirs.otherCaClientDir, dirs.noCertClientDir]) {
    copyFileSync(file('ca-cert.pem'), join(dir, 'ca-cert.pem'));
  }

  const pskUser = 'backup';
  const pskFile = join(dirs.pskDir, 'keys.psk');
  await runOk('psktool', ['-u', pskUser, '-p', pskFile], { timeoutMs: 60_000 });
  const wrongPskFile = join(root, 'wrong.psk');
  await runOk('psktool', ['-u', pskUser, '-p', wrongPskFile], { timeoutMs: 60_000 });
  // For the suite's secret sweep (log-sweep.ts): no log may show a private key or a PSK.
  for (const [label, path] of [['TLS server key', join(dirs.serverDir, 'server-key.pem')], ['TLS client key', join(dirs.clientDir, 'client-key.pem')]]) {
    for (const line of readFileSync(path!, 'utf8').split('\n').filter((l) => /^[A-Za-z0-9+/=]{40,}$/.test(l))) registerSecret(label!, line);
  }
  for (const line of readFileSync(pskFile, 'utf8').split('\n').filter(Boolean)) registerSecret('TLS pre-shared key', line.slice(line.indexOf(':') + 1));
  return { ...dirs, pskFile, pskUser, wrongPskFile };
}
