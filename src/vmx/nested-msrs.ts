// The VMX capability MSRs 0x480-0x491 (arch/x86/kvm/vmx/nested.c): KVM's values
// (vmcs_config.nested), vmx_get_vmx_msr, vmx_set_vmx_msr and its restore helpers, and the
// per-vCPU changes KVM_SET_CPUID2 makes (vmx_adjust_secondary_exec_control,
// nested_vmx_cr_fixed1_bits_update).
//
// Storage: a set of values is 18 (lo, hi) pairs by (index - 0x480), the form the vCPU's typed array
// already has for slots 0x480-0x491. The four non-TRUE control MSRs (0x481-0x484) are views of the
// TRUE ones (0x48d-0x490), as in struct nested_vmx_msrs: their pairs are never read.
import type { CpuidEntry2 } from '../abi/codecs.js';
import { MSR_OK, type MsrValue } from '../kvm/x86/msr-ret.js';
import { slotOf } from '../kvm/x86/msr-slots.js';
import { findCpuid, type ProfileMsr } from '../kvm/profile.js';
import type { Vcpu } from '../kvm/vcpu.js';

export const enum V {
  BASIC = 0x480,
  PINBASED_CTLS = 0x481,
  PROCBASED_CTLS = 0x482,
  EXIT_CTLS = 0x483,
  ENTRY_CTLS = 0x484,
  MISC = 0x485,
  CR0_FIXED0 = 0x486,
  CR0_FIXED1 = 0x487,
  CR4_FIXED0 = 0x488,
  CR4_FIXED1 = 0x489,
  VMCS_ENUM = 0x48a,
  PROCBASED_CTLS2 = 0x48b,
  EPT_VPID_CAP = 0x48c,
  TRUE_PINBASED_CTLS = 0x48d,
  TRUE_PROCBASED_CTLS = 0x48e,
  TRUE_EXIT_CTLS = 0x48f,
  TRUE_ENTRY_CTLS = 0x490,
  VMFUNC = 0x491,
}
export const VMX_MSR_FIRST = 0x480;
export const VMX_MSR_LAST = 0x491;
/** Words in one set of values: 18 MSRs, two halves each. */
export const NESTED_WORDS = (VMX_MSR_LAST - VMX_MSR_FIRST + 1) * 2;

const EINVAL = 22;

// The "default1" bits the non-TRUE MSRs report on top of the TRUE ones (asm/vmx.h *_ALWAYSON_WITHOUT_TRUE_MSR).
export const PIN_BASED_ALWAYSON = 0x00000016;
export const CPU_BASED_ALWAYSON = 0x0401e172;
export const VM_EXIT_ALWAYSON = 0x00036dff;
export const VM_ENTRY_ALWAYSON = 0x000011ff;
export const VMCS12_REVISION = 0x11e57ed0;
export const VMCS12_SIZE = 0x1000;
const PIN_BASED_VMX_PREEMPTION_TIMER = 1 << 6;

/** Secondary execution controls KVM_SET_CPUID2 adjusts (asm/vmx.h SECONDARY_EXEC_*). */
export const SECONDARY_EXEC_ENABLE_RDTSCP = 1 << 3;
export const SECONDARY_EXEC_RDRAND_EXITING = 1 << 11;
export const SECONDARY_EXEC_ENABLE_INVPCID = 1 << 12;
export const SECONDARY_EXEC_RDSEED_EXITING = 1 << 16;
export const SECONDARY_EXEC_ENABLE_XSAVES = 1 << 20;
export const SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE = 1 << 26;

/** The word offset of an MSR's pair in a set of values. */
const w = (index: number): number => (index - VMX_MSR_FIRST) * 2;

/** The word in vcpu.msrs where the vCPU's set of values starts (slots 0x480-0x491 are consecutive). */
export const VCPU_NESTED_BASE = slotOf(VMX_MSR_FIRST) * 2;

/**
 * KVM's values (vmcs_config.nested) from the feature MSRs a profile lists: the TRUE controls give
 * the control pairs, the non-TRUE ones are views. Null when the profile lacks any of them (a host
 * with kvm_intel.nested=0 lists none).
 */
