/* kvmsr-probe: runs a kvmsr plan on the real /dev/kvm and writes down the kernel's answers.
 *
 *   kvmsr-probe [--jobs N] DIR      reads DIR/plan.txt, writes DIR/answers.txt
 *
 * Hypervisor hosts usually have no Node, so this is one self-contained C file meant to be built
 * as a small static binary:  cc -static -O2 -Wall -pthread -o kvmsr-probe kvmsr-probe.c
 *
 * plan.txt (one item per line; '#' lines and blank lines are ignored):
 *   kvmsr-plan 1
 *   case <id> vcpus=<n> irqchip=<0|1> cpuid=<0|1|2> usermsr=<mask> guest=<0|1>
 *                                        cpuid=2: KVM_GET_SUPPORTED_CPUID with KVM's leaves moved
 *                                        to 0x40000100, plus KVM_GET_SUPPORTED_HV_CPUID's leaves
 *   io <target> <request> <arg>          target: sys | vm | v<N>;  arg: i:<num> | x:<hex> | wb
 *   rd <vcpu> <index>                    the guest executes RDMSR (guest=1, vcpu 0 only)
 *   wr <vcpu> <index> <value>            the guest executes WRMSR (guest=1, vcpu 0 only)
 *   sleep <ms>
 *   tsckhz-floor <target> <lo> <hi>      bisects KVM_SET_TSC_KHZ for the lowest accepted rate
 *   stats <target>                       KVM_GET_STATS_FD on the VM or a vCPU, and the file's bytes
 *   end
 *
 * answers.txt: a header (kvmsr-answers 1, info lines), then one block per case, written whole
 * with a single write() in completion order, then `done <cases> <seconds>`.
 *
 * Every case has its own /dev/kvm fd, VM and vCPUs; cases run on --jobs N threads. Buffers of
 * `io` steps end exactly at a PROT_NONE guard page, so a kernel access past the given bytes
 * faults (EFAULT), as in the emulator. The guest is the real-mode runner of test/c/guest-msr.c. */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define USAGE "usage: kvmsr-probe [--jobs N] DIR"

/* Guest memory layout (as in test/c/guest-msr.c). */
#define MEM 0x10000
#define CODE 0x1000
#define GP_HANDLER 0x2000
#define IVT 0x3000

#define TARGET_SYS (-2)
#define TARGET_VM (-1)
#define MAX_VCPUS 4096

enum { ST_IO, ST_RD, ST_WR, ST_SLEEP, ST_TSC, ST_STATS };
enum { ARG_INT, ARG_BUF, ARG_WB };

struct step {
  unsigned char kind, argkind;
  int target;               /* TARGET_SYS, TARGET_VM or a vCPU number */
  unsigned long req;        /* io: the ioctl request */
  unsigned long long a, b;  /* io i: value; rd/wr: index, value; sleep: ms; tsc: lo, hi */
  unsigned char *buf;       /* io x: the bytes */
  size_t len;
};

struct kcase {
  char *id;
  long line;
  int vcpus, irqchip, cpuid, guest;
  unsigned long long usermsr;
  struct step *steps;
  size_t nsteps, cap;
};

static struct kcase *cases;
static size_t ncases, capcases;
static long page_size;

/* ---------------------------------------------------------------- small growable string */

struct sbuf {
  char *p;
  size_t len, cap;
};

static void sb_reserve(struct sbuf *s, size_t more) {
  if (s->len + more + 1 <= s->cap) return;
  size_t cap = s->cap ? s->cap : 256;
  while (cap < s->len + more + 1) cap *= 2;
  char *p = realloc(s->p, cap);
  if (!p) {
    fprintf(stderr, "kvmsr-probe: out of memory\n");
    exit(1);
  }
  s->p = p;
  s->cap = cap;
}

static void sb_printf(struct sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *s, const char *fmt, ...) {
  va_list ap;
  sb_reserve(s, 128);
  va_start(ap, fmt);
  int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= s->cap - s->len) {
    sb_reserve(s, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
  }
  s->len += (size_t)n;
}

static void sb_hex(struct sbuf *s, const unsigned char *b, size_t n) {
  static const char digits[] = "0123456789abcdef";
  sb_reserve(s, 2 * n);
  for (size_t i = 0; i < n; i++) {
    s->p[s->len++] = digits[b[i] >> 4];
    s->p[s->len++] = digits[b[i] & 15];
  }
  s->p[s->len] = 0;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "kvmsr-probe: out of memory\n");
    exit(1);
  }
  return p;
}

/* ---------------------------------------------------------------- plan parsing */

static const char *plan_path;

