// Keeps docs/kernel-client.md true: every client command in its shell blocks is one the VM
// tests run (test/vm/guest-scripts.ts), every s3nbd option and S3NBD_* variable it names
// exists, and the messages it quotes are the ones the software prints.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO } from '../helpers/gateway.ts';
import { afterCrashScript, backupScript, interruptedBackupScript, NETLINK_ERROR, restoreScript } from '../vm/guest-scripts.ts';

const guide = readFileSync(join(REPO, 'docs/kernel-client.md'), 'utf8');
const cliSource = readdirSync(join(REPO, 'src/cli')).map((f) => readFileSync(join(REPO, 'src/cli', f), 'utf8')).join('\n');
const source = (path: string): string => readFileSync(join(REPO, 'src', path), 'utf8');

/** The lines of the guide's ```sh blocks, with continuation lines joined. */
function shellLines(): string[] {
  const lines: string[] = [];
  for (const block of guide.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    lines.push(...block[1]!.replaceAll('\\\n', ' ').split('\n').map((l) => l.trim()).filter(Boolean));
  }
  return lines;
}

describe('the user guide (docs/kernel-client.md)', () => {
  it('uses only client commands that the VM tests run, verbatim', () => {
    const scripts = [backupScript(1, { probeMissingModule: true }), backupScript(4), backupScript(4, { tls: true }), restoreScript(4),
      interruptedBackupScript(), afterCrashScript()];
    const guestLines = new Set(scripts.flatMap((s) => s.split('\n').map((l) => l.trim())));
    // The gateway side (docker, s3nbd) is checked by the option tests below; GATEWAY= is the
    // one line the tests set differently.
    const clientLines = shellLines().filter((l) => !/^(docker|s3nbd) /.test(l) && !l.startsWith('GATEWAY='));
    assert.ok(clientLines.length >= 15, clientLines.join('\n'));
    for (const line of clientLines) assert.ok(guestLines.has(line), `not run by the VM tests: ${line}`);
  });

  it('names only S3NBD_* variables, error codes and s3nbd options that exist', () => {
    const variables = new Set(guide.match(/S3NBD_[A-Z0-9_]+/g));
    assert.ok(variables.size >= 8);
    const errorCodes = source('errors.ts');
    for (const name of variables) {
      assert.ok(cliSource.includes(`'${name}'`) || errorCodes.includes(`'${name}'`), `no variable or error code ${name} in src/`);
    }

    const options = new Set<string>();
    const commands = [...shellLines().filter((l) => l.startsWith('s3nbd ')), ...[...guide.matchAll(/`(s3nbd [^`]+)`/g)].map((m) => m[1]!)];
    for (const command of commands) for (const m of command.matchAll(/--[a-z-]+/g)) options.add(m[0]);
    for (const m of guide.matchAll(/`(--[a-z-]+)/g)) options.add(m[1]!);
    assert.ok(options.size >= 5, [...options].join(" "));
    for (const option of options) assert.ok(cliSource.includes(`'${option} `) || cliSource.includes(`'${option}'`), `no option ${option} in src/cli/`);
  });

  it('quotes the messages that nbd-client and the gateway print', () => {
    const flat = guide.replace(/\s+/g, ' ');
    assert.ok(flat.includes(NETLINK_ERROR), 'the netlink error, as the VM test sees it');
    assert.ok(source('storage/cache/entries.ts').includes("'dirty limit reached: writes wait for uploads'"));
    assert.ok(flat.includes('`dirty limit reached: writes wait for uploads`'));
    assert.ok(source('storage/cache/flusher.ts').includes('`upload extent ${index}`') && source('storage/cache/flusher.ts').includes('failed; retrying'));
    assert.ok(flat.includes('`upload extent N failed; retrying`'));
    assert.ok(source('storage/volume/lease.ts').includes("'lease renewal failed; retrying'"));
    assert.ok(flat.includes('`lease renewal failed; retrying`'));
  });
});
