// TLS on the NBD connection with real clients: libnbd's nbdinfo, nbdsh and nbdcopy over nbds://
// and nbds+unix://, and qemu-io/qemu-img with tls-creds-x509 and tls-creds-psk, against the
// built gateway, with X.509 certificates and a psktool key file made at test time. Also: --tls
// require refuses a plain client with NBD_REP_ERR_TLS_REQD (and logs it), a client certificate
// from another CA is refused under --tls-verify-peer, failures are logged with the reason and
// the gateway keeps serving, no key material reaches the log, and bad TLS settings are one-line
// errors. The X.509 gateway is configured through S3NBD_* variables only, as the container is.

import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { makeCredentials, type TestCredentials } from '../helpers/tls-certs.ts';
import { freePort, requireTool, run, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1 << 20;

/**
 * nbdsh: a write with FUA and a read back through the URI; prints whether TLS was negotiated.
 * nbdsh -u would refuse the URI's file names: libnbd allows them only when asked.
 */
function nbdsh(uri: string): Promise<string> {
  return runOk('nbdsh', ['-c', 'h.set_uri_allow_local_file(True)', '-c', `h.connect_uri(${JSON.stringify(uri)})`, '-c', String.raw`
h.pwrite(b'\x5a' * 65536, 3 * 1048576 + 100, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 3 * 1048576 + 100) == b'\x5a' * 65536
print('tls', h.get_tls_negotiated(), 'size', h.get_size(), flush=True)
h.shutdown()
`]);
}

/** Resolves once the gateway's log matches (a refused client hears of the close before the line is written). */
async function logged(gw: Gateway, pattern: RegExp): Promise<string> {
  for (let i = 0; i < 500 && !pattern.test(gw.logs()); i++) await new Promise((r) => setTimeout(r, 10));
  const line = gw.logs().split('\n').find((l) => pattern.test(l));
  assert.ok(line, `no log line ${pattern} in:\n${gw.logs()}`);
  return line;
}

/** Key material must never be logged: neither PEM private keys nor the PSK's hex key. */
function assertNoSecrets(gw: Gateway, creds: TestCredentials): void {
  const psk = readFileSync(creds.pskFile, 'utf8').trim().split(':')[1]!;
  assert.doesNotMatch(gw.logs(), /PRIVATE KEY/);
  assert.ok(!gw.logs().includes(psk), 'the pre-shared key is not logged');
}

describe('TLS with real clients', () => {
  const dir = tempDir('tls');
  let creds: TestCredentials;
  let image: string;

  before(async () => {
    for (const tool of ['nbdinfo', 'nbdcopy', 'nbdsh', 'qemu-io', 'qemu-img'] as const) requireTool(tool);
    creds = await makeCredentials(dir.path);
    image = join(dir.path, 'in.img');
    const data = Buffer.alloc(24 * MiB);
    randomFillSync(data);
    data.fill(0, 8 * MiB, 12 * MiB);
    writeFileSync(image, data);
  });
  after(() => dir.remove());

  /** nbdcopy in, then out again, through the URI: the same bytes. */
  async function roundTrip(uri: string, name: string): Promise<void> {
    await runOk('nbdcopy', ['--flush', image, uri], { timeoutMs: 300_000 });
    const out = join(dir.path, `${name}.out`);
    await runOk('nbdcopy', [uri, out], { timeoutMs: 300_000 });
    const want = readFileSync(image);
    // The device is larger than the image: compare what was written.
    assert.ok(readFileSync(out).subarray(0, want.length).equals(want), 'nbdcopy read back what it wrote');
  }

  describe('X.509 certificates, --tls require --tls-verify-peer (from S3NBD_* variables)', () => {
    let gw: Gateway;
    let port: number;
    const uri = (clientDir: string): string => `nbds+unix:///?socket=${gw.socket}&tls-certificates=${clientDir}`;

    before(async () => {
      port = await freePort();
      gw = await startGateway([], {
        socket: join(dir.path, 'x509.sock'),
        env: {
          S3NBD_STORE: join(dir.path, 'x509-store'), S3NBD_SIZE: '64M', S3NBD_LISTEN: `127.0.0.1:${port}`,
          S3NBD_TLS: 'require', S3NBD_TLS_CERTIFICATES: creds.serverDir, S3NBD_TLS_VERIFY_PEER: '1',
        },
      });
      assert.match(gw.logs(), /"tls":\{"mode":"require","auth":"x509","verifyPeer":true\}/);
    });
    after(async () => {
      assertNoSecrets(gw, creds);
      assert.equal(await gw.stop(), 0, gw.logs());
    });

    it('nbdinfo over nbds+unix:// and nbds:// (TCP) negotiates TLS', async () => {
      assert.match(await runOk('nbdinfo', [uri(creds.clientDir)]), /protocol: newstyle-fixed with TLS, using structured packets/);
      const tcp = JSON.parse(await runOk('nbdinfo', ['--json', `nbds://localhost:${port}/?tls-certificates=${creds.clientDir}`])) as Record<string, unknown>;
      assert.equal(tcp.TLS, true);
      assert.equal((tcp.exports as Array<Record<string, unknown>>)[0]!['export-size'], 64 * MiB);
    });

    it('nbdsh writes and reads back over TLS', async () => {
      assert.match(await nbdsh(uri(creds.clientDir)), /^tls True size 67108864$/m);
    });

    it('nbdcopy copies in and out over TLS (TCP, four connections)', async () => {
      await roundTrip(`nbds://localhost:${port}/?tls-certificates=${creds.clientDir}`, 'x509');
    });

    it('qemu-io and qemu-img connect with --object tls-creds-x509', async () => {
      const object = `tls-creds-x509,id=tls0,endpoint=client,dir=${creds.clientDir}`;
      const io = await run('qemu-io', ['--object', object, '--image-opts', `driver=nbd,path=${gw.socket},tls-creds=tls0,tls-hostname=localhost`,
        '-c', 'write -P 0xc4 40M 1M', '-c', 'read -P 0xc4 40M 1M']);
      assert.equal(io.code, 0, io.stdout + io.stderr);
      const info = await runOk('qemu-img', ['info', '--object', object, '--image-opts', `driver=nbd,host=localhost,port=${port},tls-creds=tls0`]);
      assert.match(info, /virtual size: 64 MiB \(67108864 bytes\)/);
    });

    it('refuses a plain client with NBD_REP_ERR_TLS_REQD, logs it, and shows it nothing of the export', async () => {
      const plain = await run('nbdinfo', ['--list', `nbd+unix:///?socket=${gw.socket}`]);
      assert.notEqual(plain.code, 0, plain.stdout);
      assert.doesNotMatch(plain.stdout + plain.stderr, /s3nbd volume/);
      assert.match(await logged(gw, /did not start TLS/), /NBD_REP_ERR_TLS_REQD/);
    });

    it('refuses a client certificate from another CA, logs why, and serves the next client', async () => {
      const other = await run('nbdinfo', [uri(creds.otherCaClientDir)]);
      assert.notEqual(other.code, 0, other.stdout);
      // The warning, with the peer and the reason.
      await logged(gw, /"remote":"unix","reason":"client certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE","msg":"TLS handshake failed: connection closed"/);
      assert.match(await runOk('nbdinfo', [uri(creds.clientDir)]), /with TLS/);
    });
  });

  describe('pre-shared keys, --tls require --tls-psk (psktool)', () => {
    let gw: Gateway;
    const uri = (user: string, file: string): string => `nbds+unix://${user}@/?socket=${gw.socket}&tls-psk-file=${file}`;

    before(async () => {
      gw = await startGateway(['--store', join(dir.path, 'psk-store'), '--size', '64M', '--tls', 'require', '--tls-psk', creds.pskFile],
        { socket: join(dir.path, 'psk.sock') });
    });
    after(async () => {
      assertNoSecrets(gw, creds);
      assert.equal(await gw.stop(), 0, gw.logs());
    });

    it('nbdinfo, nbdsh and nbdcopy connect with tls-psk-file and the username', async () => {
      assert.match(await runOk('nbdinfo', [uri(creds.pskUser, creds.pskFile)]), /with TLS/);
      assert.match(await nbdsh(uri(creds.pskUser, creds.pskFile)), /^tls True/m);
      await roundTrip(uri(creds.pskUser, creds.pskFile), 'psk');
    });

    it('qemu-io and qemu-img connect with --object tls-creds-psk', async () => {
      const object = `tls-creds-psk,id=tls0,endpoint=client,dir=${creds.pskDir},username=${creds.pskUser}`;
      const io = await run('qemu-io', ['--object', object, '--image-opts', `driver=nbd,path=${gw.socket},tls-creds=tls0`,
        '-c', 'write -P 0x3e 50M 1M', '-c', 'read -P 0x3e 50M 1M']);
      assert.equal(io.code, 0, io.stdout + io.stderr);
      assert.match(await runOk('qemu-img', ['info', '--object', object, '--image-opts', `driver=nbd,path=${gw.socket},tls-creds=tls0`]), /virtual size: 64 MiB/);
    });

    it('refuses an unknown username and a wrong key, logs why, and serves the next client', async () => {
      // libnbd looks the user up in its own file first: give it one with "nobody" in it.
      const nobody = join(dir.path, 'nobody.psk');
      writeFileSync(nobody, readFileSync(creds.pskFile, 'utf8').replace(/^[^:]+:/, 'nobody:'));
      const unknown = await run('nbdinfo', [uri('nobody', nobody)]);
      assert.notEqual(unknown.code, 0);
      await logged(gw, /"reason":"unknown PSK username \\"nobody\\"","msg":"TLS handshake failed: connection closed"/);
      const wrong = await run('nbdinfo', [uri(creds.pskUser, creds.wrongPskFile)]);
      assert.notEqual(wrong.code, 0);
      // Within the warning's interval it is counted there; at debug level each one has its line.
      assert.match(await logged(gw, /"reason":"wrong pre-shared key/), /"msg":"TLS handshake failed"/);
      assert.match(await runOk('nbdinfo', [uri(creds.pskUser, creds.pskFile)]), /with TLS/);
    });
  });

  it('--tls on serves clients with and without TLS', async () => {
    const gw = await startGateway(['--store', join(dir.path, 'on-store'), '--size', '16M', '--tls', 'on', '--tls-certificates', creds.serverDir],
      { socket: join(dir.path, 'on.sock') });
    assert.match(await runOk('nbdinfo', [gw.uri]), /without TLS/);
    assert.match(await runOk('nbdinfo', [`nbds+unix:///?socket=${gw.socket}&tls-certificates=${creds.noCertClientDir}`]), /with TLS/);
    assert.equal(await gw.stop(), 0, gw.logs());
  });

  it('bad TLS settings are one-line errors with the fix, before anything listens', async () => {
    const store = ['serve', '--store', join(dir.path, 'never'), '--size', '16M', '--socket', join(dir.path, 'never.sock')];
    assertUserError(await cli([...store, '--tls', 'require']), 'S3NBD_TLS_NO_CREDENTIALS', /--tls-certificates/);
    assertUserError(await cli(store, { S3NBD_TLS_CERTIFICATES: creds.serverDir }), 'S3NBD_TLS_NOT_ENABLED', /--tls require/);
    assertUserError(await cli(store, { S3NBD_TLS: 'require', S3NBD_TLS_CERTIFICATES: join(dir.path, 'nowhere') }), 'S3NBD_TLS_FILE', /server-cert\.pem/);
    assertUserError(await cli([...store, '--tls', 'require', '--tls-certificates', creds.clientDir]), 'S3NBD_TLS_FILE', /server-cert\.pem/);
    const key = readFileSync(creds.pskFile, 'utf8').trim();
    const badPsk = join(dir.path, 'bad.psk');
    writeFileSync(badPsk, `${key}\n${key.replace(':', ' ')}\n`);
    const r = await cli([...store, '--tls', 'require', '--tls-psk', badPsk]);
    assertUserError(r, 'S3NBD_TLS_BAD_PSK', /line 2/);
    assert.ok(!r.stderr.includes(key.split(':')[1]!), 'the key is never printed');
    assertUserError(await cli([...store, '--tls', 'yes']), 'S3NBD_BAD_CHOICE', /off, on, require/);
    assert.ok(!existsSync(join(dir.path, 'never.sock')) && !existsSync(join(dir.path, 'never')), 'nothing listened, no volume was made');
  });
});
