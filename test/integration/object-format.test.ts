// Format 2's objects on a real S3 server (MinIO), through the real gateway (issue 17, items
// 2-6): an encrypted volume's bucket holds none of the plaintext of a backup tree (an ext4
// image of text, source code, photos and an archive) and a new gateway with the passphrase
// restores it identically; a wrong or missing passphrase fails at start with one line; an
// object swapped with another extent's, and a flipped byte, are answered with EIO and logged
// with the key, encrypted or not, never served as data; the passphrase can be changed
// without rewriting an extent. The last test reads every log line and every output of the
// file's gateways and commands, and finds no passphrase, no key material and no AWS secret.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { extentKeyStem, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { HEADER_BYTES, MAGIC, readHeader } from '../../src/storage/format/object-header.ts';
import { parseObjectSettings } from '../../src/storage/format/object-settings.ts';
import { KeySource, unwrapDataKey } from '../../src/storage/format/volume-keys.ts';
import { cli, type Gateway, REPO, startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { ERRNO, nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool, runOk, TOOL_ENV } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';
import { registerSecret } from '../helpers/log-sweep.ts';

/** The secrets this file checks its own output for, registered for the suite-wide sweep too. */
class SweptSecrets extends Map<string, string> {
  override set(label: string, value: string): this {
    registerSecret(label, value);
    return super.set(label, value);
  }
}

const MIB = 1024 * 1024;
const BUCKET = 's3nbd-object-format';
const PASSPHRASE = `correct horse battery staple ${randomBytes(6).toString('hex')}`;
const NEW_PASSPHRASE = `tr0ub4dor&3 ${randomBytes(6).toString('hex')}`;

describe('object format 2 on MinIO: encryption and integrity', () => {
  const dir = tempDir('objfmt');
  let s3: S3TestServer;
  let client: S3Client;
  let env: NodeJS.ProcessEnv;
  let volumes = 0;
  /** Every log line and command output of this file, for the last test. */
  const outputs: string[] = [];
  /** Key material to look for in them: filled as volumes are made. */
  const secrets = new SweptSecrets();
  const passFile = join(dir.path, 'pass');
  const newPassFile = join(dir.path, 'new-pass');
  const wrongPassFile = join(dir.path, 'wrong-pass');
  const keyFile = join(dir.path, 'key');

  before(async () => {
    for (const tool of ['nbdcopy', 'mkfs.ext4', 'python3'] as const) requireTool(tool);
    s3 = await startMinio();
    await s3.createBucket(BUCKET);
    env = credentialsEnv(s3);
    client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    writeFileSync(passFile, `${PASSPHRASE}\n`);
    writeFileSync(newPassFile, NEW_PASSPHRASE);
    writeFileSync(wrongPassFile, 'not the passphrase\n');
    const key = randomBytes(32);
    writeFileSync(keyFile, key);
    secrets.set('passphrase', PASSPHRASE).set('new passphrase', NEW_PASSPHRASE).set('AWS secret', s3.secretAccessKey)
      .set('key file (hex)', key.toString('hex')).set('key file (base64)', key.toString('base64'));
  });
  after(async () => {
    client?.destroy();
    await s3?.stop();
    dir.remove();
  });

  const newVolume = (): { store: string; prefix: string } => {
    const prefix = `vol${++volumes}`;
    return { store: `s3://${BUCKET}/${prefix}`, prefix };
  };
  const s3Args = (): string[] => ['--s3-endpoint', s3.endpoint];
  let sockets = 0;
  const gateway = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Gateway> =>
    startGateway([...s3Args(), ...args], { socket: join(dir.path, `g${++sockets}.sock`), env: { ...env, ...extraEnv }, timeoutMs: 60_000 });
  const stop = async (gw: Gateway): Promise<void> => {
    assert.equal(await gw.stop(), 0);
    outputs.push(gw.logs());
  };
  const run = async (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> => {
    const r = await cli([...args, ...s3Args()], { ...env, ...extraEnv });
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  async function keysOf(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/`, ContinuationToken: token }));
      for (const o of page.Contents ?? []) keys.push(o.Key!);
      token = page.NextContinuationToken;
    } while (token);
    return keys;
  }

  /** The key of extent `i`'s current object (its highest generation), relative to the volume's prefix. */
  async function currentKey(prefix: string, i: number): Promise<string> {
    const mine = (await keysOf(prefix)).map((k) => k.slice(prefix.length + 1)).filter((k) => parseExtentKey(k)?.index === i && !k.endsWith('.zero'));
    const key = mine.sort((a, b) => parseExtentKey(a)!.generation - parseExtentKey(b)!.generation).at(-1);
    assert.ok(key, `extent ${i} has an object`);
    return key;
  }
  const getObject = async (key: string): Promise<Buffer> =>
    Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToByteArray());
  const putObject = (key: string, body: Buffer): Promise<unknown> => client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));

  /** The volume's data key, unwrapped here the way the gateway does: to look for it in the logs. */
  async function rememberDataKey(prefix: string, key: KeySource): Promise<void> {
    const meta = JSON.parse((await getObject(`${prefix}/s3nbd-volume.json`)).toString()) as { id: string; objects: unknown };
    const e = parseObjectSettings(meta.objects).encryption!;
    const kek = await key.kek(e.kek);
    const dataKey = unwrapDataKey(kek, e.wrappedKey, { volumeId: meta.id, cipher: e.cipher });
    assert.ok(dataKey, 'the test unwraps the data key');
    secrets.set(`${prefix} data key (hex)`, dataKey.toString('hex')).set(`${prefix} data key (base64)`, dataKey.toString('base64'))
      .set(`${prefix} KEK (hex)`, kek.toString('hex')).set(`${prefix} KEK (base64)`, kek.toString('base64'));
  }

  /**
   * A backup tree as an ext4 image: text (licenses), source code (TypeScript's lib), photos
   * (random bytes: already compressed) and a gzip archive. Returns the image and needles:
   * slices of the files' plaintext that must not appear in an encrypted bucket.
   */
  function backupImage(): { image: string; needles: Buffer[] } {
    const tree = join(dir.path, 'tree');
    mkdirSync(join(tree, 'docs'), { recursive: true });
    mkdirSync(join(tree, 'src'), { recursive: true });
    mkdirSync(join(tree, 'photos'), { recursive: true });
    const texts: string[] = [];
    for (const name of readdirSync('/usr/share/common-licenses')) {
      const path = join('/usr/share/common-licenses', name);
      try {
        copyFileSync(path, join(tree, 'docs', name));
        texts.push(path);
      } catch {
        // A directory or a dangling link: not needed.
      }
    }
    const lib = join(REPO, 'node_modules/typescript/lib');
    for (const name of ['typescript.js', 'lib.dom.d.ts', 'lib.es5.d.ts']) {
      copyFileSync(join(lib, name), join(tree, 'src', name));
      texts.push(join(lib, name));
    }
    for (let i = 0; i < 4; i++) writeFileSync(join(tree, 'photos', `IMG_${i}.jpg`), randomBytes(2 * MIB + i * 4099));
    writeFileSync(join(tree, 'docs.tar.gz'), gzipSync(Buffer.concat(texts.slice(0, 8).map((p) => readFileSync(p)))));
    const image = join(dir.path, 'backup.img');
    writeFileSync(image, '');
    const mkfs = spawnSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'root_owner=0:0', '-d', tree, image, '64M'], { encoding: 'utf8', env: TOOL_ENV });
    assert.equal(mkfs.status, 0, mkfs.stderr);
    const needles: Buffer[] = [];
    for (const path of texts) {
      const data = readFileSync(path);
      for (let at = 0; at + 48 <= data.length && needles.length < 400; at += Math.max(4096, Math.floor(data.length / 8))) {
        const slice = data.subarray(at, at + 48);
        if (new Set(slice).size > 8) needles.push(slice); // skip runs of blanks, which any data may hold
      }
    }
    return { image, needles };
  }

  it('an encrypted volume: no plaintext in the bucket, an identical restore through a new gateway, a wrong passphrase refused at start', { timeout: 300_000 }, async () => {
    const { store, prefix } = newVolume();
    const { image, needles } = backupImage();
    const source = readFileSync(image);
    assert.ok(needles.length > 50, `${needles.length} needles`);
    const first = await gateway(['--store', store, '--size', '64M', '--encryption', 'aes-256-gcm', '--passphrase-file', passFile]);
    assert.match(first.logs(), /"encryption":"aes-256-gcm"/);
    await runOk('nbdcopy', ['--flush', image, first.uri]);
    await stop(first);
    await rememberDataKey(prefix, KeySource.passphrase(Buffer.from(PASSPHRASE), 'test'));

    // Every object of the volume, the metadata included: no slice of any file's plaintext.
    const keys = await keysOf(prefix);
    const extents = keys.filter((k) => k.includes('/extents/'));
    assert.ok(extents.length >= 20, `${extents.length} extent objects`);
    let stored = 0;
    for (const key of keys) {
      const body = await getObject(key);
      stored += body.length;
      for (const needle of needles) assert.equal(body.indexOf(needle), -1, `${key} holds plaintext: ${JSON.stringify(needle.toString('latin1'))}`);
      assert.equal(body.indexOf(PASSPHRASE), -1);
      if (key.includes('/extents/')) {
        assert.deepEqual(body.subarray(0, 4), MAGIC, key);
        const header = readHeader(body);
        assert.ok(typeof header !== 'string' && header.cipher === 'aes-256-gcm', key);
      }
    }
    // Text and code compress before they are sealed: the bucket holds less than the extents.
    assert.ok(stored < extents.length * MIB * 0.8, `${stored} bytes stored for ${extents.length} extents`);

    // A wrong passphrase, none, and one from the environment that is wrong: one line each, at start.
    const sock = join(dir.path, 'refused.sock');
    const refused = ['serve', '--store', store, '--socket', sock, '--cache-dir', join(dir.path, 'refused-cache')];
    assertUserError(await run([...refused, '--passphrase-file', wrongPassFile]), 'S3NBD_WRONG_KEY', /does not unlock the volume/);
    assertUserError(await run([...refused, '--passphrase-file', wrongPassFile, '--read-only']), 'S3NBD_WRONG_KEY');
    assertUserError(await run(refused), 'S3NBD_KEY_REQUIRED', /encrypted \(aes-256-gcm\)/);
    assertUserError(await run(refused, { S3NBD_PASSPHRASE: 'wrong from the environment' }), 'S3NBD_WRONG_KEY', /S3NBD_PASSPHRASE does not unlock/);
    assertUserError(await run([...refused, '--passphrase-file', passFile, '--encryption', 'chacha20-poly1305']), 'S3NBD_OBJECTS_CONFLICT');
    assertUserError(await run([...refused, '--passphrase-file', passFile, '--compression', 'off']), 'S3NBD_OBJECTS_CONFLICT');
    assertUserError(await run([...refused, '--key-file', keyFile]), 'S3NBD_WRONG_KEY', /wrapped by a passphrase/);

    // `info` needs no key, and shows the choices but no key material.
    const info = await run(['info', '--store', store]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /^encryption: +aes-256-gcm, data key wrapped by a passphrase \(scrypt N=131072, r=8, p=1\)$/m);
    assert.match(info.stdout, /^compression: +zstd:1$/m);
    assert.doesNotMatch(info.stdout, /wrappedKey|salt/);

    // A new gateway, empty cache, the passphrase from the environment: the same bytes.
    const second = await gateway(['--store', store, '--read-only'], { S3NBD_PASSPHRASE: PASSPHRASE });
    const out = join(dir.path, 'restored.img');
    await runOk('nbdcopy', [second.uri, out]);
    await stop(second);
    assert.ok(readFileSync(out).equals(source), 'the restore is identical');
  });

  /** Writes `count` extents of seeded random data through a new gateway, flushed; returns the volume. */
  async function volumeWith(args: string[], count: number, keyEnv: NodeJS.ProcessEnv = {}): Promise<{ store: string; prefix: string }> {
    const volume = newVolume();
    const gw = await gateway(['--store', volume.store, '--size', '16M', ...args], keyEnv);
    const written = await nbdOps(gw.uri, [...Array.from({ length: count }, (_, i) => ['write', i * MIB, MIB, 1000 + i] as const), ['flush'] as const]);
    assert.ok(written.every((r) => r.ok), JSON.stringify(written));
    await stop(gw);
    return volume;
  }

  /** Reads each extent through a fresh gateway; what each read got: 'ok' with the right bytes, or the errno. */
  async function readBack(volume: { store: string }, args: string[], count: number, keyEnv: NodeJS.ProcessEnv = {}): Promise<{ results: string[]; logs: string }> {
    const gw = await gateway(['--store', volume.store, ...args], keyEnv);
    const reads = await nbdOps(gw.uri, Array.from({ length: count }, (_, i) => ['read', i * MIB, 4096, 1000 + i] as const));
    await stop(gw);
    return {
      results: reads.map((r) => (r.ok ? (r.match ? 'ok' : 'WRONG DATA') : String(r.errno))),
      logs: gw.logs(),
    };
  }

  function corruptLines(logs: string): Array<{ key: string; reason: string }> {
    return logs.split('\n').filter((l) => l.includes('"code":"S3NBD_OBJECT_CORRUPT"'))
      .map((l) => JSON.parse(l) as { key: string; reason: string; level: number });
  }

  for (const [name, args, keyEnv] of [
    ['encrypted (chacha20-poly1305, key file)', ['--encryption', 'chacha20-poly1305', '--key-file', keyFile], {}],
    ['encrypted (zstd + aes-256-gcm, S3NBD_PASSPHRASE)', ['--compression', 'zstd:3'], { S3NBD_PASSPHRASE: PASSPHRASE }],
    ['not encrypted (checksum only)', ['--compression', 'off', '--encryption', 'off'], {}],
    ['not encrypted (zstd)', [], {}],
  ] as const) {
    it(`${name}: an object swapped with another extent's and a flipped byte are EIO and logged with the key, never data`, { timeout: 180_000 }, async () => {
      const keyArgs = args.filter((a, i) => a === '--key-file' || args[i - 1] === '--key-file');
      const volume = await volumeWith([...args], 4, keyEnv);
      const rel = new Map<number, string>();
      for (const i of [1, 2, 3]) rel.set(i, await currentKey(volume.prefix, i));
      const key = (i: number): string => `${volume.prefix}/${rel.get(i)!}`;
      // Extent 1's object under extent 2's key; one byte of extent 3's payload flipped.
      await putObject(key(2), await getObject(key(1)));
      const body = await getObject(key(3));
      body[HEADER_BYTES + 1000]! ^= 0x01;
      await putObject(key(3), body);
      const { results, logs } = await readBack(volume, keyArgs, 4, keyEnv);
      assert.deepEqual(results, ['ok', 'ok', ERRNO.EIO, ERRNO.EIO]);
      const lines = corruptLines(logs);
      assert.deepEqual([...new Set(lines.map((l) => l.key))].sort(), [rel.get(2)!, rel.get(3)!].sort());
      assert.ok(lines.every((l) => (l as unknown as { level: number }).level === 50), 'logged as errors');
      // A flipped byte in the header is refused as well.
      const again = await getObject(key(1));
      again[9]! ^= 0x80;
      await putObject(key(1), again);
      const second = await readBack(volume, keyArgs, 2, keyEnv);
      assert.deepEqual(second.results, ['ok', ERRNO.EIO]);
      assert.ok(corruptLines(second.logs).some((l) => l.key === rel.get(1)));
    });
  }

  it('an old version of an extent put back under its newer key is EIO (the generation is in the authenticated data)', { timeout: 120_000 }, async () => {
    const volume = newVolume();
    const gw = await gateway(['--store', volume.store, '--size', '16M', '--passphrase-file', passFile]);
    const extentKeys = async (): Promise<string[]> => (await keysOf(volume.prefix)).filter((k) => k.includes(`/${extentKeyStem(5)}.`)).sort();
    assert.ok((await nbdOps(gw.uri, [['write', 5 * MIB, MIB, 1], ['flush']])).every((r) => r.ok));
    const oldKeys = await extentKeys();
    const oldBodies = await Promise.all(oldKeys.map(getObject));
    assert.ok((await nbdOps(gw.uri, [['write', 5 * MIB, MIB, 2], ['flush']])).every((r) => r.ok));
    await stop(gw);
    const newKeys = (await extentKeys()).filter((k) => !oldKeys.includes(k));
    assert.equal(newKeys.length, 1, 'the rewrite is a new object under a new generation');
    await putObject(newKeys.at(-1)!, oldBodies.at(-1)!);
    const { results, logs } = await readBack(volume, ['--passphrase-file', passFile], 6);
    assert.equal(results[5], ERRNO.EIO);
    assert.ok(corruptLines(logs).length > 0);
  });

  it('`s3nbd key change` rewraps the data key: the old passphrase is refused, the new one reads the same data, no extent rewritten', { timeout: 120_000 }, async () => {
    const volume = await volumeWith(['--passphrase-file', passFile, '--encryption', 'chacha20-poly1305'], 2);
    await rememberDataKey(volume.prefix, KeySource.passphrase(Buffer.from(PASSPHRASE), 'test'));
    const before = new Map(await Promise.all((await keysOf(volume.prefix)).filter((k) => k.includes('/extents/'))
      .map(async (k) => [k, createHash('sha256').update(await getObject(k)).digest('hex')] as const)));
    const wrong = await run(['key', 'change', '--store', volume.store, '--passphrase-file', wrongPassFile, '--new-passphrase-file', newPassFile]);
    assertUserError(wrong, 'S3NBD_WRONG_KEY');
    const changed = await run(['key', 'change', '--store', volume.store, '--passphrase-file', passFile], { S3NBD_NEW_PASSPHRASE: NEW_PASSPHRASE });
    assert.equal(changed.code, 0, changed.stderr);
    const after = new Map(await Promise.all([...before.keys()].map(async (k) => [k, createHash('sha256').update(await getObject(k)).digest('hex')] as const)));
    assert.deepEqual(after, before, 'no extent object was rewritten');
    await rememberDataKey(volume.prefix, KeySource.passphrase(Buffer.from(NEW_PASSPHRASE), 'test'));
    assertUserError(await run(['serve', '--store', volume.store, '--socket', join(dir.path, 'x.sock'), '--cache-dir', join(dir.path, 'x-cache'),
      '--passphrase-file', passFile]), 'S3NBD_WRONG_KEY');
    const { results } = await readBack(volume, ['--passphrase-file', newPassFile], 2);
    assert.deepEqual(results, ['ok', 'ok']);
  });

  it('no log line or output of this file holds a passphrase, key material or the AWS secret', () => {
    const all = outputs.join('\n');
    assert.ok(all.split('\n').length > 200, `${all.split('\n').length} lines, debug level included`);
    assert.ok(secrets.size >= 9);
    assert.match(all, /"code":"S3NBD_OBJECT_CORRUPT"/, 'the gateways\' logs are in');
    for (const [what, secret] of secrets) {
      assert.ok(secret.length >= 12, what);
      assert.equal(all.indexOf(secret), -1, `the ${what} appears in the logs`);
    }
  });
});
