#!/usr/bin/env node
// The s3nbd command line. Every option can also come from an S3NBD_* environment variable
// (handy in containers); a flag on the command line wins over the environment.

import './gc-tuning.ts';
import { Command, Option } from 'commander';
import { Errors, UserError } from '../errors.ts';
import { DEFAULT_MEMORY_CACHE } from '../storage/stack.ts';
import { DEFAULT_STORE } from '../storage/objects/store-url.ts';
import { TLS_MODES } from '../protocol/tls.ts';
import { LOG_FORMATS } from '../log.ts';
import { COMPRESSION_CHOICES, ENCRYPTION_CHOICES, parseCompression } from '../storage/format/object-settings.ts';
import { runCreate, runInfo } from './info.ts';
import { runKeyChange } from './key.ts';
import { formatBytes, parseSize } from './parse.ts';
import { runServe } from './serve.ts';
import { runHealth } from './health.ts';
import { runClone } from './clone.ts';
import { runSnapshotPrune } from './prune.ts';
import { runGc, runSnapshotCreate, runSnapshotDelete, runSnapshotList, runSnapshotRestore } from './snapshot.ts';
import { runUndelete } from './undelete.ts';
import { runVolumeCreate, runVolumeDelete, runVolumeList, runVolumeResize } from './volume.ts';
import { versionText } from './version.ts';
import { DEFAULT_MAX_VOLUMES, MAX_MAX_VOLUMES } from '../service/volume-shares.ts';

export const DEFAULT_CACHE_DIR = './s3nbd-cache';

function sizeOption(flags: string, description: string, env: string): Option {
  return new Option(flags, description).env(env).argParser((text: string) => parseSize(flags.split(' ')[0]!, text));
}

function countOption(flags: string, description: string, env: string, min: number, max: number): Option {
  const name = flags.split(' ')[0]!;
  return new Option(flags, description).env(env).argParser((text: string) => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < min || n > max) throw Errors.badNumber(name, text, min, max);
    return n;
  });
}

function choiceOption(flags: string, description: string, env: string, choices: readonly string[]): Option {
  const name = flags.split(' ')[0]!;
  return new Option(flags, description).env(env).default(choices[0]).argParser((text: string) => {
    if (!choices.includes(text)) throw Errors.badChoice(name, text, choices);
    return text;
  });
}

/** Where the volume lives: shared by every command. */
function addStoreOptions(cmd: Command): Command {
  return addS3Options(cmd
    .addOption(new Option('--store <url>', 's3://BUCKET/PREFIX, a directory, file:///path, or memory:').env('S3NBD_STORE').default(DEFAULT_STORE)));
}

/** How to reach S3: every command that opens a store. */
function addS3Options(cmd: Command): Command {
  return cmd
    .addOption(new Option('--s3-endpoint <url>', 'S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS, or AWS_ENDPOINT_URL_S3)').env('S3NBD_S3_ENDPOINT'))
    .addOption(new Option('--s3-region <region>', 'S3 region (default: AWS_REGION, the profile, or us-east-1 with an endpoint)').env('S3NBD_S3_REGION'))
    .addOption(new Option('--s3-force-path-style', 'bucket in the URL path, not the host name (default with --s3-endpoint; env S3NBD_S3_FORCE_PATH_STYLE=1)'));
}

/**
 * How a new volume stores its extents, and the key of an encrypted one. The passphrase itself
 * is never an option (it would show in `ps`): a file, or S3NBD_PASSPHRASE.
 */
function addObjectOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--compression <zstd[:LEVEL]|off>', 'a new volume compresses each extent with zstd (default zstd: level 1), or not').env('S3NBD_COMPRESSION')
      .argParser((text: string) => parseCompression(text) ?? (() => { throw Errors.badChoice('--compression', text, COMPRESSION_CHOICES); })()))
    .addOption(new Option('--encryption <cipher>', `a new volume's cipher: ${ENCRYPTION_CHOICES.join(', ')} (default off; aes-256-gcm when a key is given)`).env('S3NBD_ENCRYPTION')
      .argParser((text: string) => {
        if (!(ENCRYPTION_CHOICES as readonly string[]).includes(text)) throw Errors.badChoice('--encryption', text, ENCRYPTION_CHOICES);
        return text;
      }))
    .addOption(passphraseFileOption())
    .addOption(keyFileOption());
}

