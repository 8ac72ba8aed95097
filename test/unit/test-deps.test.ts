// `npm test` must pass on a fresh Debian 12 machine. The tests only check for the tools they
// run (requireTool); installing them is scripts/install-test-deps.sh's job, and it has to
// happen before the test runner starts. A tool that is installed by hand, or by a script that
// some test runs later, passes on a developer's machine and fails on a new one: this test
// finds such a tool from the test sources alone, without needing the tool to be missing.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO, TOOL_ENV, TOOL_PACKAGES } from '../helpers/tools.ts';

/** Packages of priority "required" (or Essential): on every Debian 12 installation. */
const DEBIAN_BASE = new Set(['coreutils', 'findutils', 'mount', 'util-linux', 'dash', 'bash', 'dpkg']);

function sourcesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(dir, f));
}

/** Every tool a test file names: requireTool('x'), tool lists checked in a loop, and commands it runs. */
export function toolsNamedIn(source: string): string[] {
  const tools = new Set<string>();
  for (const m of source.matchAll(/requireTool\('([^']+)'\)/g)) tools.add(m[1]!);
  for (const m of source.matchAll(/for \(const tool of \[([^\]]*)\]/g)) {
    for (const t of m[1]!.matchAll(/'([^']+)'/g)) tools.add(t[1]!);
  }
  for (const m of source.matchAll(/\b(?:run|runOk|spawn|spawnSync|execFile|execFileSync)\('([^']+)'/g)) tools.add(m[1]!);
  return [...tools];
}

/** The Debian packages that the scripts scripts/test.sh runs before `node --test` install. */
export function packagesInstalledBeforeTests(): Set<string> {
  const testScript = readFileSync(join(REPO, 'scripts/test.sh'), 'utf8');
  const beforeRunner = testScript.slice(0, testScript.indexOf('node --test'));
  assert.ok(beforeRunner.length < testScript.length, 'scripts/test.sh runs node --test');
  const packages = new Set<string>();
  for (const m of beforeRunner.matchAll(/\bbash (scripts\/[\w./-]+\.sh)/g)) {
    const script = readFileSync(join(REPO, m[1]!), 'utf8');
    for (const list of script.matchAll(/^\s*APT_PACKAGES=\(([^)]*)\)/gm)) {
      for (const pkg of list[1]!.replace(/#.*$/gm, '').split(/\s+/)) if (pkg) packages.add(pkg);
    }
  }
  return packages;
}

/** The package dpkg says owns each path (one dpkg call), under its /usr-merged or its classic spelling. */
function dpkgOwners(paths: readonly string[]): Map<string, string> {
  const spellings = paths.flatMap((p) => [p, p.replace(/^\/usr(?=\/s?bin\/)/, '')]);
  const r = spawnSync('dpkg', ['-S', ...new Set(spellings)], { encoding: 'utf8' });
  const owners = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^([^:]+): (.+)$/.exec(line);
    if (m) owners.set(m[2]!, m[1]!.split(',')[0]!.trim());
  }
  const result = new Map<string, string>();
  for (const p of paths) {
    const owner = owners.get(p) ?? owners.get(p.replace(/^\/usr(?=\/s?bin\/)/, ''));
    if (owner !== undefined) result.set(p, owner);
  }
  return result;
}

describe('test dependencies', () => {
  const table: Record<string, string> = TOOL_PACKAGES;

  it('every tool a test names has a Debian package in the table', () => {
    const unknown: string[] = [];
    // This file names made-up tools on purpose, to test the scan.
    for (const file of sourcesUnder(join(REPO, 'test')).filter((f) => !f.endsWith('test-deps.test.ts'))) {
      for (const tool of toolsNamedIn(readFileSync(file, 'utf8'))) {
        if (!(tool in table)) unknown.push(`${tool} (${file.slice(REPO.length + 1)})`);
      }
    }
    assert.deepEqual(unknown, [], 'add these to TOOL_PACKAGES in test/helpers/tools.ts and their packages to scripts/install-test-deps.sh');
  });

  it('every package in the table is installed before the test runner starts', () => {
    const installed = packagesInstalledBeforeTests();
    const missing = Object.entries(table)
      .filter(([, pkg]) => !DEBIAN_BASE.has(pkg) && !installed.has(pkg))
      .map(([tool, pkg]) => `${tool} (${pkg})`);
    assert.deepEqual(missing, [], 'add these packages to APT_PACKAGES in scripts/install-test-deps.sh');
  });

  it('the table names the package that really provides each tool, where this machine has it', () => {
    const found = new Map<string, string[]>();
    for (const tool of Object.keys(table)) {
      const r = spawnSync('sh', ['-c', `command -v ${tool}`], { env: TOOL_ENV, encoding: 'utf8' });
      // A shell builtin (true) has no path, and no package to check.
      const path = r.stdout.trim();
      if (r.status === 0 && path.startsWith('/')) found.set(tool, [...new Set([path, realpathSync(path)])]);
    }
    const owners = dpkgOwners([...found.values()].flat());
    const wrong: string[] = [];
    for (const [tool, paths] of found) {
      const pkg = table[tool]!;
      const owner = paths.map((p) => owners.get(p)).find((o) => o !== undefined);
      // A tool outside dpkg (e.g. pyenv's python3) says nothing about the table. A versioned
      // package behind the one named is right too: Debian's python3 is python3.11-minimal's
      // binary behind the python3 package's link, and cc is gcc-12's behind gcc's.
      if (owner !== undefined && !owner.startsWith(pkg)) {
        wrong.push(`${tool}: table says ${pkg}, dpkg says ${owner}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it('finds tools named in each of the ways tests name them', () => {
    const source = "requireTool('a'); for (const tool of ['b', 'c'] as const) requireTool(tool); await runOk('d', []); spawn('e');";
    assert.deepEqual(toolsNamedIn(source).sort(), ['a', 'b', 'c', 'd', 'e']);
  });
});
