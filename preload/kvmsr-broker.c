/*
 * The broker: answers each seccomp notification of the command on a pool of threads that grows to
 * one per notification in flight (each thread receives, answers, and receives again; when the last
 * idle one takes a notification it starts another), so a slow answer stops no other thread.
 *   - open/openat/openat2 of /dev/kvm (any name of it, from the target's cwd or dirfd: is_kvm_path)
 *     asks the server (OP_OPEN) and installs an fd in the target with SECCOMP_IOCTL_NOTIF_ADDFD and
 *     SECCOMP_ADDFD_FLAG_SEND, which is also the call's answer; any other open continues
 *     (SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel does it as if nothing had looked);
 *   - an ioctl on an fd the broker handed out goes to the server as the library sends it (the
 *     struct by _IOC_SIZE, its variable tail, the memory its pointers reach: kvmsr-common.h), read
 *     with process_vm_readv from the calling thread and written back with process_vm_writev; an
 *     ioctl on any other fd continues. A KVM_RUN whose vCPU sleeps (the server's "wait") is held
 *     unanswered and handed to one poller thread (sleep_vcpu), so sleeping vCPUs hold no worker.
 * The files: /dev/kvm and a VM are memfds named "kvmsr-sys-N" and "kvmsr-vm-N" (N the kvmsr fd);
 * a vCPU is the server's file of its kvm_run page (KVM_GET_VCPU_MMAP_SIZE bytes), so mmap of the
 * vCPU fd maps the page the server reads and writes around each vCPU ioctl. The broker knows them
 * by inode (kvmsr-target.c). SECCOMP_IOCTL_NOTIF_ID_VALID is checked after every read of the
 * target's memory and before every write into it and every answer.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "kvmsr-target.h"

#define MAX_WORKERS 64

int listener = -1;
pid_t target_pid;

static struct slots slots; /* under slots_lock */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- answers ---- */

size_t notif_size(void) {
  static size_t size;
  if (!size) {
    struct seccomp_notif_sizes s;
    size = sizeof(struct seccomp_notif);
    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &s) == 0 && s.seccomp_notif > size) size = s.seccomp_notif;
  }
  return size;
}

void answer(const struct seccomp_notif *n, int64_t val, int error, uint32_t flags) {
  struct seccomp_notif_resp r;
  memset(&r, 0, sizeof r);
  r.id = n->id;
  r.val = val;
  r.error = error;
  r.flags = flags;
  ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r); /* ENOENT: the thread is gone, nobody to answer */
}

static void cont(const struct seccomp_notif *n) { answer(n, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE); }

/* Whether the thread still waits in this call (not killed, not interrupted). */
static int valid(const struct seccomp_notif *n) {
  uint64_t id = n->id;
  return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

int addfd_send(const struct seccomp_notif *n, int fd, uint32_t newfd_flags) {
  struct seccomp_notif_addfd a;
  memset(&a, 0, sizeof a);
  a.id = n->id;
  a.flags = SECCOMP_ADDFD_FLAG_SEND;
  a.srcfd = (uint32_t)fd;
  a.newfd_flags = newfd_flags;
  int r = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &a);
  return r >= 0 ? r : -errno;
}

/*
 * Installs `fd` (kvmsr fd kfd) in the target as the call's answer, and keeps it in the table.
 * Whatever fails, kvmsr forgets kfd and the call gets the errno (ESRCH/ENOENT: nobody waits).
 */
static void hand_out(const struct seccomp_notif *n, struct conn *c, int fd, int kind, int kfd, uint32_t newfd_flags) {
  static int warned;
  int r = -EMFILE;
  if (fd >= 0 && files_add(fd, kfd, kind, kind == K_SYSTEM ? 0 : tgid_of((pid_t)n->pid)) == 0) {
    r = valid(n) ? addfd_send(n, fd, newfd_flags) : -ENOENT;
    if (r == -EINVAL && !__atomic_fetch_add(&warned, 1, __ATOMIC_RELAXED))
      say("the kernel refused SECCOMP_ADDFD_FLAG_SEND (it needs Linux 5.14): KVM fds cannot be handed out\n");
    if (r < 0) files_remove(fd);
  } else if (fd < 0) {
    r = -errno;
  }
  if (r >= 0) return; /* the fd stays open here: its inode is not reused while the broker runs */
  if (fd >= 0) close(fd);
  close_in_kvmsr(c, kfd, (pid_t)n->pid);
  answer(n, 0, r == -EINVAL ? -ENOSYS : r, 0);
}

/* ---- files ---- */

