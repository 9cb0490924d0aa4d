/*
 * Planted bug, class 1: "state the guest set, never saved" (early Firecracker saved exactly the
 * MSRs of KVM_GET_MSR_INDEX_LIST, and so lost the MTRRs, the MCE banks, SynIC's pages, ...).
 *   ser-unsaved save FILE [full]   one vCPU; "the guest" writes MTRRs, MC0_CTL, POLL_CONTROL, SynIC
 *                                  and XSS MSRs (the host does it: kvmsr runs no guest code); the
 *                                  save reads only the listed MSRs, or with "full" those written
 *                                  too and every MSR of the families KVM keeps off its list
 *   ser-unsaved restore FILE       a new VM set up the same way, every saved MSR restored
 * FILE: u32 count, then that many struct kvm_msr_entry.
 */
#define _GNU_SOURCE
#include "ser-common.h"

#define MAXMSRS 1024

struct vm { int kvm, vm, vcpu, synic; unsigned maxphyaddr, banks; unsigned long long mcg_cap; };

static struct vm setup(void) {
  struct vm v;
  v.vm = open_vm(&v.kvm);
  v.vcpu = create_vcpu(v.vm, 0);
  struct kvm_cpuid2 *c = supported_cpuid(v.kvm);
  if (ioctl(v.vcpu, KVM_SET_CPUID2, c)) die("KVM_SET_CPUID2");
  v.maxphyaddr = 36;
  for (unsigned i = 0; i < c->nent; i++)
    if (c->entries[i].function == 0x80000008) v.maxphyaddr = c->entries[i].eax & 0xff;
  free(c);
  /* MCE: what the host supports, with 4 banks (the supported value carries no bank count). */
  unsigned long long mcg_cap;
  if (ioctl(v.kvm, KVM_X86_GET_MCE_CAP_SUPPORTED, &mcg_cap)) die("KVM_X86_GET_MCE_CAP_SUPPORTED");
  unsigned banks = mcg_cap & 0xff;
  if (banks == 0 || banks > 4) banks = 4;
  mcg_cap = (mcg_cap & ~0xffull) | banks;
  v.banks = banks, v.mcg_cap = mcg_cap;
  if (ioctl(v.vcpu, KVM_X86_SETUP_MCE, &mcg_cap)) die("KVM_X86_SETUP_MCE");
  v.synic = ioctl(v.kvm, KVM_CHECK_EXTENSION, KVM_CAP_HYPERV_SYNIC) > 0;
  if (v.synic) enable_synic(v.vcpu);
  return v;
}

