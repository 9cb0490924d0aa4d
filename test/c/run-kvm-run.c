/*
 * KVM_RUN of a guest that halts at once, on the real kernel and under `kvmsr run` alike
 * (test/run-kvm-run.test.ts compares the two): 64 KiB of HLT just under 4 GiB, so the reset vector
 * is a HLT, and the in-kernel irqchip, so the halted vCPU sleeps in the kernel until a signal
 * (without it, KVM returns the halt to userspace: KVM_EXIT_HLT). Every line is one the two must
 * agree on; nothing here depends on where RIP ended up (the real guest is past its HLT, kvmsr's
 * never ran it).
 *
 *   immediate   run->immediate_exit: -1/EINTR at once, exit_reason untouched, the vCPU not entered
 *   pending     a signal blocked by the thread but not by KVM_SET_SIGNAL_MASK, raised before
 *               KVM_RUN: -1/EINTR at once with KVM_EXIT_INTR, the entry cancelled
 *   kick        another thread's pthread_kill, handler installed with SA_RESTART: -1/EINTR,
 *               KVM_EXIT_INTR; the vCPU entered the guest (feature MSRs and CPUID frozen after)
 *   sigmask     KVM_SET_SIGNAL_MASK blocks SIGUSR1: the thread stays in KVM_RUN through it, until
 *               SIGUSR2
 *   post-run    if_flag, cr8, apic_base, ready_for_interrupt_injection, flags as KVM_GET_REGS,
 *               KVM_GET_SREGS and KVM_GET_LAPIC give them
 *   ap          an AP waiting for INIT (KVM_MP_STATE_UNINITIALIZED) sleeps without being entered
 *   noirqchip   a VM without the irqchip: the halt comes back as KVM_EXIT_HLT
 *   and KVM_SET_SIGNAL_MASK's, KVM_KVMCLOCK_CTRL's and KVM_SET_GUEST_DEBUG's answers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int s) { (void)s; usr1++; }
static void on_usr2(int s) { (void)s; usr2++; }

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void handler(int sig, void (*fn)(int), int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sa.sa_flags = flags;
  if (sigaction(sig, &sa, NULL)) die("sigaction");
}

/* Another thread signals the main one: `first` ms1 after the main thread says go (just before its
 * KVM_RUN), then `second` (0: none) at ms2. */
struct kick { pthread_t target; int first, ms1, second, ms2; double sent1; int go; };
static void *kicker(void *p) {
  struct kick *k = p;
  while (!__atomic_load_n(&k->go, __ATOMIC_ACQUIRE)) usleep(1000);
  usleep((useconds_t)k->ms1 * 1000);
  k->sent1 = now_ms();
  pthread_kill(k->target, k->first);
  if (k->second) {
    usleep((useconds_t)(k->ms2 - k->ms1) * 1000);
    pthread_kill(k->target, k->second);
  }
  return NULL;
}

static int kvm;

static int new_vm(int irqchip) {
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0)) die("KVM_CREATE_IRQCHIP");
  unsigned char *mem = mmap(0, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  memset(mem, 0xf4, 0x10000); /* hlt */
  struct kvm_userspace_memory_region slot = {.guest_phys_addr = 0xffff0000, .memory_size = 0x10000, .userspace_addr = (unsigned long)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot)) die("KVM_SET_USER_MEMORY_REGION");
  return vm;
}

static struct kvm_cpuid2 *cpuid;

static int new_vcpu(int vm, int id, struct kvm_run **run) {
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, id);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  if (ioctl(vcpu, KVM_SET_CPUID2, cpuid)) die("KVM_SET_CPUID2");
  int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (*run == MAP_FAILED) die("mmap vcpu");
  return vcpu;
}

static const char *err(int r) { static char b[32]; snprintf(b, sizeof b, "ret %d errno %d", r, r < 0 ? errno : 0); return b; }

/* KVM_RUN, with the time it took; a kicker waiting for it is told to go first. */
static double returned_at;
static int run_timed(int vcpu, double *ms, struct kick *k) {
  if (k) __atomic_store_n(&k->go, 1, __ATOMIC_RELEASE);
  double t0 = now_ms();
  int r = ioctl(vcpu, KVM_RUN, 0);
  int e = errno;
  returned_at = now_ms();
  *ms = returned_at - t0;
  errno = e;
  return r;
}

