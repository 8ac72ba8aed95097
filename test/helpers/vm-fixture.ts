// The VM tests' fixture: the VM image, MinIO with a bucket, a temporary directory, set up and
// taken down by node:test hooks (kept apart from vm.ts, which benchmarks import without
// node:test).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { tempDir } from './gateway.ts';
import { type S3TestServer, startMinio } from './minio.ts';
import { type VmImage, vmImage } from './vm.ts';

export interface VmFixture {
  /** A temporary directory, removed after the tests. */
  readonly dir: string;
  image(): VmImage;
  s3(): S3TestServer;
  /** The credentials and region of s3(), for a gateway's environment. */
  env(): NodeJS.ProcessEnv;
}

/**
 * What a VM test file needs, set up by before() and taken down by after() hooks registered in
 * the calling describe(): the VM image, MinIO with `bucket` made, a temporary directory.
 */
export function vmFixture(name: string, bucket: string): VmFixture {
  const dir = tempDir(name);
  let image: VmImage | undefined;
  let s3: S3TestServer | undefined;
  before(async () => {
    image = await vmImage();
    s3 = await startMinio();
    await s3.createBucket(bucket);
  });
  after(async () => {
    await s3?.stop();
    dir.remove();
  });
  const started = <T>(value: T | undefined): T => {
    assert.ok(value !== undefined, 'the VM fixture was set up by before()');
    return value;
  };
  return {
    dir: dir.path,
    image: () => started(image),
    s3: () => started(s3),
    env: () => ({ AWS_ACCESS_KEY_ID: started(s3).accessKeyId, AWS_SECRET_ACCESS_KEY: started(s3).secretAccessKey, AWS_REGION: started(s3).region }),
  };
}