export function nestedFromFeatureMsrs(features: readonly ProfileMsr[]): Uint32Array | null {
  const out = new Uint32Array(NESTED_WORDS);
  for (let index = VMX_MSR_FIRST; index <= VMX_MSR_LAST; index++) {
    if (index >= V.PINBASED_CTLS && index <= V.ENTRY_CTLS) continue;
    const m = features.find((f) => f.index === index);
    if (m === undefined || m.value === null) return null;
    out[w(index)] = Number(m.value & 0xffffffffn);
    out[w(index) + 1] = Number(m.value >> 32n);
  }
  return out;
}

/** vmx_get_vmx_msr: the value of `index` from a set of values starting at word `base` of `arr`. */
export function vmxGetVmxMsr(arr: Uint32Array, base: number, index: number, out: MsrValue): number {
  let src = index;
  let always = 0;
  switch (index) {
    case V.PINBASED_CTLS:
      src = V.TRUE_PINBASED_CTLS;
      always = PIN_BASED_ALWAYSON;
      break;
    case V.PROCBASED_CTLS:
      src = V.TRUE_PROCBASED_CTLS;
      always = CPU_BASED_ALWAYSON;
      break;
    case V.EXIT_CTLS:
      src = V.TRUE_EXIT_CTLS;
      always = VM_EXIT_ALWAYSON;
      break;
    case V.ENTRY_CTLS:
      src = V.TRUE_ENTRY_CTLS;
      always = VM_ENTRY_ALWAYSON;
      break;
  }
  out.lo = (arr[base + w(src)]! | always) >>> 0;
  out.hi = arr[base + w(src) + 1]!;
  return MSR_OK;
}

/** is_bitwise_subset(superset, subset, mask) on (lo, hi) halves: no bit of subset&mask outside superset. */
function isSubset(supLo: number, supHi: number, subLo: number, subHi: number, maskLo: number, maskHi: number): boolean {
  return ((subLo & maskLo & ~supLo) | (subHi & maskHi & ~supHi)) === 0;
}

// VMX_BASIC feature bits 49 (dual monitor), 54 (INS/OUTS), 55 (TRUE ctls) and, in 6.18 (nested CET
// series), 56 (NO_HW_ERROR_CODE_CC); reserved 63:57, 47:45, 31. 6.12 has 56 among the reserved bits.
const BASIC_MASK_HI = (1 << 17) | (1 << 22) | (1 << 23) | (1 << 24) | 0xfe000000 | 0xe000;
const BASIC_MASK_LO = 0x80000000;
const BASIC_32BIT_PHYS_ADDR_ONLY_HI = 1 << 16;
// VMX_MISC feature bits 5-8, 14, 15, 28-30 and reserved bits 31, 13:9.
const MISC_MASK_LO = 0x1e0 | 0xc000 | 0x70000000 | 0x80000000 | 0x3e00;

/**
 * vmx_set_vmx_msr for a host write, after vmx_set_msr's gates: 0 or -EINVAL. The restore helpers
 * compare with KVM's values (`kvm`), never with the vCPU's current ones, so a cleared bit can be
 * set again. -EBUSY (the vCPU is in VMX operation) cannot happen: kvmsr runs no VMXON.
 */
