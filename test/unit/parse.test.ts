import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, parseFlag, parseListen, parseSize } from '../../src/cli/parse.ts';

describe('option parsing', () => {
  it('parses sizes with binary suffixes', () => {
    assert.equal(parseSize('--size', '512'), 512);
    assert.equal(parseSize('--size', '4K'), 4096);
    assert.equal(parseSize('--size', '1m'), 1 << 20);
    assert.equal(parseSize('--size', '10G'), 10 * 2 ** 30);
    assert.equal(parseSize('--size', '2TiB'), 2 * 2 ** 40);
    assert.equal(parseSize('--size', '1.5G'), 1.5 * 2 ** 30);
    for (const bad of ['', 'G', '10X', '-1G', '1.3', '1e3']) {
      assert.throws(() => parseSize('--size', bad), /--size: ".*" is not a size/);
    }
    // A size too large to be exact is a size: say it is too large, not that it is no size.
    assert.throws(() => parseSize('--size', '100P'), /--size "100P" is larger than the 1 PiB maximum/);
    assert.throws(() => parseSize('--cache-size', '99999999999P'), /--cache-size "99999999999P" is larger than the 8 PiB maximum/);
  });

  it('parses listen addresses', () => {
    assert.deepEqual(parseListen('127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseListen(':10809'), { host: '0.0.0.0', port: 10809 });
    for (const bad of ['10809', 'host:', 'host:70000', '::1:5']) assert.throws(() => parseListen(bad), /is not HOST:PORT/);
  });

  it('parses flags and formats sizes', () => {
    assert.equal(parseFlag('X', '1'), true);
    assert.equal(parseFlag('X', 'false'), false);
    assert.equal(parseFlag('X', undefined), undefined);
    assert.throws(() => parseFlag('X', 'maybe'), /X="maybe" is not a flag/);
    assert.equal(formatBytes(10 * 2 ** 30), '10 GiB');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(100), '100 bytes');
  });
});