/* The feature MSR this host lists first among those frozen after KVM_RUN, with a non-zero value. */
static uint32_t feat_index;
static uint64_t feat_value;

static int set_msr(int vcpu, uint32_t index, uint64_t data) {
  struct { struct kvm_msrs h; struct kvm_msr_entry e; } m;
  memset(&m, 0, sizeof m);
  m.h.nmsrs = 1;
  m.e.index = index;
  m.e.data = data;
  return ioctl(vcpu, KVM_SET_MSRS, &m);
}

static uint64_t get_msr(int vcpu, uint32_t index) {
  struct { struct kvm_msrs h; struct kvm_msr_entry e; } m;
  memset(&m, 0, sizeof m);
  m.h.nmsrs = 1;
  m.e.index = index;
  if (ioctl(vcpu, KVM_GET_MSRS, &m) != 1) return 0;
  return m.e.data;
}

static void pick_feature(int vcpu) {
  static const uint32_t frozen[] = {0x10a, 0x345, 0xc0011029, 0xce}; /* ARCH_CAPABILITIES, PERF_CAPABILITIES, DE_CFG, PLATFORM_INFO */
  struct { struct kvm_msr_list h; uint32_t idx[512]; } list = {.h.nmsrs = 512};
  if (ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, &list)) die("KVM_GET_MSR_FEATURE_INDEX_LIST");
  for (unsigned f = 0; f < sizeof frozen / sizeof frozen[0]; f++)
    for (unsigned i = 0; i < list.h.nmsrs; i++)
      if (list.idx[i] == frozen[f] && get_msr(vcpu, frozen[f]) != 0) {
        feat_index = frozen[f];
        feat_value = get_msr(vcpu, frozen[f]);
        return;
      }
}

/* Whether the vCPU has run (kvm_vcpu_has_run): a changed feature MSR is refused after it. */
static const char *frozen_state(int vcpu) {
  if (!feat_index) return "no feature MSR to tell";
  int changed = set_msr(vcpu, feat_index, 0);
  int same = set_msr(vcpu, feat_index, feat_value);
  if (changed == 0 && same == 1) return "frozen (has run)";
  if (changed == 1 && same == 1) return "not frozen (not run)";
  static char b[64];
  snprintf(b, sizeof b, "odd: set 0 -> %d, set back -> %d", changed, same);
  return b;
}

static void show_post(const char *what, int vcpu, struct kvm_run *run) {
  struct kvm_regs regs;
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_REGS, &regs) || ioctl(vcpu, KVM_GET_SREGS, &sregs)) die("KVM_GET_REGS/SREGS");
  struct kvm_lapic_state lapic;
  int tpr = ioctl(vcpu, KVM_GET_LAPIC, &lapic) == 0 ? (lapic.regs[0x80] & 0xf0) >> 4 : -1;
  printf("%s: if_flag %u (RFLAGS.IF %u) cr8 %llu (sregs %llu, lapic tpr %d) apic_base 0x%llx (sregs 0x%llx) ready_for_interrupt_injection %u flags 0x%x\n", what,
         run->if_flag, (unsigned)((regs.rflags >> 9) & 1), (unsigned long long)run->cr8, (unsigned long long)sregs.cr8, tpr,
         (unsigned long long)run->apic_base, (unsigned long long)sregs.apic_base, run->ready_for_interrupt_injection, run->flags);
}

