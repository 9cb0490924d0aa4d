/*
 * kvmsr-run: an LD_PRELOAD library under which /dev/kvm is kvmsr (`kvmsr run -- COMMAND`).
 *
 * open/open64/openat/openat64 (and glibc's fortified __open_2 family) of a path that resolves to
 * "/dev/kvm" never reach the real device: the library asks the kvmsr server for a file, and hands
 * the program a real fd that stands for it:
 *   - /dev/kvm: /dev/null opened with the program's flags (poll, mmap (ENODEV) and F_GETFL behave as
 *     on a character device with no poll and no mmap, which is what kvm_chardev_ops is);
 *   - a VM: /dev/null, O_RDWR | O_CLOEXEC (anon_inode_getfd's flags);
 *   - a vCPU: a file the server made (under /dev/shm where it can), sized KVM_GET_VCPU_MMAP_SIZE:
 *     mmap of the vCPU fd maps it, and the server reads and writes the same file around each vCPU
 *     ioctl, so kvm_run is shared.
 * A table maps real fds to the server's fd numbers; dup, dup2, dup3 and fcntl(F_DUPFD*) add to it,
 * close, dup2 over an entry and close_range take from it, and the last close of a kvmsr file closes
 * it in kvmsr. Every ioctl on such an fd goes to the server: the request, the fd's kvmsr number and
 * the bytes the kernel would read (the struct by _IOC_SIZE plus its variable tail, and what embedded
 * pointers point at); the server answers with the return value or -errno and the bytes to write back.
 *
 * One mutex per process serializes requests (a VMM's vCPU threads may call at once). Memory is read
 * and written with process_vm_readv/writev on the process itself, so a bad pointer gives EFAULT, as
 * copy_from_user does, instead of a crash.
 *
 * KVM_RUN on a vCPU: kvmsr's guest is halted and never wakes, so KVM_RUN sleeps until a signal, in
 * the calling thread and never in the server (one server answers every thread and process) nor
 * under the mutex. The thread blocks every signal, sends its signal mask and its pending signals
 * with the request, and the server answers at once: a return (immediate_exit, a signal already
 * pending, an exit), or "wait" with the mask to wait under (the vCPU's KVM_SET_SIGNAL_MASK, else the
 * thread's own: kvm_sigset_activate). The thread then waits, every signal still blocked, on a
 * signalfd of the signals that mask lets through, so a signal that came meanwhile was kept pending
 * and ends the wait at once, and none is taken: as in the kernel, the signal only makes KVM_RUN
 * return. The library writes exit_reason = KVM_EXIT_INTR into the vCPU's kvm_run page (through a
 * mapping of its own), restores the thread's mask (kvm_sigset_deactivate: what it does not block is
 * delivered now, its handler run, what it blocks stays pending) and returns -1/EINTR, SA_RESTART or
 * not: KVM never restarts KVM_RUN. A signal the thread ignores does not end the wait (the kernel
 * discards it on arrival), it is discarded.
 *
 * Environment: KVMSR_RUN_SOCKET, the server's Unix socket (set by `kvmsr run`).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvmsr-common.h"

#define MAX_FDS 65536
/* The kernel's O_LARGEFILE (glibc defines the userspace one as 0 on x86_64). */
#define KERNEL_O_LARGEFILE 0100000

struct ent {
  int32_t kfd1; /* the kvmsr fd + 1; 0: not a kvmsr fd */
  uint8_t kind;
  pid_t pid;    /* the process that made it (a forked child shares the file, not the VM) */
  dev_t dev;
  ino_t ino;
};

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_open_2)(const char *, int);
static int (*real_open64_2)(const char *, int);
static int (*real_openat_2)(int, const char *, int);
static int (*real_openat64_2)(int, const char *, int);
static int (*real_ioctl)(int, unsigned long, ...);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);
static int (*real_close_range)(unsigned int, unsigned int, int);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct ent tab[MAX_FDS];
static uint16_t refs[MAX_FDS]; /* real fds per kvmsr fd, in this process */
static int kvm_files;           /* kvmsr fds this process has open (refs[] that are not 0) */
static int conn_fd = -1;
static pid_t conn_pid;
static dev_t conn_dev;
static ino_t conn_ino;
static int warned_conn;
static struct lane lane; /* the connection's shared-memory lane, under `lock` */
static struct slots slots; /* under `lock` */
/* This process, as fork() (through pthread_atfork) tells it. Another pid means a vfork() child (or
 * a raw clone) sharing our memory: it must not touch the table, which is its parent's too. */