const passphraseFileOption = (): Option => new Option('--passphrase-file <file>', 'the passphrase of an encrypted volume, in a file (or set S3NBD_PASSPHRASE)').env('S3NBD_PASSPHRASE_FILE');
const keyFileOption = (): Option => new Option('--key-file <file>', 'instead of a passphrase: a 32-byte key (or 64 hex digits) in a file').env('S3NBD_KEY_FILE');

/** The key options alone (clone: the clone takes the origin's settings and shares its key). */
function addKeyOptions(cmd: Command): Command {
  return cmd.addOption(passphraseFileOption()).addOption(keyFileOption());
}

const program = new Command('s3nbd')
  .description('A network block device (NBD) server that keeps its data in S3-style object storage.')
  .version(versionText(), '-V, --version', 'print the version and the commit it was built from')
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (text, write) => write(text) });

const serve = addObjectOptions(addStoreOptions(program.command('serve')))
  .description('serve a volume over NBD (creating it first when --size is given and none exists)')
  .addOption(new Option('--volumes <url>', 'instead of --store: serve every volume under this prefix (s3://BUCKET/PREFIX or a directory), volume NAME at <url>/NAME as export NAME').env('S3NBD_VOLUMES'))
  .addOption(countOption('--max-volumes <n>', 'with --volumes: volumes served at most; each gets 1/n of --memory-cache, --cache-size, --max-dirty and --upload-concurrency (at least 1)',
    'S3NBD_MAX_VOLUMES', 1, MAX_MAX_VOLUMES).default(DEFAULT_MAX_VOLUMES))
  .addOption(sizeOption('--size <size>', 'device size, e.g. 10G; creates the volume if there is none', 'S3NBD_SIZE'))
  .addOption(sizeOption('--extent-size <size>', 'size of each stored object for a new volume (default 1M)', 'S3NBD_EXTENT_SIZE'))
  .addOption(new Option('--listen <host:port>', 'TCP address to listen on').env('S3NBD_LISTEN').default('127.0.0.1:10809'))
  .addOption(new Option('--socket <path>', 'Unix socket to listen on (instead of TCP unless --listen is also given)').env('S3NBD_SOCKET'))
  .addOption(new Option('--export-name <name>', 'export name; the empty name "" always selects this export too').env('S3NBD_EXPORT_NAME').default(''))
  .addOption(new Option('--read-only', 'refuse writes (env S3NBD_READ_ONLY=1)'))
  .addOption(choiceOption('--tls <mode>', 'TLS on NBD connections: off, on (the client chooses) or require (refuse clients without TLS)', 'S3NBD_TLS', TLS_MODES))
  .addOption(new Option('--tls-certificates <dir>', 'X.509 files: server-cert.pem, server-key.pem (and ca-cert.pem for --tls-verify-peer)').env('S3NBD_TLS_CERTIFICATES'))
  .addOption(new Option('--tls-psk <file>', 'pre-shared keys as psktool writes them (username:hexkey lines); overrides --tls-certificates').env('S3NBD_TLS_PSK'))
  .addOption(new Option('--tls-verify-peer', 'require a client certificate signed by ca-cert.pem (env S3NBD_TLS_VERIFY_PEER=1)'))
  .addOption(new Option('--cache-dir <dir>', 'local directory for the journal and the disk cache (one per volume; with --volumes, the gateway\'s: volumes/NAME in it for each)').env('S3NBD_CACHE_DIR').default(DEFAULT_CACHE_DIR))
  .addOption(sizeOption('--cache-size <size>', 'disk space for cached extents, dirty and clean', 'S3NBD_CACHE_SIZE').default(4 * 2 ** 30, '4G'))
  .addOption(sizeOption('--max-dirty <size>', 'dirty data before writes wait for uploads', 'S3NBD_MAX_DIRTY').default(2 ** 30, '1G'))
  .addOption(sizeOption('--memory-cache <size>', 'memory for clean extents; the gateway aims to stay within it + 150 MiB of RSS', 'S3NBD_MEMORY_CACHE').default(DEFAULT_MEMORY_CACHE, formatBytes(DEFAULT_MEMORY_CACHE)))
  .addOption(countOption('--upload-concurrency <n>', 'uploads in flight at once', 'S3NBD_UPLOAD_CONCURRENCY', 1, 256).default(16))
  .addOption(choiceOption('--flush-mode <mode>', 's3: FLUSH waits until data is in the store; local: FLUSH only fsyncs the local journal', 'S3NBD_FLUSH_MODE', ['s3', 'local']))
  .addOption(countOption('--drain-timeout <seconds>', 'on SIGTERM, how long to keep uploading dirty data before exiting', 'S3NBD_DRAIN_TIMEOUT', 0, 86_400).default(600))
  .addOption(new Option('--take-over', 'serve even if another gateway holds the volume (it is fenced off; env S3NBD_TAKE_OVER=1)'))
  .addOption(countOption('--lease-ttl <seconds>', 'writer lease lifetime', 'S3NBD_LEASE_TTL', 3, 3600).default(30).hideHelp())
  .addOption(countOption('--upload-delay <ms>', 'how long a dirty extent waits before upload', 'S3NBD_UPLOAD_DELAY', 0, 3_600_000).default(200).hideHelp())
  .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('S3NBD_LOG_LEVEL').default('info'))
  .addOption(choiceOption('--log-format <format>', 'auto (readable lines on a terminal, JSON lines otherwise), json or pretty', 'S3NBD_LOG_FORMAT', LOG_FORMATS))
  .addOption(countOption('--read-timeout <seconds>', 'how long a read may wait on S3, retries included, before it fails with EIO', 'S3NBD_READ_TIMEOUT', 1, 86_400).default(60))
  .addOption(new Option('--snapshot <name>', 'serve this snapshot of the volume alone, read-only (export EXPORT@NAME, and "")').env('S3NBD_SNAPSHOT'))
  .addOption(new Option('--admin-listen <[host:]port>', 'serve health checks, Prometheus metrics, status and the status page over HTTP here (a bare port: 127.0.0.1; see docs/monitoring.md)').env('S3NBD_ADMIN_LISTEN'))
  .addOption(new Option('--admin-token-file <file>', 'a secret the admin endpoint requires as "Authorization: Bearer" (required beyond loopback; or set S3NBD_ADMIN_TOKEN)').env('S3NBD_ADMIN_TOKEN_FILE'))
  .addOption(new Option('--snapshot-every <duration>', 'take a snapshot auto-<UTC time> this often (e.g. 1h, 15m), pruned by the --keep-* options').env('S3NBD_SNAPSHOT_EVERY'));
