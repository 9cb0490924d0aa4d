/*
 * A small VMM save/restore of our own, the way QEMU and Firecracker do it, for `kvmsr run`:
 *   run-saverestore save FILE            one vCPU, its MSRs as a guest left them, saved to FILE
 *   run-saverestore restore FILE [bug]   a new VM restored from FILE; with "bug", the planted
 *                                        mistake: the MSR values are restored one entry off
 * Besides the MSRs it saves and restores what a VMM's vCPU state holds (REGS, SREGS2, XCRS,
 * LAPIC, VCPU_EVENTS, DEBUGREGS, MP_STATE), which kvmsr serves as stored state.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const unsigned idx[] = {0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x174, 0x175, 0x176, 0x277};
#define N (sizeof idx / sizeof idx[0])

struct saved {
  struct kvm_regs regs;
  struct kvm_sregs2 sregs;
  struct kvm_xcrs xcrs;
  struct kvm_lapic_state lapic;
  struct kvm_vcpu_events events;
  struct kvm_debugregs dbg;
  struct kvm_mp_state mp;
  unsigned long long msr[N];
};

static void die(const char *what) { perror(what); exit(1); }

static int make_vcpu(int *kvm_out) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0)) die("KVM_CREATE_IRQCHIP");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  struct kvm_cpuid2 *c = calloc(1, sizeof *c + 256 * sizeof(struct kvm_cpuid_entry2));
  c->nent = 256;
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c)) die("KVM_GET_SUPPORTED_CPUID");
  if (ioctl(vcpu, KVM_SET_CPUID2, c)) die("KVM_SET_CPUID2");
  free(c);
  *kvm_out = kvm;
  return vcpu;
}

static int msrs(int vcpu, unsigned long req, unsigned long long *v) {
  struct { struct kvm_msrs h; struct kvm_msr_entry e[N]; } m;
  memset(&m, 0, sizeof m);
  m.h.nmsrs = N;
  for (unsigned i = 0; i < N; i++) { m.e[i].index = idx[i]; m.e[i].data = v[i]; }
  int r = ioctl(vcpu, req, &m);
  for (unsigned i = 0; i < N; i++) v[i] = m.e[i].data;
  return r;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s save|restore FILE [bug]\n", argv[0]); return 2; }
  int kvm, vcpu = make_vcpu(&kvm);
  struct saved s;
  if (!strcmp(argv[1], "save")) {
    /* What a guest would have left: kvmsr runs no guest code, so the host writes it. */
    unsigned long long g[N] = {0x0023001000000000ull, 0xffffffff81a00080ull, 0xffffffff81a01000ull, 0x47700,
                               0xffff888003a00000ull, 0x10, 0xfffffe0000003000ull, 0xffffffff81a01200ull, 0x0007010600070106ull};
    if (msrs(vcpu, KVM_SET_MSRS, g) != (int)N) die("KVM_SET_MSRS");
    memset(&s, 0, sizeof s);
    if (msrs(vcpu, KVM_GET_MSRS, s.msr) != (int)N) die("KVM_GET_MSRS");
    if (ioctl(vcpu, KVM_GET_REGS, &s.regs)) die("KVM_GET_REGS");
    if (ioctl(vcpu, KVM_GET_SREGS2, &s.sregs)) die("KVM_GET_SREGS2");
    if (ioctl(vcpu, KVM_GET_XCRS, &s.xcrs)) die("KVM_GET_XCRS");
    if (ioctl(vcpu, KVM_GET_LAPIC, &s.lapic)) die("KVM_GET_LAPIC");
    if (ioctl(vcpu, KVM_GET_VCPU_EVENTS, &s.events)) die("KVM_GET_VCPU_EVENTS");
    if (ioctl(vcpu, KVM_GET_DEBUGREGS, &s.dbg)) die("KVM_GET_DEBUGREGS");
    if (ioctl(vcpu, KVM_GET_MP_STATE, &s.mp)) die("KVM_GET_MP_STATE");
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(&s, sizeof s, 1, f) != 1 || fclose(f)) die(argv[2]);
    printf("saved %u MSRs, rip 0x%llx, efer 0x%llx, apic base 0x%llx\n", (unsigned)N, (unsigned long long)s.regs.rip,
           (unsigned long long)s.sregs.efer, (unsigned long long)s.sregs.apic_base);
    return 0;
  }
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(&s, sizeof s, 1, f) != 1) die(argv[2]);
  fclose(f);
  int bug = argc > 3 && !strcmp(argv[3], "bug");
  if (ioctl(vcpu, KVM_SET_REGS, &s.regs)) die("KVM_SET_REGS");
  if (ioctl(vcpu, KVM_SET_SREGS2, &s.sregs)) die("KVM_SET_SREGS2");
  if (ioctl(vcpu, KVM_SET_XCRS, &s.xcrs)) die("KVM_SET_XCRS");
  unsigned long long v[N];
  for (unsigned i = 0; i < N; i++) v[i] = s.msr[bug && i + 1 < N ? i + 1 : i]; /* the planted mistake: one entry off */
  int r = msrs(vcpu, KVM_SET_MSRS, v);
  if (ioctl(vcpu, KVM_SET_LAPIC, &s.lapic)) die("KVM_SET_LAPIC");
  if (ioctl(vcpu, KVM_SET_VCPU_EVENTS, &s.events)) die("KVM_SET_VCPU_EVENTS");
  if (ioctl(vcpu, KVM_SET_DEBUGREGS, &s.dbg)) die("KVM_SET_DEBUGREGS");
  if (ioctl(vcpu, KVM_SET_MP_STATE, &s.mp)) die("KVM_SET_MP_STATE");
  unsigned long long back[N] = {0};
  msrs(vcpu, KVM_GET_MSRS, back);
  struct kvm_sregs2 sr;
  if (ioctl(vcpu, KVM_GET_SREGS2, &sr)) die("KVM_GET_SREGS2");
  printf("restored %d of %u MSRs, apic base 0x%llx\n", r, (unsigned)N, (unsigned long long)sr.apic_base);
  return 0;
}
