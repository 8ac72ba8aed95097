#!/usr/bin/env node
// The s3nbd command line. Every option can also come from an S3NBD_* environment variable
// (handy in containers); a flag on the command line wins over the environment.

import { Command, Option } from 'commander';
import { UserError } from '../errors.ts';
import { DEFAULT_STORE } from '../storage/store-url.ts';
import { runCreate, runInfo } from './info.ts';
import { formatBytes, parseSize } from './parse.ts';
import { runServe } from './serve.ts';
import { DEFAULT_MEMORY_CACHE } from '../storage/stack.ts';

function storeOption(): Option {
  return new Option('--store <url>', 'where the volume lives: a directory, file:///path, or memory:')
    .env('S3NBD_STORE').default(DEFAULT_STORE);
}

function sizeOption(flags: string, description: string, env: string): Option {
  return new Option(flags, description).env(env).argParser((text: string) => parseSize(flags.split(' ')[0]!, text));
}

const program = new Command('s3nbd')
  .description('A network block device (NBD) server that keeps its data in S3-style object storage.')
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (text, write) => write(text) });

program.command('serve')
  .description('serve a volume over NBD (creating it first when --size is given and none exists)')
  .addOption(storeOption())
  .addOption(sizeOption('--size <size>', 'device size, e.g. 10G; creates the volume if there is none', 'S3NBD_SIZE'))
  .addOption(sizeOption('--extent-size <size>', 'size of each stored object for a new volume (default 1M)', 'S3NBD_EXTENT_SIZE'))
  .addOption(new Option('--listen <host:port>', 'TCP address to listen on').env('S3NBD_LISTEN').default('127.0.0.1:10809'))
  .addOption(new Option('--socket <path>', 'Unix socket to listen on (instead of TCP unless --listen is also given)').env('S3NBD_SOCKET'))
  .addOption(new Option('--export-name <name>', 'export name; the empty name "" always selects this export too').env('S3NBD_EXPORT_NAME').default(''))
  .addOption(new Option('--read-only', 'refuse writes (env S3NBD_READ_ONLY=1)'))
  .addOption(sizeOption('--memory-cache <size>', 'memory for cached extents', 'S3NBD_MEMORY_CACHE')
    .default(DEFAULT_MEMORY_CACHE, formatBytes(DEFAULT_MEMORY_CACHE)))
  .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('S3NBD_LOG_LEVEL').default('info'))
  .action(async (opts: Record<string, unknown>, cmd: Command) => {
    await runServe(opts, cmd);
  });

program.command('create')
  .description('create a new volume without serving it')
  .addOption(storeOption())
  .addOption(sizeOption('--size <size>', 'device size, e.g. 10G', 'S3NBD_SIZE').makeOptionMandatory())
  .addOption(sizeOption('--extent-size <size>', 'size of each stored object (default 1M)', 'S3NBD_EXTENT_SIZE'))
  .action(async (opts: { store: string; size: number; extentSize?: number }) => {
    await runCreate(opts);
  });

program.command('info')
  .description('show a volume: size, extent size, stored extents')
  .addOption(storeOption())
  .option('--json', 'print JSON')
  .action(async (opts: { store: string; json?: boolean }) => {
    await runInfo(opts);
  });

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