static pid_t self_pid;
#define FOREIGN() (getpid() != self_pid)

#define RESOLVE(var, name) do { if (!(var)) *(void **)&(var) = dlsym(RTLD_NEXT, name); } while (0)

static void resolve_all(void) {
  RESOLVE(real_open, "open");
  RESOLVE(real_open64, "open64");
  RESOLVE(real_openat, "openat");
  RESOLVE(real_openat64, "openat64");
  RESOLVE(real_open_2, "__open_2");
  RESOLVE(real_open64_2, "__open64_2");
  RESOLVE(real_openat_2, "__openat_2");
  RESOLVE(real_openat64_2, "__openat64_2");
  RESOLVE(real_ioctl, "ioctl");
  RESOLVE(real_close, "close");
  RESOLVE(real_dup, "dup");
  RESOLVE(real_dup2, "dup2");
  RESOLVE(real_dup3, "dup3");
  RESOLVE(real_fcntl, "fcntl");
  RESOLVE(real_fcntl64, "fcntl64");
  RESOLVE(real_close_range, "close_range");
}

/*
 * The lock, taken with the thread's cancellation off: a kernel ioctl is no cancellation point, and a
 * thread cancelled inside the library's own calls (recv, poll) would leave the lock taken for ever
 * (the kernel's recalc_apic_map_test cancels a thread that loops in KVM_SET_LAPIC).
 */
static __thread int cancel_was;
static void take(void) {
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_was);
  pthread_mutex_lock(&lock);
}
static void give(void) {
  int was = cancel_was, unused;
  pthread_mutex_unlock(&lock);
  pthread_setcancelstate(was, &unused);
}

static void on_prepare(void) { pthread_mutex_lock(&lock); }
static void on_parent(void) { pthread_mutex_unlock(&lock); }
static void on_child(void) {
  self_pid = getpid();
  pthread_mutex_unlock(&lock);
}

__attribute__((constructor)) static void init(void) {
  self_pid = getpid();
  resolve_all();
  /* fork() while another thread holds the lock would leave the child's copy locked forever. */
  pthread_atfork(on_prepare, on_parent, on_child);
}

static void say(const char *fmt, const char *a, const char *b) {
  char line[512];
  int n = snprintf(line, sizeof line, fmt, a, b);
  if (n > 0) { ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1); (void)w; }
}

/* ---- the process's own memory, read and written without faulting ---- */

/* How many bytes at addr can be read (a prefix of len), copied into dst. */
static size_t read_user(void *dst, uint64_t addr, size_t len) {
  if (len == 0 || addr == 0) return 0;
  struct iovec l = {dst, len}, r = {(void *)(uintptr_t)addr, len};
  ssize_t n = process_vm_readv(getpid(), &l, 1, &r, 1, 0);
  return n > 0 ? (size_t)n : 0;
}

