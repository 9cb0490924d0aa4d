/*
 * What the `kvmsr run` preload library (kvmsr-run.c) and the seccomp broker (kvmsr-seccomp.c) share:
 * the wire format's constants, the bytes an ioctl makes the kernel read and write (the struct by
 * _IOC_SIZE, its variable tail, and the memory that pointers inside it reach), and whether a path
 * names /dev/kvm. Everything is static inline: each includer keeps what it uses.
 */
#ifndef KVMSR_COMMON_H
#define KVMSR_COMMON_H
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <errno.h>
#include <unistd.h>

#define KVMIO 0xAE

/* The wire format (src/run/protocol.ts): little-endian, one request and one response at a time. */
#define REQ_MAGIC 0x52534d4bu
#define RESP_MAGIC 0x5053524bu
#define OP_OPEN 1
#define OP_IOCTL 2
#define OP_CLOSE 3
#define REQ_HEADER 48
#define RESP_HEADER 32
#define REGION_HEADER 16
#define FLAG_BUFFER 1
#define FLAG_SIGNALS 2 /* 16 bytes follow the header: the thread's blocked and pending signals */
#define SIGNALS_LEN 16
#define RESP_WAIT 1    /* the thread waits for a signal; the 8-byte mask follows the path */
#define WAIT_MASK_LEN 8
#define MAX_REGIONS 16

/* K_FILE: the call made a plain file (a binary stats fd): the reply's path, opened read-only and
 * close-on-exec, is it; K_FILE_RW (a guest_memfd) opened read-write, not close-on-exec. */
enum kind { K_NONE = 0, K_SYSTEM = 1, K_VM = 2, K_VCPU = 3, K_FILE = 4, K_FILE_RW = 5, K_DEVICE = 6 };

/* ioctl numbers (include/uapi/linux/kvm.h) and the VFS's generic ones (fs/ioctl.c). */
#define KVM_GET_MSR_INDEX_LIST 0xc004ae02u
#define KVM_GET_MSR_FEATURE_INDEX_LIST 0xc004ae0au
#define KVM_GET_SUPPORTED_CPUID 0xc008ae05u
#define KVM_GET_EMULATED_CPUID 0xc008ae09u
#define KVM_GET_MSRS 0xc008ae88u
#define KVM_SET_MSRS 0x4008ae89u
#define KVM_SET_CPUID2 0x4008ae90u
#define KVM_GET_CPUID2 0xc008ae91u
#define KVM_GET_SUPPORTED_HV_CPUID 0xc008aec1u
#define KVM_ENABLE_CAP 0x4068aea3u
#define KVM_X86_SET_MSR_FILTER 0x4188aec6u
#define KVM_CAP_HYPERV_ENLIGHTENED_VMCS 163
#define KVM_SET_USER_MEMORY_REGION 0x4020ae46u
#define KVM_SET_USER_MEMORY_REGION2 0x40a0ae49u /* the same first 32 bytes: slot, flags, gpa, size, hva */
#define KVM_SET_GSI_ROUTING 0x4008ae6au
#define KVM_GET_DIRTY_LOG 0x4010ae42u
#define KVM_CLEAR_DIRTY_LOG 0xc018aec0u
#define KVM_GET_DEVICE_ATTR 0x4018aee2u
#define KVM_SET_DEVICE_ATTR 0x4018aee1u
#define KVM_REINJECT_CONTROL 0xae71u
#define KVM_SET_PMU_EVENT_FILTER 0x4020aeb2u
#define KVM_GET_REG_LIST 0xc008aeb0u
#define KVM_GET_ONE_REG 0x4010aeabu
#define KVM_SET_ONE_REG 0x4010aeacu
#define KVM_RUN_REQ 0xae80u
#define KVM_SET_SIGNAL_MASK 0x4004ae8bu
#define KVM_EXIT_INTR 10
#define RUN_EXIT_REASON 8 /* offsetof(struct kvm_run, exit_reason) */
#define MAX_SLOTS 1024
#define V_FIONBIO 0x5421u
#define V_FIONCLEX 0x5450u
#define V_FIOCLEX 0x5451u
#define V_FIOASYNC 0x5452u
#define V_FIOQSIZE 0x5460u
#define V_FIGETBSZ 0x2u

struct region { uint64_t addr; uint32_t len; unsigned char *bytes; };