export function vmxSetVmxMsr(vcpu: Vcpu, kvm: Uint32Array, index: number, lo: number, hi: number): number {
  const m = vcpu.msrs;
  const b = VCPU_NESTED_BASE;
  const kLo = kvm[w(index)]!;
  const kHi = kvm[w(index) + 1]!;
  switch (index) {
    case V.BASIC:
      // vmx_restore_vmx_basic
      if (!isSubset(kLo, kHi, lo, hi, BASIC_MASK_LO, BASIC_MASK_HI)) return -EINVAL;
      if ((hi & BASIC_32BIT_PHYS_ADDR_ONLY_HI) !== 0) return -EINVAL;
      if ((lo & 0x7fffffff) !== (kLo & 0x7fffffff)) return -EINVAL; // VMCS revision id
      if ((kHi & 0x1fff) > (hi & 0x1fff)) return -EINVAL; // VMCS region size
      break;
    case V.PINBASED_CTLS:
    case V.PROCBASED_CTLS:
    case V.EXIT_CTLS:
    case V.ENTRY_CTLS:
    case V.CR0_FIXED1:
    case V.CR4_FIXED1:
      // Views of the TRUE MSRs, and values derived from CPUID: not restorable.
      return -EINVAL;
    case V.TRUE_PINBASED_CTLS:
    case V.TRUE_PROCBASED_CTLS:
    case V.TRUE_EXIT_CTLS:
    case V.TRUE_ENTRY_CTLS:
    case V.PROCBASED_CTLS2:
      // vmx_restore_control_msr: must-be-1 bits (31:0) stay 1, may-be-1 bits (63:32) only shrink.
      if (!isSubset(lo, 0, kLo, 0, 0xffffffff, 0)) return -EINVAL;
      if (!isSubset(kLo, kHi, 0, hi, 0, 0xffffffff)) return -EINVAL;
      break;
    case V.MISC: {
      // vmx_restore_vmx_misc
      if (!isSubset(kLo, kHi, lo, hi, MISC_MASK_LO, 0)) return -EINVAL;
      const pinHigh = m[b + w(V.TRUE_PINBASED_CTLS) + 1]!;
      if ((pinHigh & PIN_BASED_VMX_PREEMPTION_TIMER) !== 0 && (lo & 0x1f) !== (kLo & 0x1f)) return -EINVAL;
      if (((lo >>> 16) & 0x1ff) > ((kLo >>> 16) & 0x1ff)) return -EINVAL; // CR3-target count
      if (((lo >>> 25) & 0x7) > ((kLo >>> 25) & 0x7)) return -EINVAL; // max MSR-list size
      if (hi >>> 0 !== kHi) return -EINVAL; // MSEG revision id
      break;
    }
    case V.CR0_FIXED0:
    case V.CR4_FIXED0:
      // vmx_restore_fixed0_msr: KVM's must-be-1 bits must stay set.
      if (!isSubset(lo, hi, kLo, kHi, 0xffffffff, 0xffffffff)) return -EINVAL;
      break;
    case V.EPT_VPID_CAP:
      // vmx_restore_vmx_ept_vpid_cap: every bit is a feature bit.
      if (!isSubset(kLo, kHi, lo, hi, 0xffffffff, 0xffffffff)) return -EINVAL;
      break;
    case V.VMCS_ENUM:
      break;
    case V.VMFUNC:
      if ((lo & ~kLo) !== 0 || (hi & ~kHi) !== 0) return -EINVAL;
      break;
    default:
      return -EINVAL;
  }
  m[b + w(index)] = lo;
  m[b + w(index) + 1] = hi;
  return MSR_OK;
}

/** __vmx_vcpu_reset with KVM_X86_QUIRK_STUFF_FEATURE_MSRS: the vCPU's copy starts as KVM's. */
export function copyNestedToVcpu(vcpu: Vcpu, kvm: Uint32Array): void {
  vcpu.msrs.set(kvm, VCPU_NESTED_BASE);
}

/**
 * vmx_adjust_secondary_exec_control's nested part: a secondary control KVM offers L1 follows the
 * guest CPUID (set when the feature is exposed, cleared otherwise, overwriting any restore).
 */
export function adjustSecondaryCtl(vcpu: Vcpu, kvm: Uint32Array, control: number, enabled: boolean): void {
  if ((kvm[w(V.PROCBASED_CTLS2) + 1]! & control) === 0) return;
  const i = VCPU_NESTED_BASE + w(V.PROCBASED_CTLS2) + 1;
  vcpu.msrs[i] = enabled ? (vcpu.msrs[i]! | control) >>> 0 : (vcpu.msrs[i]! & ~control) >>> 0;
}

// CR4 bits and the CPUID bits that allow them (nested_vmx_cr_fixed1_bits_update).
type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';
const CR4_FROM_CPUID: ReadonlyArray<readonly [number, number, number, Reg, number]> = [
  // [CR4 bit, leaf, subleaf, register, CPUID bit]
  [0, 1, 0, 'edx', 1], // VME
  [1, 1, 0, 'edx', 1], // PVI (VME)
  [2, 1, 0, 'edx', 4], // TSD (TSC)
  [3, 1, 0, 'edx', 2], // DE
  [4, 1, 0, 'edx', 3], // PSE
  [5, 1, 0, 'edx', 6], // PAE
  [6, 1, 0, 'edx', 7], // MCE
  [7, 1, 0, 'edx', 13], // PGE
  [9, 1, 0, 'edx', 24], // OSFXSR (FXSR)
  [10, 1, 0, 'edx', 25], // OSXMMEXCPT (XMM)
  [13, 1, 0, 'ecx', 5], // VMXE
  [14, 1, 0, 'ecx', 6], // SMXE
  [17, 1, 0, 'ecx', 17], // PCIDE
  [18, 1, 0, 'ecx', 26], // OSXSAVE (XSAVE)
  [16, 7, 0, 'ebx', 0], // FSGSBASE
  [20, 7, 0, 'ebx', 7], // SMEP
  [21, 7, 0, 'ebx', 20], // SMAP
  [22, 7, 0, 'ecx', 3], // PKE (PKU)
  [11, 7, 0, 'ecx', 2], // UMIP
  [12, 7, 0, 'ecx', 16], // LA57
  [23, 7, 0, 'ecx', 7], // CET (SHSTK), 6.18 CET series (not in 6.12: see crFixed1Update)
  [23, 7, 0, 'edx', 20], // CET (IBT), 6.18 CET series
  [28, 7, 1, 'eax', 26], // LAM_SUP (LAM)
];
const X86_CR4_PCE = 1 << 8;