static void plan_error(long line, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void plan_error(long line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%ld: ", plan_path, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

/* A number in C syntax (0x.. hex, 0.. octal, decimal), the full u64 range, nothing else. */
static int parse_u64(const char *s, unsigned long long *out) {
  if (!*s || !isdigit((unsigned char)*s)) return 0;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end) return 0;
  *out = v;
  return 1;
}

static unsigned long long need_u64(long line, const char *what, const char *s) {
  unsigned long long v;
  if (!parse_u64(s, &v)) plan_error(line, "bad %s '%s' (expected a number)", what, s);
  return v;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int parse_target(long line, const struct kcase *c, const char *s) {
  if (!strcmp(s, "sys")) return TARGET_SYS;
  if (!strcmp(s, "vm")) return TARGET_VM;
  unsigned long long n;
  if (s[0] != 'v' || !parse_u64(s + 1, &n)) plan_error(line, "bad target '%s' (expected sys, vm or v<N>)", s);
  if (n >= (unsigned long long)c->vcpus) plan_error(line, "target %s but case '%s' has vcpus=%d", s, c->id, c->vcpus);
  return (int)n;
}

static int valid_id(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != ':' && *s != '-') return 0;
  return 1;
}

static struct step *new_step(struct kcase *c) {
  if (c->nsteps == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 8;
    c->steps = realloc(c->steps, c->cap * sizeof *c->steps);
    if (!c->steps) {
      fprintf(stderr, "kvmsr-probe: out of memory\n");
      exit(1);
    }
  }
  struct step *st = &c->steps[c->nsteps++];
  memset(st, 0, sizeof *st);
  return st;
}

static int cmp_case_id(const void *a, const void *b) {
  const struct kcase *x = *(const struct kcase *const *)a, *y = *(const struct kcase *const *)b;
  int r = strcmp(x->id, y->id);
  if (r) return r;
  return x->line < y->line ? -1 : x->line > y->line;
}

#define MAXTOK 8

static void parse_plan(const char *path) {
  plan_path = path;
  FILE *f = fopen(path, "r");
  if (!f) plan_error(0, "cannot open: %s", strerror(errno));
  char *line = 0;
  size_t linecap = 0;
  ssize_t n;
  long lineno = 0;
  int header = 0;
  struct kcase *cur = 0;
  while ((n = getline(&line, &linecap, f)) >= 0) {
    lineno++;
    if ((size_t)n != strlen(line)) plan_error(lineno, "NUL byte in line");
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '#') continue;
    char *tok[MAXTOK + 1];
    int nt = 0;
    while (*p) {
      if (nt == MAXTOK) plan_error(lineno, "too many tokens");
      tok[nt++] = p;
      while (*p && *p != ' ' && *p != '\t') p++;
      if (*p) *p++ = 0;
      while (*p == ' ' || *p == '\t') p++;
    }
    tok[nt] = 0;
    if (!header) {
      if (nt != 2 || strcmp(tok[0], "kvmsr-plan")) plan_error(lineno, "expected 'kvmsr-plan 1' first");
      if (strcmp(tok[1], "1")) plan_error(lineno, "unsupported plan version '%s' (this probe reads version 1)", tok[1]);
      header = 1;
      continue;
    }
    const char *kw = tok[0];
    if (!strcmp(kw, "case")) {
      if (cur) plan_error(lineno, "'case' inside case '%s' (missing 'end')", cur->id);
      if (nt != 7) plan_error(lineno, "expected 'case <id> vcpus=<n> irqchip=<0|1> cpuid=<0|1> usermsr=<mask> guest=<0|1>'");
      if (!valid_id(tok[1])) plan_error(lineno, "bad case id '%s' (allowed: A-Z a-z 0-9 . _ : -)", tok[1]);
      if (ncases == capcases) {
        capcases = capcases ? capcases * 2 : 64;
        cases = realloc(cases, capcases * sizeof *cases);
        if (!cases) {
          fprintf(stderr, "kvmsr-probe: out of memory\n");
          exit(1);
        }
      }
      cur = &cases[ncases++];
      memset(cur, 0, sizeof *cur);
      cur->id = strdup(tok[1]);
      cur->line = lineno;
      static const char *const keys[] = {"vcpus", "irqchip", "cpuid", "usermsr", "guest"};
      int seen[5] = {0};
      for (int i = 2; i < 7; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq) plan_error(lineno, "expected key=value, got '%s'", tok[i]);
        *eq = 0;
        int k;
        for (k = 0; k < 5 && strcmp(tok[i], keys[k]); k++) {}
        if (k == 5) plan_error(lineno, "unknown case key '%s'", tok[i]);
        if (seen[k]) plan_error(lineno, "duplicate case key '%s'", tok[i]);
        seen[k] = 1;
        unsigned long long v = need_u64(lineno, keys[k], eq + 1);
        switch (k) {
        case 0:
          if (v > MAX_VCPUS) plan_error(lineno, "vcpus=%llu is too many (at most %d)", v, MAX_VCPUS);
          cur->vcpus = (int)v;
          break;
        case 3: cur->usermsr = v; break;
        case 2:
          if (v > 2) plan_error(lineno, "cpuid must be 0, 1 or 2");
          cur->cpuid = (int)v;
          break;
        default:
          if (v > 1) plan_error(lineno, "%s must be 0 or 1", keys[k]);
          if (k == 1) cur->irqchip = (int)v;
          else if (k == 2) cur->cpuid = (int)v;
          else cur->guest = (int)v;
        }
      }
      continue;
    }
    if (!cur) plan_error(lineno, "'%s' outside a case", kw);
    if (!strcmp(kw, "end")) {
      if (nt != 1) plan_error(lineno, "expected 'end'");
      cur = 0;
    } else if (!strcmp(kw, "io")) {
      if (nt != 4) plan_error(lineno, "expected 'io <target> <request> <arg>'");
      struct step *st = new_step(cur);
      st->kind = ST_IO;
      st->target = parse_target(lineno, cur, tok[1]);
      st->req = (unsigned long)need_u64(lineno, "request", tok[2]);
      const char *arg = tok[3];
      if (!strncmp(arg, "i:", 2)) {
        st->argkind = ARG_INT;
        st->a = need_u64(lineno, "integer argument", arg + 2);
      } else if (!strncmp(arg, "x:", 2)) {
        const char *h = arg + 2;
        size_t hl = strlen(h);
        if (hl % 2) plan_error(lineno, "odd number of hex digits in buffer argument");
        st->argkind = ARG_BUF;
        st->len = hl / 2;
        st->buf = xmalloc(st->len);
        for (size_t i = 0; i < st->len; i++) {
          int hi = hexval((unsigned char)h[2 * i]), lo = hexval((unsigned char)h[2 * i + 1]);
          if (hi < 0 || lo < 0) plan_error(lineno, "bad hex digit in buffer argument at byte %zu", i);
          st->buf[i] = (unsigned char)(hi << 4 | lo);
        }
      } else if (!strcmp(arg, "wb")) {
        size_t i;
        for (i = cur->nsteps - 1; i-- > 0;)
          if (cur->steps[i].kind == ST_IO && cur->steps[i].argkind != ARG_INT) break;
        if (i == (size_t)-1) plan_error(lineno, "'wb' but no earlier io step of case '%s' had a buffer", cur->id);
        st->argkind = ARG_WB;
      } else {
        plan_error(lineno, "bad io argument '%s' (expected i:<number>, x:<hex> or wb)", arg);
      }
    } else if (!strcmp(kw, "rd") || !strcmp(kw, "wr")) {
      int wr = kw[0] == 'w';
      if (nt != (wr ? 4 : 3)) plan_error(lineno, wr ? "expected 'wr <vcpu> <index> <value>'" : "expected 'rd <vcpu> <index>'");
      if (!cur->guest) plan_error(lineno, "guest step in case '%s', which has guest=0", cur->id);
      unsigned long long v;
      const char *vs = tok[1][0] == 'v' ? tok[1] + 1 : tok[1];
      if (!parse_u64(vs, &v)) plan_error(lineno, "bad vcpu '%s'", tok[1]);
      if (v != 0) plan_error(lineno, "guest steps run on vcpu 0 only, not %s", tok[1]);
      if (cur->vcpus < 1) plan_error(lineno, "guest step in case '%s', which has no vcpu", cur->id);
      struct step *st = new_step(cur);
      st->kind = wr ? ST_WR : ST_RD;
      st->target = 0;
      st->a = need_u64(lineno, "MSR index", tok[2]);
      if (st->a > 0xffffffffull) plan_error(lineno, "MSR index %s does not fit in 32 bits", tok[2]);
      if (wr) st->b = need_u64(lineno, "value", tok[3]);
    } else if (!strcmp(kw, "sleep")) {
      if (nt != 2) plan_error(lineno, "expected 'sleep <ms>'");
      struct step *st = new_step(cur);
      st->kind = ST_SLEEP;
      st->a = need_u64(lineno, "milliseconds", tok[1]);
      if (st->a > 3600000) plan_error(lineno, "sleep of more than an hour");
    } else if (!strcmp(kw, "stats")) {
      if (nt != 2) plan_error(lineno, "expected 'stats <target>'");
      struct step *st = new_step(cur);
      st->kind = ST_STATS;
      st->target = parse_target(lineno, cur, tok[1]);
    } else if (!strcmp(kw, "tsckhz-floor")) {
      if (nt != 4) plan_error(lineno, "expected 'tsckhz-floor <target> <lo> <hi>'");
      struct step *st = new_step(cur);
      st->kind = ST_TSC;
      st->target = parse_target(lineno, cur, tok[1]);
      st->a = need_u64(lineno, "lo", tok[2]);
      st->b = need_u64(lineno, "hi", tok[3]);
      if (st->a >= st->b) plan_error(lineno, "tsckhz-floor needs lo < hi");
    } else {
      plan_error(lineno, "unknown item '%s'", kw);
    }
  }
  if (ferror(f)) plan_error(lineno, "read error: %s", strerror(errno));
  free(line);
  fclose(f);
  if (!header) plan_error(lineno ? lineno : 1, "empty plan (expected 'kvmsr-plan 1')");
  if (cur) plan_error(lineno, "end of file inside case '%s' (missing 'end'; the case began on line %ld)", cur->id, cur->line);
  if (ncases > 1) {
    struct kcase **sorted = xmalloc(ncases * sizeof *sorted);
    for (size_t i = 0; i < ncases; i++) sorted[i] = &cases[i];
    qsort(sorted, ncases, sizeof *sorted, cmp_case_id);
    for (size_t i = 1; i < ncases; i++)
      if (!strcmp(sorted[i - 1]->id, sorted[i]->id))
        plan_error(sorted[i]->line, "duplicate case id '%s' (first on line %ld)", sorted[i]->id, sorted[i - 1]->line);
    free(sorted);
  }
}