/* Sends or receives len bytes on a stream socket; 0, or -1 when the peer is gone. */
static inline int io_all(int fd, void *buf, size_t len, int out) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = out ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR) continue; /* a VMM's signals (vCPU kicks) must not cut a frame */
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* What the server answered one request (src/run/protocol.ts). */
struct reply {
  int32_t ret;
  uint32_t new_kind;
  uint32_t flags;       /* RESP_WAIT */
  uint64_t wait_mask;   /* with RESP_WAIT: the kernel sigset_t to wait under */
  unsigned char *arg;   /* arg_len bytes after the call */
  unsigned char *regs;  /* the regions' bytes after the call, back to back */
  char path[PATH_MAX];
};

/*
 * The shared-memory lane (src/run/lane.ts): a file in the server's directory that the library maps
 * and the server reads and writes with pread/pwrite. A request goes into the lane instead of the
 * socket, and its response comes back there, so a call costs no wake-up of a sleeping process while
 * both sides are busy: the server polls its lanes for a while after each request (LANE_POLLING set,
 * no ring needed) and the caller polls for its response for a while before it sleeps on the socket
 * (LANE_SLEEPING set, the server then sends a WAKE frame). Each flag is read after the other side's
 * state is written, with a full fence between, so neither side sleeps while the other has news.
 */
#define OP_LANE 4 /* make this connection a lane: the reply's path names its file */
#define OP_RING 5 /* a request waits in the lane (the server answers there, never on the socket) */
#define WAKE_MAGIC 0x454b4157u /* a RESP_HEADER-sized frame on the socket: the lane has a response */
#define LANE_POLLING 0   /* u32, the server's: 1 while it polls the lane */
#define LANE_SLEEPING 64 /* u32, the caller's: 1 while it sleeps on the socket for a WAKE frame */
#define LANE_CTL 4096    /* the request frame; its response is LANE_MAX further */
#define LANE_STATE (LANE_CTL - 8) /* u32: LANE_IDLE, LANE_REQUEST or LANE_RESPONSE; one read gets it and the frame */
#define LANE_IDLE 0
#define LANE_REQUEST 1
#define LANE_RESPONSE 2
#define LANE_MAX ((1u << 20) + 8192) /* a frame of MAX_FRAME, and its response with a path */
#define LANE_SIZE (LANE_CTL + 2 * LANE_MAX)
#define LANE_SPIN_NS 200000L /* how long a caller polls for its response; KVMSR_RUN_SPIN_US sets it */

struct lane { unsigned char *m; long spin_ns; };

/* The request frame (src/run/protocol.ts) into m, which holds `size` bytes. */
static inline void put_request(unsigned char *m, size_t size, uint32_t op, int32_t kfd, uint32_t req, uint64_t arg, int buffer,
                               const unsigned char *argb, uint32_t arg_len, const struct region *rg, uint32_t nrg,
                               const uint64_t *sig, pid_t tid) {
  uint32_t h32[6] = {REQ_MAGIC, (uint32_t)size, op, (uint32_t)kfd, req, (uint32_t)tid};
  memcpy(m, h32, 24);
  memcpy(m + 24, &arg, 8);
  uint32_t t32[4] = {(buffer ? FLAG_BUFFER : 0) | (sig ? FLAG_SIGNALS : 0), arg_len, nrg, 0};
  memcpy(m + 32, t32, 16);
  unsigned char *p = m + REQ_HEADER;
  if (sig) { memcpy(p, sig, SIGNALS_LEN); p += SIGNALS_LEN; }
  if (arg_len) { memcpy(p, argb, arg_len); p += arg_len; }
  for (uint32_t i = 0; i < nrg; i++) {
    uint32_t l2[2] = {rg[i].len, 0};
    memcpy(p, &rg[i].addr, 8);
    memcpy(p + 8, l2, 8);
    p += REGION_HEADER;
    if (rg[i].len) { memcpy(p, rg[i].bytes, rg[i].len); p += rg[i].len; }
  }
}