keepOptions(serve, true)
  .action(async (opts: Record<string, unknown>, cmd: Command) => {
    await runServe(opts, cmd);
  });

addObjectOptions(addStoreOptions(program.command('create')))
  .description('create a new volume without serving it')
  .addOption(sizeOption('--size <size>', 'device size, e.g. 10G', 'S3NBD_SIZE').makeOptionMandatory())
  .addOption(sizeOption('--extent-size <size>', 'size of each stored object (default 1M)', 'S3NBD_EXTENT_SIZE'))
  .action(async (opts: Record<string, unknown>) => {
    await runCreate(opts);
  });

addStoreOptions(program.command('info'))
  .description('show a volume, and with --cache-dir what its gateway is doing (dirty data, uploads, cache use)')
  .addOption(new Option('--cache-dir <dir>', 'the gateway\'s cache directory').env('S3NBD_CACHE_DIR'))
  .option('--json', 'print JSON')
  .action(async (opts: Record<string, unknown>) => {
    await runInfo(opts);
  });

/**
 * The snapshot commands and gc: carried out by the gateway serving the volume when one runs on
 * --cache-dir (through its control socket), else on the idle volume, holding its lease meanwhile.
 */
function idleCommand(cmd: Command): Command {
  return addStoreOptions(cmd)
    .addOption(new Option('--cache-dir <dir>', 'the cache directory of the gateway serving the volume, if one does: it carries the command out').env('S3NBD_CACHE_DIR').default(DEFAULT_CACHE_DIR))
    .addOption(countOption('--lease-ttl <seconds>', 'writer lease lifetime', 'S3NBD_LEASE_TTL', 3, 3600).default(30).hideHelp());
}

const snapshot = program.command('snapshot').description('create, list and delete snapshots of a volume (see docs/format.md)');

/** `snapshot create NAME` and `snapshot delete NAME`. */
function namedSnapshotCommand(verb: string, description: string, run: (name: string, opts: Record<string, unknown>) => Promise<void>): Command {
  return idleCommand(snapshot.command(verb))
    .description(description)
    .argument('<name>', 'the snapshot\'s name: letters, digits, dots, dashes, underscores')
    .action(run);
}

