/*
 * What the broker (kvmsr-broker.c) needs besides the notifications: the target's memory
 * (process_vm_readv/writev on the calling thread), its fds and threads (/proc/TID), the table of
 * files the broker handed out, and the kvmsr server (one connection per broker thread, so a slow
 * answer to one thread holds up no other).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "kvmsr-target.h"

const char *server_socket;

void say(const char *fmt, ...) {
  char line[1024];
  int h = snprintf(line, sizeof line, "kvmsr run: ");
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line + h, sizeof line - (size_t)h, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t len = (size_t)h + (size_t)n < sizeof line ? (size_t)h + (size_t)n : sizeof line - 1;
  ssize_t w = write(2, line, len);
  (void)w;
}

/* ---- the target's memory ---- */

size_t read_target(pid_t tid, void *dst, uint64_t addr, size_t len) {
  if (len == 0 || addr == 0) return 0;
  struct iovec l = {dst, len}, r = {(void *)(uintptr_t)addr, len};
  ssize_t n = process_vm_readv(tid, &l, 1, &r, 1, 0);
  return n > 0 ? (size_t)n : 0;
}

static int write_target(pid_t tid, uint64_t addr, const void *src, size_t len) {
  if (len == 0) return 0;
  struct iovec l = {(void *)src, len}, r = {(void *)(uintptr_t)addr, len};
  return process_vm_writev(tid, &l, 1, &r, 1, 0) == (ssize_t)len ? 0 : -1;
}

int write_back(pid_t tid, uint64_t addr, const unsigned char *was, const unsigned char *now, size_t len) {
  size_t a = 0, b = len;
  while (a < len && was[a] == now[a]) a++;
  if (a == len) return 0;
  while (b > a && was[b - 1] == now[b - 1]) b--;
  return write_target(tid, addr + a, now + a, b - a);
}

int read_string(pid_t tid, uint64_t addr, char *buf, size_t cap) {
  size_t off = 0;
  while (off < cap) {
    /* Page by page: the string may end just before memory that cannot be read. */
    size_t chunk = 4096 - (size_t)((addr + off) & 4095);
    if (chunk > cap - off) chunk = cap - off;
    size_t n = read_target(tid, buf + off, addr + off, chunk);
    void *nul = memchr(buf + off, 0, n);
    if (nul) return 0;
    if (n < chunk) return -1;
    off += n;
  }
  return -1; /* longer than PATH_MAX: the kernel answers ENAMETOOLONG */
}

pid_t tgid_of(pid_t tid) {
  char p[64], buf[512];
  snprintf(p, sizeof p, "/proc/%d/status", (int)tid);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *t = strstr(buf, "\nTgid:");
  return t ? (pid_t)atoi(t + 6) : -1;
}

/* ---- the files handed out ---- */

#define MAX_FILES 4096
static struct kfile files[MAX_FILES];
static int nfiles;
static pthread_rwlock_t files_lock = PTHREAD_RWLOCK_INITIALIZER;

int files_add(int fd, int kfd, int kind, pid_t tgid) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  pthread_rwlock_wrlock(&files_lock);
  int ok = nfiles < MAX_FILES;
  if (ok) files[nfiles++] = (struct kfile){st.st_dev, st.st_ino, kfd, kind, tgid, fd};
  pthread_rwlock_unlock(&files_lock);
  return ok ? 0 : -1;
}

void files_remove(int fd) {
  pthread_rwlock_wrlock(&files_lock);
  for (int i = 0; i < nfiles; i++) {
    if (files[i].fd == fd) {
      files[i] = files[--nfiles];
      break;
    }
  }
  pthread_rwlock_unlock(&files_lock);
}

int files_find(pid_t tid, int tfd, struct kfile *out) {
  char p[64];
  struct stat st;
  snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)tid, tfd);
  if (tfd < 0 || stat(p, &st) != 0) return 0;
  int found = 0;
  pthread_rwlock_rdlock(&files_lock);
  for (int i = 0; i < nfiles && !found; i++) {
    if (files[i].dev == st.st_dev && files[i].ino == st.st_ino) {
      *out = files[i];
      found = 1;
    }
  }
  pthread_rwlock_unlock(&files_lock);
  return found;
}

/* ---- the server ---- */

static int warned_conn;

static int connection(struct conn *c) {
  if (c->fd >= 0) return c->fd;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(server_socket) >= sizeof sa.sun_path) return -1;
  strcpy(sa.sun_path, server_socket);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(s);
    if (!__atomic_fetch_add(&warned_conn, 1, __ATOMIC_RELAXED)) say("cannot reach the kvmsr server at %s: %s\n", server_socket, strerror(e));
    return -1;
  }
  c->fd = s;
  return s;
}

void reply_free(struct reply *r) {
  free(r->arg);
  free(r->regs);
  r->arg = r->regs = NULL;
}

/* The library's frame (kvmsr-run.c's transact), with the target thread's id. */
int transact(struct conn *c, uint32_t op, int32_t kfd, uint32_t req, uint64_t arg, int buffer, const unsigned char *argb,
             uint32_t arg_len, const struct region *rg, uint32_t nrg, const uint64_t *sig, pid_t tid, struct reply *out) {
  memset(out, 0, sizeof *out);
  int s = connection(c);
  if (s < 0) return -1;
  if (wire_exchange(s, NULL, op, kfd, req, arg, buffer, argb, arg_len, rg, nrg, sig, tid, out)) goto lost;
  return 0;
lost:
  reply_free(out);
  if (!__atomic_fetch_add(&warned_conn, 1, __ATOMIC_RELAXED)) say("lost the kvmsr server; KVM calls now fail with EIO\n");
  close(s);
  c->fd = -1;
  return -1;
}

void close_in_kvmsr(struct conn *c, int kfd, pid_t tid) {
  struct reply r;
  if (transact(c, OP_CLOSE, kfd, 0, 0, 0, NULL, 0, NULL, 0, NULL, tid, &r) == 0) reply_free(&r);
}
