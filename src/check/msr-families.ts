// The MSR families a save must carry and a guest is told to use: each with the CPUID bit that
// tells the guest (so a guest that follows CPUID writes it), and the kernel function that keeps
// its state. KVM_GET_MSR_INDEX_LIST lists none of the MTRRs or MCE banks, and lists the others
// only on some releases, so `check` asks this table, not the host's lists, what a save has to hold.
import { bit, type CpuidModel } from './cpuid-model.js';

export interface MsrFamily {
  name: string;
  /** The kernel function that holds the state. */
  kernel: string;
  has(index: number, banks: number): boolean;
  /** Whether the guest's CPUID tells it to use this MSR of the family. */
  advertised(cpuid: CpuidModel, index: number): boolean;
  /**
   * How bad an unsaved one is when the guest can change it: an error where a guest that follows
   * its CPUID uses it (it breaks after the restore), a warning for the rarely used feature switches
   * (QEMU 7.2 migrates neither MISC_FEATURES_ENABLES nor HWCR).
   */
  level: 'error' | 'warning';
}

/** KVM's PV MSRs and the KVM_FEATURE_* bit of CPUID 0x40000001.EAX that announces each. */
const KVM_PV: ReadonlyMap<number, number> = new Map([
  [0x11, 0], // MSR_KVM_WALL_CLOCK: KVM_FEATURE_CLOCKSOURCE
  [0x12, 0], // MSR_KVM_SYSTEM_TIME
  [0x4b564d00, 3], // MSR_KVM_WALL_CLOCK_NEW: KVM_FEATURE_CLOCKSOURCE2
  [0x4b564d01, 3],
  [0x4b564d02, 4], // MSR_KVM_ASYNC_PF_EN: KVM_FEATURE_ASYNC_PF
  [0x4b564d03, 5], // MSR_KVM_STEAL_TIME
  [0x4b564d04, 6], // MSR_KVM_PV_EOI_EN
  [0x4b564d05, 12], // MSR_KVM_POLL_CONTROL
  [0x4b564d06, 14], // MSR_KVM_ASYNC_PF_INT
  [0x4b564d07, 14], // MSR_KVM_ASYNC_PF_ACK
  [0x4b564d08, 17], // MSR_KVM_MIGRATION_CONTROL
]);

const inRange = (i: number, lo: number, hi: number): boolean => i >= lo && i <= hi;
const isMtrr = (i: number): boolean => i === 0x2ff || inRange(i, 0x200, 0x20f) || i === 0x250 || i === 0x258 || i === 0x259 || inRange(i, 0x268, 0x26f);
const SYNIC = (i: number): boolean => inRange(i, 0x40000080, 0x40000084) || inRange(i, 0x40000090, 0x4000009f);

export const FAMILIES: readonly MsrFamily[] = [
  {
    name: 'MTRRs',
    kernel: 'kvm_mtrr_set_msr',
    has: isMtrr,
    advertised: (c) => bit(c.get(1)?.edx, 12),
    level: 'error',
  },
  {
    name: 'MCE banks',
    kernel: 'set_msr_mce (after KVM_X86_SETUP_MCE)',
    has: (i, banks) => i === 0x17a || i === 0x17b || inRange(i, 0x400, 0x400 + 4 * banks - 1) || inRange(i, 0x280, 0x280 + banks - 1),
    advertised: (c) => bit(c.get(1)?.edx, 7) && bit(c.get(1)?.edx, 14),
    level: 'error',
  },
  {
    name: 'KVM PV MSRs',
    kernel: 'kvm_set_msr_common (MSR_KVM_*)',
    has: (i) => KVM_PV.has(i),
    advertised: (c, i) => c.kvmFeature(KVM_PV.get(i) ?? -1),
    level: 'error',
  },
  {
    name: 'Hyper-V SynIC',
    kernel: 'synic_set_msr',
    has: SYNIC,
    advertised: (c) => c.hyperv('eax', 2),
    level: 'error',
  },
  {
    name: 'Hyper-V synthetic timers',
    kernel: 'stimer_set_config',
    has: (i) => inRange(i, 0x400000b0, 0x400000b7),
    advertised: (c) => c.hyperv('eax', 3),
    level: 'error',
  },
  {
    name: 'IA32_XSS',
    kernel: 'kvm_set_msr_common (MSR_IA32_XSS)',
    has: (i) => i === 0xda0,
    advertised: (c) => bit(c.get(0xd, 1)?.eax, 3),
    level: 'error',
  },
  {
    name: 'CET',
    kernel: 'kvm_set_msr_common (MSR_IA32_U_CET, MSR_IA32_PLx_SSP)',
    has: (i) => i === 0x6a0 || i === 0x6a2 || inRange(i, 0x6a4, 0x6a8),
    advertised: (c) => bit(c.get(7)?.ecx, 7) || bit(c.get(7)?.edx, 20),
    level: 'error',
  },
  {
    name: 'MISC_FEATURES_ENABLES',
    kernel: 'kvm_set_msr_common (MSR_MISC_FEATURES_ENABLES)',
    has: (i) => i === 0x140,
    advertised: () => true,
    level: 'warning',
  },
  {
    name: 'HWCR',
    kernel: 'kvm_set_msr_common (MSR_K7_HWCR)',
    has: (i) => i === 0xc0010015,
    advertised: (c) => c.vendor() === 'AuthenticAMD' || c.vendor() === 'HygonGenuine',
    level: 'warning',
  },
];