static int write_user(uint64_t addr, const void *src, size_t len) {
  if (len == 0) return 0;
  struct iovec l = {(void *)src, len}, r = {(void *)(uintptr_t)addr, len};
  return process_vm_writev(getpid(), &l, 1, &r, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* Writes back the span of `now` that differs from `was` (what the server changed). */
static int write_back(uint64_t addr, const unsigned char *was, const unsigned char *now, size_t len) {
  size_t a = 0, b = len;
  while (a < len && was[a] == now[a]) a++;
  if (a == len) return 0;
  while (b > a && was[b - 1] == now[b - 1]) b--;
  return write_user(addr + a, now + a, b - a);
}

/* ---- the connection ---- */


static int same_file(int fd, dev_t dev, ino_t ino) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* The connection of this process: a forked child makes its own; a closed or reused fd is noticed. */
static int connection(void) {
  pid_t me = getpid();
  if (conn_fd >= 0 && conn_pid == me && same_file(conn_fd, conn_dev, conn_ino)) return conn_fd;
  if (conn_fd >= 0 && conn_pid != me && same_file(conn_fd, conn_dev, conn_ino)) real_close(conn_fd);
  conn_fd = -1;
  lane_drop(&lane); /* the parent's, in a forked child: its requests must not land there */
  const char *path = getenv("KVMSR_RUN_SOCKET");
  if (!path || !*path) {
    if (!warned_conn++) say("kvmsr run: KVMSR_RUN_SOCKET is not set: /dev/kvm is refused (run the command under `kvmsr run`)%s%s\n", "", "");
    return -1;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) return -1;
  strcpy(sa.sun_path, path);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    real_close(s);
    if (!warned_conn++) say("kvmsr run: cannot reach the kvmsr server at %s: %s\n", path, strerror(e));
    return -1;
  }
  /* Out of the way of programs that expect low fd numbers to be theirs. */
  int high = real_fcntl(s, F_DUPFD_CLOEXEC, 900);
  if (high >= 0) { real_close(s); s = high; }
  struct stat st;
  fstat(s, &st);
  conn_fd = s;
  conn_pid = me;
  conn_dev = st.st_dev;
  conn_ino = st.st_ino;
  lane_open(s, &lane, (pid_t)syscall(SYS_gettid));
  return s;
}



/*
 * One request and its response; the caller holds the lock. Returns 0, or -1 when the server is
 * unreachable or answered garbage (the caller then fails the call with EIO).
 */
static int transact(uint32_t op, int32_t kfd, uint32_t req, uint64_t arg, int buffer, const unsigned char *argb,
                    uint32_t arg_len, const struct region *rg, uint32_t nrg, const uint64_t *sig, struct reply *out) {
  int s = connection();
  if (s < 0) return -1;
  if (wire_exchange(s, &lane, op, kfd, req, arg, buffer, argb, arg_len, rg, nrg, sig, (pid_t)syscall(SYS_gettid), out)) goto lost;
  return 0;
lost:
  free(out->arg);
  free(out->regs);
  out->arg = out->regs = NULL;
  if (!warned_conn++) say("kvmsr run: lost the kvmsr server%s%s; KVM calls now fail with EIO\n", "", "");
  real_close(s);
  conn_fd = -1;
  lane_drop(&lane);
  return -1;
}

/* ---- the vCPUs' kvm_run pages, mapped by the library itself ---- */

/*
 * A KVM_RUN that waited writes exit_reason through this mapping (the program's own may be anywhere,
 * or gone). A page whose kvmsr file is closed while a thread still waits in KVM_RUN on it is
 * unmapped by that thread when it is done (the kernel, too, keeps the file while the ioctl runs).
 * Kept under `lock`.
 */
struct vpage { unsigned char *p; size_t len; int users; int dead; };
static struct vpage *vpages[MAX_FDS];

static void unmap_vpage(int kfd) {
  if (kfd < 0 || kfd >= MAX_FDS || !vpages[kfd]) return;
  struct vpage *v = vpages[kfd];
  vpages[kfd] = NULL;
  if (v->users > 0) { v->dead = 1; return; }
  munmap(v->p, v->len);
  free(v);
}

static void map_vpage(int kfd, int fd) {
  if (kfd < 0 || kfd >= MAX_FDS) return;
  unmap_vpage(kfd);
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < 4096) return;
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return;
  struct vpage *v = calloc(1, sizeof *v);
  if (!v) { munmap(p, (size_t)st.st_size); return; }
  v->p = p;
  v->len = (size_t)st.st_size;
  vpages[kfd] = v;
}

