// kill -9 during `s3nbd snapshot create`, `snapshot delete` and `gc`, at several points each,
// against MinIO: every snapshot stays whole, and a full collection leaves exactly the objects
// the volume and its snapshots name (test/helpers/snapshot-crash.ts). MinIO only: what is
// tested is the order of the CLI's requests, which no S3 server's quirks change.

import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { S3ObjectStore } from '../../src/storage/objects/s3/s3-object-store.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { crashScenario } from '../helpers/snapshot-crash.ts';

describe('kill -9 during snapshot create, delete and gc (MinIO)', () => {
  let s3: S3TestServer;
  const bucket = `crash-${randomBytes(4).toString('hex')}`;

  before(async () => {
    s3 = await startMinio();
    await s3.createBucket(bucket);
  });
  after(async () => {
    await s3?.stop();
  });

  it('leaves every snapshot whole whatever the point of the kill (create, delete, gc, prune), and a full collection leaves exactly what is named', { timeout: 900_000 }, async () => {
    const objects = new S3ObjectStore({
      bucket, prefix: 'vol', endpoint: s3.endpoint, region: s3.region,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    });
    try {
      await crashScenario({
        objects,
        args: ['--store', `s3://${bucket}/vol`, '--s3-endpoint', s3.endpoint],
        env: credentialsEnv(s3),
        prune: true,
      });
    } finally {
      await objects.close();
    }
  });
});
