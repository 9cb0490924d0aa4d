// The guest CPUID features KVM's MSR rules consult, as bits of one integer per vCPU so a rule
// checks a capability without hashing. guest_cpu_cap_has(): set in the guest CPUID given with
// KVM_SET_CPUID2 and supported by KVM (KVM_GET_SUPPORTED_CPUID).
import type { CpuidEntry2 } from '../../abi/codecs.js';
import { findCpuid } from '../profile.js';

type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';
interface CapDef {
  leaf: number;
  sub: number;
  reg: Reg;
  bit: number;
}
const DEFS = {
  PDCM: { leaf: 1, sub: 0, reg: 'ecx', bit: 15 },
  XMM3: { leaf: 1, sub: 0, reg: 'ecx', bit: 0 },
  MWAIT: { leaf: 1, sub: 0, reg: 'ecx', bit: 3 },
  VMX: { leaf: 1, sub: 0, reg: 'ecx', bit: 5 },
  TSC_DEADLINE_TIMER: { leaf: 1, sub: 0, reg: 'ecx', bit: 24 },
  XSAVE: { leaf: 1, sub: 0, reg: 'ecx', bit: 26 },
  TSC_ADJUST: { leaf: 7, sub: 0, reg: 'ebx', bit: 1 },
  RDPID: { leaf: 7, sub: 0, reg: 'ecx', bit: 22 },
  LA57: { leaf: 7, sub: 0, reg: 'ecx', bit: 16 },
  ARCH_CAPABILITIES: { leaf: 7, sub: 0, reg: 'edx', bit: 29 },
  SPEC_CTRL: { leaf: 7, sub: 0, reg: 'edx', bit: 26 },
  FLUSH_L1D: { leaf: 7, sub: 0, reg: 'edx', bit: 28 },
  XSAVES: { leaf: 0xd, sub: 1, reg: 'eax', bit: 3 },
  RDTSCP: { leaf: 0x80000001, sub: 0, reg: 'edx', bit: 27 },
  LM: { leaf: 0x80000001, sub: 0, reg: 'edx', bit: 29 },
  NX: { leaf: 0x80000001, sub: 0, reg: 'edx', bit: 20 },
  SVM: { leaf: 0x80000001, sub: 0, reg: 'ecx', bit: 2 },
  AMD_IBPB: { leaf: 0x80000008, sub: 0, reg: 'ebx', bit: 12 },
  AMD_SSBD: { leaf: 0x80000008, sub: 0, reg: 'ebx', bit: 24 },
  VIRT_SSBD: { leaf: 0x80000008, sub: 0, reg: 'ebx', bit: 25 },
  // SVM (svm-ops.ts)
  TSCRATEMSR: { leaf: 0x8000000a, sub: 0, reg: 'edx', bit: 4 },
  PERFCTR_CORE: { leaf: 0x80000001, sub: 0, reg: 'ecx', bit: 23 },
  PERFMON_V2: { leaf: 0x80000022, sub: 0, reg: 'eax', bit: 0 },
  AMD_IBRS: { leaf: 0x80000008, sub: 0, reg: 'ebx', bit: 14 },
  AMD_STIBP: { leaf: 0x80000008, sub: 0, reg: 'ebx', bit: 15 },
  // CET and AMX (common code)
  SHSTK: { leaf: 7, sub: 0, reg: 'ecx', bit: 7 },
  IBT: { leaf: 7, sub: 0, reg: 'edx', bit: 20 },
  XFD: { leaf: 0xd, sub: 1, reg: 'eax', bit: 4 },
  // EFER bits (__kvm_valid_efer)
  FXSR_OPT: { leaf: 0x80000001, sub: 0, reg: 'edx', bit: 25 },
  AUTOIBRS: { leaf: 0x80000021, sub: 0, reg: 'eax', bit: 8 },
  X2APIC: { leaf: 1, sub: 0, reg: 'ecx', bit: 21 },
} as const satisfies Record<string, CapDef>;

export type CapName = keyof typeof DEFS;
export const CAP_NAMES = Object.keys(DEFS) as CapName[];
// Capability bits are tested with 32-bit `&`: there must be at most 31 of them.
if (CAP_NAMES.length > 31) throw new Error(`too many CPUID capabilities (${CAP_NAMES.length}) for one int32`);
/** The bit of a capability in Vcpu.capBits. */
export const CAP: Readonly<Record<CapName, number>> = Object.fromEntries(
  CAP_NAMES.map((n, i) => [n, 2 ** i]),
) as Record<CapName, number>;

/** The capability bits set in a CPUID table. */
export function capBitsOf(entries: readonly CpuidEntry2[]): number {
  let bits = 0;
  for (const name of CAP_NAMES) {
    const d: CapDef = DEFS[name];
    const e = findCpuid(entries, d.leaf, d.sub);
    if (e && (e[d.reg] >>> d.bit) & 1) bits += CAP[name];
  }
  return bits;
}

/** Reads the 12-byte vendor string of leaf 0. */
export function cpuidVendor(entries: readonly CpuidEntry2[]): string {
  const e = findCpuid(entries, 0, 0);
  if (!e) return '';
  const b = Buffer.alloc(12);
  b.writeUInt32LE(e.ebx >>> 0, 0);
  b.writeUInt32LE(e.edx >>> 0, 4);
  b.writeUInt32LE(e.ecx >>> 0, 8);
  return b.toString('latin1');
}

/** is_amd_compatible in kvm_vcpu_after_set_cpuid: AMD, Hygon, or the old "AMDisbetter!". */
export function isAmdCompatibleVendor(vendor: string): boolean {
  return vendor === 'AuthenticAMD' || vendor === 'AMDisbetter!' || vendor === 'HygonGenuine';
}
