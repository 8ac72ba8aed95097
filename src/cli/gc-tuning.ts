// Imported first by the command line, before anything allocates.
//
// V8 starts a full garbage collection each time memory outside its heap (Buffers) grows by
// 64 MB since the last one, however small the heap is. A gateway streams gigabytes of
// Buffers (socket chunks, extents), so it ran a mark-compact every few milliseconds: about
// 130 of them per GiB written and read back, ~20% of its CPU (bench/s3.sh, --trace-gc).
// Counting Buffers in V8's global limit instead, which grows with what is live, cuts that
// to about 20 and the gateway's CPU per GiB of cold reads by ~35%.

import { setFlagsFromString } from 'node:v8';

// Node 24's V8 has the flag; older ones would print an error about an unknown flag.
if (Number(process.versions.node.split('.')[0]) >= 24) setFlagsFromString('--external-memory-accounted-in-global-limit');
