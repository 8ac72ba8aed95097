// The keys of an encrypted volume. Extents are sealed with the volume's data key: 32 random
// bytes made when the volume is created, never stored in the clear. The volume metadata holds
// it wrapped (sealed with AES-256-GCM) by a key-encryption key (KEK), which comes from
//
//   - a passphrase (--passphrase-file FILE, or S3NBD_PASSPHRASE): scrypt, memory-hard, with a
//     random salt and its cost parameters stored beside the wrapped key;
//   - a key file (--key-file FILE): 32 bytes, raw or as 64 hex digits.
//
// Changing the passphrase or key file (`s3nbd key change`) wraps the same data key again: no
// extent is rewritten. A wrong passphrase or key fails to unwrap (the GCM tag does not match),
// which the start reports as one line; nothing is ever decrypted with a wrong key.
//
// Secrets (the passphrase, the key file's bytes, the KEK, the data key) are kept in private
// fields (#), which no logger, JSON.stringify or util.inspect can reach, and no message names
// them: only where they came from ("--passphrase-file /etc/s3nbd/pass", "S3NBD_PASSPHRASE").

import { createCipheriv, createDecipheriv, randomBytes, scrypt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { inspect } from 'node:util';
import { Errors } from '../../errors.ts';

export const KEK_BYTES = 32;
/** scrypt's cost: 2^17 × 8 × 128 bytes = 128 MiB of memory, a few tenths of a second per start. */
export const SCRYPT_DEFAULTS = { N: 2 ** 17, r: 8, p: 1 } as const;
/** What a volume's metadata may ask of scrypt (a hostile bucket must not make a start take hours or all memory). */
const SCRYPT_MAX = { N: 2 ** 22, r: 32, p: 16, memory: 2 ** 31 } as const;

export type KekSpec =
  | { readonly kind: 'scrypt'; readonly salt: string; readonly N: number; readonly r: number; readonly p: number }
  | { readonly kind: 'key-file' };

/** A passphrase or a key file, as given to the gateway. */
export class KeySource {
  readonly kind: 'passphrase' | 'key-file';
  /** Where it came from, for messages. Never the secret itself. */
  readonly origin: string;
  readonly #secret: Buffer;
  readonly #keks = new Map<string, Promise<Buffer>>();

  private constructor(kind: 'passphrase' | 'key-file', secret: Buffer, origin: string) {
    this.kind = kind;
    this.#secret = secret;
    this.origin = origin;
  }

  static passphrase(text: Buffer, origin: string): KeySource {
    return new KeySource('passphrase', Buffer.from(text), origin);
  }

  static keyFile(key: Buffer, origin: string): KeySource {
    if (key.length !== KEK_BYTES) throw new RangeError(`a key has ${KEK_BYTES} bytes`);
    return new KeySource('key-file', Buffer.from(key), origin);
  }

  /** The KEK spec for wrapping a data key with this source anew: a fresh salt for a passphrase. */
  newKekSpec(scryptParams: { N: number; r: number; p: number } = SCRYPT_DEFAULTS): KekSpec {
    if (this.kind === 'key-file') return { kind: 'key-file' };
    return { kind: 'scrypt', salt: randomBytes(16).toString('base64'), ...scryptParams };
  }

  /** The KEK this source gives under `spec` (each derivation done once per process). */
  kek(spec: KekSpec): Promise<Buffer> {
    if (spec.kind === 'key-file') return Promise.resolve(this.#secret);
    const id = `${spec.salt}/${spec.N}/${spec.r}/${spec.p}`;
    let kek = this.#keks.get(id);
    if (!kek) {
      const salt = Buffer.from(spec.salt, 'base64');
      kek = new Promise<Buffer>((resolve, reject) => {
        scrypt(this.#secret, salt, KEK_BYTES, { N: spec.N, r: spec.r, p: spec.p, maxmem: SCRYPT_MAX.memory }, (err, key) => (err ? reject(err) : resolve(key)));
      });
      this.#keks.set(id, kek);
    }
    return kek;
  }

  toJSON(): { kind: string; origin: string } {
    return { kind: this.kind, origin: this.origin };
  }

  [inspect.custom](): string {
    return `KeySource(${this.kind} from ${this.origin})`;
  }
}

/** Throws the reason when `value` is not a KEK spec this build can use. */
export function parseKekSpec(value: unknown): KekSpec {
  if (typeof value !== 'object' || value === null) throw new Error('objects.encryption.kek is not an object');
  const spec = value as Record<string, unknown>;
  if (spec.kind === 'key-file') return { kind: 'key-file' };
  if (spec.kind !== 'scrypt') throw new Error(`objects.encryption.kek.kind ${JSON.stringify(spec.kind)} is not scrypt or key-file`);
  const { salt, N, r, p } = spec;
  const whole = (n: unknown, max: number): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= max;
  if (typeof salt !== 'string' || Buffer.from(salt, 'base64').length < 16) throw new Error('objects.encryption.kek.salt is not 16 or more bytes of base64');
  if (!whole(N, SCRYPT_MAX.N) || (N & (N - 1)) !== 0 || N < 2 || !whole(r, SCRYPT_MAX.r) || !whole(p, SCRYPT_MAX.p) || 128 * N * r > SCRYPT_MAX.memory) {
    throw new Error('objects.encryption.kek has scrypt parameters out of range');
  }
  return { kind: 'scrypt', salt, N, r, p };
}

const WRAP_LABEL = 's3nbd data key\0';
const WRAP_NONCE = 12;
const WRAP_TAG = 16;

/** What a wrapped key is bound to: it unwraps only for this volume and cipher. */
export interface WrapContext {
  readonly volumeId: string;
  readonly cipher: string;
}

function aad(context: WrapContext): Buffer {
  return Buffer.from(`${WRAP_LABEL}${context.volumeId}\0${context.cipher}`, 'utf8');
}

/** The data key sealed by the KEK (AES-256-GCM), as base64 of nonce, sealed key and tag. */
export function wrapDataKey(kek: Buffer, dataKey: Buffer, context: WrapContext): string {
  const nonce = randomBytes(WRAP_NONCE);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: WRAP_TAG });
  cipher.setAAD(aad(context));
  const sealed = Buffer.concat([cipher.update(dataKey), cipher.final()]);
  return Buffer.concat([nonce, sealed, cipher.getAuthTag()]).toString('base64');
}

/** The data key, or undefined when the KEK is not the one it was wrapped with (or the wrapped key was altered). */
export function unwrapDataKey(kek: Buffer, wrapped: string, context: WrapContext): Buffer | undefined {
  const bytes = Buffer.from(wrapped, 'base64');
  if (bytes.length !== WRAP_NONCE + KEK_BYTES + WRAP_TAG) return undefined;
  const decipher = createDecipheriv('aes-256-gcm', kek, bytes.subarray(0, WRAP_NONCE), { authTagLength: WRAP_TAG });
  decipher.setAAD(aad(context));
  decipher.setAuthTag(bytes.subarray(WRAP_NONCE + KEK_BYTES));
  const key = decipher.update(bytes.subarray(WRAP_NONCE, WRAP_NONCE + KEK_BYTES));
  try {
    decipher.final();
  } catch {
    return undefined;
  }
  return key;
}

/** Names of the options and variable a key comes from (`key change` has a second set for the new key). */
export interface KeyOptionNames {
  readonly passphraseFile: string;
  readonly keyFile: string;
  readonly passphraseEnv: string;
}

export const KEY_OPTIONS: KeyOptionNames = { passphraseFile: '--passphrase-file', keyFile: '--key-file', passphraseEnv: 'S3NBD_PASSPHRASE' };

/**
 * The key the user gave, if any: a file option wins over the environment's passphrase, which
 * is removed from this process's environment once read (nothing later can print it).
 */
export async function readKeySource(files: { passphraseFile?: string | undefined; keyFile?: string | undefined },
  env: NodeJS.ProcessEnv, names: KeyOptionNames = KEY_OPTIONS): Promise<KeySource | undefined> {
  const fromEnv = env[names.passphraseEnv];
  delete env[names.passphraseEnv];
  if (files.passphraseFile !== undefined && files.keyFile !== undefined) {
    throw Errors.badKeyFile(`${names.passphraseFile} and ${names.keyFile}`, 'only one of them may be given');
  }
  if (files.keyFile !== undefined) {
    const origin = `${names.keyFile} ${files.keyFile}`;
    const bytes = await readSecretFile(files.keyFile, origin);
    const text = bytes.toString('latin1').trim();
    if (bytes.length === KEK_BYTES) return KeySource.keyFile(bytes, origin);
    if (/^[0-9a-fA-F]{64}$/.test(text)) return KeySource.keyFile(Buffer.from(text, 'hex'), origin);
    throw Errors.badKeyFile(origin, `it holds ${bytes.length} bytes: a key file holds exactly 32 bytes, or 64 hex digits`);
  }
  if (files.passphraseFile !== undefined) {
    const origin = `${names.passphraseFile} ${files.passphraseFile}`;
    return passphraseOf(await readSecretFile(files.passphraseFile, origin), origin);
  }
  if (fromEnv !== undefined) return passphraseOf(Buffer.from(fromEnv, 'utf8'), names.passphraseEnv);
  return undefined;
}

async function readSecretFile(path: string, origin: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw Errors.badKeyFile(origin, `it cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** The passphrase without the line end a file or an `echo` leaves. */
function passphraseOf(bytes: Buffer, origin: string): KeySource {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) end--;
  if (end > 0 && bytes[end - 1] === 0x0d) end--;
  if (end === 0) throw Errors.badKeyFile(origin, 'the passphrase is empty');
  return KeySource.passphrase(bytes.subarray(0, end), origin);
}
