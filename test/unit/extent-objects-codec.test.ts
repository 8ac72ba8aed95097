// The extent layer with the codec of format 2, and the keys of an encrypted volume: bodies in
// the store are headed and sealed; a body that fails its check is fetched once more, and
// when the second fails too the read is EIO with one error line naming the key (never the
// bytes served); another extent's object under a key is refused; the stack refuses a wrong,
// missing or unexpected key and settings that contradict the volume's, at start; the secret
// never shows in JSON, util.inspect or an error.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { pino } from 'pino';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { EXTENT_PREFIX, extentKeyStem, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectCodec } from '../../src/storage/format/object-codec.ts';
import { MAGIC } from '../../src/storage/format/object-header.ts';
import { type ObjectRequest, parseCompression, rewrapKey } from '../../src/storage/format/object-settings.ts';
import { KeySource, readKeySource } from '../../src/storage/format/volume-keys.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { openStorage } from '../../src/storage/stack.ts';
import { StorageError } from '../../src/storage/storage-error.ts';
import { readVolume, VOLUME_KEY, volumeBody } from '../../src/storage/volume/volume.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { UserError } from '../../src/errors.ts';

const E = 64 * 1024;
const VOLUME = '6f1c1e2a-9a51-4f3b-8f5e-2b7c1d0e9a11';

function recorder(): { log: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { out.push(chunk.toString()); done(); } });
  return { log: pino({ level: 'debug' }, sink), lines: () => out.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** A store whose next `n` GETs of any key return the object with one byte flipped. */
class Flipping extends MemoryObjectStore {
  flips = 0;
  gets = 0;
  override async get(key: string): Promise<Buffer | undefined> {
    this.gets++;
    const body = await super.get(key);
    if (!body || this.flips === 0) return body;
    this.flips--;
    const copy = Buffer.from(body);
    copy[copy.length >> 1]! ^= 0x10;
    return copy;
  }
}

async function layer(store: MemoryObjectStore, codec: ObjectCodec, log?: pino.Logger): Promise<ObjectExtents> {
  return ObjectExtents.open(store, { extentSize: E, extentCount: 16, codec, volumeId: VOLUME, log });
}

/** The key of extent `index`'s newest object in the store. */
async function keyFor(store: MemoryObjectStore, index: number): Promise<string> {
  const keys: string[] = [];
  for await (const key of store.list(EXTENT_PREFIX)) if (parseExtentKey(key)?.index === index) keys.push(key);
  const newest = keys.sort((a, b) => parseExtentKey(a)!.generation - parseExtentKey(b)!.generation).at(-1);
  assert.ok(newest, `extent ${index} has an object`);
  return newest;
}

const code = (c: string) => (err: unknown): boolean => err instanceof UserError && err.code === c;
const eio = (err: unknown): boolean => err instanceof StorageError && err.errno === 'EIO';

describe('extent objects with the format 2 codec', () => {
  const codec = new ObjectCodec({ compressionLevel: 1, encryption: { cipher: 'chacha20-poly1305', key: randomBytes(32) } });

  it('stores headed, sealed bodies and reads them back', async () => {
    const store = new MemoryObjectStore();
    const extents = await layer(store, codec);
    const data = Buffer.alloc(E, 'plain text of a file; ');
    await extents.put(3, data);
    const body = (await store.get(await keyFor(store, 3)))!;
    assert.deepEqual(body.subarray(0, 4), MAGIC);
    assert.equal(body.indexOf('plain text'), -1);
    assert.deepEqual(await extents.fetch(3), data);
    assert.deepEqual(await (await layer(store, codec)).fetch(3), data, 'after a restart');
  });

  it('fetches a body that fails its check once more, and serves the good second one', async () => {
    const store = new Flipping();
    const { log, lines } = recorder();
    const extents = await layer(store, codec, log);
    const data = randomBytes(E);
    await extents.put(1, data);
    store.flips = 1;
    store.gets = 0;
    assert.deepEqual(await extents.fetch(1), data);
    assert.equal(store.gets, 2);
    assert.deepEqual(lines().map((l) => [l.level, l.key]), [[40, await keyFor(store, 1)]], 'one warning with the key');
  });

  it('answers EIO when the second body fails too, with one error line naming the key', async () => {
    const store = new Flipping();
    const { log, lines } = recorder();
    const extents = await layer(store, codec, log);
    await extents.put(2, randomBytes(E));
    store.flips = 2;
    store.gets = 0;
    await assert.rejects(extents.fetch(2), (err: unknown) => eio(err) && (err as Error).message.includes(extentKeyStem(2)));
    assert.equal(store.gets, 2, 'fetched twice, no more');
    const errors = lines().filter((l) => l.level === 50);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.code, 'S3NBD_OBJECT_CORRUPT');
    assert.equal(errors[0]!.key, await keyFor(store, 2));
  });

  it('refuses another extent\'s object put under a key, with or without encryption', async () => {
    for (const c of [codec, new ObjectCodec({ compressionLevel: undefined })]) {
      const store = new MemoryObjectStore();
      const extents = await layer(store, c);
      await extents.put(4, randomBytes(E));
      await extents.put(5, randomBytes(E));
      await store.put(await keyFor(store, 5), (await store.get(await keyFor(store, 4)))!);
      await assert.rejects(extents.fetch(5), eio);
      assert.equal((await extents.fetch(4))!.length, E);
    }
  });
});

