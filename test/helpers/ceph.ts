// A second real S3 server for integration tests: Ceph's RADOS Gateway from Debian's packages
// (installed with the other test tools; scripts/install-ceph.sh checks them), as a throw-away
// single-node cluster on 127.0.0.1: one monitor, one OSD on memstore (objects in the OSD's
// memory: nothing to format; the busiest test file peaks at about 0.9 GB) and radosgw with
// its beast front end, plus one S3 user.
// It answers the same S3TestServer interface as MinIO (test/helpers/minio.ts), so a test
// file runs the same cases against both. A missing tool or a cluster that cannot start fails
// the tests: never a skip.
//
// The cluster runs without cephx (auth none): it only listens on loopback, for the lifetime
// of one test file, and RGW still checks every S3 request's signature against its user.
// pause(), resume() and restart() act on radosgw, the S3 server proper; the monitor and the
// OSD, which hold the data, keep running, so a restarted gateway finds every object again.

import { registerSecret } from './log-sweep.ts';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBucket, type S3TestServer, watchdog, whenStopped } from './minio.ts';
import { freePort, requireTool, TOOL_ENV } from './tools.ts';

const USER = 's3nbdtest';
const SECRET = 's3nbdtestsecret';
registerSecret('Ceph RGW secret key', SECRET);
/** A start takes 1-3 s on an idle 2-core machine, up to 10 s on a loaded one; this bounds each attempt. */
const START_TIMEOUT_MS = 60_000;
const COMMAND_TIMEOUT_MS = 30_000;
const BINARIES = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'] as const;

/**
 * Starts a single-node Ceph cluster with RGW on free loopback ports. A start that fails is
 * tried once more from scratch (new directory, new ports): a port taken in between, or a
 * daemon that lost a race on a loaded machine, should not fail a test file.
 */
export async function startCeph(): Promise<S3TestServer> {
  for (const tool of BINARIES) requireTool(tool);
  const failures: string[] = [];
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 's3nbd-ceph-'));
    const cluster = new CephCluster(dir, await freePort(), await freePort());
    try {
      await cluster.start();
      return cluster;
    } catch (err) {
      await cluster.stop();
      failures.push(`attempt ${attempt}: ${(err as Error).message}`);
      if (attempt === 2) throw new Error(`Ceph RGW did not start:\n${failures.join('\n')}`, { cause: err });
    }
  }
}


