/*
 * Planted bug, class 3: "restore order". One vCPU whose guest armed a TSC deadline ~1 s ahead.
 *   ser-order save FILE               LAPIC (LVT timer in TSC-deadline mode), SREGS, and one
 *                                     KVM_GET_MSRS of IA32_TSC, TSC_DEADLINE, ARCH_CAPABILITIES (when
 *                                     a feature MSR) and SynIC's SCONTROL, SIMP (when SynIC is there)
 *   ser-order restore FILE VARIANT    a new VM restored in the order VARIANT says:
 *     good        SET_CPUID2, ENABLE_CAP(SYNIC), SET_SREGS, SET_LAPIC, SET_MSRS (TSC first,
 *                 TSC_DEADLINE last), KVM_RUN
 *     lapic-late  SET_MSRS before SET_LAPIC (the deadline is written while the LVT timer is one-shot)
 *     tsc-late    TSC_DEADLINE in one SET_MSRS, IA32_TSC in a later one
 *     cpuid-late  SET_MSRS (ARCH_CAPABILITIES too) before SET_CPUID2
 *     synic-late  SynIC's MSRs before ENABLE_CAP(KVM_CAP_HYPERV_SYNIC)
 *     run-first   KVM_RUN before SET_MSRS, ARCH_CAPABILITIES restored with one bit cleared
 * A short SET_MSRS count is printed and passed over, as most VMMs do. KVM_RUN's result is ignored.
 */
#define _GNU_SOURCE
#include <errno.h>
#include "ser-common.h"

#define TSC0 0x10000000000ull
#define LVTT 0x320
#define SPIV 0xf0

struct saved {
  struct kvm_lapic_state lapic;
  struct kvm_sregs sregs;
  unsigned synic, n;
  struct kvm_msr_entry e[8];
};

static int kvm, vcpu;
static struct kvm_cpuid2 *cpuid;

/* The VM with the reset-vector slot (KVM_RUN must enter the guest: run-first), one vCPU, and the
 * CPUID for it with the TSC-deadline timer; KVM_SET_CPUID2 is left to the restore's order. */
static void setup(void) {
  int vm = open_vm(&kvm);
  reset_vector_slot(vm);
  vcpu = create_vcpu(vm, 0);
  cpuid = supported_cpuid(kvm);
  offer_tsc_deadline(kvm, cpuid);
}

static void set_cpuid(void) { if (ioctl(vcpu, KVM_SET_CPUID2, cpuid)) die("KVM_SET_CPUID2"); }

/* Restore a batch as most VMMs do: a short count is printed, and the restore goes on. */
static void set_batch(struct kvm_msr_entry *e, unsigned n) {
  if (n == 0) return;
  int r = msrs(vcpu, KVM_SET_MSRS, e, n);
  if (r < 0) die("KVM_SET_MSRS");
  if (r < (int)n) printf("KVM_SET_MSRS set %d of %u MSRs, stopped at 0x%x; going on\n", r, n, e[r].index);
}

static struct saved s;
static void set_sregs(void) { if (ioctl(vcpu, KVM_SET_SREGS, &s.sregs)) die("KVM_SET_SREGS"); }
static void set_lapic(void) { if (ioctl(vcpu, KVM_SET_LAPIC, &s.lapic)) die("KVM_SET_LAPIC"); }

