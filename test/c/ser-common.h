/*
 * What the C serializers (ser-unsaved.c, ser-failed.c, ser-order.c, ser-time.c) share: the VM they
 * build on /dev/kvm and the KVM_GET/SET_MSRS calls they make. Each program includes this from
 * test/c (the test compiles them there with `cc -O1 -Wall -Werror`). The functions are static
 * inline so that a program not using one gets no -Wunused-function warning (an error with -Werror).
 * Each program still makes its own ioctls in its own order: these only spare the repetition.
 */
#ifndef SER_COMMON_H
#define SER_COMMON_H

#include <fcntl.h>
#include <signal.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

/* chunked()'s batch size: well under the 256 entries (KVM_MAX_MSR_ENTRIES) msr_io takes in one
 * KVM_GET/SET_MSRS, so a correct serializer never sees E2BIG. */
#define CHUNK 64

/* A failed setup step ends the program with exit status 1 and perror's line: the test then fails
 * on the status and shows the line. */
static inline void die(const char *what) { perror(what); exit(1); }

/* /dev/kvm opened into *kvm, and a VM with the in-kernel IRQ chip; the VM fd. The IRQ chip is what
 * VMMs create, and it gives the vCPUs an in-kernel LAPIC: KVM_GET/SET_LAPIC, IA32_TSC_DEADLINE and
 * SynIC (KVM_CAP_HYPERV_SYNIC) need one. */
static inline int open_vm(int *kvm) {
  *kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (*kvm < 0) die("open /dev/kvm");
  int vm = ioctl(*kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0)) die("KVM_CREATE_IRQCHIP");
  return vm;
}

/* For the programs that KVM_RUN the vCPU (the guest resumed after a restore): 64 KiB just under
 * 4 GiB, hlt throughout but for "out 0x10, al" at the reset vector, so KVM_RUN enters the guest and
 * exits at once (KVM_EXIT_IO) on the real kernel. Without memory kvm_pvm refuses KVM_RUN with
 * ENOSPC and the vCPU never runs (kvm_vcpu_has_run stays false). kvmsr runs no guest code: its
 * guest is entered and halts, and KVM_RUN sleeps until a signal (see run_vcpu). */
static inline void reset_vector_slot(int vm) {
  unsigned char *mem = mmap(0, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  memset(mem, 0xf4, 0x10000);
  mem[0xfff0] = 0xe6, mem[0xfff1] = 0x10;
  struct kvm_userspace_memory_region slot = {.guest_phys_addr = 0xffff0000, .memory_size = 0x10000, .userspace_addr = (unsigned long)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot)) die("KVM_SET_USER_MEMORY_REGION");
}

static inline void on_alarm(int sig) { (void)sig; }

/* KVM_RUN once, with a 100 ms alarm to end it should the guest not exit by itself (under kvmsr,
 * whose guest never wakes: -1/EINTR, exit_reason KVM_EXIT_INTR, the vCPU entered all the same). */
static inline int run_vcpu(int vcpu) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval t = {.it_value = {.tv_sec = 0, .tv_usec = 100000}}, off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &t, NULL);
  int r = ioctl(vcpu, KVM_RUN, 0);
  setitimer(ITIMER_REAL, &off, NULL);
  return r;
}

/* vCPU id's fd. */
static inline int create_vcpu(int vm, int id) {
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, id);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  return vcpu;
}

/* KVM_GET_SUPPORTED_CPUID, room for 256 entries (KVM_MAX_CPUID_ENTRIES: with fewer the kernel may
 * answer E2BIG); for KVM_SET_CPUID2, as a VMM passes it on. The caller frees it. */
static inline struct kvm_cpuid2 *supported_cpuid(int kvm) {
  struct kvm_cpuid2 *c = calloc(1, sizeof *c + 256 * sizeof(struct kvm_cpuid_entry2));
  c->nent = 256;
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c)) die("KVM_GET_SUPPORTED_CPUID");
  return c;
}

/* The TSC-deadline timer, CPUID.1:ECX[24], offered as QEMU does when KVM has
 * KVM_CAP_TSC_DEADLINE_TIMER (KVM's documentation: the supported CPUID returns the bit clear, since
 * the timer is the in-kernel LAPIC's; the capability says it is there). Without the bit in the
 * vCPU's CPUID, kvm_vcpu_after_set_cpuid masks the LVT timer's mode to one bit: TSC-deadline mode
 * cannot be set, and IA32_TSC_DEADLINE (0x6e0) writes are dropped and it reads 0, so there would be
 * no deadline to save or lose. */
static inline void offer_tsc_deadline(int kvm, struct kvm_cpuid2 *c) {
  if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) <= 0) return;
  for (unsigned j = 0; j < c->nent; j++)
    if (c->entries[j].function == 1) c->entries[j].ecx |= 1u << 24;
}

/* Hyper-V SynIC on the vCPU: SCONTROL, SIMP and SynIC's other MSRs (0x40000080...) exist only
 * after it. */
static inline void enable_synic(int vcpu) {
  struct kvm_enable_cap cap = {.cap = KVM_CAP_HYPERV_SYNIC};
  if (ioctl(vcpu, KVM_ENABLE_CAP, &cap)) die("KVM_ENABLE_CAP(KVM_CAP_HYPERV_SYNIC)");
}

/* One KVM_GET/SET_MSRS (req) of the n entries e on fd; its return value, which the caller judges
 * (or, for a planted bug, does not): the count of entries done, or -1 with errno. What the kernel
 * wrote back is copied into e either way. */
static inline int msrs(int fd, unsigned long req, struct kvm_msr_entry *e, unsigned n) {
  struct kvm_msrs *m = calloc(1, sizeof *m + n * sizeof *e);
  m->nmsrs = n;
  memcpy(m->entries, e, n * sizeof *e);
  int r = ioctl(fd, req, m);
  memcpy(e, m->entries, n * sizeof *e);
  free(m);
  return r;
}

/* The correct way: every entry in batches of CHUNK, each count checked; a failed batch, or a short
 * one (the entry it stopped at named), ends the program. name is the ioctl's, for the message. */
static inline void chunked(int fd, unsigned long req, const char *name, struct kvm_msr_entry *e, unsigned n) {
  for (unsigned i = 0; i < n; i += CHUNK) {
    unsigned k = n - i < CHUNK ? n - i : CHUNK;
    int r = msrs(fd, req, e + i, k);
    if (r < 0) die(name);
    if (r != (int)k) { fprintf(stderr, "%s: %d of %u, stopped at 0x%x\n", name, r, k, e[i + r].index); exit(1); }
  }
}

#endif
