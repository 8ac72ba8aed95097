// A real NBD client (python3 with libnbd's bindings, as in test/e2e) that runs a list of
// operations one at a time and reports, for each, whether it worked, the errno the server
// answered with if not, and how long it took. Data patterns are random.Random(seed).randbytes(n),
// regenerated on both sides, so no test data crosses the pipes.

import { runOk } from './tools.ts';

export type NbdOp =
  | readonly ['write', offset: number, length: number, seed: number]
  /** Reads and compares with pattern `seed` (null: zeros). */
  | readonly ['read', offset: number, length: number, seed: number | null]
  | readonly ['flush']
  | readonly ['sleep', seconds: number];

export interface NbdOpResult {
  readonly op: string;
  readonly ok: boolean;
  /** The errno name of the server's error reply ('ENOSPC', 'EIO', ...), as libnbd gives it. */
  readonly errno?: string;
  /** For reads that worked: whether the bytes were the pattern (or zeros). */
  readonly match?: boolean;
  readonly ms: number;
}

const SCRIPT = String.raw`
import json, random, sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for op in json.loads(sys.argv[2]):
    t0 = time.monotonic()
    r = {'op': op[0]}
    try:
        if op[0] == 'write':
            h.pwrite(random.Random(op[3]).randbytes(op[2]), op[1])
        elif op[0] == 'read':
            got = h.pread(op[2], op[1])
            want = bytes(op[2]) if op[3] is None else random.Random(op[3]).randbytes(op[2])
            r['match'] = got == want
        elif op[0] == 'flush':
            h.flush()
        elif op[0] == 'sleep':
            time.sleep(op[1])
        r['ok'] = True
    except nbd.Error as e:
        r['ok'] = False
        r['errno'] = e.errno
    r['ms'] = (time.monotonic() - t0) * 1000
    print(json.dumps(r), flush=True)
h.shutdown()
`;

/** Runs `ops` over one connection to `uri`; resolves with one result per op. */
export async function nbdOps(uri: string, ops: readonly NbdOp[], timeoutMs = 60_000): Promise<NbdOpResult[]> {
  const out = await runOk('python3', ['-c', SCRIPT, uri, JSON.stringify(ops)], { input: '', timeoutMs });
  return out.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as NbdOpResult);
}

/** The errno names a test compares with. */
export const ERRNO = { EIO: 'EIO', ENOSPC: 'ENOSPC' } as const;
