// The translation of first-run failures into UserErrors, for the failures the end-to-end tests
// cannot produce on a loopback-only machine (a host name that does not resolve, certificates,
// several addresses refusing at once) and for the errno cases of local paths.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { UserError } from '../../src/errors.ts';
import { StorageError } from '../../src/storage/storage-error.ts';
import { explainLocalError, explainS3Error } from '../../src/storage/first-run-errors.ts';
import { tempDir } from '../helpers/gateway.ts';

const place = { description: 's3://b/p at https://s3.example', bucket: 'b', endpoint: 'https://s3.example' };
const wrapped = (cause: unknown): StorageError => new StorageError('EIO', 'GET s3://b/p/s3nbd-volume.json: failed', { cause });
const codeOf = (err: UserError | undefined): string | undefined => err?.code;

describe('first-run errors', () => {
  const dir = tempDir('first-run-unit');
  after(() => dir.remove());

  it('names S3 failures by what they mean', () => {
    const net = (code: string): Error => Object.assign(new Error(`connect ${code}`), { code });
    assert.equal(codeOf(explainS3Error(wrapped(net('ENOTFOUND')), place)), 'S3NBD_S3_UNREACHABLE');
    assert.match(explainS3Error(wrapped(net('ENOTFOUND')), place)!.message, /does not resolve/);
    // localhost: ::1 and 127.0.0.1 both refuse, as one AggregateError without a code of its own.
    const both = new AggregateError([net('ECONNREFUSED'), net('ECONNREFUSED')]);
    assert.match(explainS3Error(wrapped(both), place)!.message, /connection refused/);
    assert.equal(codeOf(explainS3Error(wrapped(net('DEPTH_ZERO_SELF_SIGNED_CERT')), place)), 'S3NBD_S3_BAD_CERTIFICATE');
    assert.match(explainS3Error(wrapped(net('ERR_TLS_CERT_ALTNAME_INVALID')), place)!.message, /another host name/);
    const s3 = (Code: string, status: number): Error => Object.assign(new Error(Code), { name: Code, Code, $metadata: { httpStatusCode: status } });
    assert.equal(codeOf(explainS3Error(wrapped(s3('AccessDenied', 403)), place)), 'S3NBD_ACCESS_DENIED');
    assert.equal(codeOf(explainS3Error(wrapped(s3('ExpiredToken', 400)), place)), 'S3NBD_BAD_CREDENTIALS');
    assert.equal(codeOf(explainS3Error(wrapped(s3('NotFound', 404)), place)), 'S3NBD_NOT_S3');
    assert.equal(codeOf(explainS3Error(wrapped(s3('HTTP405', 405)), place)), 'S3NBD_NOT_S3');
    assert.equal(codeOf(explainS3Error(wrapped(net('ERR_HTTP_PARSE')), place)), 'S3NBD_NOT_S3');
    // What it does not know stays as it is.
    assert.equal(explainS3Error(wrapped(s3('InternalError', 500)), place), undefined);
  });

  it('names local failures by the option, with what is really wrong', async () => {
    const file = join(dir.path, 'file');
    writeFileSync(file, '');
    const places = [{ option: '--cache-dir', path: join(file, 'cache') }];
    const notDir = Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR', path: join(file, 'cache') });
    const e1 = await explainLocalError(notDir, places);
    assert.equal(e1?.code, 'S3NBD_NOT_A_DIRECTORY');
    assert.match(e1.message, new RegExp(`${file} is a file`));
    // As the directory store throws it: the errno error is the StorageError's cause.
    const fromStore = new StorageError('EIO', `get k failed in directory ${join(file, 'cache')}: ENOTDIR`, { cause: notDir });
    assert.equal((await explainLocalError(fromStore, places))?.code, 'S3NBD_NOT_A_DIRECTORY');
    mkdirSync(join(dir.path, 'c'));
    const full = Object.assign(new Error('ENOSPC'), { code: 'ENOSPC', path: join(dir.path, 'c', 'journal', 'x.log') });
    const e2 = await explainLocalError(full, [{ option: '--cache-dir', path: join(dir.path, 'c') }, { option: '--store', path: join(dir.path, 's') }]);
    assert.equal(e2?.code, 'S3NBD_LOCAL_FS');
    assert.match(e2.message, /^--cache-dir .* cannot be used: no space is left on the device \(ENOSPC\)$/);
    // Elsewhere, or not a file-system error: not ours to explain.
    assert.equal(await explainLocalError(Object.assign(new Error('x'), { code: 'EIO', path: '/elsewhere' }), places), undefined);
    assert.equal(await explainLocalError(new Error('plain'), places), undefined);
  });
});
