/*
 * Planted bug, class 4: "time". Two vCPUs whose guest TSCs were synchronized at 0x10000000000;
 * vCPU 0's LVT timer is in TSC-deadline mode, unmasked.
 *   ser-time save FILE [deadline-zero]  KVM_GET_CLOCK, then per vCPU its LAPIC and one KVM_GET_MSRS
 *                                       of IA32_TSC and TSC_DEADLINE; the guest armed a deadline 1 s
 *                                       ahead, or with "deadline-zero" none (TSC_DEADLINE left 0)
 *   ser-time restore FILE VARIANT       a new VM: SET_CPUID2, SET_LAPIC on both vCPUs, then
 *     good     KVM_SET_CLOCK, then each vCPU's IA32_TSC and TSC_DEADLINE, back to back
 *     spread   KVM_SET_CLOCK, vCPU 0's, 1.5 s asleep, vCPU 1's (KVM no longer matches the TSCs)
 *     twice    KVM_SET_CLOCK, vCPU 0's restored twice 0.2 s apart, then vCPU 1's
 *     noclock  as good, but never KVM_SET_CLOCK
 * Every restore ends with KVM_RUN on vCPU 0. A short SET_MSRS count is printed and passed over.
 */
#define _GNU_SOURCE
#include <time.h>
#include "ser-common.h"

#define TSC0 0x10000000000ull
#define LVTT 0x320
#define SPIV 0xf0

struct saved {
  struct kvm_clock_data clock;
  struct kvm_lapic_state lapic[2];
  struct kvm_msr_entry e[2][2]; /* per vCPU: IA32_TSC, TSC_DEADLINE */
};

static int kvm, vm, vcpu[2];

/* The VM with the reset-vector slot (the restore's KVM_RUN resumes the guest) and two vCPUs, whose
 * CPUID has the TSC-deadline timer and each vCPU its own APIC ID (CPUID.1:EBX[31:24]). */
static void setup(void) {
  vm = open_vm(&kvm);
  reset_vector_slot(vm);
  struct kvm_cpuid2 *c = supported_cpuid(kvm);
  offer_tsc_deadline(kvm, c);
  for (int i = 0; i < 2; i++) {
    vcpu[i] = create_vcpu(vm, i);
    for (unsigned j = 0; j < c->nent; j++)
      if (c->entries[j].function == 1) c->entries[j].ebx = (c->entries[j].ebx & 0x00ffffff) | (unsigned)i << 24;
    if (ioctl(vcpu[i], KVM_SET_CPUID2, c)) die("KVM_SET_CPUID2");
  }
  free(c);
}

static void restore_tsc(int i, struct kvm_msr_entry *e) {
  int r = msrs(vcpu[i], KVM_SET_MSRS, e, 2);
  if (r < 0) die("KVM_SET_MSRS");
  if (r < 2) printf("KVM_SET_MSRS on vCPU %d set %d of 2, stopped at 0x%x; going on\n", i, r, e[r].index);
}