/* ---------------------------------------------------------------- running a case */

/* A buffer that ends exactly at a PROT_NONE guard page. */
struct gbuf {
  void *base;
  size_t maplen;
  unsigned char *p;
};

static int gbuf_alloc(struct gbuf *g, const unsigned char *bytes, size_t len) {
  size_t pages = (len + (size_t)page_size - 1) / (size_t)page_size;
  g->maplen = (pages + 1) * (size_t)page_size;
  g->base = mmap(0, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g->base == MAP_FAILED) return -1;
  unsigned char *guard = (unsigned char *)g->base + pages * (size_t)page_size;
  if (mprotect(guard, (size_t)page_size, PROT_NONE) < 0) {
    int e = errno;
    munmap(g->base, g->maplen);
    errno = e;
    return -1;
  }
  g->p = guard - len;
  if (len) memcpy(g->p, bytes, len);
  return 0;
}

struct ctx {
  int sys, vm, *vcpu;
  unsigned char *mem;
  struct kvm_run *run;
  size_t run_size;
  int guest_ready;
  int extra[64]; /* fds that io steps created (KVM_CREATE_VM, KVM_CREATE_VCPU, ...) */
  int nextra;
};

static int target_fd(const struct ctx *x, int target) {
  if (target == TARGET_SYS) return x->sys;
  if (target == TARGET_VM) return x->vm;
  return x->vcpu[target];
}

