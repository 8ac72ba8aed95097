// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Names follow the spec with the NBD_ prefix dropped, so they can be grepped against it.

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags. */
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_SEND_FLUSH = 1 << 2;
export const FLAG_SEND_FUA = 1 << 3;
export const FLAG_SEND_TRIM = 1 << 5;
export const FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const FLAG_SEND_DF = 1 << 7;
export const FLAG_CAN_MULTI_CONN = 1 << 8;
export const FLAG_SEND_CACHE = 1 << 10;
export const FLAG_SEND_FAST_ZERO = 1 << 11;

/** Options sent during the handshake. */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

/** Option reply types; errors have bit 31 set. */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_TOO_BIG: 0x80000009,
} as const;

/** Information types inside NBD_REP_INFO. */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Request types. */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags. */
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

/** Structured reply chunk types and flags. */
export const REPLY_FLAG_DONE = 1 << 0;
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
} as const;

/** base:allocation status flags. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

/** The one metadata context we serve, and the id we give it. */
export const BASE_ALLOCATION = 'base:allocation';
export const BASE_ALLOCATION_ID = 1;

/** Error values on the wire (they happen to equal Linux errno values). */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoName = keyof typeof NbdErrno;

/** Fixed sizes. */
export const REQUEST_HEADER_SIZE = 28;
export const MAX_STRING_LENGTH = 4096;
/** Largest payload we accept or send in one request, advertised as the maximum block size. */
export const MAX_REQUEST_SIZE = 32 * 1024 * 1024;
/** Largest option payload accepted during the handshake (names, queries). */
export const MAX_OPTION_LENGTH = 64 * 1024;