static int set_sigmask(int vcpu, const sigset_t *set) {
  struct { struct kvm_signal_mask h; uint8_t set[8]; } m;
  m.h.len = 8;
  if (!set) return ioctl(vcpu, KVM_SET_SIGNAL_MASK, NULL);
  memcpy(m.set, set, 8); /* glibc's sigset_t begins with the kernel's 64 bits */
  return ioctl(vcpu, KVM_SET_SIGNAL_MASK, &m);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  printf("KVM_CAP_IMMEDIATE_EXIT %d\n", ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT));
  cpuid = calloc(1, sizeof *cpuid + 256 * sizeof(struct kvm_cpuid_entry2));
  cpuid->nent = 256;
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid)) die("KVM_GET_SUPPORTED_CPUID");
  handler(SIGUSR1, on_usr1, SA_RESTART);
  handler(SIGUSR2, on_usr2, SA_RESTART);
  pthread_t self = pthread_self();

  int vm = new_vm(1);
  struct kvm_run *run;
  int vcpu = new_vcpu(vm, 0, &run);
  pick_feature(vcpu);
  printf("feature MSR %s\n", feat_index ? "found" : "none");

  /* KVM_RUN's argument must be 0 (kvm_vcpu_ioctl). */
  printf("KVM_RUN arg 1: %s\n", err(ioctl(vcpu, KVM_RUN, 1)));

  /* immediate */
  run->exit_reason = 0x77;
  run->immediate_exit = 1;
  int r = ioctl(vcpu, KVM_RUN, 0);
  printf("immediate: %s exit_reason 0x%x; %s\n", err(r), run->exit_reason, frozen_state(vcpu));
  show_post("immediate post-run", vcpu, run);
  run->immediate_exit = 0;

  /* pending: SIGUSR1 blocked by the thread, unblocked inside KVM_RUN, raised before it */
  sigset_t block, none, old;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigemptyset(&none);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  printf("pending: KVM_SET_SIGNAL_MASK(empty) %s\n", err(set_sigmask(vcpu, &none)));
  usr1 = 0;
  pthread_kill(self, SIGUSR1);
  run->exit_reason = 0x77;
  double ms;
  r = run_timed(vcpu, &ms, NULL); /* nothing else would end it: a wait would never return */
  /* KVM_RUN returned with the thread's mask back: the signal is still pending, its handler not run. */
  printf("pending: %s exit_reason %u, handler ran %d time(s), at once %s; %s\n", err(r), run->exit_reason, (int)usr1,
         ms < 1000 ? "yes" : "no", frozen_state(vcpu));
  printf("pending: KVM_SET_SIGNAL_MASK(NULL) %s\n", err(set_sigmask(vcpu, NULL)));
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  printf("pending: handler ran %d time(s) once the thread unblocked it\n", (int)usr1);

  /* kick: SA_RESTART does not restart KVM_RUN */
  usr1 = 0;
  struct kick k = {self, SIGUSR1, 100, 0, 0, 0, 0};
  pthread_t t;
  pthread_create(&t, NULL, kicker, &k);
  run->exit_reason = 0x77;
  r = run_timed(vcpu, &ms, &k);
  pthread_join(t, NULL);
  printf("kick: %s exit_reason %u, handler ran %d time(s), slept until the signal %s; %s\n", err(r), run->exit_reason, (int)usr1,
         returned_at >= k.sent1 ? "yes" : "no", frozen_state(vcpu));
  struct kvm_mp_state mp;
  if (ioctl(vcpu, KVM_GET_MP_STATE, &mp)) die("KVM_GET_MP_STATE");
  printf("kick: mp_state %u\n", mp.mp_state);
  show_post("kick post-run", vcpu, run);
  /* kvm_cpuid_check_equal: after the first entry only the same CPUID may be set again. (Not the
   * same one: the kernel compares with its entries as kvm_update_cpuid_runtime left them.) */
  struct kvm_cpuid2 *fewer = malloc(sizeof *cpuid + 256 * sizeof(struct kvm_cpuid_entry2));
  memcpy(fewer, cpuid, sizeof *cpuid + 256 * sizeof(struct kvm_cpuid_entry2));
  fewer->nent--;
  printf("after run: KVM_SET_CPUID2 with one entry fewer %s\n", err(ioctl(vcpu, KVM_SET_CPUID2, fewer)));

  /* sigmask: SIGUSR1 blocked inside KVM_RUN, SIGUSR2 not */
  sigset_t only1;
  sigemptyset(&only1);
  sigaddset(&only1, SIGUSR1);
  printf("sigmask: KVM_SET_SIGNAL_MASK(SIGUSR1) %s\n", err(set_sigmask(vcpu, &only1)));
  usr1 = usr2 = 0;
  struct kick k2 = {self, SIGUSR1, 60, SIGUSR2, 260, 0, 0};
  pthread_create(&t, NULL, kicker, &k2);
  run->exit_reason = 0x77;
  r = run_timed(vcpu, &ms, &k2);
  pthread_join(t, NULL);
  printf("sigmask: %s exit_reason %u; stayed in KVM_RUN through SIGUSR1 %s; SIGUSR2 handled %d, SIGUSR1 handled after %d\n", err(r), run->exit_reason,
         returned_at >= k2.sent1 + 150 ? "yes" : "no", (int)usr2, (int)usr1); /* SIGUSR2 comes 200 ms after SIGUSR1 */
  set_sigmask(vcpu, NULL);

  /* post-run with state: RFLAGS.IF set, TPR 5, immediate exit */
  struct kvm_regs regs;
  if (ioctl(vcpu, KVM_GET_REGS, &regs)) die("KVM_GET_REGS");
  regs.rflags |= 0x200;
  if (ioctl(vcpu, KVM_SET_REGS, &regs)) die("KVM_SET_REGS");
  struct kvm_lapic_state lapic;
  if (ioctl(vcpu, KVM_GET_LAPIC, &lapic)) die("KVM_GET_LAPIC");
  lapic.regs[0x80] = 0x50;
  if (ioctl(vcpu, KVM_SET_LAPIC, &lapic)) die("KVM_SET_LAPIC");
  run->immediate_exit = 1;
  r = ioctl(vcpu, KVM_RUN, 0);
  run->immediate_exit = 0;
  printf("IF and TPR set: %s\n", err(r));
  show_post("IF and TPR set post-run", vcpu, run);

  /* ap: vCPU 1 waits for INIT */
  struct kvm_run *aprun;
  int ap = new_vcpu(vm, 1, &aprun);
  if (ioctl(ap, KVM_GET_MP_STATE, &mp)) die("KVM_GET_MP_STATE");
  printf("ap: mp_state %u\n", mp.mp_state);
  aprun->exit_reason = 0x77;
  aprun->immediate_exit = 1;
  r = ioctl(ap, KVM_RUN, 0);
  aprun->immediate_exit = 0;
  printf("ap immediate: %s exit_reason 0x%x\n", err(r), aprun->exit_reason);
  usr1 = 0;
  struct kick k3 = {self, SIGUSR1, 100, 0, 0, 0, 0};
  pthread_create(&t, NULL, kicker, &k3);
  r = run_timed(ap, &ms, &k3);
  pthread_join(t, NULL);
  printf("ap kick: %s exit_reason 0x%x, slept until the signal %s; %s\n", err(r), aprun->exit_reason, returned_at >= k3.sent1 ? "yes" : "no", frozen_state(ap));
  if (ioctl(ap, KVM_GET_MP_STATE, &mp)) die("KVM_GET_MP_STATE");
  printf("ap: mp_state %u after\n", mp.mp_state);

  /* noirqchip */
  int vm2 = new_vm(0);
  struct kvm_run *run2;
  int v2 = new_vcpu(vm2, 0, &run2);
  run2->cr8 = 3;
  r = ioctl(v2, KVM_RUN, 0);
  printf("noirqchip: %s exit_reason %u; %s\n", err(r), run2->exit_reason, frozen_state(v2));
  show_post("noirqchip post-run", v2, run2);
  run2->cr8 = 0x10;
  printf("noirqchip: run->cr8 0x10 %s\n", err(ioctl(v2, KVM_RUN, 0)));

  /* KVM_SET_SIGNAL_MASK's checks */
  struct { struct kvm_signal_mask h; uint8_t set[8]; } sm = {{.len = 128}, {0}};
  printf("KVM_SET_SIGNAL_MASK len 128: %s\n", err(ioctl(vcpu, KVM_SET_SIGNAL_MASK, &sm)));
  printf("KVM_SET_SIGNAL_MASK bad pointer: %s\n", err(ioctl(vcpu, KVM_SET_SIGNAL_MASK, (void *)8)));
  char *pg = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pg == MAP_FAILED) die("mmap");
  munmap(pg + 4096, 4096);
  uint32_t *len = (uint32_t *)(pg + 4092);
  *len = 8;
  printf("KVM_SET_SIGNAL_MASK set unreadable: %s\n", err(ioctl(vcpu, KVM_SET_SIGNAL_MASK, len)));
  *len = 7;
  printf("KVM_SET_SIGNAL_MASK len 7, set unreadable: %s\n", err(ioctl(vcpu, KVM_SET_SIGNAL_MASK, len)));
  printf("KVM_SET_SIGNAL_MASK NULL: %s\n", err(ioctl(vcpu, KVM_SET_SIGNAL_MASK, NULL)));

  /* KVM_KVMCLOCK_CTRL: only once the guest's kvmclock page is set up */
  printf("KVM_KVMCLOCK_CTRL fresh: %s\n", err(ioctl(ap, KVM_KVMCLOCK_CTRL, 0)));
  printf("KVM_SYSTEM_TIME_NEW 0x1001: %d\n", set_msr(ap, 0x4b564d01, 0x1001));
  printf("KVM_KVMCLOCK_CTRL: %s\n", err(ioctl(ap, KVM_KVMCLOCK_CTRL, 0)));
  printf("KVM_SYSTEM_TIME_NEW 0x1ff1 (crosses its page): %d\n", set_msr(ap, 0x4b564d01, 0x1ff1));
  printf("KVM_KVMCLOCK_CTRL still: %s\n", err(ioctl(ap, KVM_KVMCLOCK_CTRL, 0)));
  printf("KVM_SYSTEM_TIME_NEW 0x1000: %d\n", set_msr(ap, 0x4b564d01, 0x1000));
  printf("KVM_KVMCLOCK_CTRL disabled: %s\n", err(ioctl(ap, KVM_KVMCLOCK_CTRL, 0)));

  /* KVM_SET_GUEST_DEBUG */
  struct kvm_guest_debug dbg;
  memset(&dbg, 0, sizeof dbg);
  dbg.control = 0x80000000u;
  printf("KVM_SET_GUEST_DEBUG undefined bit: %s\n", err(ioctl(ap, KVM_SET_GUEST_DEBUG, &dbg)));
  printf("KVM_SET_GUEST_DEBUG NULL: %s\n", err(ioctl(ap, KVM_SET_GUEST_DEBUG, NULL)));
  if (ioctl(ap, KVM_GET_REGS, &regs)) die("KVM_GET_REGS");
  regs.rflags |= 0x100; /* the guest's own TF */
  if (ioctl(ap, KVM_SET_REGS, &regs)) die("KVM_SET_REGS");
  dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
  printf("KVM_SET_GUEST_DEBUG single-step: %s", err(ioctl(ap, KVM_SET_GUEST_DEBUG, &dbg)));
  if (ioctl(ap, KVM_GET_REGS, &regs)) die("KVM_GET_REGS");
  printf(", RFLAGS 0x%llx", (unsigned long long)regs.rflags);
  dbg.control = 0;
  ioctl(ap, KVM_SET_GUEST_DEBUG, &dbg);
  if (ioctl(ap, KVM_GET_REGS, &regs)) die("KVM_GET_REGS");
  printf(", after 0x%llx\n", (unsigned long long)regs.rflags);
  dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_DB;
  printf("KVM_SET_GUEST_DEBUG inject #DB: %s", err(ioctl(ap, KVM_SET_GUEST_DEBUG, &dbg)));
  struct kvm_vcpu_events ev;
  if (ioctl(ap, KVM_GET_VCPU_EVENTS, &ev)) die("KVM_GET_VCPU_EVENTS");
  printf(", exception injected %u nr %u pending %u", ev.exception.injected, ev.exception.nr, ev.exception.pending);
  printf(", again %s", err(ioctl(ap, KVM_SET_GUEST_DEBUG, &dbg)));
  dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP;
  printf(", #BP %s\n", err(ioctl(ap, KVM_SET_GUEST_DEBUG, &dbg)));
  return 0;
}
