// A gateway as a real process: the CLI run from source by this Node.js (type stripping), as
// `node src/cli/main.ts serve ...`, its log kept in a file, its RSS readable from /proc, and
// killed when the test process exits.

import { keepOutput } from './log-sweep.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './tools.ts';

const MAIN = join(REPO, 'src/cli/main.ts');
const START_TIMEOUT_MS = 60_000;

export function rssOf(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export interface GatewayProcess {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  isReady(): boolean;
  exitedOnItsOwn(): boolean;
  tail(): string;
  /** The first few KiB of its stderr (Node's own lines, such as the inspector's address, come first). */
  head(): string;
  /** SIGKILL; resolves true if the process was still running when the signal went. */
  kill(): Promise<boolean>;
  stop(): Promise<number | null>;
}

/** `nodeArgs`: options for Node itself, before the script (e.g. --inspect=127.0.0.1:0). */
export function spawnGateway(args: string[], env: NodeJS.ProcessEnv, logPath: string, nodeArgs: string[] = []): GatewayProcess {
  const child = spawn(process.execPath, [...nodeArgs, MAIN, 'serve', ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const logFile = createWriteStream(logPath);
  let logs = '';
  let head = '';
  let ready = false;
  let killed = false;
  const exited = new Promise<number | null>((res) => child.once('close', (code) => {
    logFile.end(() => keepOutput('gateway log', readFileSync(logPath, 'utf8')));
    res(code);
  }));
  const onExit = (): void => { child.kill('SIGKILL'); };
  process.on('exit', onExit);
  void exited.then(() => process.off('exit', onExit));
  const readyP = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not listen within ${START_TIMEOUT_MS} ms:\n${logs.slice(-4000)}`)), START_TIMEOUT_MS);
    child.stderr.on('data', (d: Buffer) => {
      logFile.write(d);
      logs = (logs + d.toString()).slice(-20_000);
      if (head.length < 4000) head += d.toString();
      if (!ready && /"msg":"volume (opened|created)"/.test(logs)) {
        ready = true;
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`gateway exited (${code}) before listening:\n${logs.slice(-4000)}`));
    });
  });
  // A kill before readiness leaves the promise rejected: nobody need wait on it.
  readyP.catch(() => undefined);
  const done = async (): Promise<void> => { await exited; logFile.end(); };
  return {
    child,
    ready: readyP,
    isReady: () => ready,
    exitedOnItsOwn: () => !killed && child.exitCode !== null,
    tail: () => logs.slice(-4000),
    head: () => head,
    async kill() {
      killed = true;
      const running = child.exitCode === null && child.signalCode === null;
      if (running) child.kill('SIGKILL');
      await done();
      return running;
    },
    async stop() {
      killed = true;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const code = await exited;
      clearTimeout(timer);
      logFile.end();
      return code;
    },
  };
}

