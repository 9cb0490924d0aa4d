/*
 * kvmsr-record: an LD_PRELOAD library that records a process's KVM MSR ioctls in kvmsr's capture
 * format (JSON Lines, see docs/capture-format.md).
 *
 * It interposes ioctl() and close(). An fd's kind comes from its /proc/self/fd link: "/dev/kvm"
 * (system), "anon_inode:kvm-vm" (VM) or "anon_inode:kvm-vcpu:N" (vCPU N), cached per fd and
 * forgotten on close. Each record is written with one write(2) to a file opened O_APPEND, so a
 * record is either fully in the file or not at all, and records already written survive a crash
 * of the recorded process. A mutex orders records across the VMM's vCPU threads.
 *
 * Each record carries monoUs, CLOCK_MONOTONIC in microseconds taken just before the real call. The
 * header's "recorded" lists the ioctls recorded (the table below; src/capture/extents.ts keeps the
 * same list, and test/recorder.test.ts holds the two together).
 *
 * Environment: KVMSR_RECORD_FILE (required), KVMSR_VERSION (written into the header),
 * KVMSR_RECORD_SYSTEM_PATH (another path to treat as /dev/kvm) and KVMSR_RECORD_VCPU_PATH (a path
 * to treat as vCPU 0 of a VM): for tests without KVM.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define KVMIO 0xAE
#define IOC_NR(r) ((r) & 0xff)
#define IOC_TYPE(r) (((r) >> 8) & 0xff)
#define MAX_FDS 65536

enum kind { K_UNKNOWN = 0, K_NONE, K_SYSTEM, K_VM, K_VCPU };

static int (*real_ioctl)(int, unsigned long, ...);
static int (*real_close)(int);
static int out_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long seq;
static unsigned char kinds[MAX_FDS];
static int vcpu_ids[MAX_FDS];
static int vm_ids[MAX_FDS];
static unsigned char ran[MAX_FDS];
static const char *system_path = "/dev/kvm";
static const char *vcpu_path;

/* The recorded ioctls, in the order of extents.ts RECORDED_IOCTL_NAMES. */
static const struct { unsigned long req; const char *name; } recorded[] = {
  /* MSR ioctls */
  {0xc004ae02, "KVM_GET_MSR_INDEX_LIST"}, {0xc004ae0a, "KVM_GET_MSR_FEATURE_INDEX_LIST"},
  {0xc008ae88, "KVM_GET_MSRS"}, {0x4008ae89, "KVM_SET_MSRS"}, {0x4188aec6, "KVM_X86_SET_MSR_FILTER"},
  /* calls that shape MSR state */
  {0xae01, "KVM_CREATE_VM"}, {0xae41, "KVM_CREATE_VCPU"}, {0x4008ae90, "KVM_SET_CPUID2"},
  {0x4068aea3, "KVM_ENABLE_CAP"}, {0xae60, "KVM_CREATE_IRQCHIP"}, {0xae80, "KVM_RUN"},
  {0x4020ae46, "KVM_SET_USER_MEMORY_REGION"}, {0x4138ae84, "KVM_SET_SREGS"}, {0x4140aecd, "KVM_SET_SREGS2"},
  {0x4400ae8f, "KVM_SET_LAPIC"}, {0xaea2, "KVM_SET_TSC_KHZ"}, {0x4008ae9c, "KVM_X86_SETUP_MCE"},
  {0x4030ae7b, "KVM_SET_CLOCK"}, {0x4080aebf, "KVM_SET_NESTED_STATE"}, {0x40a0ae49, "KVM_SET_USER_MEMORY_REGION2"},
  {0x4038ae7a, "KVM_XEN_HVM_CONFIG"}, {0x4018aee1, "KVM_SET_DEVICE_ATTR"}, {0x4040aea0, "KVM_SET_VCPU_EVENTS"},
  {0x4004ae99, "KVM_SET_MP_STATE"},
  /* state getters */
  {0x8400ae8e, "KVM_GET_LAPIC"}, {0x8138ae83, "KVM_GET_SREGS"}, {0x8140aecc, "KVM_GET_SREGS2"},
  {0x8030ae7c, "KVM_GET_CLOCK"},
};
#define N_RECORDED (sizeof recorded / sizeof recorded[0])
#define REQ_SET_DEVICE_ATTR 0x4018aee1UL
#define REQ_SET_NESTED_STATE 0x4080aebfUL

static unsigned long long mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

static void write_all(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(out_fd, buf, len);
    if (n < 0) { if (errno == EINTR) continue; return; }
    buf += n; len -= (size_t)n;
  }
}