const running = new Set<ChildProcess>();
const dirs = new Set<string>();
// No daemon outlives this process (see minio.ts: first in line, before node:test's listener).
process.prependListener('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Daemon {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

class CephCluster implements S3TestServer {
  readonly endpoint: string;
  readonly accessKeyId = USER;
  readonly secretAccessKey = SECRET;
  readonly region = 'us-east-1';
  readonly controllable = true;
  private readonly dir: string;
  private readonly conf: string;
  private readonly daemons: Daemon[] = [];
  private rgw: Daemon | undefined;

  constructor(dir: string, monPort: number, rgwPort: number) {
    this.dir = dir;
    dirs.add(dir);
    this.conf = join(dir, 'ceph.conf');
    this.endpoint = `http://127.0.0.1:${rgwPort}`;
    for (const sub of ['mon', 'osd/osd.0', 'run', 'log', 'rgw']) mkdirSync(join(dir, sub), { recursive: true });
    writeFileSync(this.conf, config(dir, randomUUID(), monPort, rgwPort));
  }

  async start(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    const fsid = /fsid = (\S+)/.exec(readFileSync(this.conf, 'utf8'))![1]!;
    const monAddr = /mon host = (\S+)/.exec(readFileSync(this.conf, 'utf8'))![1]!;
    await this.command('monmaptool', ['--create', '--add', 'a', monAddr, '--fsid', fsid, join(this.dir, 'monmap')]);
    await this.command('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', join(this.dir, 'monmap')]);
    this.daemons.push(this.spawn('ceph-mon', ['-i', 'a']));
    // Registers OSD 0 (waiting for the monitor to answer) and places it in the CRUSH map. An
    // OSD that does this itself at start can send its command before it knows the cluster's
    // fsid ("wrong fsid", then it exits), seen on a loaded machine.
    const osdUuid = randomUUID();
    await this.command('ceph', ['--connect-timeout', '20', 'osd', 'new', osdUuid]);
    await this.command('ceph', ['--connect-timeout', '20', 'osd', 'crush', 'add', 'osd.0', '1.0', 'root=default']);
    await this.command('ceph-osd', ['-i', '0', '--mkfs', '--osd-uuid', osdUuid]);
    this.daemons.push(this.spawn('ceph-osd', ['-i', '0']));
    // radosgw creates its pools first (which needs the OSD up), then listens.
    await this.startRgw(deadline);
    await this.command('radosgw-admin', ['user', 'create', `--uid=${USER}`, '--display-name=s3nbd tests',
      `--access-key=${USER}`, `--secret-key=${SECRET}`]);
  }

  async createBucket(name: string): Promise<void> {
    await createBucket(this, name);
  }

  async pause(): Promise<void> {
    const pid = this.rgwPid();
    process.kill(pid, 'SIGSTOP');
    await whenStopped(pid, 'radosgw');
  }

  resume(): void {
    process.kill(this.rgwPid(), 'SIGCONT');
  }

  async restart(whileDown?: () => Promise<void>): Promise<void> {
    await this.killRgw();
    await whileDown?.();
    await this.startRgw(Date.now() + START_TIMEOUT_MS);
  }

  async stop(): Promise<void> {
    await this.killRgw();
    for (const daemon of this.daemons.splice(0).reverse()) {
      daemon.child.kill('SIGKILL');
      await daemon.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
    dirs.delete(this.dir);
  }

  private rgwPid(): number {
    const child = this.rgw?.child;
    if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) throw new Error('radosgw is not running');
    return child.pid;
  }

  /** SIGKILL works on a paused process too; the objects live in the OSD. */
  private async killRgw(): Promise<void> {
    if (!this.rgw) return;
    this.rgw.child.kill('SIGKILL');
    await this.rgw.exited;
    this.rgw = undefined;
  }

  private async startRgw(deadline: number): Promise<void> {
    const rgw = this.spawn('radosgw', ['-n', 'client.rgw.a']);
    this.rgw = rgw;
    for (;;) {
      for (const d of [...this.daemons, rgw]) {
        if (d.child.exitCode !== null || d.child.signalCode !== null) {
          throw new Error(`${d.child.spawnargs[0]} exited while the cluster was starting:\n${this.logs()}`);
        }
      }
      if (await answers(this.endpoint)) return;
      if (Date.now() > deadline) throw new Error(`Ceph RGW did not answer within ${START_TIMEOUT_MS} ms:\n${this.logs()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A daemon in the foreground, owned by this process (and killed by a watchdog if this process dies). */
  private spawn(binary: string, args: readonly string[]): Daemon {
    const child = spawn(binary, ['-f', '-c', this.conf, ...args], { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'ignore'] });
    running.add(child);
    const dog = child.pid === undefined ? undefined : watchdog(child.pid);
    const exited = new Promise<void>((resolve) => child.once('exit', () => {
      running.delete(child);
      dog?.kill('SIGKILL');
      resolve();
    }));
    return { child, exited };
  }

  /** Runs one of Ceph's tools against this cluster, bounded in time. */
  private command(binary: string, args: readonly string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(binary, ['-c', this.conf, ...args], { env: TOOL_ENV, timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${binary} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}\n${this.logs()}`));
        else resolve(stdout);
      });
    });
  }

  /** The end of each daemon's log, for an error message. */
  private logs(): string {
    return ['mon.a', 'osd.0', 'client.rgw.a'].map((name) => {
      const file = join(this.dir, 'log', `${name}.log`);
      const text = existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-15).join('\n') : '(no log)';
      return `--- ${name}\n${text}`;
    }).join('\n');
  }
}

/** RGW answers an anonymous GET / (ListBuckets) with 200 once it serves requests. */
async function answers(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * A cluster of one: pools of size 1 and few placement groups, no manager daemon (only
 * statistics need it), mon commands settled in milliseconds instead of the default second
 * each (radosgw's first start issues a dozen: 12 s of a 14 s start), and logs kept quiet.
 */
function config(dir: string, fsid: string, monPort: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = v1:127.0.0.1:${monPort}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
mon data = ${dir}/mon/$name
osd data = ${dir}/osd/$name
ms bind msgr2 = false
ms bind ipv6 = false
public addr = 127.0.0.1
public network = 127.0.0.0/8
paxos propose interval = 0.01
paxos min wait = 0.001
mon data avail warn = 1
mon data avail crit = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd crush update on start = false
osd class update on start = false
osd objectstore = memstore
memstore device bytes = ${8 * 2 ** 30}
debug rgw = 0/5
debug ms = 0/0
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
rgw thread pool size = 64
rgw enable usage log = false
`;
}