/* Whether a response header fits the request; fills out's scalars and allocates its buffers. */
static inline int take_header(const uint32_t rh[8], uint32_t arg_len, size_t regs, uint32_t nrg, struct reply *out) {
  size_t tail = (rh[7] & RESP_WAIT) ? WAIT_MASK_LEN : 0;
  if (rh[0] != RESP_MAGIC || rh[3] != arg_len || rh[4] != nrg || rh[5] >= PATH_MAX || (rh[7] & ~RESP_WAIT) ||
      rh[1] != RESP_HEADER + arg_len + regs + rh[5] + tail) return -1;
  out->ret = (int32_t)rh[2];
  out->new_kind = rh[6];
  out->flags = rh[7];
  out->arg = arg_len ? malloc(arg_len) : NULL;
  out->regs = regs ? malloc(regs) : NULL;
  if ((arg_len && !out->arg) || (regs && !out->regs)) return -1;
  return 0;
}

static inline long lane_elapsed_ns(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

/* Waits for the lane's response: polls a while (more than one CPU), then sleeps on the socket. */
static inline int lane_wait(int s, struct lane *l) {
  uint32_t *st = (uint32_t *)(l->m + LANE_STATE), *sl = (uint32_t *)(l->m + LANE_SLEEPING);
  if (l->spin_ns > 0) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1;; i++) {
      if (__atomic_load_n(st, __ATOMIC_ACQUIRE) == LANE_RESPONSE) return 0;
      __builtin_ia32_pause();
      if ((i & 63) == 0 && lane_elapsed_ns(&t0) > l->spin_ns) break;
    }
  }
  for (;;) {
    __atomic_store_n(sl, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(st, __ATOMIC_SEQ_CST) == LANE_RESPONSE) break;
    uint32_t w[RESP_HEADER / 4];
    if (io_all(s, w, RESP_HEADER, 0) || w[0] != WAKE_MAGIC) { __atomic_store_n(sl, 0, __ATOMIC_RELAXED); return -1; }
  }
  __atomic_store_n(sl, 0, __ATOMIC_RELAXED);
  return 0;
}

/* One request and its reply through the lane. */
static inline int lane_exchange(int s, struct lane *l, size_t size, uint32_t op, int32_t kfd, uint32_t req, uint64_t arg, int buffer,
                                const unsigned char *argb, uint32_t arg_len, const struct region *rg, uint32_t nrg,
                                const uint64_t *sig, pid_t tid, struct reply *out) {
  put_request(l->m + LANE_CTL, size, op, kfd, req, arg, buffer, argb, arg_len, rg, nrg, sig, tid);
  __atomic_store_n((uint32_t *)(l->m + LANE_STATE), LANE_REQUEST, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n((uint32_t *)(l->m + LANE_POLLING), __ATOMIC_SEQ_CST)) {
    uint32_t ring[REQ_HEADER / 4] = {REQ_MAGIC, REQ_HEADER, OP_RING, 0, 0, (uint32_t)tid};
    if (io_all(s, ring, REQ_HEADER, 1)) return -1;
  }
  if (lane_wait(s, l)) return -1;
  const unsigned char *p = l->m + LANE_CTL + LANE_MAX;
  uint32_t rh[8];
  memcpy(rh, p, RESP_HEADER);
  size_t regs = 0;
  for (uint32_t i = 0; i < nrg; i++) regs += rg[i].len;
  if (rh[1] > LANE_MAX || take_header(rh, arg_len, regs, nrg, out)) return -1;
  p += RESP_HEADER;
  if (arg_len) memcpy(out->arg, p, arg_len);
  p += arg_len;
  if (regs) memcpy(out->regs, p, regs);
  p += regs;
  memcpy(out->path, p, rh[5]);
  out->path[rh[5]] = 0;
  p += rh[5];
  if (rh[7] & RESP_WAIT) memcpy(&out->wait_mask, p, WAIT_MASK_LEN);
  __atomic_store_n((uint32_t *)(l->m + LANE_STATE), LANE_IDLE, __ATOMIC_RELEASE);
  return 0;
}

/* A response header from the socket, past any WAKE frames a lane's caller did not need. */
static inline int read_response_header(int s, uint32_t rh[8]) {
  do {
    if (io_all(s, rh, RESP_HEADER, 0)) return -1;
  } while (rh[0] == WAKE_MAGIC);
  return 0;
}

/*
 * One request and its reply on the server socket s (through the lane l when there is one and the
 * frame fits), in the wire format of src/run/protocol.ts: what the library and the seccomp broker
 * both send. 0, or -1 when the server is gone or answered out of format (out->arg and out->regs may
 * then be allocated: the caller frees them).
 */
