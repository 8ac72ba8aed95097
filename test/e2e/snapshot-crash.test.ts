// kill -9 during `s3nbd snapshot create`, `snapshot delete`, `gc` and `snapshot prune`, at several points each,
// on a directory store: every snapshot stays whole, and a full collection leaves exactly the
// objects the volume and its snapshots name (test/helpers/snapshot-crash.ts; on MinIO:
// test/integration/snapshot-crash-s3.test.ts).

import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { tempDir } from '../helpers/gateway.ts';
import { crashScenario } from '../helpers/snapshot-crash.ts';

describe('kill -9 during snapshot create, delete and gc (directory store)', () => {
  const dir = tempDir('snapshot-crash');
  after(() => dir.remove());

  it('leaves every snapshot whole whatever the point of the kill, and a full collection leaves exactly what is named', async () => {
    const store = join(dir.path, 'store');
    await crashScenario({ objects: new FileObjectStore(store), args: ['--store', store], env: {}, prune: true });
  });
});
