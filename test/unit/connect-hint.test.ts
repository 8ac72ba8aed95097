// The start line that says what to connect to (src/cli/connect-hint.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectHint } from '../../src/cli/connect-hint.ts';

const tcp = (address: string, port: number) => ({ address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' });

describe('connectHint', () => {
  it('names the address and the export, as an NBD URI and an nbd-client command', () => {
    const hint = connectHint({ addresses: [tcp('127.0.0.1', 10809)], exportName: 'disk', hostname: 'gw1' });
    assert.deepEqual(hint.uris, ['nbd://127.0.0.1:10809/disk']);
    assert.deepEqual(hint.nbdClient, ['nbd-client 127.0.0.1 10809 /dev/nbd0 -N disk']);
    assert.equal(hint.message, 'connect to export "disk": nbd://127.0.0.1:10809/disk; or: nbd-client 127.0.0.1 10809 /dev/nbd0 -N disk');
  });

  it('says the host name instead of a wildcard address, and brackets IPv6 in URIs only', () => {
    const hint = connectHint({ addresses: [tcp('0.0.0.0', 10809), tcp('::', 10810), tcp('::1', 10811)], exportName: 'disk', hostname: 'backup-gw' });
    assert.deepEqual(hint.uris, ['nbd://backup-gw:10809/disk', 'nbd://backup-gw:10810/disk', 'nbd://[::1]:10811/disk']);
    assert.deepEqual(hint.nbdClient.map((c) => c.split(' ').slice(1, 3).join(' ')), ['backup-gw 10809', 'backup-gw 10810', '::1 10811']);
  });

  it('gives nbd+unix URIs and nbd-client -unix for a Unix socket; the default export needs no -N', () => {
    const hint = connectHint({ addresses: ['/run/s3nbd/nbd.sock'], exportName: '', hostname: 'h' });
    assert.deepEqual(hint.uris, ['nbd+unix:///?socket=/run/s3nbd/nbd.sock']);
    assert.deepEqual(hint.nbdClient, ['nbd-client -unix /run/s3nbd/nbd.sock /dev/nbd0']);
    assert.match(hint.message, /^connect to the default export: nbd\+unix:/);
  });

  it('escapes the export name in the URI and quotes it for the shell', () => {
    const hint = connectHint({ addresses: [tcp('10.0.0.5', 10809)], exportName: "my disk's@snap", hostname: 'h' });
    assert.deepEqual(hint.uris, ['nbd://10.0.0.5:10809/my%20disk\'s@snap']);
    assert.equal(hint.nbdClient[0], `nbd-client 10.0.0.5 10809 /dev/nbd0 -N 'my disk'\\''s@snap'`);
  });

  it('with TLS required: nbds:// and the certificate options nbd-client needs', () => {
    const x509 = connectHint({ addresses: [tcp('10.0.0.5', 10809), '/s.sock'], exportName: 'd', hostname: 'h', tls: { mode: 'require', auth: 'x509', verifyPeer: false } });
    assert.deepEqual(x509.uris, ['nbds://10.0.0.5:10809/d', 'nbds+unix:///d?socket=/s.sock']);
    assert.equal(x509.nbdClient[0], 'nbd-client 10.0.0.5 10809 /dev/nbd0 -N d -cacertfile ca-cert.pem');
    const peer = connectHint({ addresses: [tcp('10.0.0.5', 10809)], exportName: 'd', hostname: 'h', tls: { mode: 'require', auth: 'x509', verifyPeer: true } });
    assert.equal(peer.nbdClient[0], 'nbd-client 10.0.0.5 10809 /dev/nbd0 -N d -cacertfile ca-cert.pem -certfile client-cert.pem -keyfile client-key.pem');
  });

  it('with TLS optional, plain URIs; with a pre-shared key, no nbd-client command (it has no TLS-PSK)', () => {
    const on = connectHint({ addresses: [tcp('10.0.0.5', 10809)], exportName: 'd', hostname: 'h', tls: { mode: 'on', auth: 'x509', verifyPeer: false } });
    assert.deepEqual(on.uris, ['nbd://10.0.0.5:10809/d']);
    assert.equal(on.nbdClient[0], 'nbd-client 10.0.0.5 10809 /dev/nbd0 -N d');
    const psk = connectHint({ addresses: [tcp('10.0.0.5', 10809)], exportName: 'd', hostname: 'h', tls: { mode: 'require', auth: 'psk', verifyPeer: false } });
    assert.deepEqual(psk.nbdClient, []);
    assert.match(psk.message, /nbds:\/\/10\.0\.0\.5:10809\/d \(nbd-client has no TLS-PSK/);
  });
});
