// LD_PRELOAD shim for tests: fsync() and fdatasync() fail with EIO, as on a disk that lost
// writes, for files under $S3NBD_TEST_FSYNC_FAIL_UNDER once the file $S3NBD_TEST_FSYNC_FAIL_FLAG
// exists. Everything else goes to the real calls. Built by test/helpers/fail-fsync.ts.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int should_fail(int fd) {
  const char *under = getenv("S3NBD_TEST_FSYNC_FAIL_UNDER");
  const char *flag = getenv("S3NBD_TEST_FSYNC_FAIL_FLAG");
  if (!under || !flag || access(flag, F_OK) != 0) return 0;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return 0;
  path[n] = '\0';
  return strncmp(path, under, strlen(under)) == 0;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  if (should_fail(fd)) { errno = EIO; return -1; }
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  if (should_fail(fd)) { errno = EIO; return -1; }
  return real(fd);
}