static inline int wire_exchange(int s, struct lane *l, uint32_t op, int32_t kfd, uint32_t req, uint64_t arg, int buffer,
                                const unsigned char *argb, uint32_t arg_len, const struct region *rg, uint32_t nrg,
                                const uint64_t *sig, pid_t tid, struct reply *out) {
  size_t size = REQ_HEADER + (sig ? SIGNALS_LEN : 0) + arg_len;
  for (uint32_t i = 0; i < nrg; i++) size += REGION_HEADER + rg[i].len;
  if (l && l->m && size <= LANE_MAX) return lane_exchange(s, l, size, op, kfd, req, arg, buffer, argb, arg_len, rg, nrg, sig, tid, out);
  unsigned char *m = malloc(size);
  if (!m) return -1;
  put_request(m, size, op, kfd, req, arg, buffer, argb, arg_len, rg, nrg, sig, tid);
  int bad = io_all(s, m, size, 1);
  free(m);
  uint32_t rh[8];
  if (bad || read_response_header(s, rh)) return -1;
  size_t regs = 0;
  for (uint32_t i = 0; i < nrg; i++) regs += rg[i].len;
  if (take_header(rh, arg_len, regs, nrg, out)) return -1;
  if (io_all(s, out->arg, arg_len, 0) || io_all(s, out->regs, regs, 0) || io_all(s, out->path, rh[5], 0)) return -1;
  out->path[rh[5]] = 0;
  if ((rh[7] & RESP_WAIT) && io_all(s, &out->wait_mask, WAIT_MASK_LEN, 0)) return -1;
  return 0;
}

/*
 * Asks the server for a lane on connection s and maps it into l (l->m stays NULL where the server
 * gives none: every request then goes through the socket).
 */
