/* A tiny guest that executes RDMSR and WRMSR on a real /dev/kvm, so the guest path
 * (handle_rdmsr/handle_wrmsr, host_initiated = false) can be compared with kvmsr's kvm.rdmsr and
 * kvm.wrmsr. One VM, one vCPU, real mode; each step runs
 *   mov ecx, INDEX; mov eax, LO; mov edx, HI; rdmsr|wrmsr; out 0x10, al
 * with #GP vectored (real-mode IVT) to `out 0x11, al`. Steps come on stdin, one per line:
 *   r INDEX  |  w INDEX VALUE      (numbers in C syntax)
 * and the answers go to stdout, one JSON line per step:
 *   {"kind":"ok","value":"0x..."} | {"kind":"gp"} | {"kind":"exit","reason":N,"index":"0x..","data":"0x.."}
 * An MSR exit to userspace is completed with error = 1 (the guest then takes #GP).
 * usage: guest-msr [--irqchip] [--cpuid] [--user-msr MASK] */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM 0x10000
#define CODE 0x1000
#define GP_HANDLER 0x2000
#define IVT 0x3000

static void die(const char *what) {
  printf("{\"fatal\":\"%s\",\"errno\":%d}\n", what, errno);
  exit(1);
}

int main(int argc, char **argv) {
  int irqchip = 0, cpuid = 0;
  unsigned long long user_msr = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--irqchip")) irqchip = 1;
    else if (!strcmp(argv[i], "--cpuid")) cpuid = 1;
    else if (!strcmp(argv[i], "--user-msr") && i + 1 < argc) user_msr = strtoull(argv[++i], 0, 0);
  }
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (sys < 0) die("open /dev/kvm");
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (user_msr) {
    struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR, .args = {user_msr}};
    if (ioctl(vm, KVM_ENABLE_CAP, &cap) < 0) die("KVM_ENABLE_CAP");
  }
  if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  unsigned char *mem = mmap(0, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = MEM, .userspace_addr = (unsigned long)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  if (cpuid) {
    int n = 256;
    struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof(struct kvm_cpuid_entry2));
    c->nent = n;
    if (ioctl(sys, KVM_GET_SUPPORTED_CPUID, c) < 0) die("KVM_GET_SUPPORTED_CPUID");
    if (ioctl(vcpu, KVM_SET_CPUID2, c) < 0) die("KVM_SET_CPUID2");
  }
  int run_size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  /* The real-mode vector table away from GPA 0, where kvmclock and steal time land when a test
   * enables them with a GPA of 0. */
  sregs.idt.base = IVT;
  sregs.idt.limit = 0x3ff;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  /* Vector 13 (#GP) -> 0000:GP_HANDLER, which says so on port 0x11. */
  unsigned char *gp = mem + IVT + 13 * 4;
  gp[0] = GP_HANDLER & 0xff; gp[1] = GP_HANDLER >> 8; gp[2] = 0; gp[3] = 0;
  mem[GP_HANDLER] = 0xe6; mem[GP_HANDLER + 1] = 0x11; mem[GP_HANDLER + 2] = 0xf4;

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    char op = 0;
    char *q = line;
    while (*q == ' ') q++;
    op = *q++;
    if (op != 'r' && op != 'w' && op != 'h' && op != 'H' && op != 's') continue;
    unsigned long long index = strtoull(q, &q, 0);
    unsigned long long value = strtoull(q, &q, 0); /* the full u64 range, unlike %lli */
    if (op == 's') {
      usleep((useconds_t)index * 1000);
      printf("{\"kind\":\"slept\"}\n");
      fflush(stdout);
      continue;
    }
    if (op == 'h' || op == 'H') {
      struct { struct kvm_msrs h; struct kvm_msr_entry e; } m;
      memset(&m, 0, sizeof m);
      m.h.nmsrs = 1;
      m.e.index = (unsigned int)index;
      m.e.data = value;
      int r = ioctl(vcpu, op == 'h' ? KVM_GET_MSRS : KVM_SET_MSRS, &m);
      if (r == 1) printf("{\"kind\":\"ok\",\"value\":\"0x%llx\"}\n", (unsigned long long)m.e.data);
      else printf("{\"kind\":\"host-refused\",\"ret\":%d}\n", r);
      fflush(stdout);
      continue;
    }
    unsigned char *p = mem + CODE;
    unsigned int lo = (unsigned int)value, hi = (unsigned int)(value >> 32), idx = (unsigned int)index;
    *p++ = 0x66; *p++ = 0xb9; memcpy(p, &idx, 4); p += 4;   /* mov ecx, idx */
    *p++ = 0x66; *p++ = 0xb8; memcpy(p, &lo, 4); p += 4;    /* mov eax, lo */
    *p++ = 0x66; *p++ = 0xba; memcpy(p, &hi, 4); p += 4;    /* mov edx, hi */
    *p++ = 0x0f; *p++ = op == 'w' ? 0x30 : 0x32;             /* wrmsr | rdmsr */
    *p++ = 0xe6; *p++ = 0x10; *p++ = 0xf4;                   /* out 0x10, al; hlt */
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = CODE;
    regs.rsp = 0x8000;
    regs.rflags = 2;
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
    int exited = 0;
    for (;;) {
      if (ioctl(vcpu, KVM_RUN, 0) < 0) {
        if (errno == EINTR) continue;
        die("KVM_RUN");
      }
      if (run->exit_reason == KVM_EXIT_X86_RDMSR || run->exit_reason == KVM_EXIT_X86_WRMSR) {
        printf("{\"kind\":\"exit\",\"exitReason\":%u,\"reason\":%u,\"index\":\"0x%x\",\"data\":\"0x%llx\"}\n", run->exit_reason, run->msr.reason,
               run->msr.index, (unsigned long long)run->msr.data);
        run->msr.error = 1;
        exited = 1;
        continue;
      }
      if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
        if (exited) break;
        if (run->io.port == 0x11) {
          printf("{\"kind\":\"gp\"}\n");
        } else {
          if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0) die("KVM_GET_REGS");
          unsigned long long v = ((regs.rdx & 0xffffffffull) << 32) | (regs.rax & 0xffffffffull);
          if (op == 'w') v = value;
          printf("{\"kind\":\"ok\",\"value\":\"0x%llx\"}\n", v);
        }
        break;
      }
      printf("{\"fatal\":\"exit reason %u\"}\n", run->exit_reason);
      return 1;
    }
    fflush(stdout);
  }
  return 0;
}
