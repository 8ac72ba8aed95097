// The Signature Version 4 of the direct GET and PUT path, against a case of AWS's published SigV4 test
// suite (get-header-key-duplicate: AKIDEXAMPLE, 2015-08-30T12:36:00Z). The path itself is
// tested against MinIO, which checks every signature (test/integration/s3-object-store.test.ts).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { sigV4Authorization } from '../../src/storage/objects/s3/s3-direct.ts';

describe('sigV4Authorization', () => {
  it('signs as the AWS SigV4 test suite expects', () => {
    const authorization = sigV4Authorization({
      method: 'GET',
      path: '/',
      headers: { host: 'example.amazonaws.com', 'my-header1': 'value2,value2,value1', 'x-amz-date': '20150830T123600Z' },
      payloadHash: createHash('sha256').update('').digest('hex'),
      amzDate: '20150830T123600Z',
      region: 'us-east-1',
      service: 'service',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' },
    });
    assert.equal(authorization, 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, '
      + 'SignedHeaders=host;my-header1;x-amz-date, Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea');
  });
});