static inline void lane_open(int s, struct lane *l, pid_t tid) {
  struct reply r = {0};
  l->m = NULL;
  if (wire_exchange(s, NULL, OP_LANE, -1, 0, 0, 0, NULL, 0, NULL, 0, NULL, tid, &r) == 0 && r.ret == 0 && r.path[0]) {
    /* The raw call: the lane is kvmsr's own business, not the program's opens (nor an interposer's). */
    int fd = (int)syscall(SYS_openat, AT_FDCWD, r.path, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      void *m = mmap(NULL, LANE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (m != MAP_FAILED) l->m = m;
      syscall(SYS_close, fd);
    }
    unlink(r.path); /* the server holds its own fd; nothing is left behind when either side dies */
  }
  free(r.arg);
  free(r.regs);
  /* Polling only pays where the server runs on another CPU meanwhile. */
  const char *us = getenv("KVMSR_RUN_SPIN_US");
  l->spin_ns = us && *us ? strtol(us, NULL, 10) * 1000L : sysconf(_SC_NPROCESSORS_ONLN) > 1 ? LANE_SPIN_NS : 0;
}

/* Forgets a lane (a forked child's copy of its parent's, or one whose connection was lost). */
static inline void lane_drop(struct lane *l) {
  if (l->m) munmap(l->m, LANE_SIZE);
  l->m = NULL;
}

/* ---- paths ---- */

/*
 * Resolves an absolute path as the kernel's path walk does: component by component, "." and ".."
 * on the resolved prefix, symlinks followed where they are met (at most 40, MAXSYMLINKS). Past a
 * missing component it goes on lexically (the kernel would stop there with ENOENT), so a link to
 * /dev/kvm resolves to "/dev/kvm" on a machine that has none. 0, or -1 on a loop or an overlong path.
 */
static inline int resolve_path(const char *in, char *out, size_t cap) {
  char rest[PATH_MAX * 2], next[PATH_MAX * 3];
  if (strlen(in) >= sizeof rest) return -1;
  strcpy(rest, in);
  size_t o = 0;
  out[0] = 0;
  int hops = 0, missing = 0;
  char *p = rest;
  for (;;) {
    while (*p == '/') p++;
    if (!*p) break;
    char *q = p;
    while (*q && *q != '/') q++;
    size_t n = (size_t)(q - p);
    if (n == 1 && p[0] == '.') { p = q; continue; }
    if (n == 2 && p[0] == '.' && p[1] == '.') {
      while (o > 0 && out[o - 1] != '/') o--;
      if (o > 0) o--;
      out[o] = 0;
      p = q;
      continue;
    }
    if (o + n + 2 >= cap) return -1;
    out[o] = '/';
    memcpy(out + o + 1, p, n);
    out[o + 1 + n] = 0;
    struct stat st;
    if (!missing && lstat(out, &st) == 0 && S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t tn = readlink(out, target, sizeof target - 1);
      if (tn <= 0 || ++hops > 40) return -1;
      target[tn] = 0;
      snprintf(next, sizeof next, "%s/%s", target, q);
      if (strlen(next) >= sizeof rest) return -1;
      strcpy(rest, next);
      p = rest;
      if (target[0] == '/') o = 0; /* an absolute link starts again from / */
      out[o] = 0;
      continue;
    }
    if (!missing && lstat(out, &st) != 0) missing = 1;
    o += 1 + n;
    p = q;
  }
  if (o == 0) strcpy(out, "/");
  return 0;
}

/*
 * Whether open(dirfd, path) would open the KVM device: any name of a character device with KVM's
 * misc minor (KVM_MINOR 232, include/linux/miscdevice.h), or a path that is "/dev/kvm" once made
 * absolute and resolved (resolve_path: so it counts on a machine with no /dev/kvm).
 * stat does not open the device.
 */
static inline int is_kvm_path(int dirfd, const char *path) {
  if (!path) return 0;
  struct stat st;
  if (fstatat(dirfd, path, &st, 0) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 232) return 1;
  int link = fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
  if (!link && !strstr(path, "kvm")) return 0; /* a path with no link and no "kvm" cannot name it */
  char full[PATH_MAX * 2];
  if (path[0] == '/') {
    snprintf(full, sizeof full, "%s", path);
  } else {
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
      if (!getcwd(base, sizeof base)) return 0;
    } else {
      char fdlink[64];
      snprintf(fdlink, sizeof fdlink, "/proc/self/fd/%d", dirfd);
      ssize_t n = readlink(fdlink, base, sizeof base - 1);
      if (n <= 0) return 0;
      base[n] = 0;
    }
    snprintf(full, sizeof full, "%s/%s", base, path);
  }
  char resolved[PATH_MAX * 2];
  if (resolve_path(full, resolved, sizeof resolved) != 0) return 0;
  return strcmp(resolved, "/dev/kvm") == 0;
}

/*
 * A KVM module parameter's sysfs file (/sys/module/{kvm,kvm_intel,kvm_amd,kvm_pvm}/parameters/NAME)
 * becomes the file `kvmsr run` wrote under $KVMSR_RUN_SYSFS from the profile's moduleParams, so the
 * program reads the parameters of the host kvmsr answers as (a missing one stays missing). 1 with
 * the file's path in out, else 0.
 */
static inline int module_param_path(int dirfd, const char *path, char *out, size_t cap) {
  const char *root = getenv("KVMSR_RUN_SYSFS");
  if (!root || !*root || !path || path[0] != '/' || dirfd == -1 || strncmp(path, "/sys/", 5) != 0) return 0;
  char resolved[PATH_MAX * 2];
  if (resolve_path(path, resolved, sizeof resolved) != 0) return 0;
  static const char *const mods[] = {"kvm", "kvm_intel", "kvm_amd", "kvm_pvm"};
  for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "/sys/module/%s/parameters/", mods[i]);
    size_t pl = strlen(prefix);
    const char *name = resolved + pl;
    if (strncmp(resolved, prefix, pl) != 0 || !*name || strchr(name, '/')) continue;
    return snprintf(out, cap, "%s/%s/parameters/%s", root, mods[i], name) < (int)cap;
  }
  return 0;
}

/* ---- ioctl extents ---- */

static inline uint32_t u32at(const unsigned char *b, size_t off) { uint32_t v; memcpy(&v, b + off, 4); return v; }
static inline uint64_t u64at(const unsigned char *b, size_t off) { uint64_t v; memcpy(&v, b + off, 8); return v; }

/*
 * The bytes the kernel reads at the pointer: the struct (_IOC_SIZE) and its variable tail, sized
 * from the header at `head` (hlen bytes of it readable). -1: an integer argument.
 */
