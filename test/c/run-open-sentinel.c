/*
 * An LD_PRELOAD library for test/run.test.ts that sits after kvmsr's in LD_PRELOAD, between it and
 * libc: every open/openat call that kvmsr's library passes on to "the real open" (dlsym RTLD_NEXT)
 * arrives here first. It appends one line per call, "DIR<TAB>PATH" (DIR: the directory a relative
 * path starts from, empty for an absolute one), to $KVMSR_SENTINEL_LOG, then calls libc. If kvmsr
 * ever let an open of /dev/kvm through, the test finds it in the log.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void note(int dirfd, const char *path) {
  const char *log = getenv("KVMSR_SENTINEL_LOG");
  if (!log || !path) return;
  char dir[4096] = "";
  if (path[0] != '/') {
    if (dirfd == AT_FDCWD) {
      if (!getcwd(dir, sizeof dir)) dir[0] = 0;
    } else {
      char l[64];
      snprintf(l, sizeof l, "/proc/self/fd/%d", dirfd);
      ssize_t n = readlink(l, dir, sizeof dir - 1);
      dir[n > 0 ? n : 0] = 0;
    }
  }
  char line[8400];
  int n = snprintf(line, sizeof line, "%s\t%s\n", dir, path);
  /* Raw syscalls: opening the log through open() would come back here. */
  int fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (write(fd, line, (size_t)n) < 0) { /* nothing to do */ }
  syscall(SYS_close, fd);
}

#define MODE(flags) mode_t mode = 0; if ((flags) & (O_CREAT | __O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
#define NEXT(type, name) static type next; if (!next) *(void **)&next = dlsym(RTLD_NEXT, name)

int open(const char *p, int flags, ...) { MODE(flags); NEXT(open_fn, "open"); note(AT_FDCWD, p); return next(p, flags, mode); }
int open64(const char *p, int flags, ...) { MODE(flags); NEXT(open_fn, "open64"); note(AT_FDCWD, p); return next(p, flags, mode); }
int openat(int d, const char *p, int flags, ...) { MODE(flags); NEXT(openat_fn, "openat"); note(d, p); return next(d, p, flags, mode); }
int openat64(int d, const char *p, int flags, ...) { MODE(flags); NEXT(openat_fn, "openat64"); note(d, p); return next(d, p, flags, mode); }
int __open_2(const char *p, int flags) { NEXT(open2_fn, "__open_2"); note(AT_FDCWD, p); return next(p, flags); }
int __open64_2(const char *p, int flags) { NEXT(open2_fn, "__open64_2"); note(AT_FDCWD, p); return next(p, flags); }
int __openat_2(int d, const char *p, int flags) { NEXT(openat2_fn, "__openat_2"); note(d, p); return next(d, p, flags); }
int __openat64_2(int d, const char *p, int flags) { NEXT(openat2_fn, "__openat64_2"); note(d, p); return next(d, p, flags); }