static void json_str(char *dst, size_t cap, const char *src) {
  size_t j = 0;
  for (size_t i = 0; src[i] && j + 7 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    if (c == '"' || c == '\\') { dst[j++] = '\\'; dst[j++] = (char)c; }
    else if (c < 0x20) j += (size_t)snprintf(dst + j, cap - j, "\\u%04x", c);
    else dst[j++] = (char)c;
  }
  dst[j] = 0;
}

static void read_first_line_field(const char *path, const char *key, char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *f = fopen(path, "r");
  if (!f) return;
  char line[512];
  size_t klen = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0) {
      char *p = strchr(line, ':');
      if (!p) continue;
      p++;
      while (*p == ' ' || *p == '\t') p++;
      p[strcspn(p, "\n")] = 0;
      json_str(out, cap, p);
      break;
    }
  }
  fclose(f);
}

static const char *vendor_module(void) {
  if (access("/sys/module/kvm_pvm", F_OK) == 0) return "kvm_pvm";
  if (access("/sys/module/kvm_intel", F_OK) == 0) return "kvm_intel";
  if (access("/sys/module/kvm_amd", F_OK) == 0) return "kvm_amd";
  return "none";
}

__attribute__((constructor)) static void init(void) {
  real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
  real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
  const char *path = getenv("KVMSR_RECORD_FILE");
  const char *sp = getenv("KVMSR_RECORD_SYSTEM_PATH");
  if (sp && *sp) system_path = sp;
  const char *vp = getenv("KVMSR_RECORD_VCPU_PATH");
  if (vp && *vp) vcpu_path = vp;
  if (!path || !*path) return;
  out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) return;
  /* Only the first process to open an empty file writes the header (a forked child appends). */
  if (lseek(out_fd, 0, SEEK_END) == 0) {
    struct utsname u;
    uname(&u);
    char vendor[128], model[256], ver[64], kernel[160], names[2048], line[4096];
    size_t at = 0;
    for (size_t i = 0; i < N_RECORDED; i++)
      at += (size_t)snprintf(names + at, sizeof names - at, "%s\"%s\"", i ? "," : "", recorded[i].name);
    read_first_line_field("/proc/cpuinfo", "vendor_id", vendor, sizeof vendor);
    read_first_line_field("/proc/cpuinfo", "model name", model, sizeof model);
    json_str(ver, sizeof ver, getenv("KVMSR_VERSION") ? getenv("KVMSR_VERSION") : "unknown");
    json_str(kernel, sizeof kernel, u.release);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(line, sizeof line,
                     "{\"format\":\"kvmsr-capture\",\"version\":1,\"kernel\":\"%s\",\"cpuVendor\":\"%s\","
                     "\"cpuModel\":\"%s\",\"vendorModule\":\"%s\",\"kvmsrVersion\":\"%s\","
                     "\"recorder\":\"kvmsr-record LD_PRELOAD (pid %d)\",\"createdAt\":\"%s\",\"recorded\":[%s]}\n",
                     kernel, vendor, model, vendor_module(), ver, (int)getpid(), when, names);
    write_all(line, (size_t)n);
  }
}

static enum kind kind_of(int fd) {
  if (fd < 0 || fd >= MAX_FDS) return K_NONE;
  if (kinds[fd] != K_UNKNOWN) return (enum kind)kinds[fd];
  char link[64], target[256];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  enum kind k = K_NONE;
  if (n > 0) {
    target[n] = 0;
    if (strcmp(target, system_path) == 0) k = K_SYSTEM;
    else if (strcmp(target, "anon_inode:kvm-vm") == 0) k = K_VM;
    else if (strncmp(target, "anon_inode:kvm-vcpu:", 20) == 0) { k = K_VCPU; vcpu_ids[fd] = atoi(target + 20); }
    else if (vcpu_path && strcmp(target, vcpu_path) == 0) { k = K_VCPU; vcpu_ids[fd] = 0; }
  }
  kinds[fd] = (unsigned char)k;
  return k;
}

