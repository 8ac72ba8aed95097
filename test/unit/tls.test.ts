// TLS on the NBD connection (NBD_OPT_STARTTLS), at the protocol level: a raw client in this
// process drives the server over a Unix socket, in plain text and then through Node's TLS
// client, with certificates and pre-shared keys made by certtool and psktool. What the spec
// demands (FORCEDTLS refuses every option but STARTTLS and ABORT, the haggling starts again
// after the upgrade, a second STARTTLS is invalid), what a failed handshake does (one log line
// with the peer and the reason, the connection closed, the next client served), and what
// loadTls refuses at start-up. Real clients are in test/e2e/tls.test.ts.

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { Cmd, Opt, Rep } from '../../src/protocol/constants.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import { loadTls, parsePskFile, type TlsOptions, type TlsSettings } from '../../src/protocol/tls.ts';
import { openStorage, type Storage } from '../../src/storage/stack.ts';
import { RawClient } from '../helpers/raw-client.ts';
import { makeCredentials, type TestCredentials } from '../helpers/tls-certs.ts';

type LogLine = Record<string, unknown> & { level: number; msg: string };
const WARN = 40;

describe('TLS on the NBD connection', () => {
  const dir = mkdtempSync(join(tmpdir(), 's3nbd-tls-'));
  let creds: TestCredentials;
  let storage: Storage;
  let exp: Export;
  const servers: NbdServer[] = [];
  let sockets = 0;

  before(async () => {
    creds = await makeCredentials(dir);
    storage = await openStorage({ log: pino({ level: 'silent' }), store: 'memory:', volume: { mode: 'open-or-create', size: 16 << 20, extentSize: 1 << 16 }, readOnly: false, memoryCacheBytes: 1 << 20 });
    exp = { name: 'disk', description: 'the secret disk', device: storage.device };
  });
  after(async () => {
    for (const server of servers) await server.shutdown(1000);
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const x509 = (mode: 'on' | 'require', verifyPeer = false): Promise<TlsSettings | undefined> =>
    loadTls({ mode, modeGiven: true, certificates: creds.serverDir, verifyPeer });

  /** A server of its own (so its log throttles start afresh) on a new Unix socket, and what it logs. */
  async function serve(settings: TlsSettings | undefined, handshakeTimeoutMs?: number): Promise<{ path: string; logs: LogLine[] }> {
    const logs: LogLine[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => logs.push(JSON.parse(line) as LogLine) });
    const server = new NbdServer({
      exports: { find: (n) => (n === '' || n === 'disk' ? exp : undefined), list: () => [exp] },
      log, ...(settings ? { tls: settings } : {}), ...(handshakeTimeoutMs ? { handshakeTimeoutMs } : {}),
    });
    servers.push(server);
    const path = join(dir, `nbd-${sockets++}.sock`);
    await server.listen({ path });
    return { path, logs };
  }

  const clientX509 = (clientDir?: string): tls.ConnectionOptions => ({
    ca: readFileSync(join(creds.serverDir, 'ca-cert.pem')), servername: 'localhost',
    ...(clientDir ? { cert: readFileSync(join(clientDir, 'client-cert.pem')), key: readFileSync(join(clientDir, 'client-key.pem')) } : {}),
  });
  const clientPsk = (identity: string, keyFile: string): tls.ConnectionOptions => ({
    // Node's TLS client does PSK over TLS 1.2 only; GnuTLS clients (e2e) may use TLS 1.3.
    maxVersion: 'TLSv1.2', ciphers: 'ECDHE-PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384',
    pskCallback: () => ({ identity, psk: parsePskFile(keyFile, readFileSync(keyFile)).values().next().value! }),
    checkServerIdentity: () => undefined,
  });

  /** GO, then a write and a read of 4 KiB: the session works through whatever socket the client has now. */
  async function goAndUse(c: RawClient): Promise<void> {
    await c.go();
    const data = Buffer.alloc(4096, 0x5a);
    c.request(Cmd.WRITE, 8192, data.length, 0, 1, data);
    assert.deepEqual(await c.simpleReply(), { errno: 0, handle: 1 });
    c.request(Cmd.READ, 8192, data.length, 0, 2);
    assert.deepEqual(await c.simpleReply(), { errno: 0, handle: 2 });
    assert.ok((await c.reader.read(data.length)).equals(data));
  }

  const warnings = (logs: LogLine[], msg: RegExp): LogLine[] => logs.filter((l) => l.level === WARN && msg.test(l.msg));

  /** Resolves once the server logged a matching warning (the close reaches the client first). */
  async function warned(logs: LogLine[], msg: RegExp): Promise<LogLine> {
    for (let i = 0; i < 500 && warnings(logs, msg).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const [line] = warnings(logs, msg);
    assert.ok(line, `no warning ${msg}: ${JSON.stringify(logs)}`);
    return line;
  }

  it('--tls require answers every option but STARTTLS and ABORT with NBD_REP_ERR_TLS_REQD, shows nothing of the export, and logs the client', async () => {
    const { path, logs } = await serve(await x509('require'));
    const c = await RawClient.connect(path);
    const info = Buffer.from([0, 0, 0, 0, 0, 0]);
    const refused: Array<[number, Buffer]> = [
      [Opt.LIST, Buffer.alloc(0)], [Opt.INFO, info], [Opt.GO, info], [Opt.STRUCTURED_REPLY, Buffer.alloc(0)],
      [Opt.LIST_META_CONTEXT, Buffer.alloc(8)], [42, Buffer.from('unknown')],
    ];
    for (const [option, data] of refused) {
      c.sendOption(option, data);
      const reply = await c.optionReply();
      assert.deepEqual([reply.option, reply.type], [option, Rep.ERR_TLS_REQD], `option ${option}`);
      assert.doesNotMatch(reply.data.toString(), /disk/);
    }
    c.sendOption(Opt.ABORT);
    assert.equal((await c.optionReply()).type, Rep.ACK);
    await c.closed();
    const line = await warned(logs, /did not start TLS/);
    assert.match(line.msg, /NBD_REP_ERR_TLS_REQD/);
    assert.equal(line.options, refused.length);
    assert.equal(line.remote, 'unix');
  });

  it('--tls require ends the session of a plain NBD_OPT_EXPORT_NAME, which cannot be refused', async () => {
    const { path, logs } = await serve(await x509('require'));
    const c = await RawClient.connect(path);
    c.sendOption(Opt.EXPORT_NAME);
    await assert.rejects(c.reader.read(1), /closed/);
    await warned(logs, /did not start TLS/);
    assert.deepEqual(warnings(logs, /broke the protocol/), [], 'one line, not two');
  });

  it('after STARTTLS the haggling starts again: plain-text choices are forgotten, a second STARTTLS is invalid, and the export is served over TLS', async () => {
    const { path, logs } = await serve(await x509('on'));
    const c = await RawClient.connect(path);
    c.sendOption(Opt.STRUCTURED_REPLY);
    assert.equal((await c.optionReply()).type, Rep.ACK);
    c.sendOption(Opt.STARTTLS, Buffer.from('x'));
    assert.equal((await c.optionReply()).type, Rep.ERR_INVALID, 'STARTTLS takes no data');
    const secure = await c.startTls(clientX509());
    assert.ok(secure.getProtocol()?.startsWith('TLSv1.'));
    // Meta contexts need structured replies: the plain-text STRUCTURED_REPLY no longer counts.
    c.sendOption(Opt.SET_META_CONTEXT, Buffer.alloc(8));
    assert.equal((await c.optionReply()).type, Rep.ERR_INVALID);
    c.sendOption(Opt.STARTTLS);
    assert.equal((await c.optionReply()).type, Rep.ERR_INVALID, 'TLS is already on');
    await goAndUse(c);
    assert.ok(logs.some((l) => l.msg === 'transmission started' && /^TLSv1\.[23] /.test(String(l.tls))), JSON.stringify(logs));
    c.socket.end();
  });

  it('--tls on still serves a client that never asks for TLS', async () => {
    const { path } = await serve(await x509('on'));
    await goAndUse(await RawClient.connect(path));
  });

  it('a client that fails the TLS handshake is closed and logged with the reason, and the next client is served', async () => {
    const { path, logs } = await serve(await x509('require'));
    const bad = await RawClient.connect(path);
    bad.sendOption(Opt.STARTTLS);
    assert.equal((await bad.optionReply()).type, Rep.ACK);
    assert.equal(bad.reader.detach(), 0);
    // Plain text where a TLS ClientHello belongs.
    bad.socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: nbd\r\n\r\n'));
    await bad.closed();
    const line = await warned(logs, /TLS handshake failed/);
    assert.equal(line.remote, 'unix');
    assert.match(String(line.reason), /did not speak TLS after NBD_OPT_STARTTLS/);

    const good = await RawClient.connect(path);
    await good.startTls(clientX509());
    await goAndUse(good);
    good.socket.end();
  });

  it('a TLS handshake that never finishes is closed at the handshake time limit, and logged', async () => {
    const { path, logs } = await serve(await x509('require'), 300);
    const c = await RawClient.connect(path);
    c.sendOption(Opt.STARTTLS);
    assert.equal((await c.optionReply()).type, Rep.ACK);
    await c.closed();
    assert.match(String((await warned(logs, /TLS handshake failed/)).reason), /not finished within 300 ms/);
  });

  it('--tls-verify-peer refuses a client certificate from another CA, and a client without one; a certificate from the CA is served', async () => {
    const settings = await x509('require', true);
    for (const [clientDir, reason] of [[creds.otherCaClientDir, /client certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE/], [undefined, /sent no certificate/]] as const) {
      const { path, logs } = await serve(settings);
      const c = await RawClient.connect(path);
      // Under TLS 1.3 the client finishes its side before the server has checked the certificate.
      await assert.rejects(c.startTls(clientX509(clientDir)).then(() => c.go()));
      assert.match(String((await warned(logs, /TLS handshake failed/)).reason), reason);
      const good = await RawClient.connect(path);
      await good.startTls(clientX509(creds.clientDir));
      await goAndUse(good);
      good.socket.end();
    }
  });

  it('PSK: the user of the psktool file with its key is served; an unknown user and a wrong key are refused and logged', async () => {
    const settings = await loadTls({ mode: 'require', modeGiven: true, psk: creds.pskFile, verifyPeer: false });
    assert.equal(settings?.auth, 'psk');
    const { path, logs } = await serve(settings);
    const unknown = await RawClient.connect(path);
    await assert.rejects(unknown.startTls(clientPsk('nobody', creds.pskFile)));
    assert.match(String((await warned(logs, /TLS handshake failed/)).reason), /unknown PSK username "nobody"/);

    const wrong = await RawClient.connect(path);
    await assert.rejects(wrong.startTls(clientPsk(creds.pskUser, creds.wrongPskFile)));
    await wrong.closed();
    // Within the interval of the line above: counted there, and logged at debug level each time.
    for (let i = 0; i < 500 && logs.filter((l) => l.msg === 'TLS handshake failed').length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    const failures = logs.filter((l) => l.msg === 'TLS handshake failed').map((l) => String(l.reason));
    assert.equal(failures.length, 2, JSON.stringify(logs));
    assert.match(failures[1]!, /wrong pre-shared key/);

    const good = await RawClient.connect(path);
    await good.startTls(clientPsk(creds.pskUser, creds.pskFile));
    await goAndUse(good);
    good.socket.end();
  });
});

describe('TLS settings at start-up', () => {
  const dir = mkdtempSync(join(tmpdir(), 's3nbd-tls-settings-'));
  let creds: TestCredentials;
  before(async () => {
    creds = await makeCredentials(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const base: TlsOptions = { mode: 'require', modeGiven: true, verifyPeer: false };
  async function refused(options: Partial<TlsOptions>, code: string, message: RegExp): Promise<UserError> {
    const err = await loadTls({ ...base, ...options }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof UserError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return err;
  }

  it('reads the X.509 files and the psktool file', async () => {
    assert.deepEqual(await loadTls({ ...base, mode: 'off', modeGiven: false }), undefined);
    assert.equal((await loadTls({ ...base, certificates: creds.serverDir, verifyPeer: true }))?.verifyPeer, true);
    const keys = parsePskFile(creds.pskFile, readFileSync(creds.pskFile));
    assert.deepEqual([...keys.keys()], [creds.pskUser]);
    assert.equal(keys.get(creds.pskUser)!.length, 32, 'psktool writes 256-bit keys');
  });

  it('refuses missing credentials, credentials without --tls, and files that are missing or not what they should be', async () => {
    await refused({}, 'S3NBD_TLS_NO_CREDENTIALS', /--tls require needs credentials/);
    await refused({ mode: 'off', modeGiven: false, certificates: creds.serverDir }, 'S3NBD_TLS_NOT_ENABLED', /--tls-certificates was given without --tls/);
    assert.equal(await loadTls({ ...base, mode: 'off', certificates: creds.serverDir }), undefined, 'an explicit --tls off is obeyed');
    await refused({ certificates: join(dir, 'nowhere') }, 'S3NBD_TLS_FILE', /server-cert\.pem cannot be read: it does not exist/);
    await refused({ certificates: creds.clientDir }, 'S3NBD_TLS_FILE', /server-cert\.pem/);
    await refused({ certificates: creds.noCertClientDir, verifyPeer: true }, 'S3NBD_TLS_FILE', /server-cert\.pem/);

    const bad = join(dir, 'bad');
    mkdirSync(bad);
    copyFileSync(join(creds.serverDir, 'server-cert.pem'), join(bad, 'server-cert.pem'));
    writeFileSync(join(bad, 'server-key.pem'), 'not a key\n');
    await refused({ certificates: bad }, 'S3NBD_TLS_BAD_CERTIFICATE', /is not PEM/);
    copyFileSync(join(creds.clientDir, 'client-key.pem'), join(bad, 'server-key.pem'));
    await refused({ certificates: bad }, 'S3NBD_TLS_BAD_CERTIFICATE', /server-key\.pem is not the key of server-cert\.pem/);
    await refused({ certificates: bad, verifyPeer: true }, 'S3NBD_TLS_FILE', /ca-cert\.pem cannot be read/);

    const key = readFileSync(creds.pskFile, 'utf8').trim().split(':')[1]!;
    const psk = join(dir, 'bad.psk');
    writeFileSync(psk, `alice:${key}\nbob ${key}\n`);
    const err = await refused({ psk }, 'S3NBD_TLS_BAD_PSK', /line 2 is not username:hexkey/);
    assert.ok(!err.message.includes(key) && !err.fix.includes(key), 'the key is never shown');
    writeFileSync(psk, '\n');
    await refused({ psk }, 'S3NBD_TLS_BAD_PSK', /holds no username:hexkey line/);
    await refused({ psk: join(dir, 'missing.psk') }, 'S3NBD_TLS_FILE', /--tls-psk: .*missing\.psk cannot be read/);
  });
});
