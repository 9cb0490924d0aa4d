// Which CR4 bits KVM_SET_SREGS may set (x86.c kvm_is_valid_cr4, __cr4_reserved_bits in x86.h):
// none of CR4_RESERVED_BITS; none the host refuses of itself (cr4_reserved_bits, from kvm_cpu_caps,
// and the vendor's is_valid_cr4); and, once KVM_SET_CPUID2 ran, none whose feature the guest's CPUID
// lacks (cr4_guest_rsvd_bits, set in kvm_vcpu_after_set_cpuid; 0 before). The host's part is the
// profile's measurement where it has one (cr4Accepted, the `profile.cr4` case); else kvm_intel's
// and kvm_amd's come from the supported CPUID, as the kernel derives them from kvm_cpu_caps. kvm_pvm
// follows neither its supported CPUID nor a guest's (measured on v1272: LA57 offered and refused,
// SMEP not offered and taken), so without a measurement it refuses what kvmsr refused before it
// measured (bits 15 and 25 up): the profiles captured before the case existed keep their answers.
import type { CpuidEntry2 } from '../../abi/codecs.js';
import type { HostProfile } from '../profile.js';
import { findCpuid } from '../profile.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

const VME = 1 << 0, PVI = 1 << 1, TSD = 1 << 2, DE = 1 << 3, PSE = 1 << 4, PAE = 1 << 5, MCE = 1 << 6;
const PGE = 1 << 7, PCE = 1 << 8, OSFXSR = 1 << 9, OSXMMEXCPT = 1 << 10, UMIP = 1 << 11, LA57 = 1 << 12;
const VMXE = 1 << 13, FSGSBASE = 1 << 16, PCIDE = 1 << 17, OSXSAVE = 1 << 18, SMEP = 1 << 20;
const SMAP = 1 << 21, PKE = 1 << 22, CET = 1 << 23, LAM_SUP = 1 << 28;

/** ~CR4_RESERVED_BITS (SMXE, bit 15, KL and PKS are never the guest's). */
const CR4_DEFINED = VME | PVI | TSD | DE | PSE | PAE | MCE | PGE | PCE | OSFXSR | PCIDE | OSXSAVE | SMEP | FSGSBASE | OSXMMEXCPT | LA57 | VMXE | SMAP | PKE | UMIP | LAM_SUP;

type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';
/** Each CPUID-dependent bit and the feature (leaf, subleaf, register, bit) it needs. */
const NEEDS: readonly [bit: number, leaf: number, sub: number, reg: Reg, at: number][] = [
  [OSXSAVE, 1, 0, 'ecx', 26], // XSAVE
  [SMEP, 7, 0, 'ebx', 7],
  [SMAP, 7, 0, 'ebx', 20],
  [FSGSBASE, 7, 0, 'ebx', 0],
  [PKE, 7, 0, 'ecx', 3], // PKU
  [LA57, 7, 0, 'ecx', 16],
  [UMIP, 7, 0, 'ecx', 2],
  [VMXE, 1, 0, 'ecx', 5], // VMX
  [PCIDE, 1, 0, 'ecx', 17], // PCID
  [LAM_SUP, 7, 1, 'eax', 26], // LAM
];

function has(entries: readonly CpuidEntry2[], leaf: number, sub: number, reg: Reg, at: number): boolean {
  const e = findCpuid(entries, leaf, sub);
  return e !== undefined && ((e[reg] >>> at) & 1) === 1;
}

/** __cr4_reserved_bits(has, entries): the bits reserved for a CPU with these CPUID entries. */
function reservedFor(x: X86, entries: readonly CpuidEntry2[]): number {
  let r = ~CR4_DEFINED;
  // CET virtualization (6.18) adds CR4.CET, for a CPU with shadow stacks or IBT.
  if (x.rules.cetMsrs && (has(entries, 7, 0, 'ecx', 7) || has(entries, 7, 0, 'edx', 20))) r &= ~CET;
  for (const [bit, leaf, sub, reg, at] of NEEDS) if (!has(entries, leaf, sub, reg, at)) r |= bit;
  return r;
}

/** Bits 0-24 but 15: what kvmsr took before the host's CR4 was measured. */
const UNMEASURED = 0x1ffffff & ~(1 << 15);

const upstream = (p: HostProfile): boolean => p.host.vendorModule === 'kvm_intel' || p.host.vendorModule === 'kvm_amd';

/** kvm_is_valid_cr4. */
export function validCr4(x: X86, profile: HostProfile, vcpu: Vcpu, cr4: bigint): boolean {
  if (cr4 >> 32n !== 0n) return false;
  const lo = Number(cr4) | 0;
  const host = profile.cr4Accepted !== undefined ? ~profile.cr4Accepted : upstream(profile) ? reservedFor(x, profile.supportedCpuid) : ~UNMEASURED;
  if ((lo & host) !== 0) return false;
  if (upstream(profile) && vcpu.cpuidSet && (lo & reservedFor(x, vcpu.cpuid)) !== 0) return false;
  return true;
}