const X86_CR4_CET_BIT = 23;

/**
 * nested_vmx_cr_fixed1_bits_update (guest has VMX): CR0_FIXED1 allows every bit, CR4_FIXED1 the
 * bits whose feature the raw guest CPUID has, plus PCE. `cet`: the kernel has the CET entries
 * (6.18; 6.12's list ends at LAM_SUP, so a guest CPUID with SHSTK or IBT leaves CR4.CET 0 there).
 */
export function crFixed1Update(vcpu: Vcpu, guest: readonly CpuidEntry2[], cet = true): void {
  let cr4 = X86_CR4_PCE;
  for (const [bit, leaf, sub, reg, cpuidBit] of CR4_FROM_CPUID) {
    if (bit === X86_CR4_CET_BIT && !cet) continue;
    const e = findCpuid(guest, leaf, sub);
    if (e !== undefined && ((e[reg] >>> cpuidBit) & 1) === 1) cr4 |= 1 << bit;
  }
  const m = vcpu.msrs;
  m[VCPU_NESTED_BASE + w(V.CR0_FIXED1)] = 0xffffffff;
  m[VCPU_NESTED_BASE + w(V.CR0_FIXED1) + 1] = 0;
  m[VCPU_NESTED_BASE + w(V.CR4_FIXED1)] = cr4 >>> 0;
  m[VCPU_NESTED_BASE + w(V.CR4_FIXED1) + 1] = 0;
}

// ---- KVM's values for the derived Intel profile (src/profiles/vmx-intel-derived.json) ----
// nested_vmx_setup_ctls_msrs on a Sapphire Rapids-class host with the default module parameters
// (nested=1, ept=1, eptad=1, vpid=1, unrestricted_guest=1, flexpriority=1, enable_apicv=1,
// enable_sgx=0 because SGX is off in firmware) and the 6.18 CET additions. Each field names its
// source; the profile's feature MSR values are these, and test/vmx.test.ts checks that they agree.
const bit = (n: number): number => 2 ** n;
const or = (...bits: number[]): number => bits.reduce((a, b) => a + b, 0);

/** nested_vmx_setup_pinbased_ctls: host ∩ {ext-intr, NMI, virtual NMIs, posted intr} ∪ {0x16, preemption timer}. */
const PIN_HIGH = or(bit(0), bit(3), bit(5), bit(7)) | PIN_BASED_ALWAYSON | PIN_BASED_VMX_PREEMPTION_TIMER;
/** nested_vmx_setup_cpubased_ctls: the list KVM offers (all on this host) ∪ {0x0401e172, MSR bitmaps}. */
const PROC_HIGH =
  (or(bit(2), bit(22), bit(3), bit(7), bit(9), bit(10), bit(15), bit(16), bit(19), bit(20), bit(23), bit(24), bit(25), bit(27), bit(29), bit(11), bit(12), bit(30), bit(21), bit(31)) |
    CPU_BASED_ALWAYSON |
    bit(28)) >>>
  0;
