// Sizes and field offsets of the KVM UAPI structs kvmsr reads and writes (x86_64).
// test/abi-layout.test.ts compares every number here with /usr/include/linux/kvm.h through gcc.

export const KVM_MSR_ENTRY_LAYOUT = { size: 16, index: 0, reserved: 4, data: 8 } as const;
export const KVM_MSRS_LAYOUT = { size: 8, nmsrs: 0, pad: 4, entries: 8 } as const;
export const KVM_MSR_LIST_LAYOUT = { size: 4, nmsrs: 0, indices: 4 } as const;
export const KVM_MSR_FILTER_RANGE_LAYOUT = { size: 24, flags: 0, nmsrs: 4, base: 8, bitmap: 16 } as const;
export const KVM_MSR_FILTER_LAYOUT = { size: 392, flags: 0, ranges: 8 } as const;
export const KVM_CPUID_ENTRY2_LAYOUT = {
  size: 40,
  function: 0,
  index: 4,
  flags: 8,
  eax: 12,
  ebx: 16,
  ecx: 20,
  edx: 24,
  padding: 28,
} as const;
export const KVM_CPUID2_LAYOUT = { size: 8, nent: 0, padding: 4, entries: 8 } as const;
export const KVM_ENABLE_CAP_LAYOUT = { size: 104, cap: 0, flags: 4, args: 8, pad: 40 } as const;
/** struct kvm_sregs: the fields that carry MSR state (segment bases are kvm_segment.base, at +0). */
export const KVM_SREGS_LAYOUT = { size: 312, fs: 72, gs: 96, efer: 264, apicBase: 272 } as const;
/** The part of struct kvm_run that MSR exits use (exit_reason and the `msr` member of the exit union). */
export const KVM_RUN_LAYOUT = {
  exitReason: 8,
  msrError: 32,
  msrReason: 40,
  msrIndex: 44,
  msrData: 48,
} as const;

/** MAX_IO_MSRS in arch/x86/kvm/x86.c: msr_io refuses nmsrs >= this with E2BIG. */
export const MAX_IO_MSRS = 256;
/** KVM_MAX_CPUID_ENTRIES in arch/x86/include/asm/kvm_host.h. */
export const KVM_MAX_CPUID_ENTRIES = 256;
export const KVM_MSR_FILTER_MAX_RANGES = 16;
export const KVM_MSR_FILTER_MAX_BITMAP_SIZE = 0x600;
export const KVM_MSR_FILTER_READ = 1 << 0;
export const KVM_MSR_FILTER_WRITE = 1 << 1;
export const KVM_MSR_FILTER_DEFAULT_ALLOW = 0;
export const KVM_MSR_FILTER_DEFAULT_DENY = 1 << 0;
export const KVM_MSR_EXIT_REASON_INVAL = 1 << 0;
export const KVM_MSR_EXIT_REASON_UNKNOWN = 1 << 1;
export const KVM_MSR_EXIT_REASON_FILTER = 1 << 2;
export const KVM_API_VERSION = 12;