/* Requests whose return value is a new fd, closed with the case. */
static int returns_fd(unsigned long req) {
  return req == KVM_CREATE_VM || req == KVM_CREATE_VCPU
#ifdef KVM_GET_STATS_FD
         || req == KVM_GET_STATS_FD
#endif
      ;
}

/* Sets up kvm_run, SREGS and the #GP vector before the first guest step. Returns the name of
 * the failing call, or 0. */
static const char *guest_setup(struct ctx *x) {
  int size = ioctl(x->sys, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size < 0) return "KVM_GET_VCPU_MMAP_SIZE";
  void *run = mmap(0, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, x->vcpu[0], 0);
  if (run == MAP_FAILED) return "mmap_kvm_run";
  x->run = run;
  x->run_size = (size_t)size;
  struct kvm_sregs sregs;
  if (ioctl(x->vcpu[0], KVM_GET_SREGS, &sregs) < 0) return "KVM_GET_SREGS";
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  /* The real-mode vector table away from GPA 0, where kvmclock and steal time land when a
   * case enables them with a GPA of 0. */
  sregs.idt.base = IVT;
  sregs.idt.limit = 0x3ff;
  if (ioctl(x->vcpu[0], KVM_SET_SREGS, &sregs) < 0) return "KVM_SET_SREGS";
  /* Vector 13 (#GP) -> 0000:GP_HANDLER, which says so on port 0x11. */
  unsigned char *gp = x->mem + IVT + 13 * 4;
  gp[0] = GP_HANDLER & 0xff;
  gp[1] = GP_HANDLER >> 8;
  gp[2] = 0;
  gp[3] = 0;
  x->mem[GP_HANDLER] = 0xe6;
  x->mem[GP_HANDLER + 1] = 0x11;
  x->mem[GP_HANDLER + 2] = 0xf4;
  x->guest_ready = 1;
  return 0;
}