/* A memfd named for what it stands for; reopened with `flags` (access mode, O_NONBLOCK) if given. */
static int kvmsr_memfd(const char *what, int kfd, int flags) {
  char name[64];
  snprintf(name, sizeof name, "kvmsr-%s-%d", what, kfd);
  int fd = (int)syscall(SYS_memfd_create, name, 1 /* MFD_CLOEXEC */);
  if (fd < 0 || flags < 0) return fd;
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  int re = open(self, (flags & (O_ACCMODE | O_NONBLOCK)) | O_CLOEXEC);
  if (re < 0) return fd; /* an odd access mode: the O_RDWR memfd will do */
  close(fd);
  return re;
}

/* ---- open ---- */

/* Whether (dirfd, path), as the target thread names it, is /dev/kvm. */
static int target_names_kvm(pid_t tid, int dirfd, const char *path) {
  if (path[0] == '/') return is_kvm_path(AT_FDCWD, path);
  char p[64];
  if (dirfd == AT_FDCWD) snprintf(p, sizeof p, "/proc/%d/cwd", (int)tid);
  else snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)tid, dirfd);
  int dfd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0; /* no such dirfd, or not a directory: the kernel says so */
  int r = is_kvm_path(dfd, path);
  close(dfd);
  return r;
}

/* kvmsr-run.c's open_kvm: the kernel's answers for the device, then a kvmsr system fd. */
static void open_kvm(const struct seccomp_notif *n, struct conn *c, int flags) {
  pid_t tid = (pid_t)n->pid;
  uint32_t cloexec = (flags & O_CLOEXEC) ? O_CLOEXEC : 0;
  if ((flags & O_CREAT) && (flags & O_EXCL)) return answer(n, 0, -EEXIST, 0);
  if ((flags & O_DIRECTORY) == O_DIRECTORY) return answer(n, 0, -ENOTDIR, 0);
  if (flags & O_PATH) {
    /* No ioctls on O_PATH: /dev/null stands in, as in the library, but read-only, since
     * seccomp_notify_addfd's fget() refuses an O_PATH file (EBADF). */
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r = null < 0 ? -errno : addfd_send(n, null, cloexec);
    if (null >= 0) close(null);
    if (r < 0) answer(n, 0, r, 0);
    return;
  }
  struct reply r;
  if (transact(c, OP_OPEN, -1, 0, 0, 0, NULL, 0, NULL, 0, NULL, tid, &r) != 0) return answer(n, 0, -EIO, 0);
  reply_free(&r);
  if (r.ret < 0) return answer(n, 0, r.ret, 0);
  hand_out(n, c, kvmsr_memfd("sys", r.ret, flags), K_SYSTEM, r.ret, cloexec);
}

static void on_open(const struct seccomp_notif *n, struct conn *c) {
  const __u64 *a = n->data.args;
  pid_t tid = (pid_t)n->pid;
  int dirfd = AT_FDCWD;
  uint64_t path_at = a[0], flags = a[1];
  if (n->data.nr != __NR_open) {
    dirfd = (int)a[0];
    path_at = a[1];
    flags = a[2];
  }
  if (n->data.nr == __NR_openat2) {
    /* struct open_how: flags first (u64). A short or unreadable one: the kernel's EINVAL/EFAULT. */
    if (a[3] < 24 || read_target(tid, &flags, a[2], 8) != 8) return cont(n);
  }
  char path[PATH_MAX];
  if (read_string(tid, path_at, path, sizeof path) != 0) return cont(n); /* EFAULT, ENAMETOOLONG */
  if (!valid(n)) return;
  if (!target_names_kvm(tid, dirfd, path)) return cont(n);
  open_kvm(n, c, (int)flags);
}

/* ---- KVM_RUN: sleeping vCPUs ---- */

/*
 * The thread's signals from /proc/TID/status: SigBlk, SigPnd | ShdPnd and those the kernel would
 * discard on arrival, were they not blocked (sig_ignored: SigIgn, and SIGCHLD, SIGCONT, SIGURG,
 * SIGWINCH left at SIG_DFL, i.e. not in SigCgt); each the kernel's sigset_t, bit n-1 for signal n.
 * 0, or -1 when the thread is gone.
 */