static void nap(long ms) {
  struct timespec t = {ms / 1000, ms % 1000 * 1000000L};
  while (nanosleep(&t, &t)) {}
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s save FILE [deadline-zero] | restore FILE VARIANT\n", argv[0]); return 2; }
  setup();
  struct saved s;
  memset(&s, 0, sizeof s);
  if (!strcmp(argv[1], "save")) {
    int zero = argc > 3 && !strcmp(argv[3], "deadline-zero");
    if (argc > 3 && !zero) { fprintf(stderr, "%s: unknown save variant %s\n", argv[0], argv[3]); return 2; }
    /* The guest's TSCs, synchronized (the same value, back to back). */
    for (int i = 0; i < 2; i++) {
      struct kvm_msr_entry t = {.index = 0x10, .data = TSC0};
      if (msrs(vcpu[i], KVM_SET_MSRS, &t, 1) != 1) die("KVM_SET_MSRS IA32_TSC");
    }
    if (ioctl(vm, KVM_GET_CLOCK, &s.clock)) die("KVM_GET_CLOCK");
    /* vCPU 0's LVT timer: TSC-deadline mode, vector 0xec, unmasked; the deadline 1 s ahead or none. */
    struct kvm_lapic_state l;
    if (ioctl(vcpu[0], KVM_GET_LAPIC, &l)) die("KVM_GET_LAPIC");
    unsigned lvtt = 2u << 17 | 0xec, spiv = 0x1ff; /* and the APIC software-enabled */
    memcpy(l.regs + LVTT, &lvtt, 4);
    memcpy(l.regs + SPIV, &spiv, 4);
    if (ioctl(vcpu[0], KVM_SET_LAPIC, &l)) die("KVM_SET_LAPIC");
    if (!zero) { /* 1 s past the TSC as it reads back (kvm_pvm drops host writes of IA32_TSC) */
      struct kvm_msr_entry d = {.index = 0x10};
      if (msrs(vcpu[0], KVM_GET_MSRS, &d, 1) != 1) die("KVM_GET_MSRS IA32_TSC");
      d = (struct kvm_msr_entry){.index = 0x6e0, .data = d.data + 2000000000ull};
      if (msrs(vcpu[0], KVM_SET_MSRS, &d, 1) != 1) die("KVM_SET_MSRS IA32_TSC_DEADLINE");
    }
    /* The save. */
    for (int i = 0; i < 2; i++) {
      if (ioctl(vcpu[i], KVM_GET_LAPIC, &s.lapic[i])) die("KVM_GET_LAPIC");
      s.e[i][0].index = 0x10;
      s.e[i][1].index = 0x6e0;
      if (msrs(vcpu[i], KVM_GET_MSRS, s.e[i], 2) != 2) die("KVM_GET_MSRS");
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(&s, sizeof s, 1, f) != 1 || fclose(f)) die(argv[2]);
    printf("saved kvmclock %llu (flags 0x%x); TSC 0x%llx, 0x%llx; vCPU 0's TSC_DEADLINE 0x%llx%s\n", (unsigned long long)s.clock.clock, s.clock.flags,
           (unsigned long long)s.e[0][0].data, (unsigned long long)s.e[1][0].data, (unsigned long long)s.e[0][1].data, zero ? " (none armed)" : "");
    return 0;
  }
  if (strcmp(argv[1], "restore") || argc < 4) { fprintf(stderr, "usage: %s restore FILE VARIANT\n", argv[0]); return 2; }
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(&s, sizeof s, 1, f) != 1) die(argv[2]);
  fclose(f);
  const char *v = argv[3];
  int good = !strcmp(v, "good"), spread = !strcmp(v, "spread"), twice = !strcmp(v, "twice"), noclock = !strcmp(v, "noclock");
  if (!good && !spread && !twice && !noclock) { fprintf(stderr, "%s: unknown restore variant %s\n", argv[0], v); return 2; }
  for (int i = 0; i < 2; i++)
    if (ioctl(vcpu[i], KVM_SET_LAPIC, &s.lapic[i])) die("KVM_SET_LAPIC");
  if (!noclock) {
    struct kvm_clock_data c = {.clock = s.clock.clock};
    if (ioctl(vm, KVM_SET_CLOCK, &c)) die("KVM_SET_CLOCK");
  }
  restore_tsc(0, s.e[0]);
  if (twice) { nap(200); restore_tsc(0, s.e[0]); }
  if (spread) nap(1500);
  restore_tsc(1, s.e[1]);
  struct kvm_msr_entry back[2][1] = {{{.index = 0x10}}, {{.index = 0x10}}};
  for (int i = 0; i < 2; i++)
    if (msrs(vcpu[i], KVM_GET_MSRS, back[i], 1) != 1) die("KVM_GET_MSRS");
  int run = run_vcpu(vcpu[0]); /* the guest resumed (the BSP: the AP would wait for SIPI); not looked at */
  printf("restored %s: %s; TSC now 0x%llx, 0x%llx; KVM_RUN %d\n", v, noclock ? "kvmclock not restored" : "kvmclock restored", (unsigned long long)back[0][0].data,
         (unsigned long long)back[1][0].data, run);
  return 0;
}