/* One RDMSR/WRMSR in the guest. Returns 0 to go on, -1 to end the case. */
static int guest_step(struct ctx *x, size_t si, const struct step *st, struct sbuf *out) {
  if (!x->guest_ready) {
    const char *what = guest_setup(x);
    if (what) {
      sb_printf(out, "g %zu fail %s %d\n", si, what, errno);
      return -1;
    }
  }
  int wr = st->kind == ST_WR;
  unsigned char *p = x->mem + CODE;
  unsigned int lo = (unsigned int)st->b, hi = (unsigned int)(st->b >> 32), idx = (unsigned int)st->a;
  *p++ = 0x66; *p++ = 0xb9; memcpy(p, &idx, 4); p += 4; /* mov ecx, idx */
  *p++ = 0x66; *p++ = 0xb8; memcpy(p, &lo, 4); p += 4;  /* mov eax, lo */
  *p++ = 0x66; *p++ = 0xba; memcpy(p, &hi, 4); p += 4;  /* mov edx, hi */
  *p++ = 0x0f; *p++ = wr ? 0x30 : 0x32;                  /* wrmsr | rdmsr */
  *p++ = 0xe6; *p++ = 0x10; *p++ = 0xf4;                 /* out 0x10, al; hlt */
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = CODE;
  regs.rsp = 0x8000;
  regs.rflags = 2;
  if (ioctl(x->vcpu[0], KVM_SET_REGS, &regs) < 0) {
    sb_printf(out, "g %zu fail KVM_SET_REGS %d\n", si, errno);
    return -1;
  }
  struct kvm_run *run = x->run;
  int exited = 0;
  for (;;) {
    if (ioctl(x->vcpu[0], KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      sb_printf(out, "g %zu fail KVM_RUN %d\n", si, errno);
      return -1;
    }
    if (run->exit_reason == KVM_EXIT_X86_RDMSR || run->exit_reason == KVM_EXIT_X86_WRMSR) {
      if (!exited)
        sb_printf(out, "g %zu exit %u %u 0x%x 0x%llx\n", si, run->exit_reason, (unsigned)run->msr.reason, (unsigned)run->msr.index,
                  (unsigned long long)run->msr.data);
      run->msr.error = 1;
      exited = 1;
      continue;
    }
    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
      if (exited) return 0;
      if (run->io.port == 0x11) {
        sb_printf(out, "g %zu gp\n", si);
      } else {
        unsigned long long v = st->b;
        if (!wr) {
          if (ioctl(x->vcpu[0], KVM_GET_REGS, &regs) < 0) {
            sb_printf(out, "g %zu fail KVM_GET_REGS %d\n", si, errno);
            return -1;
          }
          v = ((regs.rdx & 0xffffffffull) << 32) | (regs.rax & 0xffffffffull);
        }
        sb_printf(out, "g %zu ok 0x%llx\n", si, v);
      }
      return 0;
    }
    sb_printf(out, "g %zu fail exit %u 0\n", si, run->exit_reason);
    return -1;
  }
}

/* cpuid=2: KVM's leaves move from 0x400000xx to 0x400001xx (its max leaf with them) and Hyper-V's
 * take their place, as QEMU lays the CPUID out with hv-* flags. -1 (errno set) on failure. */
static int add_hyperv_leaves(int sys, struct kvm_cpuid2 *cpuid, int room) {
#ifdef KVM_GET_SUPPORTED_HV_CPUID
  struct {
    struct kvm_cpuid2 h;
    struct kvm_cpuid_entry2 e[32];
  } hv;
  memset(&hv, 0, sizeof hv);
  hv.h.nent = 32;
  if (ioctl(sys, KVM_GET_SUPPORTED_HV_CPUID, &hv) < 0) return -1;
  for (unsigned i = 0; i < cpuid->nent; i++) {
    struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
    if ((e->function & 0xffffff00u) != 0x40000000u) continue;
    if (e->function == 0x40000000u && e->eax >= 0x40000000u && e->eax < 0x40000100u) e->eax += 0x100;
    e->function += 0x100;
  }
  if (cpuid->nent + hv.h.nent > (unsigned)room) {
    errno = E2BIG;
    return -1;
  }
  memcpy(&cpuid->entries[cpuid->nent], hv.e, hv.h.nent * sizeof hv.e[0]);
  cpuid->nent += hv.h.nent;
  return 0;
#else
  (void)sys; (void)cpuid; (void)room;
  errno = ENOTTY;
  return -1;
#endif
}