namedSnapshotCommand('create', 'take a snapshot: every write acknowledged so far, and none after (through the gateway on --cache-dir, or of the idle volume)', runSnapshotCreate);

addStoreOptions(snapshot.command('list'))
  .description('list the snapshots: name, time, size, and the bytes deleting each would free')
  .option('--json', 'print JSON')
  .action(async (opts: Record<string, unknown>) => {
    await runSnapshotList(opts);
  });

namedSnapshotCommand('delete', 'delete a snapshot, and the objects only it kept (refused while clones read it)', runSnapshotDelete)
  .option('--forget-missing-clones', 'forget the clones of the snapshot that are gone (no such volume at their store any more), then delete it');

/** The --keep-* options of `snapshot prune` and `serve` (restic's forget rules), and their variables. */
function keepOptions(cmd: Command, forServe: boolean): Command {
  const rules = [
    ['--keep-last <n>', 'the N most recent snapshots', forServe ? 'S3NBD_KEEP_LAST' : 'S3NBD_PRUNE_KEEP_LAST'],
    ['--keep-hourly <n>', 'the newest snapshot of each of the last N hours that have one', forServe ? 'S3NBD_KEEP_HOURLY' : 'S3NBD_PRUNE_KEEP_HOURLY'],
    ['--keep-daily <n>', 'the same per day (UTC)', forServe ? 'S3NBD_KEEP_DAILY' : 'S3NBD_PRUNE_KEEP_DAILY'],
    ['--keep-weekly <n>', 'the same per ISO week', forServe ? 'S3NBD_KEEP_WEEKLY' : 'S3NBD_PRUNE_KEEP_WEEKLY'],
    ['--keep-monthly <n>', 'the same per month', forServe ? 'S3NBD_KEEP_MONTHLY' : 'S3NBD_PRUNE_KEEP_MONTHLY'],
  ] as const;
  for (const [flags, what, env] of rules) cmd.addOption(countOption(flags, `keep ${what}`, env, 0, 1_000_000));
  return cmd;
}

keepOptions(idleCommand(snapshot.command('prune')), false)
  .description('delete the snapshots a retention policy does not keep (the rules of restic\'s forget), one at a time')
  .option('--prefix <prefix>', 'consider only snapshots whose names start with this (e.g. auto-); default: all')
  .option('--dry-run', 'print what would be kept and deleted, and why, and delete nothing')
  .option('--forget-missing-clones', 'forget clones that are gone (see snapshot delete)')
  .action(async (opts: Record<string, unknown>) => {
    await runSnapshotPrune(opts);
  });

addKeyOptions(addStoreOptions(program.command('clone')))
  .description('make a new writable volume at --to from a snapshot, copying nothing: it reads what it has not written from the snapshot')
  .requiredOption('--snapshot <name>', 'the snapshot of the volume at --store to clone')
  .requiredOption('--to <url>', 'where the clone goes: a store that holds no volume (same forms as --store; same --s3-* options)')
  .action(async (opts: Record<string, unknown>) => {
    await runClone(opts);
  });

addStoreOptions(snapshot.command('restore'))
  .description('bring back a snapshot whose objects were deleted, in a bucket that keeps versions (Object Lock): its manifest, the volume metadata and every object it names')
  .argument('<name>', 'the snapshot\'s name')
  .action(runSnapshotRestore);

idleCommand(program.command('gc'))
  .description('delete now every object nothing needs any more (superseded, and kept by no snapshot)')
  .action(async (opts: Record<string, unknown>) => {
    await runGc(opts);
  });

addStoreOptions(program.command('undelete'))
  .description('bring back what was deleted from the volume at or after --since, in a bucket that keeps old versions (versioning or Object Lock)')
  .addOption(new Option('--since <time>', 'undo the deletions at or after this time, e.g. 2026-12-06T21:30:00Z (earlier ones, such as TRIMs, stay)').makeOptionMandatory())
  .option('--dry-run', 'list what would be restored, and change nothing')
  .action(async (opts: Record<string, unknown>) => {
    await runUndelete(opts);
  });