describe('the keys of an encrypted volume', () => {
  const dir = mkdtempSync(join(tmpdir(), 's3nbd-keys-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const passphrase = (text: string): KeySource => KeySource.passphrase(Buffer.from(text), 'a test');
  let n = 0;
  const open = (store: string, objects: ObjectRequest | undefined, size?: number) => openStorage({
    log: pino({ level: 'silent' }), store, volume: { mode: 'open-or-create', size }, objects, readOnly: false, memoryCacheBytes: 0,
  });

  it('refuses a wrong, missing or unexpected key and contradicting settings at start', async () => {
    const store = join(dir, `v${++n}`);
    const created = await open(store, { key: passphrase('correct horse') }, 1 << 20);
    assert.equal(created.volume.objects?.encryption?.cipher, 'aes-256-gcm', 'a key alone means AES-256-GCM');
    await created.close();
    await assert.rejects(open(store, { key: passphrase('wrong horse') }), code('S3NBD_WRONG_KEY'));
    await assert.rejects(open(store, {}), code('S3NBD_KEY_REQUIRED'));
    await assert.rejects(open(store, { key: KeySource.keyFile(randomBytes(32), 'a key file') }), code('S3NBD_WRONG_KEY'));
    await assert.rejects(open(store, { key: passphrase('correct horse'), encryption: 'chacha20-poly1305' }), code('S3NBD_OBJECTS_CONFLICT'));
    await assert.rejects(open(store, { key: passphrase('correct horse'), compression: parseCompression('off') }), code('S3NBD_OBJECTS_CONFLICT'));
    await (await open(store, { key: passphrase('correct horse'), compression: parseCompression('zstd'), encryption: 'aes-256-gcm' })).close();
    await (await open(store, undefined)).close(); // info needs no key

    const plain = join(dir, `v${++n}`);
    await (await open(plain, { compression: parseCompression('off') }, 1 << 20)).close();
    await assert.rejects(open(plain, { key: passphrase('correct horse') }), code('S3NBD_OBJECTS_CONFLICT'));
    await assert.rejects(open(join(dir, `v${++n}`), { encryption: 'aes-256-gcm' }, 1 << 20), code('S3NBD_KEY_REQUIRED'));
    await assert.rejects(open(join(dir, `v${++n}`), { encryption: 'off', key: passphrase('x') }, 1 << 20), code('S3NBD_OBJECTS_CONFLICT'));
  });

  it('rewraps the data key with a new key: the old one no longer opens the volume, the data stays readable', async () => {
    const store = join(dir, `v${++n}`);
    const first = passphrase('first passphrase');
    const rw = await openStorage({ log: pino({ level: 'silent' }), store, volume: { mode: 'open-or-create', size: 1 << 20, extentSize: 1 << 16 },
      objects: { key: first, encryption: 'chacha20-poly1305' }, readOnly: false, memoryCacheBytes: 0 });
    const data = randomBytes(1 << 16);
    await rw.extents.put(0, data);
    await rw.close();
    const objects = new FileObjectStore(store);
    const current = (await readVolume(objects))!;
    const second = KeySource.keyFile(randomBytes(32), 'a key file');
    const rewrapped = await rewrapKey(current.volume.objects!, current.volume.id, first, second, 'x');
    assert.notEqual(rewrapped.encryption!.wrappedKey, current.volume.objects!.encryption!.wrappedKey);
    assert.ok(await objects.putIf(VOLUME_KEY, volumeBody({ ...current.volume, objects: rewrapped }), current.tag));
    await assert.rejects(open(store, { key: first }), code('S3NBD_WRONG_KEY'));
    const reopened = await open(store, { key: second });
    assert.deepEqual(await reopened.extents.fetch(0), data);
    await reopened.close();
  });

  it('upgrades a volume of format 1 when it writes: its raw extents still read, new ones are headed objects; a key it never had is refused', async () => {
    const store = join(dir, `v${++n}`);
    const objects = new FileObjectStore(store);
    const meta = { format: 's3nbd-volume', version: 1, id: VOLUME, size: 1 << 20, extentSize: 1 << 16, createdAt: new Date().toISOString() };
    await objects.putIf(VOLUME_KEY, Buffer.from(`${JSON.stringify(meta)}\n`), undefined);
    const raw = randomBytes(1 << 16);
    await objects.put(extentKeyStem(2), raw);
    await objects.flush();
    await assert.rejects(open(store, { encryption: 'aes-256-gcm' }), code('S3NBD_OBJECTS_CONFLICT'));
    const opened = await open(store, {});
    assert.ok(opened.volume.objects, 'upgraded to format 2 on its first writable open');
    assert.deepEqual(await opened.extents.fetch(2), raw, 'a format 1 object reads raw, as generation 0');
    const fresh = randomBytes(1 << 16);
    await opened.extents.put(3, fresh);
    const written: string[] = [];
    for await (const key of objects.list(EXTENT_PREFIX)) if (parseExtentKey(key)?.index === 3) written.push(key);
    assert.equal(written.length, 1);
    assert.deepEqual((await objects.get(written[0]!))!.subarray(0, 4), MAGIC, 'new objects have the header');
    await opened.close();
    assert.equal((JSON.parse((await objects.get(VOLUME_KEY))!.toString()) as { version: number }).version, 2);
    const again = await open(store, {});
    assert.deepEqual(await again.extents.fetch(2), raw);
    assert.deepEqual(await again.extents.fetch(3), fresh);
    await again.close();
    await assert.rejects(open(store, { key: passphrase('x') }), code('S3NBD_OBJECTS_CONFLICT'));
  });

  it('reads keys from files and the environment, and never shows them', async () => {
    const raw = randomBytes(32);
    writeFileSync(join(dir, 'raw'), raw);
    writeFileSync(join(dir, 'hex'), `${raw.toString('hex')}\n`);
    writeFileSync(join(dir, 'short'), raw.subarray(1));
    writeFileSync(join(dir, 'pass'), 'sesame sesame\n');
    writeFileSync(join(dir, 'empty'), '\n');
    const env: NodeJS.ProcessEnv = { S3NBD_PASSPHRASE: 'from the environment' };
    const fromEnv = await readKeySource({}, env);
    assert.equal(fromEnv?.kind, 'passphrase');
    assert.equal(env.S3NBD_PASSPHRASE, undefined, 'removed from the environment once read');
    const a = (await readKeySource({ keyFile: join(dir, 'raw') }, {}))!;
    const b = (await readKeySource({ keyFile: join(dir, 'hex') }, {}))!;
    const spec = { kind: 'key-file' } as const;
    assert.deepEqual(await a.kek(spec), await b.kek(spec));
    await assert.rejects(readKeySource({ keyFile: join(dir, 'short') }, {}), code('S3NBD_BAD_KEY_FILE'));
    await assert.rejects(readKeySource({ passphraseFile: join(dir, 'empty') }, {}), code('S3NBD_BAD_KEY_FILE'));
    await assert.rejects(readKeySource({ passphraseFile: join(dir, 'nope') }, {}), code('S3NBD_BAD_KEY_FILE'));
    await assert.rejects(readKeySource({ passphraseFile: join(dir, 'pass'), keyFile: join(dir, 'raw') }, {}), code('S3NBD_BAD_KEY_FILE'));
    const pass = (await readKeySource({ passphraseFile: join(dir, 'pass') }, { S3NBD_PASSPHRASE: 'ignored: the file wins' }))!;
    for (const shown of [JSON.stringify(pass), inspect(pass, { showHidden: true, depth: 9 }), JSON.stringify(a), inspect(a, { showHidden: true })]) {
      assert.ok(!shown.includes('sesame') && !shown.includes(raw.toString('hex')) && !shown.includes(raw.toString('base64')), shown);
    }
    // The trailing newline is not part of the passphrase.
    const spec2 = pass.newKekSpec({ N: 1024, r: 8, p: 1 });
    assert.deepEqual(await pass.kek(spec2), await passphrase('sesame sesame').kek(spec2));
  });
});
