// Debian's headless Chromium driven by puppeteer-core, for the status page's tests: a fresh
// profile in a temporary directory per browser, every console error, page error and failed
// request of a page recorded (the tests assert there are none, or only the ones they caused),
// and screenshots kept as test artifacts.

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { REPO, requireTool } from './tools.ts';

export const CHROMIUM = '/usr/bin/chromium';

export interface Chromium {
  readonly browser: Browser;
  /** Closes the browser and removes its profile; safe to call twice, and after a failed launch step. */
  close(): Promise<void>;
}

export async function launchChromium(): Promise<Chromium> {
  requireTool('chromium');
  const profile = mkdtempSync(join(tmpdir(), 's3nbd-chromium-'));
  try {
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir: profile,
      // Root in a container: Chromium's sandbox needs user namespaces it may not have.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
      timeout: 120_000,
      protocolTimeout: 120_000,
    });
    return {
      browser,
      async close() {
        await browser.close().catch(() => undefined);
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
}

/** What went wrong on a page, as the browser's DevTools would show it. */
export interface PageProblems {
  /** console.error calls, uncaught exceptions, and resource errors Chromium logs to the console. */
  readonly consoleErrors: string[];
  /** Requests that got no answer, or an HTTP status of 400 or more. */
  readonly failedRequests: string[];
}

export async function watchedPage(browser: Browser): Promise<{ page: Page; problems: PageProblems }> {
  const page = await browser.newPage();
  const problems: PageProblems = { consoleErrors: [], failedRequests: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.consoleErrors.push(`${msg.text()} (${msg.location().url ?? '?'})`);
  });
  page.on('pageerror', (err) => { problems.consoleErrors.push(`uncaught: ${err instanceof Error ? err.message : String(err)}`); });
  page.on('requestfailed', (req) => { problems.failedRequests.push(`${req.url()}: ${req.failure()?.errorText ?? 'failed'}`); });
  page.on('response', (res) => {
    if (res.status() >= 400) problems.failedRequests.push(`${res.url()}: HTTP ${res.status()}`);
  });
  return { page, problems };
}

/**
 * Where screenshots go: test-artifacts/ in the checkout (ignored by git), kept after the run.
 * Not $S3NBD_TEST_LOG_DIR: scripts/test.sh removes that when the suite ends.
 */
export function artifactDir(): string {
  const dir = join(REPO, 'test-artifacts');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A PNG's width and height, from its IHDR chunk; throws when the file is not a PNG. */
export function pngSize(path: string): { width: number; height: number; bytes: number } {
  const data = readFileSync(path);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (data.length < 24 || !data.subarray(0, 8).equals(signature) || data.toString('latin1', 12, 16) !== 'IHDR') {
    throw new Error(`${path} is not a PNG`);
  }
  return { width: data.readUInt32BE(16), height: data.readUInt32BE(20), bytes: data.length };
}
