// libnbd's Python shell with client-side checks off (strict mode 0), so it can send what the
// spec forbids. Every bad request must get the spec's errno, and the session must go on.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, runOk } from '../helpers/tools.ts';

const SCRIPT = String.raw`
import errno, nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
size = h.get_size()
results = {}

def expect(name, err, fn):
    try:
        fn()
        results[name] = 'ok'
    except nbd.Error as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
    print(name, results[name], 'expected', err, flush=True)

expect('read-beyond-end', 'EINVAL', lambda: h.pread(4096, size - 512))
expect('write-beyond-end', 'ENOSPC', lambda: h.pwrite(b'x' * 4096, size - 512))
expect('trim-beyond-end', 'ENOSPC', lambda: h.trim(4096, size))
expect('zero-beyond-end', 'ENOSPC', lambda: h.zero(1024, size - 512))
expect('cache-beyond-end', 'EINVAL', lambda: h.cache(1024, size))
expect('status-beyond-end', 'EINVAL', lambda: h.block_status(4096, size, lambda *a: 0))
expect('read-unknown-flag', 'EINVAL', lambda: h.pread(512, 0, 0x40))
expect('write-no-hole-flag', 'EINVAL', lambda: h.pwrite(b'y' * 512, 0, nbd.CMD_FLAG_NO_HOLE))
expect('read-too-large', 'EINVAL', lambda: h.pread(64 * 1024 * 1024, 0))
expect('zero-length-read', 'EINVAL', lambda: h.pread(0, 0))
# The session survived all of that: normal I/O still works.
h.pwrite(b'\xab' * 1000, 12345, nbd.CMD_FLAG_FUA)
assert h.pread(1000, 12345) == b'\xab' * 1000
assert h.pread(10, 12340) == b'\0' * 5 + b'\xab' * 5
# Unaligned WRITE_ZEROES inside data, with FAST_ZERO: succeeds, zeros read back.
h.zero(100, 12400, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(1000, 12345) == b'\xab' * 55 + b'\0' * 100 + b'\xab' * 845
# DF read: one chunk, holes as explicit zeros.
assert h.pread(2 * 1048576, 0, nbd.CMD_FLAG_DF) == b'\0' * 12345 + b'\xab' * 55 + b'\0' * 100 + b'\xab' * 845 + b'\0' * (2 * 1048576 - 13345)
# BLOCK_STATUS: the first extent holds data, the second is a hole (HOLE|ZERO).
seen = []
h.block_status(3 * 1048576, 0, lambda ctx, off, entries, err: seen.extend(entries))
assert seen[:4] == [1048576, 0, 2 * 1048576, 3], seen
one = []
h.block_status(3 * 1048576, 0, lambda ctx, off, entries, err: one.extend(entries), nbd.CMD_FLAG_REQ_ONE)
assert len(one) == 2, one
# Whole-device TRIM in 4 GiB-sized requests, then everything reads as zeros.
off = 0
while off < size:
    n = min(size - off, 4 * 1024 ** 3 - 1048576)
    h.trim(n, off)
    off += n
h.flush()
assert h.pread(2048, 12000) == b'\0' * 2048
h.shutdown()
print('DONE', flush=True)
`;

describe('nbdsh with client-side checks off', () => {
  const dir = tempDir('nbdsh');
  let gw: Gateway;
  before(async () => {
    requireTool('nbdsh');
    gw = await startGateway(['--store', join(dir.path, 'store'), '--size', '10G'], { socket: join(dir.path, 'sock') });
  });
  after(async () => {
    await gw.stop();
    dir.remove();
  });

  it('gets the spec errno for every bad request and keeps the session', async () => {
    const out = await runOk('python3', ['-c', SCRIPT, gw.uri]);
    const lines = out.trim().split('\n');
    assert.equal(lines.at(-1), 'DONE');
    for (const line of lines.slice(0, -1)) {
      const [name, got, , want] = line.split(' ');
      assert.equal(got, want, name);
    }
    assert.equal(lines.length, 11);
  });
});
