// How an extent becomes an object's body and back (docs/format.md). The extent layer
// (extents/extent-objects.ts) calls a codec for every object it puts and fetches; the codec
// knows the volume's object settings (checksum always; compression and encryption as chosen
// when the volume was created) and the extent's identity, which it binds into the body so an
// object copied to another key, or an older generation put back under a newer key, is refused.

import type { ObjectBody } from '../objects/object-store.ts';

/** Which object a body belongs to. Generation 0 is a format 1 object: raw bytes, no header. */
export interface ExtentIdentity {
  readonly volumeId: string;
  readonly index: number;
  readonly generation: number;
}

export interface ExtentCodec {
  /**
   * The body to store for a whole extent, possibly in parts (ObjectBody) of which the extent
   * itself may be one: it must not change until the body is stored.
   */
  encode(id: ExtentIdentity, extent: Buffer): Promise<ObjectBody>;
  /**
   * The whole extent a body holds. A body that is damaged, cut short, or belongs to another
   * identity rejects with a StorageError EIO (storage-error.ts); it is never returned as data.
   * With `fresh` (the body is the caller's alone: ObjectStore.freshBodies), the extent may be
   * a view of the body, and the `body` Buffer itself may be empty once this resolves (its
   * memory went to the hashing thread and came back as the extent's: off-thread-hash.ts);
   * without, it never shares the body's memory, unless the codec stores extents as they are
   * (format 1: rawCodec).
   */
  decode(id: ExtentIdentity, body: Buffer, fresh?: boolean): Promise<Buffer>;
  /** The largest body encode() makes for an extent of `extentSize` bytes (the GET's limit). */
  maxBodyBytes(extentSize: number): number;
}

/** Bodies are the extents themselves: format 1, and tests of the layers above. */
export const rawCodec: ExtentCodec = {
  encode: (_id, extent) => Promise.resolve(extent),
  decode: (_id, body) => Promise.resolve(body),
  maxBodyBytes: (extentSize) => extentSize,
};