/* The request numbers recorded, and how many bytes each reads at its pointer. */
static int is_recorded(unsigned long req) {
  for (size_t i = 0; i < N_RECORDED; i++)
    if (recorded[i].req == req) return 1;
  return 0;
}
static int is_integer(unsigned long req) {
  return req == 0xae01 || req == 0xae41 || req == 0xae60 || req == 0xae80 || req == 0xaea2;
}
/* head: the first 8 bytes at the pointer, where every variable-size struct keeps its count. */
static size_t extent(unsigned long req, const unsigned char *head) {
  uint32_t n;
  switch (req) {
  case 0xc008ae88: case 0x4008ae89:
    memcpy(&n, head, 4); return n >= 256 ? 8 : 8 + 16 * (size_t)n;
  case 0xc004ae02: case 0xc004ae0a:
    memcpy(&n, head, 4); return 4 + 4 * (size_t)(n > 0x10000 ? 0x10000 : n);
  case 0x4008ae90:
    memcpy(&n, head, 4); return 8 + 40 * (size_t)(n > 256 ? 256 : n);
  case 0x4068aea3: return 104;
  case 0x4188aec6: return 392;
  case 0x4020ae46: return 32;
  case 0x40a0ae49: return 160;
  case 0x4138ae84: case 0x8138ae83: return 312;
  case 0x4140aecd: case 0x8140aecc: return 320;
  case 0x4030ae7b: case 0x8030ae7c: return 48;
  case 0x4400ae8f: case 0x8400ae8e: return 1024;
  case 0x4008ae9c: return 8;
  case REQ_SET_NESTED_STATE:
    /* kvm_nested_state: a 128-byte header whose size (at 4) covers the data; vmx_set_nested_state
       reads at most two 4096-byte vmcs12s after it. */
    memcpy(&n, head + 4, 4); return n < 128 ? 128 : n > 128 + 8192 ? 128 + 8192 : n;
  case 0x4038ae7a: return 56;
  case REQ_SET_DEVICE_ATTR: return 24;
  case 0x4040aea0: return 64;
  case 0x4004ae99: return 4;
  }
  return 0;
}

static char *hex(char *dst, const unsigned char *src, size_t len) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) { *dst++ = d[src[i] >> 4]; *dst++ = d[src[i] & 15]; }
  return dst;
}

static const char *kind_name(enum kind k) { return k == K_SYSTEM ? "system" : k == K_VM ? "vm" : "vcpu"; }

static void emit(int fd, enum kind k, unsigned long long mono, unsigned long req, const unsigned long *arg, const unsigned char *in,
                 const unsigned char *out, size_t len, const unsigned char **extra, const size_t *extra_len,
                 int nextra, int ret, int err) {
  size_t cap = 512 + 4 * len;
  for (int i = 0; i < nextra; i++) cap += 4 + 2 * extra_len[i];
  char *buf = malloc(cap);
  if (!buf) return;
  pthread_mutex_lock(&lock);
  char *p = buf;
  p += sprintf(p, "{\"seq\":%llu,\"tid\":%ld,\"monoUs\":%llu,\"fd\":%d,\"fdKind\":\"%s\"", seq++, (long)syscall(SYS_gettid), mono,
               fd, kind_name(k));
  if (k == K_VCPU) p += sprintf(p, ",\"vcpuId\":%d", vcpu_ids[fd]);
  if (k != K_SYSTEM) p += sprintf(p, ",\"vm\":%d", vm_ids[fd]);
  if (req == 0) {
    p += sprintf(p, ",\"op\":\"close\"");
  } else {
    p += sprintf(p, ",\"request\":\"0x%lx\"", req);
    if (arg) p += sprintf(p, ",\"arg\":%lu", *arg);
    if (in) { p += sprintf(p, ",\"in\":\""); p = hex(p, in, len); p += sprintf(p, "\",\"out\":\""); p = hex(p, out, len); *p++ = '"'; }
    if (nextra) {
      p += sprintf(p, ",\"extra\":[");
      for (int i = 0; i < nextra; i++) { *p++ = '"'; p = hex(p, extra[i], extra_len[i]); *p++ = '"'; if (i + 1 < nextra) *p++ = ','; }
      *p++ = ']';
    }
  }
  p += sprintf(p, ",\"ret\":%d,\"errno\":%d}\n", ret, err);
  write_all(buf, (size_t)(p - buf));
  pthread_mutex_unlock(&lock);
  free(buf);
}

