// `s3nbd key change`: wraps an encrypted volume's data key with a new passphrase or key file.
// The data key stays, so no extent is rewritten: only s3nbd-volume.json is replaced, by a
// compare-and-swap on the version that was read (ObjectStore.putIf), so a concurrent change
// is refused rather than lost. A gateway serving the volume meanwhile is not disturbed (it
// holds the data key already); the next start needs the new passphrase or key.

import { pino } from 'pino';
import { Errors } from '../errors.ts';
import { rewrapKey } from '../storage/format/object-settings.ts';
import { KEY_OPTIONS, readKeySource } from '../storage/format/volume-keys.ts';
import { openStorage } from '../storage/stack.ts';
import { readVolume, VOLUME_KEY, volumeBody } from '../storage/volume/volume.ts';
import { type StoreOptions, s3OptionsOf } from './store-options.ts';

interface KeyChangeOptions extends StoreOptions {
  passphraseFile?: string;
  keyFile?: string;
  newPassphraseFile?: string;
  newKeyFile?: string;
}

const NEW_KEY_OPTIONS = { passphraseFile: '--new-passphrase-file', keyFile: '--new-key-file', passphraseEnv: 'S3NBD_NEW_PASSPHRASE' };

export async function runKeyChange(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as KeyChangeOptions;
  const oldKey = await readKeySource(opts, process.env, KEY_OPTIONS);
  const newKey = await readKeySource({ passphraseFile: opts.newPassphraseFile, keyFile: opts.newKeyFile }, process.env, NEW_KEY_OPTIONS);
  if (!newKey) throw Errors.badKeyFile('--new-passphrase-file, --new-key-file and S3NBD_NEW_PASSPHRASE', 'none was given, so there is no new key to wrap the data key with');
  // Opening the volume with the current key checks it (a wrong one is S3NBD_WRONG_KEY) and
  // explains S3's failures as every command does.
  const storage = await openStorage({
    store: opts.store, s3: s3OptionsOf(opts), log: pino({ level: 'silent' }), volume: { mode: 'open' },
    objects: { key: oldKey }, readOnly: true, memoryCacheBytes: 0,
  });
  try {
    const { objects } = storage;
    const current = await readVolume(objects);
    if (!current?.volume.objects || current.volume.id !== storage.volume.id) throw Errors.volumeChanged(objects.description);
    const settings = await rewrapKey(current.volume.objects, current.volume.id, oldKey, newKey, objects.description);
    const body = volumeBody({ ...current.volume, objects: settings });
    await objects.checkConditionalWrites?.(VOLUME_KEY, current.data);
    if (await objects.putIf(VOLUME_KEY, body, current.tag) === undefined) throw Errors.volumeChanged(objects.description);
    await objects.flush();
    process.stdout.write(`the data key of volume ${current.volume.id} is now wrapped by ${newKey.origin}; no extent was rewritten\n`);
  } finally {
    await storage.close();
  }
}
