// Builds the fsync-failure shim (fail-fsync.c) and gives the environment that makes a child
// process's fsyncs of files under `under` fail with EIO once `flag` exists.

import { join } from 'node:path';
import { REPO, runOk } from './tools.ts';

export async function failFsyncEnv(buildDir: string, under: string, flag: string): Promise<NodeJS.ProcessEnv> {
  const lib = join(buildDir, 'fail-fsync.so');
  await runOk('cc', ['-shared', '-fPIC', '-O2', '-o', lib, join(REPO, 'test/helpers/fail-fsync.c'), '-ldl']);
  return { LD_PRELOAD: lib, S3NBD_TEST_FSYNC_FAIL_UNDER: under, S3NBD_TEST_FSYNC_FAIL_FLAG: flag };
}