static void run_case(const struct kcase *c, struct sbuf *out) {
  struct ctx x;
  memset(&x, 0, sizeof x);
  x.sys = x.vm = -1;
  x.vcpu = xmalloc((size_t)(c->vcpus ? c->vcpus : 1) * sizeof *x.vcpu);
  for (int i = 0; i < c->vcpus; i++) x.vcpu[i] = -1;
  struct kvm_cpuid2 *cpuid = 0;
  unsigned char *wb = 0; /* output bytes of the last io step with a buffer */
  size_t wblen = 0;
  const char *fail = 0;

  sb_printf(out, "case %s begin\n", c->id);
  x.sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (x.sys < 0) { fail = "open"; goto setup_failed; }
  x.vm = ioctl(x.sys, KVM_CREATE_VM, 0);
  if (x.vm < 0) { fail = "KVM_CREATE_VM"; goto setup_failed; }
  if (c->usermsr) {
    struct kvm_enable_cap cap;
    memset(&cap, 0, sizeof cap);
    cap.cap = KVM_CAP_X86_USER_SPACE_MSR;
    cap.args[0] = c->usermsr;
    if (ioctl(x.vm, KVM_ENABLE_CAP, &cap) < 0) { fail = "KVM_ENABLE_CAP"; goto setup_failed; }
  }
  if (c->irqchip && ioctl(x.vm, KVM_CREATE_IRQCHIP, 0) < 0) { fail = "KVM_CREATE_IRQCHIP"; goto setup_failed; }
  if (c->guest) {
    void *m = mmap(0, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { fail = "mmap"; goto setup_failed; }
    x.mem = m;
    struct kvm_userspace_memory_region region;
    memset(&region, 0, sizeof region);
    region.slot = 0;
    region.guest_phys_addr = 0;
    region.memory_size = MEM;
    region.userspace_addr = (unsigned long)x.mem;
    if (ioctl(x.vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { fail = "KVM_SET_USER_MEMORY_REGION"; goto setup_failed; }
  }
  for (int i = 0; i < c->vcpus; i++) {
    x.vcpu[i] = ioctl(x.vm, KVM_CREATE_VCPU, (unsigned long)i);
    if (x.vcpu[i] < 0) { fail = "KVM_CREATE_VCPU"; goto setup_failed; }
    if (c->cpuid) {
      if (!cpuid) {
        const int nent = 256;
        cpuid = calloc(1, sizeof *cpuid + nent * sizeof(struct kvm_cpuid_entry2));
        if (!cpuid) { fail = "calloc"; goto setup_failed; }
        cpuid->nent = nent;
        if (ioctl(x.sys, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) { fail = "KVM_GET_SUPPORTED_CPUID"; goto setup_failed; }
        if (c->cpuid == 2 && add_hyperv_leaves(x.sys, cpuid, nent) < 0) { fail = "KVM_GET_SUPPORTED_HV_CPUID"; goto setup_failed; }
      }
      if (ioctl(x.vcpu[i], KVM_SET_CPUID2, cpuid) < 0) { fail = "KVM_SET_CPUID2"; goto setup_failed; }
    }
  }

  for (size_t si = 0; si < c->nsteps; si++) {
    const struct step *st = &c->steps[si];
    if (st->kind == ST_IO) {
      int fd = target_fd(&x, st->target);
      if (st->argkind == ARG_INT) {
        int r = ioctl(fd, st->req, (unsigned long)st->a);
        int e = r < 0 ? errno : 0;
        sb_printf(out, "io %zu %d %d -\n", si, r, e);
        if (r >= 0 && returns_fd(st->req)) {
          if (x.nextra < (int)(sizeof x.extra / sizeof x.extra[0])) x.extra[x.nextra++] = r;
          else close(r);
        }
      } else {
        const unsigned char *src = st->argkind == ARG_BUF ? st->buf : wb;
        size_t len = st->argkind == ARG_BUF ? st->len : wblen;
        struct gbuf g;
        if (gbuf_alloc(&g, src, len) < 0) {
          /* Not the kernel's answer: the probe could not place the buffer. */
          sb_printf(out, "g %zu fail mmap %d\n", si, errno);
          break;
        }
        int r = ioctl(fd, st->req, g.p);
        int e = r < 0 ? errno : 0;
        sb_printf(out, "io %zu %d %d ", si, r, e);
        sb_hex(out, g.p, len);
        sb_printf(out, "\n");
        unsigned char *nwb = xmalloc(len);
        if (len) memcpy(nwb, g.p, len);
        free(wb);
        wb = nwb;
        wblen = len;
        munmap(g.base, g.maplen);
      }
    } else if (st->kind == ST_RD || st->kind == ST_WR) {
      if (guest_step(&x, si, st, out) < 0) break;
    } else if (st->kind == ST_SLEEP) {
      unsigned long long us = st->a * 1000;
      while (us) {
        unsigned long long chunk = us > 500000 ? 500000 : us;
        usleep((useconds_t)chunk);
        us -= chunk;
      }
      sb_printf(out, "sleep %zu\n", si);
    } else if (st->kind == ST_STATS) {
      /* The binary stats file (KVM_GET_STATS_FD): header, id, descriptors and data, read whole. */
#ifdef KVM_GET_STATS_FD
      int sfd = ioctl(target_fd(&x, st->target), KVM_GET_STATS_FD, 0);
#else
      int sfd = -1;
      errno = ENOTTY;
#endif
      if (sfd < 0) {
        sb_printf(out, "stats %zu -1 %d -\n", si, errno);
      } else {
        size_t cap = 1 << 16, len = 0;
        unsigned char *b = xmalloc(cap);
        for (;;) {
          if (len == cap) { cap *= 2; b = realloc(b, cap); if (!b) { perror("realloc"); exit(1); } }
          ssize_t n = pread(sfd, b + len, cap - len, (off_t)len);
          if (n <= 0 || cap > (1u << 24)) break;
          len += (size_t)n;
        }
        sb_printf(out, "stats %zu 0 0 ", si);
        sb_hex(out, b, len);
        sb_printf(out, "\n");
        free(b);
        close(sfd);
      }
    } else if (st->kind == ST_TSC) {
      int fd = target_fd(&x, st->target);
      unsigned long long lo = st->a, hi = st->b;
      long long ans = -1;
      if (ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)lo) < 0 && ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)hi) == 0) {
        while (hi - lo > 1) {
          unsigned long long mid = lo + (hi - lo) / 2;
          if (ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)mid) == 0) hi = mid;
          else lo = mid;
        }
        ans = (long long)hi;
      }
      sb_printf(out, "tsckhz %zu %lld\n", si, ans);
    }
  }
  goto done;

