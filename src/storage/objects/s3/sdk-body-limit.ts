// The AWS SDK reads the answers of every command but GetObject whole into memory (listings,
// delete results, the answers to PUTs) before it parses them. Those are small XML documents,
// but a broken or hostile endpoint decides their length: with a Content-Length of 4 GB, or a
// chunked body that never ends, the SDK would hold whatever came. This middleware, the last
// before the HTTP handler, refuses a declared length over the limit before any of the body is
// read and cuts a body that passes it, with the retryable ERR_BODY_TOO_LARGE of http1.ts.
// GetObject's stream is limited where it is read (readBody() in sdk-client.ts), to what
// was asked for.

import { pipeline, Readable, Transform } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { bodyTooLarge } from './http1-response.ts';

/** A listing of 1000 keys is about 300 KB; a DeleteObjects result with 1000 errors about as much. */
export const MAX_SDK_BODY = 8 * 1024 * 1024;

export function limitSdkBodies(client: S3Client, maxBytes = MAX_SDK_BODY): void {
  client.middlewareStack.add((next, context) => async (args) => {
    const result = await next(args);
    if (context.commandName === 'GetObjectCommand') return result;
    const response = result.response as { headers?: Record<string, string>; body?: unknown };
    const declared = Number(response.headers?.['content-length'] ?? 0);
    if (declared > maxBytes) {
      if (response.body instanceof Readable) response.body.destroy();
      throw bodyTooLarge(declared, maxBytes);
    }
    if (response.body instanceof Readable) response.body = capped(response.body, maxBytes);
    return result;
  }, { step: 'deserialize', priority: 'low', name: 's3nbdBodyLimit' });
}

/** `body`, failing (and destroying it) once more than `maxBytes` came. */
function capped(body: Readable, maxBytes: number): Readable {
  let received = 0;
  const limiter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      callback(received > maxBytes ? bodyTooLarge(received, maxBytes) : undefined, chunk);
    },
  });
  return pipeline(body, limiter, () => undefined);
}
