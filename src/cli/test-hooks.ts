// A test hook, off unless S3NBD_TEST_KILL_AT is set: the process kills itself (SIGKILL, as
// `kill -9` would) at a chosen request to the store, so that tests can stop a command at an
// exact point of its work and check what it leaves behind. The value is
//
//   <before|after>:<operation>:<key prefix>:<n>
//
// e.g. `after:deleteMany:snapshots/:1`: right after the first DeleteObjects of a key under
// snapshots/ (a snapshot deletion whose manifest is gone and whose objects are not yet).
// Operations: put, putIf, deleteMany.

import type { ObjectStore } from '../storage/objects/object-store.ts';

type Hooked = 'put' | 'putIf' | 'deleteMany';

export function withKillHook(objects: ObjectStore, spec = process.env.S3NBD_TEST_KILL_AT): ObjectStore {
  if (spec === undefined || spec === '') return objects;
  const [when, operation, prefix, nth] = spec.split(':');
  if ((when !== 'before' && when !== 'after') || !['put', 'putIf', 'deleteMany'].includes(operation ?? '') || prefix === undefined || !/^\d+$/.test(nth ?? '')) {
    throw new Error(`S3NBD_TEST_KILL_AT="${spec}" is not <before|after>:<put|putIf|deleteMany>:<prefix>:<n>`);
  }
  let seen = 0;
  const die = (): never => {
    process.kill(process.pid, 'SIGKILL');
    throw new Error('unreachable');
  };
  const hook = async <T>(op: Hooked, key: string | undefined, call: () => Promise<T>): Promise<T> => {
    if (op !== operation || key === undefined || !key.startsWith(prefix) || ++seen !== Number(nth)) return call();
    if (when === 'before') die();
    await call();
    await objects.flush();
    return die();
  };
  return {
    description: objects.description,
    get: (key, maxBytes) => objects.get(key, maxBytes),
    getTagged: (key, maxBytes) => objects.getTagged(key, maxBytes),
    list: (prefix) => objects.list(prefix),
    flush: () => objects.flush(),
    close: () => objects.close(),
    put: (key, data) => hook('put', key, () => objects.put(key, data)),
    putIf: (key, data, tag) => hook('putIf', key, () => objects.putIf(key, data, tag)),
    deleteMany: (keys) => hook('deleteMany', keys[0], () => objects.deleteMany(keys)),
  };
}