setup_failed:
  sb_printf(out, "setup fail %s %d\n", fail, errno);
done:
  sb_printf(out, "case %s end\n", c->id);
  if (x.run) munmap(x.run, x.run_size);
  for (int i = 0; i < x.nextra; i++) close(x.extra[i]);
  for (int i = c->vcpus - 1; i >= 0; i--)
    if (x.vcpu[i] >= 0) close(x.vcpu[i]);
  if (x.vm >= 0) close(x.vm);
  if (x.sys >= 0) close(x.sys);
  if (x.mem) munmap(x.mem, MEM);
  free(x.vcpu);
  free(cpuid);
  free(wb);
}

/* ---------------------------------------------------------------- threads and output */

static int out_fd;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_size_t next_case, done_cases;
static atomic_int write_errno;

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *worker(void *arg) {
  (void)arg;
  struct sbuf out = {0};
  for (;;) {
    size_t i = atomic_fetch_add(&next_case, 1);
    if (i >= ncases) break;
    out.len = 0;
    run_case(&cases[i], &out);
    pthread_mutex_lock(&out_lock);
    if (write_all(out_fd, out.p, out.len) < 0 && !atomic_load(&write_errno)) atomic_store(&write_errno, errno ? errno : EIO);
    pthread_mutex_unlock(&out_lock);
    atomic_fetch_add(&done_cases, 1);
  }
  free(out.p);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void rtrim(char *s) {
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void header(struct sbuf *h, int jobs) {
  struct utsname u;
  sb_printf(h, "kvmsr-answers 1\n");
  if (uname(&u) == 0) {
    sb_printf(h, "info kernel %s\n", u.release);
    sb_printf(h, "info machine %s\n", u.machine);
  }
  char vendor[256] = "unknown", model[512] = "unknown";
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char *line = 0;
    size_t cap = 0;
    int gotv = 0, gotm = 0;
    while ((!gotv || !gotm) && getline(&line, &cap, f) >= 0) {
      char *colon = strchr(line, ':');
      if (!colon) continue;
      char *v = colon + 1;
      while (*v == ' ' || *v == '\t') v++;
      rtrim(v);
      if (!gotv && !strncmp(line, "vendor_id", 9)) { snprintf(vendor, sizeof vendor, "%s", v); gotv = 1; }
      else if (!gotm && !strncmp(line, "model name", 10)) { snprintf(model, sizeof model, "%s", v); gotm = 1; }
    }
    free(line);
    fclose(f);
  }
  sb_printf(h, "info cpu_vendor %s\n", vendor);
  sb_printf(h, "info cpu_model %s\n", model);
  static const char *const mods[] = {"kvm", "kvm_intel", "kvm_amd", "kvm_pvm"};
  char path[512];
  for (size_t m = 0; m < sizeof mods / sizeof *mods; m++) {
    struct stat sst;
    snprintf(path, sizeof path, "/sys/module/%s", mods[m]);
    if (stat(path, &sst) < 0) continue;
    sb_printf(h, "info module %s\n", mods[m]);
  }
  for (size_t m = 0; m < sizeof mods / sizeof *mods; m++) {
    snprintf(path, sizeof path, "/sys/module/%s/parameters", mods[m]);
    DIR *d = opendir(path);
    if (!d) continue;
    char **names = 0;
    size_t nn = 0, cn = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
      if (de->d_name[0] == '.') continue;
      if (nn == cn) {
        cn = cn ? cn * 2 : 32;
        names = realloc(names, cn * sizeof *names);
        if (!names) exit(1);
      }
      names[nn++] = strdup(de->d_name);
    }
    closedir(d);
    if (nn) qsort(names, nn, sizeof *names, cmp_str);
    for (size_t i = 0; i < nn; i++) {
      char pp[1024];
      snprintf(pp, sizeof pp, "%s/%s", path, names[i]);
      int fd = open(pp, O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        char val[4096];
        ssize_t r = read(fd, val, sizeof val - 1);
        close(fd);
        if (r >= 0) {
          val[r] = 0;
          val[strcspn(val, "\n")] = 0;
          sb_printf(h, "info param %s.%s %s\n", mods[m], names[i], val);
        }
      }
      free(names[i]);
    }
    free(names);
  }
  sb_printf(h, "info jobs %d\n", jobs);
}

