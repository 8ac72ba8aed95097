// --log-format (src/log.ts): JSON lines for machines, readable lines for people, and secrets
// redacted in both.

import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createLogger, resolveLogFormat } from '../../src/log.ts';
import { UserError } from '../../src/errors.ts';
import { until } from '../helpers/manual-clock.ts';

const dir = mkdtempSync(join(tmpdir(), 's3nbd-log-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Logs a record with secrets in it through a logger of this format, and returns what reached the file. */
async function written(format: string, isTTY: boolean): Promise<string> {
  const path = join(dir, `${format}-${String(isTTY)}.log`);
  const fd = openSync(path, 'w');
  const log = createLogger('info', format, { fd, isTTY });
  log.info({ s3: { secretAccessKey: 'wJalrXUtnFEMI-SECRET', region: 'eu-west-1' }, passphrase: 'correct horse battery' }, 'opened the store');
  log.warn('second line');
  // JSON lines are written asynchronously (as in production): wait until both are there.
  await until(() => readFileSync(path, 'utf8').split('\n').length > 2, 'both lines are written');
  closeSync(fd);
  return readFileSync(path, 'utf8');
}

describe('log formats', () => {
  it('auto means readable lines on a terminal and JSON anywhere else', () => {
    assert.equal(resolveLogFormat('auto', true), 'pretty');
    assert.equal(resolveLogFormat('auto', false), 'json');
    assert.equal(resolveLogFormat('json', true), 'json');
    assert.equal(resolveLogFormat('pretty', false), 'pretty');
    assert.throws(() => resolveLogFormat('xml', true), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_BAD_CHOICE');
  });

  for (const [format, isTTY] of [['pretty', true], ['pretty', false], ['auto', true]] as const) {
    it(`${format} on ${isTTY ? 'a terminal' : 'a file'}: a readable line per record, secrets redacted`, async () => {
      const text = await written(format, isTTY);
      assert.ok(!text.includes('SECRET') && !text.includes('horse'), text);
      const lines = text.trimEnd().split('\n');
      assert.equal(lines.length, 2, text);
      // eslint-disable-next-line no-control-regex
      const plain = lines.map((l) => l.replace(/\x1b\[[0-9;]*m/g, ''));
      assert.match(plain[0]!, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: opened the store \{.*"secretAccessKey":"\[redacted\]".*"passphrase":"\[redacted\]"/);
      assert.match(plain[1]!, /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: second line$/);
      assert.equal(text.includes('\x1b['), isTTY && process.env.NO_COLOR === undefined, 'colours on a terminal only');
    });
  }

  for (const [format, isTTY] of [['json', true], ['auto', false]] as const) {
    it(`${format} on ${isTTY ? 'a terminal' : 'a file'}: JSON lines, secrets redacted`, async () => {
      const text = await written(format, isTTY);
      assert.ok(!text.includes('SECRET') && !text.includes('horse'), text);
      const records = text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.deepEqual(records.map((r) => r.msg), ['opened the store', 'second line']);
      assert.deepEqual(records[0]!.s3, { secretAccessKey: '[redacted]', region: 'eu-west-1' });
      assert.equal(records[0]!.passphrase, '[redacted]');
    });
  }
});
