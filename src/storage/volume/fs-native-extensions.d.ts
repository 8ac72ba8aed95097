// The part of fs-native-extensions (holepunch; prebuilt addons inside the npm package) that
// cache-lock.ts uses. The package ships no types. On Linux its locks are open file description
// locks (fcntl F_OFD_SETLK): held by the open file, released when it is closed or the process
// dies, and seen by every process that opens the same file, whatever its mount or PID namespace.
declare module 'fs-native-extensions' {
  /** Takes an exclusive lock (the fd must be open for writing); false if another holds one. */
  export function tryLock(fd: number, offset?: number, length?: number, opts?: { shared?: boolean }): boolean;
  export function unlock(fd: number, offset?: number, length?: number): void;
}