/** The low half without CR3-load/store exiting (KVM lets L1 clear them). */
const PROC_LOW = CPU_BASED_ALWAYSON & ~(bit(15) | bit(16));
/** nested_vmx_setup_exit_ctls: host ∩ {host addr space, load/save PAT} (no MPX) ∪ {0x36dff, EFER, preemption timer, ack intr, PERF_GLOBAL_CTRL}; 6.18: LOAD_CET_STATE. */
const EXIT_HIGH = (or(bit(9), bit(19), bit(18)) | VM_EXIT_ALWAYSON | or(bit(21), bit(20), bit(22), bit(15), bit(12)) | bit(28)) >>> 0;
const EXIT_LOW = VM_EXIT_ALWAYSON & ~bit(2);
/** nested_vmx_setup_entry_ctls: host ∩ {IA-32e, load PAT} ∪ {0x11ff, load EFER, load PERF_GLOBAL_CTRL}; 6.18: LOAD_CET_STATE. */
const ENTRY_HIGH = or(bit(9), bit(14)) | VM_ENTRY_ALWAYSON | or(bit(15), bit(13)) | bit(20);
const ENTRY_LOW = VM_ENTRY_ALWAYSON & ~bit(2);
/**
 * nested_vmx_setup_secondary_ctls: host ∩ {DESC, RDTSCP, x2APIC, WBINVD, APIC-reg, VID, RDRAND, INVPCID,
 * VMFUNC, RDSEED, XSAVES, TSC scaling, USR_WAIT_PAUSE} ∪ shadow VMCS ∪ EPT+PML ∪ VPID ∪ UG ∪ APIC accesses.
 */
const PROC2_HIGH =
  or(bit(2), bit(3), bit(4), bit(6), bit(8), bit(9), bit(11), bit(12), bit(13), bit(16), bit(20), bit(25), bit(26)) |
  or(bit(14), bit(1), bit(17), bit(5), bit(7), bit(0));
/** EPT: (host ∩ {exec-only, 4-level, 5-level, WB, INVEPT}) ∪ {global, context, 2M, 1G} ∪ A/D; VPID: INVVPID + all extents. */
const EPT_CAPS = or(bit(0), bit(6), bit(7), bit(14), bit(20)) | or(bit(26), bit(25), bit(16), bit(17)) | bit(21);
const VPID_CAPS = bit(0) | or(bit(8), bit(9), bit(10), bit(11));
/** nested_vmx_setup_misc_data: host SAVE_EFER_LMA | VMWRITE to RO fields | timer rate 5 | HLT | WAIT_SIPI. */
const MISC_LOW = bit(5) | bit(29) | 5 | bit(6) | bit(8);
/** nested_vmx_setup_basic: revision, size 0x1000, WB, TRUE ctls, INS/OUTS; 6.18: NO_HW_ERROR_CODE_CC. */
const BASIC_HI = VMCS12_SIZE | (6 << 18) | bit(22) | bit(23) | bit(24);

/** vmcs_config.nested of the derived profile's host, as (index, lo, hi). */
export const DERIVED_NESTED: ReadonlyArray<readonly [number, number, number]> = [
  [V.BASIC, VMCS12_REVISION, BASIC_HI],
  [V.MISC, MISC_LOW, 0],
  [V.CR0_FIXED0, 0x80000021, 0], // PE | NE | PG
  [V.CR0_FIXED1, 0xffffffff, 0], // host MSR
  [V.CR4_FIXED0, 0x2000, 0], // VMXE
  [V.CR4_FIXED1, 0x03f77fff, 0], // host MSR: CR4 bits 0-14, 16-18, 20-25
  [V.VMCS_ENUM, 0x32, 0], // nested_vmx_calc_vmcs_enum_msr: TSC_MULTIPLIER has the highest index, 0x19
  [V.PROCBASED_CTLS2, 0, PROC2_HIGH],
  [V.EPT_VPID_CAP, EPT_CAPS, VPID_CAPS],
  [V.TRUE_PINBASED_CTLS, PIN_BASED_ALWAYSON, PIN_HIGH],
  [V.TRUE_PROCBASED_CTLS, PROC_LOW, PROC_HIGH],
  [V.TRUE_EXIT_CTLS, EXIT_LOW, EXIT_HIGH],
  [V.TRUE_ENTRY_CTLS, ENTRY_LOW, ENTRY_HIGH],
  [V.VMFUNC, 1, 0], // EPTP switching
];

/** The derived values as a set of values (the form nestedFromFeatureMsrs returns). */
export function derivedNested(): Uint32Array {
  const out = new Uint32Array(NESTED_WORDS);
  for (const [index, lo, hi] of DERIVED_NESTED) {
    out[w(index)] = lo >>> 0;
    out[w(index) + 1] = hi >>> 0;
  }
  return out;
}
