// `s3nbd clone --store URL --snapshot NAME --to URL2`: a new writable volume at URL2 made from
// snapshot NAME of the volume at URL, without copying data (storage/snapshots/clone.ts): a
// few requests, whatever the volume's size. Interrupted (Ctrl-C, kill -9) it made the clone
// or it did not; run again, it finishes or finds the clone made.

import { createClone } from '../storage/snapshots/clone.ts';
import { absoluteStoreUrl } from '../storage/objects/store-url.ts';
import { readKeySource } from '../storage/format/volume-keys.ts';
import { formatBytes } from './parse.ts';
import { quiet } from './snapshot.ts';
import { type StoreOptions, s3OptionsOf } from './store-options.ts';
import { withKillHook } from './test-hooks.ts';

interface CloneOptions extends StoreOptions {
  snapshot: string;
  to: string;
  passphraseFile?: string;
  keyFile?: string;
}

export async function runClone(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as CloneOptions;
  // An encrypted origin's key (S3NBD_PASSPHRASE, --passphrase-file, --key-file): the clone shares its data key.
  const key = await readKeySource(opts, process.env);
  const { volume, created, manifest } = await createClone({
    store: opts.store, snapshot: opts.snapshot, to: opts.to, s3: s3OptionsOf(opts), log: quiet, wrapStore: withKillHook, key,
  });
  const what = `volume ${volume.id} (${formatBytes(volume.size)}, ${manifest.references.length} extents read from snapshot ${manifest.name} of ${absoluteStoreUrl(opts.store)})`;
  process.stdout.write(`${created ? 'cloned' : 'already cloned'}: ${what} in ${absoluteStoreUrl(opts.to)}; serve it with: s3nbd serve --store ${opts.to} --cache-dir DIR\n`);
}