static int thread_signals(pid_t tid, uint64_t *blocked, uint64_t *pending, uint64_t *ignored) {
  char p[64], line[256];
  snprintf(p, sizeof p, "/proc/%d/status", (int)tid);
  FILE *f = fopen(p, "re");
  if (!f) return -1;
  uint64_t blk = 0, pnd = 0, shd = 0, ign = 0, cgt = 0;
  int seen = 0;
  unsigned long long v;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "SigPnd: %llx", &v) == 1) { pnd = v; seen |= 1; }
    else if (sscanf(line, "ShdPnd: %llx", &v) == 1) { shd = v; seen |= 2; }
    else if (sscanf(line, "SigBlk: %llx", &v) == 1) { blk = v; seen |= 4; }
    else if (sscanf(line, "SigIgn: %llx", &v) == 1) { ign = v; seen |= 8; }
    else if (sscanf(line, "SigCgt: %llx", &v) == 1) { cgt = v; seen |= 16; }
  }
  fclose(f);
  if (seen != 31) return -1;
  const uint64_t kernel_ignore = (1ull << 16) | (1ull << 17) | (1ull << 22) | (1ull << 27); /* 17, 18, 23, 28 */
  ign |= kernel_ignore & ~cgt & ~ign;
  if (blocked) *blocked = blk;
  if (pending) *pending = pnd | shd;
  if (ignored) *ignored = ign;
  return 0;
}

/*
 * A KVM_RUN whose vCPU sleeps: the notification stays unanswered (the thread waits in the kernel;
 * with WAIT_KILLABLE_RECV no signal but a fatal one ends that wait, so a signal stays pending)
 * until a signal outside `mask` is pending for the thread. One poller thread looks at every
 * sleeping vCPU every 2 ms, so they hold no worker of the pool.
 */
struct sleeper {
  uint64_t id;
  pid_t tid;
  uint64_t mask;
  int fd; /* the vCPU's file (a dup of the broker's): its kvm_run page */
  struct sleeper *next;
};
static struct sleeper *sleepers;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sleep_cond = PTHREAD_COND_INITIALIZER;
static int poller_started;

static int id_valid(uint64_t id) { return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0; }

/* 1: the sleeper is done (woken, or gone); 0: it sleeps on. */
static int look_at(struct sleeper *s) {
  /* The thread was killed, or (before 5.19, no WAIT_KILLABLE_RECV) a signal interrupted the call:
   * the kernel has answered it (a restart, or EINTR) and nobody waits for this one. */
  if (!id_valid(s->id)) return 1;
  uint64_t pending, ign;
  if (thread_signals(s->tid, NULL, &pending, &ign) != 0) return 1;
  /* SIGKILL ends everything anyway; SIGSTOP does not end the wait; an ignored one does not either
   * (the library discards it; here it stays pending, as the thread blocks it). */
  uint64_t got = pending & ~s->mask & ~ign & ~((1ull << 8) | (1ull << 18));
  if (!got) return 0;
  uint32_t intr = KVM_EXIT_INTR;
  if (!id_valid(s->id)) return 1;
  if (pwrite(s->fd, &intr, 4, RUN_EXIT_REASON) != 4) say("KVM_RUN: cannot write exit_reason: %s\n", strerror(errno));
  struct seccomp_notif_resp r;
  memset(&r, 0, sizeof r);
  r.id = s->id;
  r.error = -EINTR;
  ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r); /* ENOENT: the thread is gone */
  return 1;
}