static char ran[64] = "not run";
static void run_once(void) { /* the result is not looked at; it is only told */
  int r = run_vcpu(vcpu);
  snprintf(ran, sizeof ran, "KVM_RUN %d%s%s", r, r < 0 ? " " : "", r < 0 ? strerror(errno) : "");
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s save FILE | restore FILE VARIANT\n", argv[0]); return 2; }
  setup();
  int have_synic = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_HYPERV_SYNIC) > 0;
  if (!strcmp(argv[1], "save")) {
    set_cpuid();
    s.synic = have_synic;
    if (s.synic) enable_synic(vcpu);
    struct { struct kvm_msr_list h; unsigned idx[256]; } feat = {.h.nmsrs = 256};
    if (ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, &feat)) die("KVM_GET_MSR_FEATURE_INDEX_LIST");
    int arch_cap = 0;
    for (unsigned i = 0; i < feat.h.nmsrs; i++) arch_cap |= feat.idx[i] == 0x10a;
    /* The guest: the LVT timer in TSC-deadline mode, vector 0xec, unmasked; a deadline 1 s ahead. */
    if (ioctl(vcpu, KVM_GET_LAPIC, &s.lapic)) die("KVM_GET_LAPIC");
    unsigned lvtt = 2u << 17 | 0xec, spiv = 0x1ff; /* and the APIC software-enabled */
    memcpy(s.lapic.regs + LVTT, &lvtt, 4);
    memcpy(s.lapic.regs + SPIV, &spiv, 4);
    if (ioctl(vcpu, KVM_SET_LAPIC, &s.lapic)) die("KVM_SET_LAPIC");
    /* The deadline counts from the TSC as it reads back: kvm_pvm keeps the host's TSC and drops
     * host writes of IA32_TSC, and a deadline in the past would fire at once. */
    struct kvm_msr_entry g[] = {{.index = 0x10, .data = TSC0}, {.index = 0x6e0}, {.index = 0x40000083, .data = 0x12345000 | 1}};
    if (msrs(vcpu, KVM_SET_MSRS, g, 1) != 1 || msrs(vcpu, KVM_GET_MSRS, g, 1) != 1) die("KVM_SET_MSRS IA32_TSC");
    g[1].data = g[0].data + 2000000000ull;
    if (msrs(vcpu, KVM_SET_MSRS, g + 1, s.synic ? 2 : 1) != (s.synic ? 2 : 1)) die("KVM_SET_MSRS (the guest's)");
    /* The save. */
    if (ioctl(vcpu, KVM_GET_LAPIC, &s.lapic)) die("KVM_GET_LAPIC");
    if (ioctl(vcpu, KVM_GET_SREGS, &s.sregs)) die("KVM_GET_SREGS");
    s.e[s.n++].index = 0x10;
    s.e[s.n++].index = 0x6e0;
    if (arch_cap) s.e[s.n++].index = 0x10a;
    if (s.synic) { s.e[s.n++].index = 0x40000080; s.e[s.n++].index = 0x40000083; }
    if (msrs(vcpu, KVM_GET_MSRS, s.e, s.n) != (int)s.n) die("KVM_GET_MSRS");
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(&s, sizeof s, 1, f) != 1 || fclose(f)) die(argv[2]);
    memcpy(&lvtt, s.lapic.regs + LVTT, 4);
    printf("saved LVTT 0x%x, %u MSRs: TSC 0x%llx, TSC_DEADLINE 0x%llx%s, synic %s\n", lvtt, s.n, (unsigned long long)s.e[0].data,
           (unsigned long long)s.e[1].data, arch_cap ? "" : ", no ARCH_CAPABILITIES", s.synic ? "on" : "off");
    return 0;
  }
  if (strcmp(argv[1], "restore") || argc < 4) { fprintf(stderr, "usage: %s restore FILE VARIANT\n", argv[0]); return 2; }
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(&s, sizeof s, 1, f) != 1 || s.n > 8) die(argv[2]);
  fclose(f);
  const char *v = argv[3];
  int synic = s.synic && have_synic;
  /* The restore batch: IA32_TSC first, ARCH_CAPABILITIES, SynIC's, TSC_DEADLINE last. */
  struct kvm_msr_entry b[8];
  unsigned n = 0, deadline = 0;
  for (unsigned i = 0; i < s.n; i++)
    if (s.e[i].index == 0x10) b[n++] = s.e[i];
  for (unsigned i = 0; i < s.n; i++) {
    if (s.e[i].index == 0x10 || s.e[i].index == 0x6e0) continue;
    if (s.e[i].index >> 9 == 0x40000000 >> 9 && !synic) continue;
    b[n] = s.e[i];
    if (b[n].index == 0x10a && !strcmp(v, "run-first")) { /* a value other than the destination's */
      unsigned long long d = b[n].data;
      b[n].data = d & 1 ? d & ~1ull : d & (d - 1);
      if (d) printf("ARCH_CAPABILITIES restored as 0x%llx, not 0x%llx\n", (unsigned long long)b[n].data, d);
      else printf("ARCH_CAPABILITIES was saved as 0: no bit to clear\n");
    }
    n++;
  }
  for (unsigned i = 0; i < s.n; i++)
    if (s.e[i].index == 0x6e0) { deadline = n; b[n++] = s.e[i]; }
  if (!strcmp(v, "good")) {
    set_cpuid(); if (synic) enable_synic(vcpu);
    set_sregs(), set_lapic();
    set_batch(b, n); run_once();
  } else if (!strcmp(v, "lapic-late")) {
    set_cpuid(); if (synic) enable_synic(vcpu);
    set_sregs();
    set_batch(b, n);
    set_lapic(), run_once();
  } else if (!strcmp(v, "tsc-late")) {
    set_cpuid(); if (synic) enable_synic(vcpu);
    set_sregs(), set_lapic();
    set_batch(b + 1, n - 1); /* everything but IA32_TSC: the deadline against the new VM's TSC */
    set_batch(b, 1);
    run_once();
  } else if (!strcmp(v, "cpuid-late")) {
    if (synic) enable_synic(vcpu);
    set_sregs(), set_lapic();
    set_batch(b, n);
    set_cpuid(); run_once();
  } else if (!strcmp(v, "synic-late")) {
    set_cpuid();
    set_sregs(), set_lapic();
    set_batch(b, n);
    if (synic) enable_synic(vcpu);
    run_once();
  } else if (!strcmp(v, "run-first")) {
    set_cpuid(); if (synic) enable_synic(vcpu);
    set_sregs(), set_lapic();
    run_once(); set_batch(b, n);
  } else { fprintf(stderr, "%s: unknown restore variant %s\n", argv[0], v); return 2; }
  struct kvm_msr_entry back[2] = {{.index = 0x10}, {.index = 0x6e0}};
  int r = msrs(vcpu, KVM_GET_MSRS, back, 2);
  printf("restored %s: %u MSRs, TSC_DEADLINE 0x%llx restored, reads back 0x%llx (TSC 0x%llx, read %d), synic %s, %s\n", v, n,
         (unsigned long long)b[deadline].data, (unsigned long long)back[1].data, (unsigned long long)back[0].data, r, synic ? "on" : "off", ran);
  return 0;
}
