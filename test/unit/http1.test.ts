// The HTTP/1.1 client of the direct S3 path: its response parser with answers split at every
// byte, and the client against node:http servers on 127.0.0.1 (keep-alive, the connection
// limit, servers that close or cut answers short, aborts). Against S3 itself it is tested
// through MinIO in test/integration/s3-object-store.test.ts.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { Http1Client } from '../../src/storage/objects/s3/http1.ts';
import { MAX_ERROR_BODY, ResponseParser } from '../../src/storage/objects/s3/http1-response.ts';

/** Feeds `text` to a parser cut at `cut` (and in one piece when cut is 0); returns the parser. */
function parse(text: string | Buffer, cut: number, method = 'GET', maxBody?: number): { parser: ResponseParser; complete: boolean } {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1');
  const parser = new ResponseParser(method, maxBody);
  let complete = false;
  for (const piece of cut === 0 ? [bytes] : [bytes.subarray(0, cut), bytes.subarray(cut)]) {
    // A scratch buffer that is overwritten after each push, as the connection's read buffer is.
    const scratch = Buffer.from(piece);
    complete = parser.push(scratch);
    scratch.fill(0x55);
  }
  return { parser, complete };
}

describe('ResponseParser', () => {
  const cases: Array<{ name: string; text: string; status: number; body: string; keepAlive: boolean }> = [
    { name: 'Content-Length', text: 'HTTP/1.1 200 OK\r\nETag: "abc"\r\nContent-Length: 11\r\n\r\nhello world', status: 200, body: 'hello world', keepAlive: true },
    { name: 'chunked with an extension and trailers', text: 'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n', status: 404, body: 'hello world', keepAlive: true },
    { name: 'a 100 Continue first', text: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok', status: 200, body: 'ok', keepAlive: false },
    { name: 'an empty body', text: 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', status: 200, body: '', keepAlive: true },
  ];
  for (const c of cases) {
    it(`reads ${c.name}, split at every byte`, () => {
      for (let cut = 0; cut < c.text.length; cut++) {
        const { parser, complete } = parse(c.text, cut);
        assert.ok(complete, `complete when cut at ${cut}`);
        const res = parser.response();
        assert.equal(res.status, c.status);
        assert.equal(res.body.toString('latin1'), c.body, `body when cut at ${cut}`);
        assert.equal(parser.keepAlive, c.keepAlive);
        assert.equal(parser.leftover, 0);
      }
    });
  }

  it('reads a body delimited by the end of the connection, and never reuses that connection', () => {
    const { parser, complete } = parse('HTTP/1.1 200 OK\r\nETag: "e"\r\n\r\nall of it', 20);
    assert.equal(complete, false);
    assert.equal(parser.end(), true);
    assert.equal(parser.response().body.toString(), 'all of it');
    assert.equal(parser.keepAlive, false);
  });

  it('counts bytes past the end of the answer, and names headers in lower case', () => {
    const { parser } = parse('HTTP/1.1 200 OK\r\nETAG: "x"\r\nContent-Length: 2\r\n\r\nokEXTRA', 0);
    assert.equal(parser.leftover, 5);
    assert.equal(parser.response().headers.get('etag'), '"x"');
  });

  it('keeps only the start of a long error body, and all of a long success', () => {
    const big = 'x'.repeat(MAX_ERROR_BODY * 2);
    assert.equal(parse(`HTTP/1.1 500 Oops\r\nContent-Length: ${big.length}\r\n\r\n${big}`, 1000).parser.response().body.length, MAX_ERROR_BODY);
    const chunked = `HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`;
    assert.equal(parse(chunked, 1000).parser.response().body.length, MAX_ERROR_BODY);
    assert.equal(parse(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n${big}`, 1000, 'GET', big.length).parser.response().body.length, big.length);
  });

  it('refuses a successful body longer than asked for before keeping any of it', () => {
    // Declared: refused with the head, whatever follows (a 4 GB Content-Length used to be allocated).
    assert.throws(() => parse('HTTP/1.1 200 OK\r\nContent-Length: 4000000000\r\n\r\n', 0, 'GET', 1 << 20), { code: 'ERR_BODY_TOO_LARGE', message: /1048576 bytes asked for \(4000000000/ });
    // Chunked or until the end: refused once the body passes the limit.
    const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n';
    for (let cut = 0; cut < chunked.length; cut++) assert.throws(() => parse(chunked, cut, 'GET', 12), { code: 'ERR_BODY_TOO_LARGE' }, `cut at ${cut}`);
    assert.equal(parse(chunked, 0, 'GET', 16).parser.response().body.toString(), '1234567812345678');
    assert.throws(() => parse('HTTP/1.1 200 OK\r\n\r\n123456789', 0, 'GET', 8), { code: 'ERR_BODY_TOO_LARGE' });
    // Without a limit from the caller, a success may carry at most MAX_ERROR_BODY (an S3 PUT's answer has none).
    assert.throws(() => parse(`HTTP/1.1 200 OK\r\nContent-Length: ${MAX_ERROR_BODY + 1}\r\n\r\n`, 0), { code: 'ERR_BODY_TOO_LARGE' });
    // An error's body is not the caller's object: it is cut to MAX_ERROR_BODY, not refused.
    assert.equal(parse('HTTP/1.1 500 Oops\r\nContent-Length: 20\r\n\r\n01234567890123456789', 0, 'GET', 8).parser.response().body.length, 20);
  });

  it('says how much of a body arrived when the connection ends early', () => {
    const { parser, complete } = parse('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc', 0);
    assert.equal(complete, false);
    assert.equal(parser.end(), false);
    const err = parser.prematureEnd() as Error & { code: string };
    assert.equal(err.code, 'ERR_STREAM_PREMATURE_CLOSE');
    assert.match(err.message, /after 3 of 10 bytes/);
    assert.equal((new ResponseParser('GET').prematureEnd() as Error & { code: string }).code, 'ECONNRESET');
  });

  it('rejects what is not HTTP/1.x', () => {
    for (const text of ['SSH-2.0-OpenSSH\r\n\r\n', 'HTTP/1.1 200 OK\r\nno colon\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n']) {
      assert.throws(() => parse(text, 0), { code: 'ERR_HTTP_PARSE' }, text);
    }
    assert.throws(() => parse(`HTTP/1.1 200 OK\r\n${'a: b\r\n'.repeat(20_000)}`, 0), /longer than/);
  });
});

describe('Http1Client', () => {
  type Handler = (req: IncomingMessage, res: ServerResponse) => void;
  async function serve(handler: Handler): Promise<{ url: URL; connections: () => number; close(): Promise<void> }> {
    let connections = 0;
    const sockets = new Set<Socket>();
    const server = createServer(handler);
    server.on('connection', (socket) => {
      connections++;
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    return {
      url: new URL(`http://127.0.0.1:${port}`),
      connections: () => connections,
      close: () => new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
    };
  }
  const never = new AbortController().signal;
  const get = (path = '/x'): { method: string; path: string; headers: Record<string, string> } => ({ method: 'GET', path, headers: { host: 'test' } });
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it('sends bodies and reuses one connection for requests one after another', async () => {
    const server = await serve((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => res.end(`${req.method} ${req.url} ${Buffer.concat(chunks).length}`));
    });
    const client = new Http1Client(server.url, 4);
    cleanups.push(() => client.close(), () => server.close());
    for (let i = 0; i < 5; i++) {
      const body = Buffer.alloc(300_000 * i, i);
      const res = await client.request({ method: 'PUT', path: `/k${i}`, headers: { host: 'test', 'content-length': String(body.length) }, body: [body] }, never);
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), `PUT /k${i} ${body.length}`);
    }
    assert.equal(server.connections(), 1);
  });

  it('opens at most maxConnections, queueing the rest', async () => {
    let inFlight = 0;
    let most = 0;
    const server = await serve((_req, res) => {
      most = Math.max(most, ++inFlight);
      setTimeout(() => {
        inFlight--;
        res.end('done');
      }, 10);
    });
    const client = new Http1Client(server.url, 3);
    cleanups.push(() => client.close(), () => server.close());
    const answers = await Promise.all(Array.from({ length: 12 }, () => client.request(get(), never)));
    assert.ok(answers.every((a) => a.body.toString() === 'done'));
    assert.equal(most, 3);
    assert.equal(server.connections(), 3);
  });

  it('drops an idle connection the server closed, and a request after it opens a new one', async () => {
    const server = await serve((_req, res) => {
      res.end('bye');
      res.socket?.end(); // keep-alive announced, yet closed once idle
    });
    const client = new Http1Client(server.url, 1);
    cleanups.push(() => client.close(), () => server.close());
    assert.equal((await client.request(get(), never)).body.toString(), 'bye');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal((await client.request(get(), never)).body.toString(), 'bye');
    assert.equal(server.connections(), 2);
  });

  it('fails with retryable codes when a connection dies before or during an answer', async () => {
    const server = await serve((req, res) => {
      if (req.url === '/reset') {
        req.socket.destroy();
        return;
      }
      res.writeHead(200, { 'content-length': '100' });
      res.write('only part');
      setTimeout(() => res.socket?.destroy(), 10);
    });
    const client = new Http1Client(server.url, 2);
    cleanups.push(() => client.close(), () => server.close());
    await assert.rejects(client.request(get('/reset'), never), { code: 'ECONNRESET' });
    await assert.rejects(client.request(get('/cut'), never), { code: 'ERR_STREAM_PREMATURE_CLOSE', message: /after 9 of 100 bytes/ });
  });

  it('aborts a request waiting for its answer and one waiting for a connection, and stays usable', async () => {
    const server = await serve((req, res) => {
      if (req.url !== '/slow') res.end('fast');
    });
    const client = new Http1Client(server.url, 1);
    cleanups.push(() => client.close(), () => server.close());
    const controller = new AbortController();
    const slow = client.request(get('/slow'), controller.signal);
    const queued = client.request(get('/fast'), controller.signal);
    setTimeout(() => controller.abort(new Error('timed out')), 20);
    await assert.rejects(slow, { name: 'AbortError' });
    await assert.rejects(queued, { name: 'AbortError' });
    assert.equal((await client.request(get('/fast'), never)).body.toString(), 'fast');
  });

  it('refuses to start an exchange whose signal was aborted after the connection was found', async () => {
    const server = await serve(() => undefined); // never answers
    const client = new Http1Client(server.url, 1);
    cleanups.push(() => client.close(), () => server.close());
    // Aborted between acquire()'s check and the exchange, whose listener then hears nothing.
    let checks = 0;
    const signal = Object.defineProperties(new EventTarget(), {
      aborted: { get: () => ++checks > 1 },
      reason: { value: new Error('timed out') },
    }) as unknown as AbortSignal;
    const hung = new Promise((_, reject) => setTimeout(() => reject(new Error('still waiting after 2 s')), 2000).unref());
    await assert.rejects(Promise.race([client.request(get('/slow'), signal), hung]), { name: 'AbortError' });
  });

  it('speaks HTTPS, checking the server certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 's3nbd-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const cert = readFileSync(join(dir, 'cert.pem'));
    const answer = randomBytes(1_000_000);
    const server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert }, (req, res) => {
      req.resume();
      req.on('end', () => res.end(answer));
    });
    let handshakes = 0;
    server.on('secureConnection', () => handshakes++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }));
    const url = new URL(`https://localhost:${(server.address() as AddressInfo).port}`);
    const trusting = new Http1Client(url, 2, { ca: cert });
    const untrusting = new Http1Client(url, 2);
    cleanups.push(() => trusting.close(), () => untrusting.close());
    for (let i = 0; i < 2; i++) {
      const res = await trusting.request({ method: 'PUT', path: '/k', headers: { host: 'localhost', 'content-length': '3' }, body: [Buffer.from('abc')], maxBody: 1_000_000 }, never);
      assert.ok(res.body.equals(answer));
    }
    assert.equal(handshakes, 1, 'one connection, kept alive');
    await assert.rejects(untrusting.request(get(), never), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  /** A server speaking raw HTTP: `answer` writes the answer to each request on the socket. */
  async function rawServer(answer: (socket: Socket, request: number) => Promise<void>): Promise<{ url: URL; connections: () => number }> {
    let connections = 0;
    let requests = 0;
    const sockets = new Set<Socket>();
    const server = createNetServer((socket) => {
      connections++;
      sockets.add(socket);
      let pending = '';
      socket.on('error', () => undefined);
      socket.on('data', (data: Buffer) => {
        pending += data.toString('latin1');
        for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
          pending = pending.slice(end + 4);
          void answer(socket, requests++);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    }));
    return { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), connections: () => connections };
  }
  const pause = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1));

  it('reads bodies straight into the buffers it returns, each whole and untouched by the answers after it', async () => {
    const bodies = Array.from({ length: 4 }, (_, i) => randomBytes(1_000_000 + i * 77_777));
    const server = await rawServer(async (socket, i) => {
      const body = bodies[i]!;
      // The head with the start of the body, then the rest in pieces of every size, with pauses.
      socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nETag: "${i}"\r\nContent-Length: ${body.length}\r\n\r\n`), body.subarray(0, 1000)]));
      for (let at = 1000, piece = 1; at < body.length; at += piece, piece = (piece * 7 + 13) % 300_000 + 1) {
        socket.write(body.subarray(at, Math.min(body.length, at + piece)));
        if (piece % 3 === 0) await pause();
      }
    });
    const client = new Http1Client(server.url, 1);
    cleanups.push(() => client.close());
    const got: Buffer[] = [];
    for (let i = 0; i < bodies.length; i++) got.push((await client.request({ ...get(), maxBody: 2_000_000 }, never)).body);
    got.forEach((body, i) => assert.ok(body.equals(bodies[i]!), `body ${i}`));
    assert.equal(server.connections(), 1);
  });

  it('never lets bytes past an answer\'s Content-Length into its body, and does not reuse that connection', async () => {
    const body = randomBytes(300_000);
    const server = await rawServer(async (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
      await pause();
      socket.write(Buffer.concat([body, Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra')]));
    });
    const client = new Http1Client(server.url, 1);
    cleanups.push(() => client.close());
    for (let i = 0; i < 2; i++) {
      const res = await client.request({ ...get(), maxBody: 1_000_000 }, never);
      assert.ok(res.body.equals(body));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(server.connections(), 2, 'a connection that said more than it was asked is closed');
  });

  it('refuses headers or paths that would split the request', async () => {
    const client = new Http1Client(new URL('http://127.0.0.1:9'), 1);
    await assert.rejects(client.request({ method: 'GET', path: '/a', headers: { host: 'x', evil: 'a\r\nx-injected: 1' } }, never), /bad HTTP header: evil/);
    await assert.rejects(client.request({ method: 'GET', path: '/a b', headers: { host: 'x' } }, never), /bad HTTP request line/);
  });
});