static inline long extent(uint32_t req, const unsigned char *head, size_t hlen) {
  uint32_t n = hlen >= 4 ? u32at(head, 0) : 0;
  switch (req) {
  case KVM_GET_MSRS: case KVM_SET_MSRS:
    /* msr_io: nmsrs >= MAX_IO_MSRS (256) is refused before the entries are copied. */
    return n >= 256 ? 8 : 8 + 16 * (long)n;
  case KVM_GET_MSR_INDEX_LIST: case KVM_GET_MSR_FEATURE_INDEX_LIST:
    /* kvm_arch_dev_ioctl copies out as many u32s as the list holds (far fewer than 64Ki). */
    return 4 + 4 * (long)(n > 0x10000 ? 0x10000 : n);
  case KVM_GET_SUPPORTED_CPUID: case KVM_GET_EMULATED_CPUID: case KVM_SET_CPUID2: case KVM_GET_CPUID2:
  case KVM_GET_SUPPORTED_HV_CPUID:
    /* KVM_MAX_CPUID_ENTRIES (256) kvm_cpuid_entry2s of 40 bytes at most. */
    return 8 + 40 * (long)(n > 256 ? 256 : n);
  case KVM_SET_GSI_ROUTING:
    /* kvm_vm_ioctl KVM_SET_GSI_ROUTING: nr kvm_irq_routing_entry of 48 bytes, nr < KVM_MAX_IRQ_ROUTES. */
    return 8 + 48 * (long)(n >= 4096 ? 0 : n);
  case V_FIONBIO: case V_FIOASYNC: case V_FIGETBSZ:
    return 4; /* int * */
  case V_FIOQSIZE:
    return 8; /* loff_t * */
  case KVM_SET_SIGNAL_MASK:
    return 12; /* struct kvm_signal_mask's len, then the 8-byte sigset_t it must announce */
  case KVM_REINJECT_CONTROL:
    return 8; /* _IO, yet kvm_arch_vm_ioctl copies a struct kvm_reinject_control from the pointer */
  case KVM_SET_PMU_EVENT_FILTER: {
    /* kvm_vm_ioctl_set_pmu_event_filter: nevents (at 4) u64 events after the 32-byte header, at most 300. */
    uint32_t ev = hlen >= 8 ? u32at(head, 4) : 0;
    return ev > 300 ? 32 : 32 + 8 * (long)ev;
  }
  case KVM_GET_REG_LIST:
    /* struct kvm_reg_list: n (u64), then n register ids the kernel may write. */
    return 8 + 8 * (long)(n > 512 ? 512 : n);
  }
  if (((req >> 30) & 3) == 0) return -1; /* _IOC_NONE: the argument is an integer */
  return (req >> 16) & 0x3fff;             /* _IOC_SIZE */
}

static inline size_t header_len(uint32_t req) {
  switch (req) {
  case KVM_GET_MSRS: case KVM_SET_MSRS: return 8;
  case KVM_GET_MSR_INDEX_LIST: case KVM_GET_MSR_FEATURE_INDEX_LIST: return 4;
  case KVM_GET_SUPPORTED_CPUID: case KVM_GET_EMULATED_CPUID: case KVM_SET_CPUID2: case KVM_GET_CPUID2:
  case KVM_GET_SUPPORTED_HV_CPUID: return 8;
  case KVM_SET_GSI_ROUTING: return 4;
  case KVM_SET_PMU_EVENT_FILTER: return 8;
  case KVM_GET_REG_LIST: return 4;
  }
  return 0;
}

/*
 * Memory slots each VM was given, so KVM_GET_DIRTY_LOG's bitmap (which the kernel sizes from the
 * slot: kvm_dirty_bitmap_bytes) reaches the server whole. The caller serializes access.
 */
struct slots {
  struct { int kfd; uint32_t slot; uint64_t size; } s[MAX_SLOTS];
  int n;
};

static inline void note_slot(struct slots *t, int kfd, const unsigned char *a, size_t alen) {
  if (alen < 32) return;
  uint32_t slot = u32at(a, 0);
  uint64_t size = u64at(a, 16);
  for (int i = 0; i < t->n; i++) {
    if (t->s[i].kfd == kfd && t->s[i].slot == slot) { t->s[i].size = size; return; }
  }
  if (t->n < MAX_SLOTS) { t->s[t->n].kfd = kfd; t->s[t->n].slot = slot; t->s[t->n].size = size; t->n++; }
}