static void *poller(void *unused) {
  (void)unused;
  for (;;) {
    pthread_mutex_lock(&sleep_lock);
    while (!sleepers) pthread_cond_wait(&sleep_cond, &sleep_lock);
    for (struct sleeper **pp = &sleepers; *pp;) {
      struct sleeper *s = *pp;
      if (look_at(s)) {
        *pp = s->next;
        close(s->fd);
        free(s);
      } else {
        pp = &s->next;
      }
    }
    pthread_mutex_unlock(&sleep_lock);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

/* Hands the notification to the poller; -1 (then the caller answers) when it cannot. */
static int sleep_vcpu(const struct seccomp_notif *n, int vcpu_fd, uint64_t mask) {
  struct sleeper *s = calloc(1, sizeof *s);
  if (!s) return -1;
  s->fd = fcntl(vcpu_fd, F_DUPFD_CLOEXEC, 0);
  if (s->fd < 0) { free(s); return -1; }
  s->id = n->id;
  s->tid = (pid_t)n->pid;
  s->mask = mask;
  pthread_mutex_lock(&sleep_lock);
  if (!poller_started) {
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    if (pthread_create(&t, &at, poller, NULL) == 0) poller_started = 1;
    pthread_attr_destroy(&at);
    if (!poller_started) {
      pthread_mutex_unlock(&sleep_lock);
      close(s->fd);
      free(s);
      return -1;
    }
  }
  s->next = sleepers;
  sleepers = s;
  pthread_cond_signal(&sleep_cond);
  pthread_mutex_unlock(&sleep_lock);
  return 0;
}

/* ---- ioctl ---- */

/* What kvmsr-run.c's kvm_ioctl does, on the calling thread's memory. */
static void on_ioctl(const struct seccomp_notif *n, struct conn *c) {
  pid_t tid = (pid_t)n->pid;
  struct kfile f;
  if (!files_find(tid, (int)n->data.args[0], &f)) return cont(n);
  uint32_t req = (uint32_t)n->data.args[1]; /* ioctl(2)'s cmd is an unsigned int */
  uint64_t arg = n->data.args[2];
  int kfd = f.kfd;
  /* kvm_vm_ioctl / kvm_vcpu_ioctl: "if (kvm->mm != current->mm) return -EIO" in a forked child. */
  if (f.kind != K_SYSTEM && tgid_of(tid) != f.tgid) return answer(n, 0, -EIO, 0);
  unsigned char head[8];
  long ext = extent(req, head, 0);
  size_t hl = header_len(req);
  if (hl) ext = extent(req, head, read_target(tid, head, arg, hl));
  int buffer = ext >= 0;
  unsigned char *a = NULL;
  size_t alen = 0;
  struct region rg[MAX_REGIONS];
  memset(rg, 0, sizeof rg);
  uint32_t nrg = 0;
  if (buffer) {
    a = malloc(ext ? (size_t)ext : 1);
    if (!a) return answer(n, 0, -ENOMEM, 0);
    alen = read_target(tid, a, arg, (size_t)ext); /* a short read: the rest faults, EFAULT from kvmsr */
    pthread_mutex_lock(&slots_lock);
    nrg = find_regions(&slots, req, (enum kind)f.kind, kfd, a, alen, rg);
    pthread_mutex_unlock(&slots_lock);
    for (uint32_t i = 0; i < nrg; i++) {
      rg[i].bytes = malloc(rg[i].len);
      rg[i].len = rg[i].bytes ? (uint32_t)read_target(tid, rg[i].bytes, rg[i].addr, rg[i].len) : 0;
    }
  }
  struct reply r;
  memset(&r, 0, sizeof r);
  int ret;
  /*
   * KVM_RUN on a vCPU carries the thread's blocked and pending signals (/proc/TID/status; the thread
   * waits in the kernel, so they hold still but for new arrivals). Where the server answers that
   * the vCPU sleeps until a signal outside the wait mask, the notification goes to the poller
   * unanswered (sleep_vcpu), which answers -EINTR with exit_reason = KVM_EXIT_INTR.
   */
  uint64_t sig[2] = {0, 0};
  int running = req == KVM_RUN_REQ && f.kind == K_VCPU;
  if (running && thread_signals(tid, &sig[0], &sig[1], NULL) != 0) goto out; /* the thread is gone */
  if (!valid(n)) goto out;
  if (transact(c, OP_IOCTL, kfd, req, arg, buffer, a, (uint32_t)alen, rg, nrg, running ? sig : NULL, tid, &r) != 0) {
    answer(n, 0, -EIO, 0);
    goto out;
  }
  ret = r.ret;
  if (running && (r.flags & RESP_WAIT)) {
    if (valid(n) && sleep_vcpu(n, f.fd, r.wait_mask) != 0) answer(n, 0, -ENOMEM, 0);
    goto out;
  }
  if (!valid(n)) { /* killed meanwhile: nothing to write, and a new VM or vCPU nobody will hold */
    if (ret >= 0 && (r.new_kind == K_VM || r.new_kind == K_VCPU)) close_in_kvmsr(c, ret, tid);
    if (r.new_kind == K_VCPU && r.path[0]) unlink(r.path);
    goto out;
  }
  if (ret >= 0 && r.new_kind == K_VM) {
    pthread_mutex_lock(&slots_lock);
    forget_slots(&slots, ret);
    pthread_mutex_unlock(&slots_lock);
  }
  /* copy_to_user: what the server changed goes back; unwritable memory is EFAULT. */
  if (buffer && write_back(tid, arg, a, r.arg, alen) != 0 && ret >= 0) ret = -EFAULT;
  size_t off = 0;
  for (uint32_t i = 0; i < nrg; i++) {
    if (write_back(tid, rg[i].addr, rg[i].bytes, r.regs + off, rg[i].len) != 0 && ret >= 0) ret = -EFAULT;
    off += rg[i].len;
  }
  if (ret == 0 && sets_memslot(req) && buffer) {
    pthread_mutex_lock(&slots_lock);
    note_slot(&slots, kfd, a, alen);
    pthread_mutex_unlock(&slots_lock);
  }
  if (ret >= 0 && r.new_kind == K_VM) {
    hand_out(n, c, kvmsr_memfd("vm", ret, -1), K_VM, ret, O_CLOEXEC); /* anon_inode_getfd(..., O_RDWR | O_CLOEXEC) */
  } else if (ret >= 0 && (r.new_kind == K_FILE || r.new_kind == K_FILE_RW)) {
    /* KVM_GET_STATS_FD, KVM_CREATE_GUEST_MEMFD: the file itself, the target's own (the broker keeps nothing of it). */
    int ro = r.new_kind == K_FILE;
    int fd = open(r.path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    int e = errno;
    if (r.path[0]) unlink(r.path);
    int s = fd < 0 ? -e : valid(n) ? addfd_send(n, fd, ro ? O_CLOEXEC : 0) : -ENOENT;
    if (fd >= 0) close(fd);
    if (s < 0) answer(n, 0, s, 0);
  } else if (ret == 0 && r.new_kind == K_DEVICE && alen >= 8) {
    /* KVM_CREATE_DEVICE: the new fd goes into the target's struct (the call returns 0), so it is
     * installed without SEND and its number written where the kvmsr fd was. */
    int kd = (int)u32at(r.arg, 4);
    int fd = kvmsr_memfd("device", kd, -1);
    int tfd = -1;
    if (fd >= 0 && files_add(fd, kd, K_DEVICE, tgid_of((pid_t)n->pid)) == 0) {
      struct seccomp_notif_addfd ad;
      memset(&ad, 0, sizeof ad);
      ad.id = n->id;
      ad.srcfd = (uint32_t)fd;
      ad.newfd_flags = O_CLOEXEC; /* anon_inode_getfd(..., O_RDWR | O_CLOEXEC) */
      tfd = valid(n) ? ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &ad) : -1;
      if (tfd < 0) files_remove(fd);
    }
    uint32_t was = (uint32_t)kd, now = (uint32_t)tfd;
    if (tfd >= 0 && write_back(tid, arg + 4, (const unsigned char *)&was, (const unsigned char *)&now, 4) == 0) {
      answer(n, 0, 0, 0);
    } else {
      if (tfd < 0 && fd >= 0) close(fd);
      close_in_kvmsr(c, kd, tid);
      answer(n, 0, tfd < 0 ? -EMFILE : -EFAULT, 0);
    }
  } else if (ret >= 0 && r.new_kind == K_VCPU) {
    int fd = open(r.path, O_RDWR | O_CLOEXEC);
    if (r.path[0]) unlink(r.path);
    hand_out(n, c, fd, K_VCPU, ret, O_CLOEXEC);
  } else {
    answer(n, ret, ret < 0 ? ret : 0, 0);
  }
out:
  free(a);
  for (uint32_t i = 0; i < nrg; i++) free(rg[i].bytes);
  reply_free(&r);
}

/* ---- the pool ---- */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int idle, workers;

static void *worker(void *unused);

/* Under pool_lock. */
static int spawn_worker(void) {
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  int r = pthread_create(&t, &at, worker, NULL);
  pthread_attr_destroy(&at);
  if (r != 0) return -1;
  workers++;
  idle++;
  return 0;
}

static void *worker(void *unused) {
  (void)unused;
  struct conn c = {-1};
  size_t size = notif_size();
  struct seccomp_notif *n = malloc(size);
  for (;;) {
    if (!n) break;
    memset(n, 0, size); /* SECCOMP_IOCTL_NOTIF_RECV wants it zeroed */
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, n) != 0) {
      if (errno == EINTR || errno == ENOENT) continue; /* ENOENT: the caller died before we got it */
      break;
    }
    pthread_mutex_lock(&pool_lock);
    if (--idle == 0 && workers < MAX_WORKERS) spawn_worker();
    pthread_mutex_unlock(&pool_lock);
    if (n->data.nr == __NR_ioctl) on_ioctl(n, &c);
    else if (n->data.nr == __NR_open || n->data.nr == __NR_openat || n->data.nr == __NR_openat2) on_open(n, &c);
    else cont(n);
    pthread_mutex_lock(&pool_lock);
    idle++;
    pthread_mutex_unlock(&pool_lock);
  }
  say("the seccomp listener failed: %s\n", strerror(errno));
  free(n);
  if (c.fd >= 0) close(c.fd);
  pthread_mutex_lock(&pool_lock);
  idle--;
  workers--;
  pthread_mutex_unlock(&pool_lock);
  return NULL;
}

int start_broker(void) {
  pthread_mutex_lock(&pool_lock);
  int r = spawn_worker();
  pthread_mutex_unlock(&pool_lock);
  return r;
}