program.command('health')
  .description('ask a running gateway\'s admin endpoint whether it is alive (or with --ready, ready); exit 0 if so, else 1 (the image\'s HEALTHCHECK)')
  .addOption(new Option('--admin <url|host:port>', 'the admin endpoint (default: S3NBD_ADMIN_LISTEN, as the gateway has it)'))
  .option('--ready', 'ask /readyz (volumes open, leases held, S3 answering) instead of /healthz (the process answers)')
  .addOption(new Option('--admin-token-file <file>', 'the admin token, for --ready (or S3NBD_ADMIN_TOKEN)').env('S3NBD_ADMIN_TOKEN_FILE'))
  .addOption(countOption('--timeout <seconds>', 'how long to wait for the answer', 'S3NBD_HEALTH_TIMEOUT', 1, 600).default(5))
  .action(async (opts: Record<string, unknown>) => {
    await runHealth(opts);
  });

addStoreOptions(program.command('key').command('change'))
  .description('wrap an encrypted volume\'s data key with a new passphrase or key file (no extent is rewritten)')
  .addOption(new Option('--passphrase-file <file>', 'the current passphrase, in a file (or set S3NBD_PASSPHRASE)').env('S3NBD_PASSPHRASE_FILE'))
  .addOption(new Option('--key-file <file>', 'the current 32-byte key file').env('S3NBD_KEY_FILE'))
  .addOption(new Option('--new-passphrase-file <file>', 'the new passphrase, in a file (or set S3NBD_NEW_PASSPHRASE)').env('S3NBD_NEW_PASSPHRASE_FILE'))
  .addOption(new Option('--new-key-file <file>', 'the new 32-byte key file').env('S3NBD_NEW_KEY_FILE'))
  .action(async (opts: Record<string, unknown>) => {
    await runKeyChange(opts);
  });

const volume = program.command('volume').description('create, list, grow and delete the volumes under a store prefix (serve --volumes; see docs/volumes.md)');

/** `volume …`: the prefix, the S3 options, and the gateway that may carry the command out. */
function volumeCommand(verb: string, description: string): Command {
  return addS3Options(volume.command(verb).description(description)
    .addOption(new Option('--volumes <url>', 'the store prefix holding the volumes: s3://BUCKET/PREFIX or a directory (volume NAME is URL/NAME)').env('S3NBD_VOLUMES').makeOptionMandatory()))
    .addOption(new Option('--cache-dir <dir>', 'the cache directory of the gateway serving --volumes, if one runs: it carries the command out').env('S3NBD_CACHE_DIR').default(DEFAULT_CACHE_DIR))
    .addOption(countOption('--lease-ttl <seconds>', 'writer lease lifetime', 'S3NBD_LEASE_TTL', 3, 3600).default(30).hideHelp())
    .option('--json', 'print JSON');
}

const volumeName = (cmd: Command): Command => cmd.argument('<name>', 'the volume\'s name: 1-63 letters, digits, dots, dashes, underscores (its export name too)');

addObjectOptions(volumeName(volumeCommand('create', 'create a volume under --volumes (a gateway serving --volumes serves it at once)')))
  .addOption(sizeOption('--size <size>', 'device size, e.g. 10G', 'S3NBD_SIZE').makeOptionMandatory())
  .addOption(sizeOption('--extent-size <size>', 'size of each stored object (default 1M)', 'S3NBD_EXTENT_SIZE'))
  .action(runVolumeCreate);

volumeCommand('list', 'list the volumes under --volumes: name, size, id, snapshots, and who holds each one\'s lease')
  .action(async (opts: Record<string, unknown>) => {
    await runVolumeList(opts);
  });

volumeName(volumeCommand('resize', 'grow a volume (never shrink); a gateway serving it grows it live: new connections see the new size'))
  .addOption(sizeOption('--size <size>', 'the new size, e.g. 20G: at least the current one', 'S3NBD_SIZE').makeOptionMandatory())
  .action(runVolumeResize);

volumeName(volumeCommand('delete', 'delete a volume and every object of it (refused while it has snapshots, unless --with-snapshots, or clones)'))
  .option('--with-snapshots', 'delete its snapshots too (a backup target\'s history: only when you mean it)')
  .option('--force', 'through a running gateway: delete it even while clients are connected (their connections are dropped)')
  .action(runVolumeDelete);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof UserError) {
    process.stderr.write(`s3nbd: ${err.message} (${err.code}). Fix: ${err.fix}.\n`);
    process.exit(2);
  }
  process.stderr.write(`s3nbd: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