static void usage_error(const char *what) {
  fprintf(stderr, "kvmsr-probe: %s; " USAGE "\n", what);
  exit(2);
}

int main(int argc, char **argv) {
  long jobs = 1;
  const char *dir = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = 0;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf(USAGE "\n"
             "Runs every case of DIR/plan.txt on the real /dev/kvm and writes the kernel's answers to\n"
             "DIR/answers.txt. --jobs N runs N cases at a time (default 1).\n");
      return 0;
    }
    if (!strcmp(a, "--jobs") || !strcmp(a, "-j")) {
      if (i + 1 >= argc) usage_error("--jobs needs a number");
      val = argv[++i];
    } else if (!strncmp(a, "--jobs=", 7)) {
      val = a + 7;
    } else if (a[0] == '-' && a[1]) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown option '%.200s'", a);
      usage_error(msg);
    } else {
      if (dir) usage_error("more than one DIR");
      dir = a;
      continue;
    }
    char *end;
    errno = 0;
    jobs = strtol(val, &end, 10);
    if (errno || !*val || *end || jobs < 1 || jobs > 1024) usage_error("--jobs needs a number from 1 to 1024");
  }
  if (!dir) usage_error("missing DIR");
  page_size = sysconf(_SC_PAGESIZE);
  if (page_size <= 0) page_size = 4096;

  size_t dl = strlen(dir);
  char *ppath = xmalloc(dl + 16), *apath = xmalloc(dl + 16);
  snprintf(ppath, dl + 16, "%s/plan.txt", dir);
  snprintf(apath, dl + 16, "%s/answers.txt", dir);
  parse_plan(ppath);

  int probe = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (probe < 0) {
    fprintf(stderr, "kvmsr-probe: cannot open /dev/kvm: %s\n", strerror(errno));
    return 1;
  }
  close(probe);

  out_fd = open(apath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_fd < 0) {
    fprintf(stderr, "kvmsr-probe: cannot write %s: %s\n", apath, strerror(errno));
    return 1;
  }
  double t0 = now_s();
  struct sbuf h = {0};
  header(&h, (int)jobs);
  if (write_all(out_fd, h.p, h.len) < 0) {
    fprintf(stderr, "kvmsr-probe: cannot write %s: %s\n", apath, strerror(errno));
    return 1;
  }
  free(h.p);

  size_t nthreads = (size_t)jobs < ncases ? (size_t)jobs : ncases;
  pthread_t *th = xmalloc((nthreads ? nthreads : 1) * sizeof *th);
  size_t started = 0;
  for (size_t i = 0; i < nthreads; i++) {
    int e = pthread_create(&th[i], 0, worker, 0);
    if (e) {
      if (!started) { /* run on this thread */
        fprintf(stderr, "kvmsr-probe: pthread_create: %s; running on one thread\n", strerror(e));
        worker(0);
      }
      break;
    }
    started++;
  }
  int tty = isatty(2);
  double last = now_s();
  size_t last_decile = 0;
  while (atomic_load(&done_cases) < ncases) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, 0);
    size_t d = atomic_load(&done_cases);
    if (d >= ncases) break;
    size_t decile = d * 10 / ncases;
    double t = now_s();
    if ((tty && t - last >= 2.0) || decile > last_decile) {
      fprintf(stderr, "kvmsr-probe: %zu/%zu cases\n", d, ncases);
      last = t;
      last_decile = decile;
    }
  }
  for (size_t i = 0; i < started; i++) pthread_join(th[i], 0);
  free(th);
  double secs = now_s() - t0;
  struct sbuf tail = {0};
  sb_printf(&tail, "done %zu %.1f\n", ncases, secs);
  if (write_all(out_fd, tail.p, tail.len) < 0 && !atomic_load(&write_errno)) atomic_store(&write_errno, errno ? errno : EIO);
  free(tail.p);
  if (close(out_fd) < 0 && !atomic_load(&write_errno)) atomic_store(&write_errno, errno ? errno : EIO);
  int we = atomic_load(&write_errno);
  if (we) {
    fprintf(stderr, "kvmsr-probe: writing %s failed: %s\n", apath, strerror(we));
    return 1;
  }
  fprintf(stderr, "kvmsr-probe: %zu cases in %.1f s on %zu thread%s; answers in %s\n", ncases, secs, started, started == 1 ? "" : "s", apath);
  free(ppath);
  free(apath);
  return 0;
}