/* Forgets a VM's slots (its kvmsr fd closed, or made anew: a number kvmsr hands out again). */
static inline void forget_slots(struct slots *t, int kfd) {
  int o = 0;
  for (int i = 0; i < t->n; i++) if (t->s[i].kfd != kfd) t->s[o++] = t->s[i];
  t->n = o;
}

static inline uint32_t slot_bitmap_bytes(const struct slots *t, int kfd, uint32_t slot) {
  for (int i = 0; i < t->n; i++) {
    if (t->s[i].kfd == kfd && t->s[i].slot == slot) return (uint32_t)(((t->s[i].size / 4096) + 63) / 64 * 8);
  }
  return 0;
}

/* Whether the call set a memslot whose size note_slot must keep (either struct begins alike). */
static inline int sets_memslot(uint32_t req) { return req == KVM_SET_USER_MEMORY_REGION || req == KVM_SET_USER_MEMORY_REGION2; }

/* Memory the ioctl reaches through pointers inside its struct. */
static inline uint32_t find_regions(const struct slots *t, uint32_t req, enum kind k, int kfd, const unsigned char *a, size_t alen, struct region *rg) {
  uint32_t n = 0;
  if (req == KVM_GET_DIRTY_LOG && k == K_VM && alen >= 16) {
    /* kvm_get_dirty_log_protect: copy_to_user(log->dirty_bitmap, ..., kvm_dirty_bitmap_bytes(slot)). */
    uint32_t len = slot_bitmap_bytes(t, kfd, u32at(a, 0));
    if (len && len <= (1u << 24)) { rg[n].addr = u64at(a, 8); rg[n].len = len; n++; }
    return n;
  }
  if (req == KVM_CLEAR_DIRTY_LOG && k == K_VM && alen >= 24) {
    /* kvm_clear_dirty_log_protect: copy_from_user(buffer, log->dirty_bitmap, ALIGN(num_pages, 64) / 8). */
    uint32_t len = (uint32_t)(((uint64_t)u32at(a, 4) + 63) / 64 * 8);
    if (len && len <= (1u << 24)) { rg[n].addr = u64at(a, 16); rg[n].len = len; n++; }
    return n;
  }
  if ((req == KVM_GET_ONE_REG || req == KVM_SET_ONE_REG) && k == K_VCPU && alen >= 16) {
    /* struct kvm_one_reg: the value at addr, as wide as the id's KVM_REG_SIZE field says. */
    uint64_t id = u64at(a, 0);
    uint32_t len = 1u << ((id >> 52) & 0xf);
    if (len <= 256) { rg[n].addr = u64at(a, 8); rg[n].len = len; n++; }
    return n;
  }
  if ((req == KVM_GET_DEVICE_ATTR || req == KVM_SET_DEVICE_ATTR) && alen >= 24) {
    /* kvm_x86_dev_get_attr, kvm_arch_tsc_get/set_attr: the u64 at attr->addr. */
    rg[n].addr = u64at(a, 16);
    rg[n].len = 8;
    n++;
    return n;
  }
  if (req == KVM_X86_SET_MSR_FILTER && alen >= 392) {
    /* kvm_add_msr_filter: memdup_user(bitmap, BITS_TO_LONGS(nmsrs) * sizeof(long)) per range. */
    for (int i = 0; i < 16; i++) {
      uint32_t nmsrs = u32at(a, 8 + 24 * i + 4);
      uint64_t bm = u64at(a, 8 + 24 * i + 16);
      size_t sz = ((size_t)nmsrs + 63) / 64 * 8;
      if (nmsrs && bm && sz <= 0x600) { rg[n].addr = bm; rg[n].len = (uint32_t)sz; n++; }
    }
  } else if (req == KVM_ENABLE_CAP && k == K_VCPU && alen >= 16 && u32at(a, 0) == KVM_CAP_HYPERV_ENLIGHTENED_VMCS) {
    /* kvm_vcpu_ioctl_enable_cap: copy_to_user((void __user *)args[0], &vmcs_version, sizeof(u16)). */
    rg[n].addr = u64at(a, 8);
    rg[n].len = 2;
    n++;
  }
  return n;
}

#endif