/* ---- the fd table ---- */

static struct ent *entry(int fd) {
  if (fd < 0 || fd >= MAX_FDS) return NULL;
  struct ent *e = &tab[fd];
  if (__atomic_load_n(&e->kfd1, __ATOMIC_ACQUIRE) == 0) return NULL;
  return e;
}

static void put(int fd, int kfd, int kind, pid_t pid) {
  struct stat st;
  fstat(fd, &st);
  tab[fd].kind = (uint8_t)kind;
  tab[fd].pid = pid;
  tab[fd].dev = st.st_dev;
  tab[fd].ino = st.st_ino;
  __atomic_store_n(&tab[fd].kfd1, kfd + 1, __ATOMIC_RELEASE);
  if (refs[kfd]++ == 0) kvm_files++;
}

/* Forgets fd; when it was this process's last reference to its kvmsr file, closes that in kvmsr. */
static void drop(int fd) {
  struct ent *e = &tab[fd];
  int kfd = e->kfd1 - 1;
  __atomic_store_n(&e->kfd1, 0, __ATOMIC_RELEASE);
  if (kfd < 0 || kfd >= MAX_FDS) return;
  if (refs[kfd] == 0 || --refs[kfd] > 0) return;
  kvm_files--;
  /* A forked child's close only drops its reference: the file stays open in its parent. */
  if (e->pid == getpid()) {
    struct reply r = {0};
    unmap_vpage(kfd);
    transact(OP_CLOSE, kfd, 0, 0, 0, NULL, 0, NULL, 0, NULL, &r);
    free(r.arg);
    free(r.regs);
    forget_slots(&slots, kfd);
  }
  /* The last one: the connection and its lane go too, so a program that closes every KVM fd is
   * left with none of kvmsr's (the next open makes a new connection). */
  if (kvm_files == 0 && conn_fd >= 0 && conn_pid == getpid()) {
    real_close(conn_fd);
    conn_fd = -1;
    lane_drop(&lane);
  }
}

/* Whether the table's entry still names the file it was made for (not closed behind our back). */
static struct ent *live_entry(int fd) {
  struct ent *e = entry(fd);
  if (!e) return NULL;
  if (same_file(fd, e->dev, e->ino)) return e;
  drop(fd);
  return NULL;
}

/* ---- open ---- */


static int fail(int e) {
  errno = e;
  return -1;
}

/* open("/dev/kvm", flags): a kvmsr system fd behind a /dev/null of the same flags. */
static int open_kvm(int flags, mode_t mode) {
  if ((flags & O_CREAT) && (flags & O_EXCL)) return fail(EEXIST);
  if ((flags & O_DIRECTORY) == O_DIRECTORY) return fail(ENOTDIR);
  if (flags & O_PATH) return real_openat(AT_FDCWD, "/dev/null", flags, mode); /* no ioctls on O_PATH */
  if (FOREIGN()) return fail(EIO); /* a vfork child shares its parent's table: it gets no KVM fds */
  take();
  struct reply r = {0};
  int fd = -1, err = EIO;
  if (transact(OP_OPEN, -1, 0, 0, 0, NULL, 0, NULL, 0, NULL, &r) == 0) {
    if (r.ret < 0) {
      err = -r.ret;
    } else {
      fd = real_openat(AT_FDCWD, "/dev/null", flags, mode);
      err = errno;
      if (fd >= MAX_FDS) { real_close(fd); fd = -1; err = EMFILE; }
      if (fd >= 0 && r.ret < MAX_FDS) put(fd, r.ret, K_SYSTEM, getpid());
      else if (fd >= 0) { real_close(fd); fd = -1; err = EMFILE; }
      if (fd < 0) { struct reply c = {0}; transact(OP_CLOSE, r.ret, 0, 0, 0, NULL, 0, NULL, 0, NULL, &c); free(c.arg); free(c.regs); }
    }
  }
  free(r.arg);
  free(r.regs);
  give();
  if (fd < 0) errno = err;
  return fd;
}