int ioctl(int fd, unsigned long req, ...) {
  va_list ap;
  va_start(ap, req);
  unsigned long argv = va_arg(ap, unsigned long);
  va_end(ap);
  if (!real_ioctl) real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
  req &= 0xffffffffUL;
  if (out_fd < 0 || IOC_TYPE(req) != KVMIO || !is_recorded(req)) return real_ioctl(fd, req, argv);
  enum kind k = kind_of(fd);
  if (k == K_NONE) return real_ioctl(fd, req, argv);
  /* KVM_SET_DEVICE_ATTR also reaches VM and device fds; only a vCPU's (the TSC offset) is recorded. */
  if (req == REQ_SET_DEVICE_ATTR && k != K_VCPU) return real_ioctl(fd, req, argv);
  /* KVM_RUN is recorded once per vCPU fd, as the "has run" marker. */
  if (req == 0xae80) {
    if (ran[fd]) return real_ioctl(fd, req, argv);
    ran[fd] = 1;
  }
  unsigned char *in = NULL;
  size_t len = 0;
  const unsigned char *extra[16];
  unsigned char *extra_buf[16];
  size_t extra_len[16];
  int nextra = 0;
  if (!is_integer(req) && argv) {
    /* The header is read first to size the rest; a bad pointer is left for the kernel to refuse. */
    unsigned char head[8];
    if (syscall(SYS_process_vm_readv, getpid(),
                &(struct iovec){head, 8}, 1, &(struct iovec){(void *)argv, 8}, 1, 0) == 8) {
      len = extent(req, head);
      in = malloc(len ? len : 1);
      if (in && syscall(SYS_process_vm_readv, getpid(), &(struct iovec){in, len}, 1,
                        &(struct iovec){(void *)argv, len}, 1, 0) != (ssize_t)len) { free(in); in = NULL; }
      if (in && req == 0x4188aec6) {
        for (int i = 0; i < 16; i++) {
          uint32_t nmsrs; uint64_t bm;
          memcpy(&nmsrs, in + 8 + 24 * i + 4, 4);
          memcpy(&bm, in + 8 + 24 * i + 16, 8);
          size_t sz = nmsrs ? ((nmsrs + 63) / 64) * 8 : 0;
          extra_buf[nextra] = NULL;
          extra_len[nextra] = 0;
          if (sz && sz <= 0x600 && bm && (extra_buf[nextra] = malloc(sz)) != NULL) {
            /* Read through process_vm_readv: a bad bitmap pointer must fault in the kernel, not here. */
            if (syscall(SYS_process_vm_readv, getpid(), &(struct iovec){extra_buf[nextra], sz}, 1,
                        &(struct iovec){(void *)(uintptr_t)bm, sz}, 1, 0) == (ssize_t)sz) extra_len[nextra] = sz;
          }
          extra[nextra] = extra_buf[nextra] ? extra_buf[nextra] : (const unsigned char *)"";
          nextra++;
        }
      }
      if (in && req == REQ_SET_DEVICE_ATTR) {
        /* kvm_device_attr.addr (at 16) points at the value: the TSC offset for KVM_VCPU_TSC_CTRL. */
        uint64_t addr;
        memcpy(&addr, in + 16, 8);
        if (addr) {
          extra_len[0] = 0;
          if ((extra_buf[0] = malloc(8)) != NULL &&
              syscall(SYS_process_vm_readv, getpid(), &(struct iovec){extra_buf[0], 8}, 1,
                      &(struct iovec){(void *)(uintptr_t)addr, 8}, 1, 0) == 8) extra_len[0] = 8;
          extra[0] = extra_buf[0] ? extra_buf[0] : (const unsigned char *)"";
          nextra = 1;
        }
      }
    }
  }
  unsigned long long mono = mono_us();
  int ret = real_ioctl(fd, req, argv);
  int err = ret < 0 ? errno : 0;
  if (ret >= 0 && req == 0xae01 && ret < MAX_FDS) { kinds[ret] = K_VM; vm_ids[ret] = ret; }
  if (ret >= 0 && req == 0xae41 && ret < MAX_FDS) { kinds[ret] = K_VCPU; vcpu_ids[ret] = (int)argv; vm_ids[ret] = vm_ids[fd]; }
  if (k == K_VM && fd < MAX_FDS && vm_ids[fd] == 0) vm_ids[fd] = fd;
  emit(fd, k, mono, req, is_integer(req) ? &argv : NULL, in, in ? (const unsigned char *)argv : NULL, in ? len : 0,
       extra, extra_len, nextra, ret, err);
  free(in);
  for (int i = 0; i < nextra; i++) free(extra_buf[i]);
  errno = err;
  return ret;
}

int close(int fd) {
  if (!real_close) real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
  if (out_fd >= 0 && fd >= 0 && fd < MAX_FDS && fd != out_fd) {
    enum kind k = (enum kind)kinds[fd];
    if (k == K_SYSTEM || k == K_VM || k == K_VCPU) emit(fd, k, mono_us(), 0, NULL, NULL, NULL, 0, NULL, NULL, 0, 0, 0);
    kinds[fd] = K_UNKNOWN;
    ran[fd] = 0;
    vm_ids[fd] = 0;
  }
  return real_close(fd);
}
