/*
 * Planted bug, class 2: "a failed or partial KVM_GET/SET_MSRS taken as success".
 *   ser-failed save FILE            correct: the listed MSRs and the MTRRs in chunks of 64, every
 *                                   count checked
 *   ser-failed save FILE e2big      the same in one KVM_GET_MSRS, padded with repeats to 260 entries
 *                                   (E2BIG: msr_io takes fewer than 256); its result
 *                                   is ignored and the untouched buffer saved
 *   ser-failed save FILE short      one KVM_GET_MSRS with 0x12345678 as its 4th entry: the kernel
 *                                   stops there; the count is ignored and the whole buffer saved
 *   ser-failed save FILE wrongfd    KVM_GET_MSRS on the VM fd (ENOTTY), the error ignored
 *   ser-failed restore FILE         every saved entry in chunks of 64, dies on a short count
 *   ser-failed restore FILE faulty  one MSR at a time, a refused one printed as "Detected faulty
 *                                   MSR" and passed over (cloud-hypervisor's path); the saved
 *                                   IA32_CR_PAT is first made 0x0202020202020202 (type 2 is reserved)
 *                                   and the saved LSTAR 0x8000000000000000 (not canonical)
 * FILE: u32 count, then that many struct kvm_msr_entry.
 */
#define _GNU_SOURCE
#include <errno.h>
#include "ser-common.h"

#define MAXMSRS 1024

static int kvm, vm;

static int make_vcpu(void) {
  vm = open_vm(&kvm);
  int vcpu = create_vcpu(vm, 0);
  struct kvm_cpuid2 *c = supported_cpuid(kvm);
  if (ioctl(vcpu, KVM_SET_CPUID2, c)) die("KVM_SET_CPUID2");
  free(c);
  return vcpu;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s save FILE [e2big|short|wrongfd] | restore FILE [faulty]\n", argv[0]); return 2; }
  const char *variant = argc > 3 ? argv[3] : "";
  int vcpu = make_vcpu();
  static struct kvm_msr_entry e[MAXMSRS];
  unsigned n = 0;
  if (!strcmp(argv[1], "save")) {
    struct { struct kvm_msr_list h; unsigned idx[MAXMSRS]; } list = {.h.nmsrs = MAXMSRS};
    if (ioctl(kvm, KVM_GET_MSR_INDEX_LIST, &list)) die("KVM_GET_MSR_INDEX_LIST");
    for (unsigned i = 0; i < list.h.nmsrs; i++) e[n++] = (struct kvm_msr_entry){.index = list.idx[i]};
    int r = 0, err = 0;
    if (!strcmp(variant, "e2big") || !*variant) { /* the save's set: the listed MSRs and the MTRRs */
      static const unsigned mtrr[] = {0x250, 0x258, 0x259, 0x2ff};
      for (unsigned i = 0x200; i <= 0x20f; i++) e[n++].index = i;
      for (unsigned i = 0; i < 4; i++) e[n++].index = mtrr[i];
      for (unsigned i = 0x268; i <= 0x26f; i++) e[n++].index = i;
    }
    if (!strcmp(variant, "e2big")) {
      for (unsigned i = 0; n < 260; i++) e[n++].index = e[i].index; /* padded with repeats */
      r = msrs(vcpu, KVM_GET_MSRS, e, n); /* the planted bug: r is -1 (E2BIG), not looked at */
    } else if (!strcmp(variant, "short")) {
      memmove(e + 4, e + 3, (n - 3) * sizeof e[0]);
      e[3] = (struct kvm_msr_entry){.index = 0x12345678};
      n++;
      r = msrs(vcpu, KVM_GET_MSRS, e, n); /* the planted bug: r is 3, not n */
    } else if (!strcmp(variant, "wrongfd")) {
      r = msrs(vm, KVM_GET_MSRS, e, n); /* the planted bug: the VM fd (ENOTTY), not looked at */
    } else if (!*variant) {
      chunked(vcpu, KVM_GET_MSRS, "KVM_GET_MSRS", e, n);
      r = n;
    } else { fprintf(stderr, "%s: unknown save variant %s\n", argv[0], variant); return 2; }
    if (r < 0) err = errno;
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(&n, sizeof n, 1, f) != 1 || fwrite(e, sizeof e[0], n, f) != n || fclose(f)) die(argv[2]);
    printf("saved %u MSRs%s%s (KVM_GET_MSRS returned %d%s%s)\n", n, *variant ? ", " : "", variant, r, err ? ": " : "", err ? strerror(err) : "");
    return 0;
  }
  if (strcmp(argv[1], "restore")) { fprintf(stderr, "%s: save or restore, not %s\n", argv[0], argv[1]); return 2; }
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(&n, sizeof n, 1, f) != 1 || n > MAXMSRS || fread(e, sizeof e[0], n, f) != n) die(argv[2]);
  fclose(f);
  if (!strcmp(variant, "faulty")) {
    /* Plant the refusals: PAT memory type 2 is reserved (kvm_pat_valid; kvm_pvm stores any PAT,
     * so there it passes), and a non-canonical LSTAR, which every KVM refuses. */
    for (unsigned i = 0; i < n; i++) {
      if (e[i].index == 0x277) e[i].data = 0x0202020202020202ull;
      if (e[i].index == 0xc0000082) e[i].data = 0x8000000000000000ull;
    }
    unsigned ok = 0;
    for (unsigned i = 0; i < n; i++) {
      if (msrs(vcpu, KVM_SET_MSRS, &e[i], 1) == 1) ok++;
      else printf("Detected faulty MSR 0x%x while setting MSRs\n", e[i].index);
    }
    printf("restored %u of %u MSRs one at a time, the faulty ones passed over\n", ok, n);
    return 0;
  }
  if (*variant) { fprintf(stderr, "%s: unknown restore variant %s\n", argv[0], variant); return 2; }
  chunked(vcpu, KVM_SET_MSRS, "KVM_SET_MSRS", e, n);
  printf("restored %u MSRs\n", n);
  return 0;
}
