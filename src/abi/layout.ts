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
/**
 * struct kvm_run: the fields KVM_RUN reads and writes around a run (immediate_exit, exit_reason, the
 * post-run fields post_kvm_run_save fills, the sync-regs block) and the `msr` member of the exit union.
 */
export const KVM_RUN_LAYOUT = {
  requestInterruptWindow: 0,
  immediateExit: 1,
  exitReason: 8,
  readyForInterruptInjection: 12,
  ifFlag: 13,
  flags: 14,
  cr8: 16,
  apicBase: 24,
  msrError: 32,
  msrReason: 40,
  msrIndex: 44,
  msrData: 48,
  kvmValidRegs: 288,
  kvmDirtyRegs: 296,
  /** struct kvm_sync_regs (s.regs): kvm_regs, then kvm_sregs, then kvm_vcpu_events. */
  syncRegs: 304,
  syncSregs: 448,
  syncEvents: 760,
} as const;
/** exit_reason values KVM_RUN itself gives (include/uapi/linux/kvm.h). */
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_INTR = 10;
/** kvm_run.flags (arch/x86/include/uapi/asm/kvm.h). */
export const KVM_RUN_X86_SMM = 1 << 0;
/** Linux 6.11 and later (not in every linux/kvm.h the layout test compiles against). */
export const KVM_RUN_X86_GUEST_MODE = 1 << 1;
/** kvm_valid_regs / kvm_dirty_regs bits: KVM_SYNC_X86_REGS, _SREGS, _EVENTS. */
export const KVM_SYNC_X86_VALID_FIELDS = 0x7;
/** struct kvm_guest_debug: control, pad, arch.debugreg[8]. */
export const KVM_GUEST_DEBUG_LAYOUT = { size: 72, control: 0, pad: 4, debugreg: 8 } as const;
export const KVM_GUESTDBG_ENABLE = 0x1;
export const KVM_GUESTDBG_SINGLESTEP = 0x2;
export const KVM_GUESTDBG_USE_SW_BP = 0x10000;
export const KVM_GUESTDBG_USE_HW_BP = 0x20000;
export const KVM_GUESTDBG_INJECT_DB = 0x40000;
export const KVM_GUESTDBG_INJECT_BP = 0x80000;
export const KVM_GUESTDBG_BLOCKIRQ = 0x100000;

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