#define OPEN_MODE(flags, mode) \
  do { if ((flags) & (O_CREAT | __O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); } } while (0)

int open(const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  resolve_all();
  if (is_kvm_path(AT_FDCWD, path)) return open_kvm(flags, mode);
  char sp[PATH_MAX];
  if (module_param_path(AT_FDCWD, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_open(path, flags, mode);
}
int open64(const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  resolve_all();
  if (is_kvm_path(AT_FDCWD, path)) return open_kvm(flags, mode);
  char sp[PATH_MAX];
  if (module_param_path(AT_FDCWD, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_open64(path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  resolve_all();
  if (is_kvm_path(dirfd, path)) return open_kvm(flags, mode);
  char sp[PATH_MAX];
  if (module_param_path(dirfd, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_openat(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  resolve_all();
  if (is_kvm_path(dirfd, path)) return open_kvm(flags, mode);
  char sp[PATH_MAX];
  if (module_param_path(dirfd, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_openat64(dirfd, path, flags, mode);
}
/* What _FORTIFY_SOURCE builds call when the flags are not a compile-time constant. */
int __open_2(const char *path, int flags) {
  resolve_all();
  if (is_kvm_path(AT_FDCWD, path)) return open_kvm(flags, 0);
  char sp[PATH_MAX];
  if (module_param_path(AT_FDCWD, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_open_2(path, flags);
}
int __open64_2(const char *path, int flags) {
  resolve_all();
  if (is_kvm_path(AT_FDCWD, path)) return open_kvm(flags, 0);
  char sp[PATH_MAX];
  if (module_param_path(AT_FDCWD, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_open64_2(path, flags);
}
int __openat_2(int dirfd, const char *path, int flags) {
  resolve_all();
  if (is_kvm_path(dirfd, path)) return open_kvm(flags, 0);
  char sp[PATH_MAX];
  if (module_param_path(dirfd, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_openat_2(dirfd, path, flags);
}
int __openat64_2(int dirfd, const char *path, int flags) {
  resolve_all();
  if (is_kvm_path(dirfd, path)) return open_kvm(flags, 0);
  char sp[PATH_MAX];
  if (module_param_path(dirfd, path, sp, sizeof sp)) path = sp; /* the profile's module parameter */
  return real_openat64_2(dirfd, path, flags);
}

/* ---- ioctl ---- */


/* KVM_RUN's part of a request: the thread's signals in; whether (and under which mask) it must wait, out. */
struct runio { uint64_t sig[2]; int wait; uint64_t mask; };

static int kvm_ioctl(int fd, struct ent *e, uint32_t req, unsigned long arg, struct runio *run) {
  int kfd = e->kfd1 - 1;
  /* kvm_vm_ioctl / kvm_vcpu_ioctl: "if (kvm->mm != current->mm) return -EIO" in a forked child. */
  if (e->kind != K_SYSTEM && e->pid != getpid()) return fail(EIO);
  unsigned char head[8];
  long ext = extent(req, head, 0);
  size_t hl = header_len(req);
  if (hl) ext = extent(req, head, read_user(head, arg, hl));
  int buffer = ext >= 0;
  unsigned char *a = NULL;
  size_t alen = 0;
  struct region rg[MAX_REGIONS] = {{0}};
  uint32_t nrg = 0;
  if (buffer) {
    a = malloc(ext ? (size_t)ext : 1);
    if (!a) return fail(ENOMEM);
    alen = read_user(a, arg, (size_t)ext); /* a short read means the rest faults: EFAULT in the server */
    nrg = find_regions(&slots, req, (enum kind)e->kind, kfd, a, alen, rg);
    for (uint32_t i = 0; i < nrg; i++) {
      rg[i].bytes = malloc(rg[i].len);
      rg[i].len = rg[i].bytes ? (uint32_t)read_user(rg[i].bytes, rg[i].addr, rg[i].len) : 0;
    }
  }
  struct reply r = {0};
  int ret, err = 0;
  if (transact(OP_IOCTL, kfd, req, arg, buffer, a, (uint32_t)alen, rg, nrg, run ? run->sig : NULL, &r) != 0) {
    ret = -EIO;
  } else {
    ret = r.ret;
    if (run && (r.flags & RESP_WAIT)) { run->wait = 1; run->mask = r.wait_mask; }
    /* copy_to_user: what the server changed goes back; unwritable memory is EFAULT. */
    if (buffer && write_back(arg, a, r.arg, alen) != 0 && ret >= 0) ret = -EFAULT;
    size_t off = 0;
    for (uint32_t i = 0; i < nrg; i++) {
      if (write_back(rg[i].addr, rg[i].bytes, r.regs + off, rg[i].len) != 0 && ret >= 0) ret = -EFAULT;
      off += rg[i].len;
    }
  }
  if (ret == 0 && sets_memslot(req) && buffer) note_slot(&slots, kfd, a, alen);
  if (ret >= 0 && (r.new_kind == K_FILE || r.new_kind == K_FILE_RW)) {
    /* KVM_GET_STATS_FD, KVM_CREATE_GUEST_MEMFD: a file of the program's own (kvmsr keeps no fd for it). */
    int nfd = real_openat(AT_FDCWD, r.path, r.new_kind == K_FILE ? O_RDONLY | O_CLOEXEC : O_RDWR);
    err = errno;
    if (r.path[0]) unlink(r.path);
    ret = nfd >= 0 ? nfd : -err;
  } else if (ret == 0 && r.new_kind == K_DEVICE && alen >= 8) {
    /* KVM_CREATE_DEVICE: the kvmsr fd is in the struct's fd field; the program gets a real fd there. */
    int kd = (int)u32at(r.arg, 4);
    int nfd = real_openat(AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
    err = errno;
    if (nfd >= MAX_FDS || kd < 0 || kd >= MAX_FDS) { if (nfd >= 0) real_close(nfd); nfd = -1; err = EMFILE; }
    if (nfd >= 0) {
      put(nfd, kd, K_DEVICE, getpid());
      int32_t v = nfd;
      if (write_user(arg + 4, &v, 4) != 0) ret = -EFAULT;
    } else {
      struct reply c = {0};
      transact(OP_CLOSE, kd, 0, 0, 0, NULL, 0, NULL, 0, NULL, &c);
      free(c.arg);
      free(c.regs);
      ret = -err;
    }
  } else if (ret >= 0 && (r.new_kind == K_VM || r.new_kind == K_VCPU)) {
    /* KVM_CREATE_VM / KVM_CREATE_VCPU: the new kvmsr fd gets a real fd of its own. */
    int nfd = r.new_kind == K_VM ? real_openat(AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC)
                                 : real_openat(AT_FDCWD, r.path, O_RDWR | O_CLOEXEC);
    err = errno;
    if (r.new_kind == K_VCPU && r.path[0]) unlink(r.path);
    if (nfd >= MAX_FDS || ret >= MAX_FDS) { if (nfd >= 0) real_close(nfd); nfd = -1; err = EMFILE; }
    if (nfd < 0) {
      struct reply c = {0};
      transact(OP_CLOSE, ret, 0, 0, 0, NULL, 0, NULL, 0, NULL, &c);
      free(c.arg);
      free(c.regs);
      ret = -err;
    } else {
      if (r.new_kind == K_VM) forget_slots(&slots, ret);
      put(nfd, ret, (int)r.new_kind, getpid());
      if (r.new_kind == K_VCPU) map_vpage(ret, nfd);
      ret = nfd;
    }
  }
  if (ret == 0 && (req == V_FIOCLEX || req == V_FIONCLEX || req == V_FIONBIO)) {
    real_ioctl(fd, req, arg); /* the fd flags are the real fd's: keep fcntl(F_GETFD/F_GETFL) true */
  }
  free(a);
  for (uint32_t i = 0; i < nrg; i++) free(rg[i].bytes);
  free(r.arg);
  free(r.regs);
  if (ret < 0) return fail(-ret);
  return ret;
}

/* sig_ignored: a signal the kernel would discard on arrival, were it not blocked (SIG_IGN, or the
 * default action of SIGCHLD, SIGCONT, SIGURG or SIGWINCH: sig_kernel_ignore). */
static int ignored(int sig) {
  struct sigaction sa;
  if (sigaction(sig, NULL, &sa) != 0) return 0;
  if (sa.sa_flags & SA_SIGINFO) return 0;
  if (sa.sa_handler == SIG_IGN) return 1;
  return sa.sa_handler == SIG_DFL && (sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH);
}

/*
 * The vCPU sleeps: waits, with every signal blocked, until one that `mask` does not block is
 * pending, and leaves it pending. SIGKILL ends everything anyway; SIGSTOP and glibc's own two
 * signals (32, 33, which it never lets a thread block) do not end the wait.
 */
static void wait_for_signal(uint64_t mask) {
  uint64_t want = ~mask & ~((1ull << 8) | (1ull << 18) | (1ull << 31) | (1ull << 32));
  sigset_t set;
  sigemptyset(&set);
  memcpy(&set, &want, 8);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) { /* no fd to spare: wait as sigsuspend does (the handler runs inside the wait) */
    sigset_t m;
    sigemptyset(&m);
    memcpy(&m, &mask, 8);
    sigsuspend(&m);
    return;
  }
  for (;;) {
    struct pollfd p = {sfd, POLLIN, 0};
    poll(&p, 1, -1); /* EINTR: one of glibc's own signals ran its handler; look again */
    sigset_t pend;
    sigpending(&pend);
    uint64_t got;
    memcpy(&got, &pend, 8);
    got &= want;
    int woken = 0;
    for (int sig = 1; sig <= 64; sig++) {
      if (!(got & (1ull << (sig - 1)))) continue;
      if (!ignored(sig)) { woken = 1; continue; }
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      struct timespec zero = {0, 0};
      while (sigtimedwait(&one, NULL, &zero) == sig) {} /* discarded, as on arrival */
    }
    if (woken) break;
  }
  real_close(sfd);
}

/*
 * KVM_RUN: every signal blocked from before the request until the thread's mask is restored, so
 * none is lost between the server's "wait" and sigsuspend(), and no handler runs under the mutex.
 */
static int run_ioctl(int fd, unsigned long arg) {
  sigset_t all, old, pending;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  sigpending(&pending);
  struct runio run = {{0, 0}, 0, 0};
  memcpy(&run.sig[0], &old, 8); /* glibc's sigset_t begins with the kernel's 64 bits */
  memcpy(&run.sig[1], &pending, 8);
  take();
  struct ent *e = live_entry(fd);
  int ret;
  struct vpage *v = NULL;
  if (e) ret = kvm_ioctl(fd, e, KVM_RUN_REQ, arg, e->kind == K_VCPU ? &run : NULL);
  else ret = real_ioctl(fd, KVM_RUN_REQ, arg);
  int err = errno;
  if (run.wait) {
    v = vpages[e->kfd1 - 1];
    if (v) v->users++;
  }
  give();
  if (run.wait) {
    wait_for_signal(run.mask);
    if (v) __atomic_store_n((uint32_t *)(v->p + RUN_EXIT_REASON), (uint32_t)KVM_EXIT_INTR, __ATOMIC_RELEASE);
    take();
    if (v && --v->users == 0 && v->dead) { munmap(v->p, v->len); free(v); }
    give();
    ret = -1;
    err = EINTR;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL); /* kvm_sigset_deactivate; what is pending now is delivered */
  errno = err;
  return ret;
}

int ioctl(int fd, unsigned long req, ...) {
  va_list ap;
  va_start(ap, req);
  unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  resolve_all();
  if (!entry(fd)) return real_ioctl(fd, req, arg);
  if (FOREIGN()) return fail(EIO); /* a vfork child: no requests on its parent's connection */
  /* The kernel's ioctl(2) takes an unsigned int cmd. */
  if ((uint32_t)req == KVM_RUN_REQ) return run_ioctl(fd, arg);
  take();
  struct ent *e = live_entry(fd);
  int ret;
  if (e) {
    ret = kvm_ioctl(fd, e, (uint32_t)req, arg, NULL);
  } else {
    ret = real_ioctl(fd, req, arg);
  }
  int err = errno;
  give();
  errno = err;
  return ret;
}

/* ---- close and dup ---- */

int close(int fd) {
  resolve_all();
  if (!entry(fd) || FOREIGN()) return real_close(fd);
  take();
  if (entry(fd)) drop(fd);
  int ret = real_close(fd);
  int err = errno;
  give();
  errno = err;
  return ret;
}

int close_range(unsigned int first, unsigned int last, int flags) {
  resolve_all();
  if (!real_close_range) return fail(ENOSYS);
  if (FOREIGN()) return real_close_range(first, last, flags);
  take();
  if (!(flags & 4 /* CLOSE_RANGE_CLOEXEC: marks, does not close */)) {
    for (unsigned int fd = first; fd <= last && fd < MAX_FDS; fd++)
      if (entry((int)fd)) drop((int)fd);
  }
  int ret = real_close_range(first, last, flags);
  int err = errno;
  give();
  errno = err;
  return ret;
}

/* After a successful dup of `old` to `nfd`: nfd names the same kvmsr file. */
static void dup_entry(int old, int nfd) {
  struct ent *e = entry(old);
  if (!e || nfd < 0 || nfd >= MAX_FDS) return;
  int kfd = e->kfd1 - 1;
  put(nfd, kfd, e->kind, e->pid);
}

int dup(int old) {
  resolve_all();
  if (!entry(old) || FOREIGN()) return real_dup(old);
  take();
  int ret = real_dup(old);
  int err = errno;
  if (ret >= 0) dup_entry(old, ret);
  give();
  errno = err;
  return ret;
}

static int dup_to(int old, int nfd, int flags, int three) {
  resolve_all();
  if ((!entry(old) && !entry(nfd)) || FOREIGN()) return three ? real_dup3(old, nfd, flags) : real_dup2(old, nfd);
  take();
  int ret = three ? real_dup3(old, nfd, flags) : real_dup2(old, nfd);
  int err = errno;
  /* dup2 closes nfd first (do_dup2); dup2(fd, fd) changes nothing. */
  if (ret >= 0 && old != nfd) {
    if (entry(nfd)) drop(nfd);
    dup_entry(old, nfd);
  }
  give();
  errno = err;
  return ret;
}
int dup2(int old, int nfd) { return dup_to(old, nfd, 0, 0); }
int dup3(int old, int nfd, int flags) { return dup_to(old, nfd, flags, 1); }

static int do_fcntl(int (*real)(int, int, ...), int fd, int cmd, unsigned long arg) {
  if (!entry(fd) || FOREIGN()) return real(fd, cmd, arg);
  take();
  int ret = real(fd, cmd, arg);
  int err = errno;
  struct ent *e = entry(fd);
  if (ret >= 0 && e && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) dup_entry(fd, ret);
  /* A VM or vCPU fd is an anon inode opened O_RDWR (anon_inode_getfile keeps O_ACCMODE|O_NONBLOCK
   * only); the regular file standing for it has O_LARGEFILE, which the kernel's would not show. */
  if (ret >= 0 && e && cmd == F_GETFL && e->kind != K_SYSTEM) ret &= ~KERNEL_O_LARGEFILE;
  give();
  errno = err;
  return ret;
}

int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  resolve_all();
  return do_fcntl(real_fcntl, fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  resolve_all();
  return do_fcntl(real_fcntl64 ? real_fcntl64 : real_fcntl, fd, cmd, arg);
}