/** The family of an MSR, and whether the guest is told to use it. */
export function familyOf(index: number, banks: number): MsrFamily | undefined {
  return FAMILIES.find((f) => f.has(index, banks));
}

/** Every index of the families, for a vCPU with `banks` MCE banks. */
export function familyIndices(banks: number): number[] {
  const out: number[] = [0x2ff, 0x250, 0x258, 0x259, 0x17a, 0x17b, 0xda0, 0x6a0, 0x6a2, 0x140, 0xc0010015, ...KVM_PV.keys()];
  for (let i = 0x200; i <= 0x20f; i++) out.push(i);
  for (let i = 0x268; i <= 0x26f; i++) out.push(i);
  for (let i = 0x6a4; i <= 0x6a8; i++) out.push(i);
  for (let i = 0; i < banks; i++) out.push(0x400 + 4 * i, 0x401 + 4 * i, 0x402 + 4 * i, 0x403 + 4 * i, 0x280 + i);
  for (let i = 0x40000080; i <= 0x40000084; i++) out.push(i);
  for (let i = 0x40000090; i <= 0x4000009f; i++) out.push(i);
  for (let i = 0x400000b0; i <= 0x400000b7; i++) out.push(i);
  return out;
}

/**
 * MSRs that are one state under two numbers: KVM keeps MSR_KVM_SYSTEM_TIME and _NEW in
 * vcpu->arch.time, and both wall-clock MSRs in kvm->arch.wall_clock (kvm_set_msr_common).
 */
export const ALIASES: ReadonlyMap<number, number> = new Map([
  [0x12, 0x4b564d01],
  [0x4b564d01, 0x12],
  [0x11, 0x4b564d00],
  [0x4b564d00, 0x11],
]);

/**
 * MSRs KVM keeps once per VM, whichever vCPU a VMM reads or writes them on: Hyper-V's partition-wide
 * MSRs (kvm_hv_msr_partition_wide) and the KVM wall clock (kvm->arch.wall_clock). A VMM that saves
 * them on every vCPU and restores them on one loses nothing.
 */
export function isVmWide(index: number): boolean {
  return (
    index === 0x40000000 || // GUEST_OS_ID
    index === 0x40000001 || // HYPERCALL
    index === 0x40000003 || // RESET
    index === 0x40000020 || // TIME_REF_COUNT
    index === 0x40000021 || // REFERENCE_TSC
    (index >= 0x40000100 && index <= 0x40000105) || // CRASH_P0..P4, CRASH_CTL
    (index >= 0x40000106 && index <= 0x40000108) || // REENLIGHTENMENT_CONTROL, TSC_EMULATION_CONTROL/STATUS
    index === 0x40000118 || // TSC_INVARIANT_CONTROL
    (index >= 0x400000f1 && index <= 0x400000ff) || // SYNDBG_*
    index === 0x11 ||
    index === 0x4b564d00
  );
}