static void add(struct kvm_msr_entry *e, unsigned *n, unsigned index) {
  for (unsigned j = 0; j < *n; j++)
    if (e[j].index == index) return;
  e[(*n)++] = (struct kvm_msr_entry){.index = index};
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s save FILE [full] | restore FILE\n", argv[0]); return 2; }
  struct vm v = setup();
  static struct kvm_msr_entry saved[MAXMSRS];
  unsigned n = 0;
  if (!strcmp(argv[1], "save")) {
    int full = argc > 3 && !strcmp(argv[3], "full");
    struct { struct kvm_msr_list h; unsigned idx[MAXMSRS]; } list = {.h.nmsrs = MAXMSRS};
    if (ioctl(v.kvm, KVM_GET_MSR_INDEX_LIST, &list)) die("KVM_GET_MSR_INDEX_LIST");
    int xss_listed = 0;
    for (unsigned i = 0; i < list.h.nmsrs; i++) xss_listed |= list.idx[i] == 0xda0;
    unsigned long long xss = 0;
    if (xss_listed) { /* a supported XSS bit, from CPUID.(EAX=0xd,ECX=1):ECX/EDX, else 0 */
      struct kvm_cpuid2 *c = supported_cpuid(v.kvm);
      for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == 0xd && c->entries[i].index == 1) {
          unsigned long long s = c->entries[i].ecx | (unsigned long long)c->entries[i].edx << 32;
          xss = s & -s;
        }
      free(c);
    }
    /* What the guest wrote (the host writes it), one entry at a time; a refused one is skipped.
     * MTRRphysMask0: 2 GiB of write-back at 0, within the vCPU's MAXPHYADDR, valid (bit 11). */
    unsigned long long mask = (((1ull << v.maxphyaddr) - 1) & ~((1ull << 31) - 1)) | 0x800;
    struct kvm_msr_entry g[] = {
        {.index = 0x2ff, .data = 0xc06}, {.index = 0x200, .data = 0x6}, {.index = 0x201, .data = mask},
        {.index = 0x250, .data = 0x0606060606060606ull}, {.index = 0x17a, .data = 0}, {.index = 0x400, .data = ~0ull},
        {.index = 0x4b564d05, .data = 0}, {.index = 0x40000080, .data = 1}, {.index = 0x40000083, .data = 0x12345000 | 1},
        {.index = 0xda0, .data = xss},
    };
    struct kvm_msr_entry written[sizeof g / sizeof g[0]];
    unsigned nw = 0;
    for (unsigned i = 0; i < sizeof g / sizeof g[0]; i++) {
      if (g[i].index >> 9 == 0x40000000 >> 9 && !v.synic) continue; /* SynIC's MSRs only with SynIC */
      if (g[i].index == 0xda0 && !xss_listed) continue;
      int r = msrs(v.vcpu, KVM_SET_MSRS, &g[i], 1);
      if (r != 1) { printf("note: KVM refused MSR 0x%x = 0x%llx (%d); skipped\n", g[i].index, (unsigned long long)g[i].data, r); continue; }
      written[nw++] = g[i];
    }
    /* The save: exactly the listed MSRs (the planted bug); with "full" also what the guest wrote
     * and, as QEMU does, the families KVM keeps off its list by the features this vCPU has: the
     * MTRRs, MCG and the MCE banks set up (CTL2 with CMCI), SynIC and its timers when enabled. */
    for (unsigned i = 0; i < list.h.nmsrs; i++) add(saved, &n, list.idx[i]);
    if (full) {
      for (unsigned i = 0; i < nw; i++) add(saved, &n, written[i].index);
      const unsigned fam[][2] = {{0x200, 0x20f}, {0x250, 0x250}, {0x258, 0x259}, {0x268, 0x26f}, {0x2ff, 0x2ff}, {0x17a, 0x17a},
                                 {0x17b, v.mcg_cap & 1 << 8 ? 0x17b : 0}, {0x400, 0x400 + 4 * v.banks - 1},
                                 {0x280, v.mcg_cap & 1 << 10 ? 0x280 + v.banks - 1 : 0}, {0x40000080, v.synic ? 0x40000084 : 0},
                                 {0x40000090, v.synic ? 0x4000009f : 0}, {0x400000b0, v.synic ? 0x400000b7 : 0}};
      for (unsigned f = 0; f < sizeof fam / sizeof fam[0]; f++)
        for (unsigned i = fam[f][0]; i <= fam[f][1]; i++) add(saved, &n, i);
    }
    chunked(v.vcpu, KVM_GET_MSRS, "KVM_GET_MSRS", saved, n);
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(&n, sizeof n, 1, f) != 1 || fwrite(saved, sizeof saved[0], n, f) != n || fclose(f)) die(argv[2]);
    printf("saved %u MSRs (%s), the guest wrote %u, synic %s\n", n, full ? "listed, written, and the families off the list" : "listed only", nw, v.synic ? "on" : "off");
    return 0;
  }
  if (strcmp(argv[1], "restore")) { fprintf(stderr, "%s: save or restore, not %s\n", argv[0], argv[1]); return 2; }
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(&n, sizeof n, 1, f) != 1 || n > MAXMSRS || fread(saved, sizeof saved[0], n, f) != n) die(argv[2]);
  fclose(f);
  chunked(v.vcpu, KVM_SET_MSRS, "KVM_SET_MSRS", saved, n);
  printf("restored %u MSRs, synic %s\n", n, v.synic ? "on" : "off");
  return 0;
}
