// The Intel vendor module (kvm_intel): vmx_get_msr, vmx_set_msr and vmx_get_feature_msr
// (arch/x86/kvm/vmx/vmx.c), the MSR parts of vCPU creation (__vmx_vcpu_reset, vmx_vcpu_reset) and
// of vmx_vcpu_after_set_cpuid, plus the Intel vPMU (pmu-intel.ts) and the VMX capability MSRs
// (nested-msrs.ts). Rules follow the 6.18 column of ../shared/reference/vendor-msr-spec.md; where
// 6.12's source differs, the comment says so.
//
// Host facts come from the profile: KVM_GET_SUPPORTED_CPUID (which features KVM and the host
// have), the feature MSRs (ARCH_CAPABILITIES, PERF_CAPABILITIES, the VMX MSRs = vmcs_config.nested)
// and module parameters (kvm_intel.nested, kvm.enable_pmu). kvm_intel.pt_mode=1 (Intel PT
// host-guest mode) is not modelled: the RTIT MSRs answer as with the default pt_mode=0.
import { commonFastGetClass, commonFastSetClass } from '../kvm/x86/fast-classes.js';
import type { CpuidEntry2 } from '../abi/codecs.js';
import { CAP } from '../kvm/x86/cpuid-caps.js';
import { FAST_SLOW, GET_LOAD, SET_STORE } from '../kvm/x86/fast-path.js';
import { M } from '../kvm/x86/msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from '../kvm/x86/msr-ret.js';
import { slotOf } from '../kvm/x86/msr-slots.js';
import { findCpuid } from '../kvm/profile.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { VendorOps } from '../kvm/vendor.js';
import type { X86 } from '../kvm/x86/x86.js';
import {
  adjustSecondaryCtl,
  copyNestedToVcpu,
  crFixed1Update,
  nestedFromFeatureMsrs,
  NESTED_WORDS,
  SECONDARY_EXEC_ENABLE_INVPCID,
  SECONDARY_EXEC_ENABLE_RDTSCP,
  SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE,
  SECONDARY_EXEC_ENABLE_XSAVES,
  SECONDARY_EXEC_RDRAND_EXITING,
  SECONDARY_EXEC_RDSEED_EXITING,
  VCPU_NESTED_BASE,
  VMX_MSR_FIRST,
  VMX_MSR_LAST,
  vmxGetVmxMsr,
  vmxSetVmxMsr,
} from './nested-msrs.js';
import { IntelPmu, isIntelPmuMsr, pmuGet, pmuOwns, pmuRefresh, pmuSet, type PmuHostCaps } from './pmu-intel.js';

/** Intel MSRs vmx.c handles that msr-index.ts does not name. */
const enum I {
  SGXLEPUBKEYHASH0 = 0x8c,
  SGXLEPUBKEYHASH3 = 0x8f,
  UMWAIT_CONTROL = 0xe1,
  TSX_CTRL = 0x122,
  MCG_EXT_CTL = 0x4d0,
  RTIT_OUTPUT_BASE = 0x560,
  RTIT_OUTPUT_MASK = 0x561,
  RTIT_CTL = 0x570,
  RTIT_STATUS = 0x571,
  RTIT_CR3_MATCH = 0x572,
  RTIT_ADDR0_A = 0x580,
  RTIT_ADDR3_B = 0x587,
}

const FEAT_CTL_LOCKED = 1 << 0;
const FEAT_CTL_VMX_INSIDE_SMX = 1 << 1;
const FEAT_CTL_VMX_OUTSIDE_SMX = 1 << 2;
const FEAT_CTL_SGX_LC_ENABLED = 1 << 17;
const FEAT_CTL_SGX_ENABLED = 1 << 18;
const FEAT_CTL_LMCE_ENABLED = 1 << 20;
/** KVM_SUPPORTED_FEATURE_CONTROL: what a host write may set, whatever the lock and CPUID. */
const KVM_SUPPORTED_FEATURE_CONTROL = 0x160007;
const MCG_LMCE_P = 1 << 27;

const DEBUGCTL_LBR = 1 << 0;
const DEBUGCTL_BTF = 1 << 1;
const DEBUGCTL_BUS_LOCK_DETECT = 1 << 2;
const DEBUGCTL_FREEZE_LBRS_ON_PMI = 1 << 11;
const DEBUGCTL_RTM_DEBUG = 1 << 15;

const ARCH_CAP_TSX_CTRL_MSR = 1 << 7;
const TSX_CTRL_RTM_DISABLE = 1;
const PERF_CAP_LBR_FMT = 0x3f;
const PERF_CAP_PEBS_FORMAT = 0xf00;
/** PERF_CAP_PEBS_MASK: trap (6), arch reg (7), format (11:8), baseline (14). */
const PERF_CAP_PEBS_MASK = 0x40 | 0x80 | 0xf00 | 0x4000;

/** sgx_pubkey_hash: Intel's default launch-enclave key hash (SGX off for KVM, or host SGX_LC). */
const SGX_DEFAULT_HASH: ReadonlyArray<readonly [number, number]> = [
  [0x1270b7ac, 0xa6053e05],
  [0x8b3b413d, 0x6cfbe8ba],
  [0xf2b3735d, 0xc4916d99],
  [0x09f9bb3b, 0xd4f8c059],
];
/** __vmx_vcpu_reset with KVM_X86_QUIRK_STUFF_FEATURE_MSRS: microcode revision 0x100000000. */
const VMX_UCODE_REV_HI = 1;

type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';
type Feat = readonly [leaf: number, sub: number, reg: Reg, bit: number];
// CPUID bits the VMX rules consult that are not cpuid-caps.ts capabilities.
const F_DS: Feat = [1, 0, 'edx', 21];
const F_DTES64: Feat = [1, 0, 'ecx', 2];
const F_RDRAND: Feat = [1, 0, 'ecx', 30];
const F_HLE: Feat = [7, 0, 'ebx', 4];
const F_SGX: Feat = [7, 0, 'ebx', 2];
const F_INVPCID: Feat = [7, 0, 'ebx', 10];
const F_RTM: Feat = [7, 0, 'ebx', 11];
const F_MPX: Feat = [7, 0, 'ebx', 14];
const F_RDSEED: Feat = [7, 0, 'ebx', 18];
const F_WAITPKG: Feat = [7, 0, 'ecx', 5];
const F_BUS_LOCK_DETECT: Feat = [7, 0, 'ecx', 24];
const F_SGX_LC: Feat = [7, 0, 'ecx', 30];
const F_SPEC_CTRL: Feat = [7, 0, 'edx', 26];
const F_FLUSH_L1D: Feat = [7, 0, 'edx', 28];
const F_AMD_IBPB: Feat = [0x80000008, 0, 'ebx', 12];
const F_SBPB: Feat = [0x80000021, 0, 'eax', 27];
/** PRED_CMD_IBPB and FLUSH_CMD's L1D_FLUSH: the one bit a CPU takes in either command MSR (Intel has no SBPB). */
const CMD_BIT = 1;
// SPEC_CTRL bits and the CPUID bits that enumerate them (what a host WRMSR accepts).
const SPEC_CTRL_ENUM: ReadonlyArray<readonly [number, Feat]> = [
  [1 << 0, [7, 0, 'edx', 26]], // IBRS (SPEC_CTRL)
  [1 << 1, [7, 0, 'edx', 27]], // STIBP
  [1 << 2, [7, 0, 'edx', 31]], // SSBD
  [(1 << 3) | (1 << 4), [7, 2, 'edx', 1]], // IPRED_DIS_U/S (IPRED_CTRL)
  [(1 << 5) | (1 << 6), [7, 2, 'edx', 2]], // RRSBA_DIS_U/S (RRSBA_CTRL)
  [1 << 7, [7, 2, 'edx', 0]], // PSFD
  [1 << 8, [7, 2, 'edx', 3]], // DDPD_U
  [1 << 10, [7, 2, 'edx', 4]], // BHI_DIS_S (BHI_CTRL)
];

function has(entries: readonly CpuidEntry2[], f: Feat): boolean {
  const e = findCpuid(entries, f[0], f[1]);
  return e !== undefined && ((e[f[2]] >>> f[3]) & 1) === 1;
}

/** x86_family / x86_model of a CPUID.1 eax, as cpuid_model_is_consistent compares them. */
function familyModel(eax: number): number {
  let fam = (eax >>> 8) & 0xf;
  if (fam === 0xf) fam += (eax >>> 20) & 0xff;
  let model = (eax >>> 4) & 0xf;
  if (fam >= 6) model += ((eax >>> 16) & 0xf) << 4;
  return fam * 0x1000 + model;
}

/** What kvm_intel set up at module load, derived once per X86 from its profile. */
interface VmxHost {
  /** kvm_intel.nested. */
  nested: boolean;
  /** vmcs_config.nested (zeros with nested=0). */
  kvmNested: Uint32Array;
  supported: readonly CpuidEntry2[];
  perfCapLo: number;
  /** The host has IA32_TSX_CTRL, so it is a user-return MSR (vmx_setup_user_return_msrs, kvm_probe_user_return_msr). */
  tsxCtrlUret: boolean;
  hostRtm: boolean;
  /** kvm_mpx_supported(). */
  mpx: boolean;
  /** The SPEC_CTRL bits a trial write on the host accepts (kvm_spec_ctrl_test_value). */
  specCtrlLo: number;
  specCtrlHi: number;
  /** vmx_get_supported_debugctl(vcpu, host_initiated = true). */
  debugctlHost: number;
  pmu: PmuHostCaps;
  /** boot_cpu_data family/model, for cpuid_model_is_consistent. */
  familyModel: number;
  /**
   * boot_cpu_has(IBPB) and boot_cpu_has(FLUSH_L1D), as KVM_GET_SUPPORTED_CPUID shows them (KVM
   * offers SPEC_CTRL only with host IBPB and IBRS; FLUSH_L1D only from the host).
   */
  hostIbpb: boolean;
  hostFlushL1d: boolean;
}

function hostOf(x86: X86): VmxHost {
  let h = x86.vendorHost as VmxHost | undefined;
  if (h === undefined) {
    h = makeHost(x86);
    x86.vendorHost = h;
  }
  return h;
}

function makeHost(x86: X86): VmxHost {
  const p = x86.profile;
  const sup = p.supportedCpuid;
  const yes = (k: string, dflt: string): boolean => ['Y', 'y', '1'].includes(p.host.moduleParams[k] ?? dflt);
  const feature = (index: number): bigint => p.featureMsrs.find((m) => m.index === index)?.value ?? 0n;
  const nested = yes('kvm_intel.nested', 'Y');
  const kvmNested = (nested ? nestedFromFeatureMsrs(p.featureMsrs) : null) ?? new Uint32Array(NESTED_WORDS);
  const archCap = feature(M.MSR_IA32_ARCH_CAPABILITIES);
  const perfCap = feature(M.MSR_IA32_PERF_CAPABILITIES);
  const leafA = findCpuid(sup, 0xa, 0);
  const hostRtm = has(sup, F_RTM);
  const lbrFmt = Number(perfCap & BigInt(PERF_CAP_LBR_FMT));
  let specCtrlMask = 0;
  for (const [bits, f] of SPEC_CTRL_ENUM) if (has(sup, f)) specCtrlMask |= bits;
  // A measured profile knows what the host CPU really takes (kvm_spec_ctrl_test_value).
  const specCtrl = p.specCtrlAccepted ?? BigInt(specCtrlMask >>> 0);
  let debugctlHost = 0;
  if (has(sup, F_BUS_LOCK_DETECT)) debugctlHost |= DEBUGCTL_BUS_LOCK_DETECT;
  if (lbrFmt !== 0) debugctlHost |= DEBUGCTL_LBR | DEBUGCTL_FREEZE_LBRS_ON_PMI;
  if (hostRtm) debugctlHost |= DEBUGCTL_RTM_DEBUG;
  return {
    nested,
    kvmNested,
    supported: sup,
    perfCapLo: Number(perfCap & 0xffffffffn),
    // vmx_setup_user_return_msrs registers TSX_CTRL when the host's RDMSR/WRMSR of it does not fault
    // (kvm_probe_user_return_msr), whatever the host's ARCH_CAPABILITIES says: a host read of it on
    // a fresh vCPU then succeeds (vmx_get_msr's find_uret_msr), so a profile that read it knows.
    // Bochs (corei7_skylake_x) has the MSR without ARCH_CAP_TSX_CTRL_MSR; a real CPU with the MSR
    // enumerates it, and KVM keeps the bit in its feature value (kvm_get_arch_capabilities).
    tsxCtrlUret:
      (Number(archCap & 0xffffffffn) & ARCH_CAP_TSX_CTRL_MSR) !== 0 ||
      p.vcpuReset.some((m) => m.index === I.TSX_CTRL && m.value !== null),
    hostRtm,
    // KVM reports MPX only when kvm_mpx_supported() (host MPX and the BNDCFGS entry/exit controls).
    mpx: has(sup, F_MPX),
    specCtrlLo: Number(specCtrl & 0xffffffffn),
    specCtrlHi: Number(specCtrl >> 32n),
    debugctlHost,
    pmu: {
      enablePmu: yes('kvm.enable_pmu', 'Y'),
      nrGp: leafA ? (leafA.eax >>> 8) & 0xff : 0,
      gpWidth: leafA ? (leafA.eax >>> 16) & 0xff : 0,
      nrFixed: leafA ? leafA.edx & 0x1f : 0,
      fixedWidth: leafA ? (leafA.edx >>> 5) & 0xff : 0,
      hleOrRtm: hostRtm || has(sup, F_HLE),
      lbrFmt,
    },
    familyModel: familyModel(findCpuid(sup, 1, 0)?.eax ?? 0),
    hostIbpb: has(sup, F_SPEC_CTRL) || has(sup, F_AMD_IBPB),
    hostFlushL1d: has(sup, F_FLUSH_L1D),
  };
}

/** The per-vCPU state vmx.c keeps outside MSR values. */
class VmxVcpu {
  /** msr_ia32_feature_control_valid_bits (guest writes only). */
  featCtlValid = FEAT_CTL_LOCKED;
  // Guest features as guest_cpu_cap_has sees them: in the guest CPUID and supported by KVM.
  waitpkg = false;
  rtm = false;
  busLock = false;
  sgxLc = false;
  mpx = false;
  ds = false;
  dtes64 = false;
  /** guest_has_spec_ctrl_msr. */
  specCtrl = false;
  modelConsistent = false;
  /** vmx_vcpu_after_set_cpuid: PRED_CMD / FLUSH_CMD writes pass through the MSR bitmap. */
  predCmdThrough = false;
  flushCmdThrough = false;
  /** vmx_set_msr: the first non-zero SPEC_CTRL write (host or guest) passes SPEC_CTRL through, read and write. */
  specCtrlThrough = false;
  readonly pmu = new IntelPmu();
}

function stateOf(vcpu: Vcpu): VmxVcpu {
  let s = vcpu.vendorState as VmxVcpu | undefined;
  if (s === undefined) {
    s = new VmxVcpu();
    vcpu.vendorState = s;
  }
  return s;
}

/** guest_cpu_cap_has(VMX): the guest CPUID has VMX and KVM offers it (nested=1). */
function vmxCap(x86: X86, h: VmxHost, vcpu: Vcpu): boolean {
  return h.nested && x86.hasCap(vcpu, CAP.VMX);
}

/**
 * intel_pmu_refresh tests CPUID.7.0:EBX against X86_FEATURE_HLE|X86_FEATURE_RTM, the feature
 * *numbers* (9*32+4 | 9*32+11 = 0x12f), so bits 0-3, 5 and 8 count, not HLE/RTM. That is the 6.12
 * code and nothing in the sources read shows a change by 6.18; later trees use guest_cpu_cap_has.
 */
const HLE_RTM_AS_TESTED = 0x12f;

/** kvm_pmu_refresh with what intel_pmu_refresh reads from the guest CPUID and PERF_CAPABILITIES. */
function pmuRefreshFor(x86: X86, h: VmxHost, vcpu: Vcpu, s: VmxVcpu, guest: readonly CpuidEntry2[]): void {
  // vcpu_get_perf_capabilities: the vCPU's value only with PDCM.
  const pc = x86.hasCap(vcpu, CAP.PDCM) ? vcpu.msrs[slotOf(M.MSR_IA32_PERF_CAPABILITIES) * 2]! : 0;
  const a = findCpuid(guest, 0xa, 0);
  const l7 = findCpuid(guest, 7, 0);
  pmuRefresh(x86, vcpu, s.pmu, h.pmu, {
    leafA: a === undefined ? null : { eax: a.eax, edx: a.edx },
    hleOrRtm: l7 !== undefined && (l7.ebx & HLE_RTM_AS_TESTED) !== 0,
    perfCap: pc,
    ds: s.ds,
    modelConsistent: s.modelConsistent,
  });
}

function isRtit(index: number): boolean {
  return (
    index === I.RTIT_CTL ||
    index === I.RTIT_STATUS ||
    index === I.RTIT_CR3_MATCH ||
    index === I.RTIT_OUTPUT_BASE ||
    index === I.RTIT_OUTPUT_MASK ||
    (index >= I.RTIT_ADDR0_A && index <= I.RTIT_ADDR3_B)
  );
}

const isVmxMsr = (index: number): boolean => index >= VMX_MSR_FIRST && index <= VMX_MSR_LAST;
const isSgxHash = (index: number): boolean => index >= I.SGXLEPUBKEYHASH0 && index <= I.SGXLEPUBKEYHASH3;

export const vmxOps: VendorOps = {
  module: 'kvm_intel',

  // vmx_hardware_setup enables only NX (kvm_enable_efer_bits(EFER_NX)), already in the base set.
  eferExtraBits(): number {
    return 0;
  },

  tscOffsetHonored: true,

  // vmx_hardware_setup adds MCG_LMCE_P and MCG_CMCI_P to MCG_CTL_P | MCG_SER_P.
  supportedMceCap: 0x9000500n,

  vcpuCreate(x86: X86, vcpu: Vcpu): void {
    const h = hostOf(x86);
    const s = new VmxVcpu();
    vcpu.vendorState = s;
    // (kvm_arch_vcpu_create's ARCH_CAPABILITIES/PERF_CAPABILITIES stuffing is in x86.ts.)
    // __vmx_vcpu_reset: microcode revision, the VMX MSRs = KVM's, SGX LE hash = the default.
    x86.storeReset(vcpu, M.MSR_IA32_UCODE_REV, 0, VMX_UCODE_REV_HI);
    if (h.nested) copyNestedToVcpu(vcpu, h.kvmNested);
    // vcpu_setup_sgx_lepubkeyhash exists only with CONFIG_X86_SGX_KVM: the profile's fresh value decides.
    SGX_DEFAULT_HASH.forEach(([lo, hi], i) => x86.storeReset(vcpu, I.SGXLEPUBKEYHASH0 + i, lo, hi));
    // kvm_pmu_init: the PMU is refreshed without CPUID, so it has no counters.
    pmuRefreshFor(x86, h, vcpu, s, []);
  },

  vcpuAfterSetCpuid(x86: X86, vcpu: Vcpu): void {
    const h = hostOf(x86);
    const s = stateOf(vcpu);
    const guest = vcpu.cpuid;
    const cap = (f: Feat): boolean => has(guest, f) && has(h.supported, f);
    // XSAVES is a guest capability only with XSAVE; VMX only when KVM offers nested VMX.
    if (!x86.hasCap(vcpu, CAP.XSAVE)) vcpu.capBits &= ~CAP.XSAVES;
    if (!h.nested) vcpu.capBits &= ~CAP.VMX;
    s.waitpkg = cap(F_WAITPKG);
    s.rtm = cap(F_RTM);
    s.busLock = cap(F_BUS_LOCK_DETECT);
    s.sgxLc = cap(F_SGX_LC);
    s.mpx = cap(F_MPX);
    s.ds = cap(F_DS);
    s.dtes64 = cap(F_DTES64);
    s.specCtrl = [CAP.SPEC_CTRL, CAP.AMD_STIBP, CAP.AMD_IBRS, CAP.AMD_SSBD].some((c) => x86.hasCap(vcpu, c));
    // vmx_vcpu_after_set_cpuid (6.12): the intercepts follow the raw guest CPUID (guest_cpuid_has,
    // guest_has_pred_cmd_msr), on a host with the feature.
    s.predCmdThrough = h.hostIbpb && (has(guest, F_SPEC_CTRL) || has(guest, F_AMD_IBPB) || has(guest, F_SBPB));
    s.flushCmdThrough = h.hostFlushL1d && has(guest, F_FLUSH_L1D);
    const l1 = findCpuid(guest, 1, 0);
    s.modelConsistent = l1 !== undefined && familyModel(l1.eax) === h.familyModel;

    if (h.nested) {
      // vmx_secondary_exec_control: the nested PROCBASED_CTLS2 follows the guest CPUID.
      adjustSecondaryCtl(vcpu, h.kvmNested, SECONDARY_EXEC_ENABLE_XSAVES, x86.hasCap(vcpu, CAP.XSAVES));
      // RDPID is gated by ENABLE_RDTSCP too, so either feature enables it.
      const rdtscp = x86.hasCap(vcpu, CAP.RDTSCP) || x86.hasCap(vcpu, CAP.RDPID);
      adjustSecondaryCtl(vcpu, h.kvmNested, SECONDARY_EXEC_ENABLE_RDTSCP, rdtscp);
      adjustSecondaryCtl(vcpu, h.kvmNested, SECONDARY_EXEC_ENABLE_INVPCID, cap(F_INVPCID));
      // Exiting controls: L1 may intercept RDRAND/RDSEED only when the guest has the instruction.
      adjustSecondaryCtl(vcpu, h.kvmNested, SECONDARY_EXEC_RDRAND_EXITING, cap(F_RDRAND));
      adjustSecondaryCtl(vcpu, h.kvmNested, SECONDARY_EXEC_RDSEED_EXITING, cap(F_RDSEED));
      adjustSecondaryCtl(vcpu, h.kvmNested, SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE, s.waitpkg);
    }
    if (vmxCap(x86, h, vcpu)) {
      s.featCtlValid |= FEAT_CTL_VMX_INSIDE_SMX | FEAT_CTL_VMX_OUTSIDE_SMX;
      crFixed1Update(vcpu, guest, x86.rules.cetMsrs);
    } else {
      s.featCtlValid &= ~(FEAT_CTL_VMX_INSIDE_SMX | FEAT_CTL_VMX_OUTSIDE_SMX);
    }
    // TSX_CTRL: RTM_DISABLE when the host has RTM but the guest CPUID does not.
    if (h.hostRtm && h.tsxCtrlUret) x86.store(vcpu, I.TSX_CTRL, has(guest, F_RTM) ? 0 : TSX_CTRL_RTM_DISABLE, 0);
    s.featCtlValid = cap(F_SGX) ? s.featCtlValid | FEAT_CTL_SGX_ENABLED : s.featCtlValid & ~FEAT_CTL_SGX_ENABLED;
    s.featCtlValid = s.sgxLc ? s.featCtlValid | FEAT_CTL_SGX_LC_ENABLED : s.featCtlValid & ~FEAT_CTL_SGX_LC_ENABLED;
    // kvm_vcpu_after_set_cpuid: kvm_pmu_refresh.
    pmuRefreshFor(x86, h, vcpu, s, guest);
  },

  getMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    switch (index) {
      // CET state the vendor keeps in the VMCS/VMCB; __kvm_get_msr already applied the CET gates.
      case M.MSR_IA32_S_CET:
      case M.MSR_IA32_INT_SSP_TAB:
      case M.MSR_KVM_INTERNAL_GUEST_SSP:
        return x86.load(vcpu, index, out);
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_IA32_FEAT_CTL:
        return x86.load(vcpu, index, out);
      case M.MSR_IA32_DEBUGCTLMSR:
        // vmx_guest_debugctl_read hides FREEZE_IN_SMM; kvmsr never stores that bit.
        return x86.load(vcpu, index, out);
      case M.MSR_EFER:
        return x86.getMsrCommon(vcpu, index, host, out);
      case I.TSX_CTRL: {
        const h = hostOf(x86);
        if (!host && (vcpu.msrs[slotOf(M.MSR_IA32_ARCH_CAPABILITIES) * 2]! & ARCH_CAP_TSX_CTRL_MSR) === 0) return MSR_ERR;
        return h.tsxCtrlUret ? x86.load(vcpu, index, out) : x86.getMsrCommon(vcpu, index, host, out);
      }
      case I.UMWAIT_CONTROL:
        if (!host && !stateOf(vcpu).waitpkg) return MSR_ERR;
        return x86.load(vcpu, index, out);
      case M.MSR_IA32_SPEC_CTRL:
        if (!host && !stateOf(vcpu).specCtrl) return MSR_ERR;
        return x86.load(vcpu, index, out);
      case M.MSR_IA32_BNDCFGS:
        if (!hostOf(x86).mpx || (!host && !stateOf(vcpu).mpx)) return MSR_ERR;
        return x86.load(vcpu, index, out);
      case I.MCG_EXT_CTL:
        if (!host && (vcpu.msrs[slotOf(M.MSR_IA32_FEAT_CTL) * 2]! & FEAT_CTL_LMCE_ENABLED) === 0) return MSR_ERR;
        return x86.load(vcpu, index, out);
    }
    if (isSgxHash(index)) {
      if (!host && !stateOf(vcpu).sgxLc) return MSR_ERR;
      return x86.load(vcpu, index, out);
    }
    if (isVmxMsr(index)) {
      // No host bypass: the MSRs exist only for a vCPU model with VMX.
      if (!vmxCap(x86, hostOf(x86), vcpu)) return MSR_ERR;
      return vmxGetVmxMsr(vcpu.msrs, VCPU_NESTED_BASE, index, out);
    }
    // pt_mode=0 (system mode, the default): no RTIT MSR exists for a vCPU.
    if (isRtit(index)) return MSR_ERR;
    if (isUretMsr(index)) return x86.load(vcpu, index, out);
    const pmu = stateOf(vcpu).pmu;
    if (pmuOwns(pmu, index)) return pmuGet(x86, vcpu, index, out);
    return x86.getMsrCommon(vcpu, index, host, out);
  },

  setMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    switch (index) {
      case M.MSR_IA32_S_CET:
      case M.MSR_IA32_INT_SSP_TAB:
      case M.MSR_KVM_INTERNAL_GUEST_SSP:
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_EFER:
        // set_efer; vmx_set_efer changes nothing visible.
        return x86.setMsrCommon(vcpu, index, host, lo, hi);
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
        // __kvm_set_msr already refused non-canonical bases and canonicalized SYSENTER_EIP/ESP.
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_SYSENTER_CS:
        // vmcs_write32: the VMCS field has 32 bits.
        return x86.store(vcpu, index, lo, 0);
      case M.MSR_IA32_DEBUGCTLMSR:
        return setDebugctl(x86, vcpu, host, lo, hi);
      case M.MSR_IA32_BNDCFGS:
        if (!hostOf(x86).mpx || (!host && !stateOf(vcpu).mpx)) return MSR_ERR;
        // The address (bits 63:12) must be canonical; bits 11:2 are reserved.
        if (x86.isNoncanonical(vcpu, hi) || (lo & 0xffc) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      case I.UMWAIT_CONTROL:
        if (!host && !stateOf(vcpu).waitpkg) return MSR_ERR;
        if ((lo & 2) !== 0 || hi !== 0) return MSR_ERR; // reserved bit 1 and bits 63:32
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_SPEC_CTRL:
        if (!host && !stateOf(vcpu).specCtrl) return MSR_ERR;
        // kvm_spec_ctrl_test_value: the host's WRMSR faults on bits its CPU does not enumerate.
        if ((lo & ~hostOf(x86).specCtrlLo) !== 0 || (hi & ~hostOf(x86).specCtrlHi) !== 0) return MSR_ERR;
        // The first non-zero value stops the intercept (vmx_disable_intercept_for_msr, MSR_TYPE_RW).
        if (lo !== 0 || hi !== 0) stateOf(vcpu).specCtrlThrough = true;
        return x86.store(vcpu, index, lo, hi);
      case I.TSX_CTRL: {
        if (!host && (vcpu.msrs[slotOf(M.MSR_IA32_ARCH_CAPABILITIES) * 2]! & ARCH_CAP_TSX_CTRL_MSR) === 0) return MSR_ERR;
        if ((lo & ~3) !== 0 || hi !== 0) return MSR_ERR; // RTM_DISABLE and CPUID_CLEAR only
        return hostOf(x86).tsxCtrlUret ? x86.store(vcpu, index, lo, hi) : x86.setMsrCommon(vcpu, index, host, lo, hi);
      }
      case I.MCG_EXT_CTL:
        if (!host && (vcpu.msrs[slotOf(M.MSR_IA32_FEAT_CTL) * 2]! & FEAT_CTL_LMCE_ENABLED) === 0) return MSR_ERR;
        if ((lo & ~1) !== 0 || hi !== 0) return MSR_ERR; // LMCE_EN only
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_FEAT_CTL: {
        // is_vmx_feature_control_msr_valid; a host write of 0 also leaves VMX operation (no VMXON here).
        const cur = vcpu.msrs[slotOf(M.MSR_IA32_FEAT_CTL) * 2]!;
        if (!host && (cur & FEAT_CTL_LOCKED) !== 0) return MSR_ERR;
        const valid = host && x86.rules.featCtlHostSupported ? KVM_SUPPORTED_FEATURE_CONTROL : featCtlValidBits(vcpu);
        if ((lo & ~valid) !== 0 || hi !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      }
      case M.MSR_IA32_PERF_CAPABILITIES:
        return setPerfCapabilities(x86, vcpu, host, lo, hi);
    }
    if (isSgxHash(index)) {
      if (!host) {
        // Writable while FEAT_CTL is unlocked or has SGX_LC_ENABLED (KVM does not emulate activation).
        const fc = vcpu.msrs[slotOf(M.MSR_IA32_FEAT_CTL) * 2]!;
        if (!stateOf(vcpu).sgxLc || ((fc & FEAT_CTL_LOCKED) !== 0 && (fc & FEAT_CTL_SGX_LC_ENABLED) === 0)) return MSR_ERR;
      }
      return x86.store(vcpu, index, lo, hi);
    }
    if (isVmxMsr(index)) {
      if (!host) return MSR_ERR; // read-only for the guest
      if (!vmxCap(x86, hostOf(x86), vcpu)) return MSR_ERR;
      return vmxSetVmxMsr(vcpu, hostOf(x86).kvmNested, index, lo, hi);
    }
    if (isRtit(index)) return MSR_ERR;
    // User-return MSRs (vmx_set_guest_uret_msr): stored as given after __kvm_set_msr's checks.
    if (isUretMsr(index)) return x86.store(vcpu, index, lo, hi);
    const pmu = stateOf(vcpu).pmu;
    if (pmuOwns(pmu, index)) return pmuSet(x86, vcpu, pmu, index, host, lo, hi);
    return x86.setMsrCommon(vcpu, index, host, lo, hi);
  },

  fastGetClass(x86: X86, index: number): number {
    switch (index) {
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_IA32_FEAT_CTL:
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_IA32_SPEC_CTRL:
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_SYSCALL_MASK:
      case I.UMWAIT_CONTROL:
      case I.MCG_EXT_CTL:
        return GET_LOAD; // host reads have no gate
      case I.TSX_CTRL:
        return hostOf(x86).tsxCtrlUret ? GET_LOAD : FAST_SLOW;
      case M.MSR_TSC_AUX:
      case M.MSR_IA32_BNDCFGS:
        return FAST_SLOW;
    }
    if (isSgxHash(index)) return GET_LOAD;
    if (isVmxMsr(index) || isRtit(index) || isIntelPmuMsr(index)) return FAST_SLOW;
    return commonFastGetClass(x86, index);
  },

  fastSetClass(x86: X86, index: number): number {
    switch (index) {
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_STAR:
      case M.MSR_SYSCALL_MASK:
        return SET_STORE; // X86 adds the canonical checks for the bases and SYSENTER_EIP/ESP
      case M.MSR_EFER:
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_IA32_BNDCFGS:
      case M.MSR_IA32_SPEC_CTRL:
      case M.MSR_IA32_FEAT_CTL:
      case M.MSR_IA32_PERF_CAPABILITIES:
      case M.MSR_TSC_AUX:
      case I.UMWAIT_CONTROL:
      case I.TSX_CTRL:
      case I.MCG_EXT_CTL:
        return FAST_SLOW;
    }
    if (isSgxHash(index)) return SET_STORE;
    if (isVmxMsr(index) || isRtit(index) || isIntelPmuMsr(index)) return FAST_SLOW;
    return commonFastSetClass(x86, index);
  },

  guestPassthrough(x86: X86, vcpu: Vcpu, index: number, write: boolean, lo: number, hi: number, out: MsrValue): number | null {
    // What vmx's MSR bitmap lets the guest reach (6.12 vmx_possible_passthrough_msrs) and kvmsr
    // models: the command MSRs and SPEC_CTRL. The CPU itself takes the access, or raises #GP on a
    // reserved bit with no exit to KVM (so no userspace exit either).
    const s = stateOf(vcpu);
    switch (index) {
      case M.MSR_IA32_PRED_CMD:
      case M.MSR_IA32_FLUSH_CMD:
        if (!write || !(index === M.MSR_IA32_PRED_CMD ? s.predCmdThrough : s.flushCmdThrough)) return null;
        return (lo & ~CMD_BIT) !== 0 || hi !== 0 ? MSR_ERR : MSR_OK;
      case M.MSR_IA32_SPEC_CTRL: {
        if (!s.specCtrlThrough) return null;
        // vmx_spec_ctrl_restore_host reads the guest's value back (vmx->spec_ctrl) at each exit.
        if (!write) return x86.load(vcpu, index, out);
        const h = hostOf(x86);
        if ((lo & ~h.specCtrlLo) !== 0 || (hi & ~h.specCtrlHi) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      }
    }
    return null;
  },

  getFeatureMsr(x86: X86, index: number, out: MsrValue): number {
    // vmx_get_feature_msr: the VMX MSRs from vmcs_config.nested, or an error with nested=0.
    if (!isVmxMsr(index)) return MSR_UNSUPPORTED;
    const h = hostOf(x86);
    if (!h.nested) return MSR_ERR;
    return vmxGetVmxMsr(h.kvmNested, 0, index, out);
  },
};

/** The user-return MSRs without a vmx_get/set_msr case (EFER and TSX_CTRL have one). */
function isUretMsr(index: number): boolean {
  return (
    index === M.MSR_STAR ||
    index === M.MSR_LSTAR ||
    index === M.MSR_CSTAR ||
    index === M.MSR_SYSCALL_MASK ||
    index === M.MSR_TSC_AUX
  );
}

/**
 * msr_ia32_feature_control_valid_bits. vmx_setup_mce adds LMCE_ENABLED when KVM_X86_SETUP_MCE
 * gives MCG_LMCE_P; there is no vendor hook for it, and only that ioctl changes MCG_CAP, so the
 * bit is read from MCG_CAP here.
 */
function featCtlValidBits(vcpu: Vcpu): number {
  const mcgCap = vcpu.msrs[slotOf(M.MSR_IA32_MCG_CAP) * 2]!;
  return stateOf(vcpu).featCtlValid | ((mcgCap & MCG_LMCE_P) !== 0 ? FEAT_CTL_LMCE_ENABLED : 0);
}

/** vmx_get_supported_debugctl. */
function supportedDebugctl(x86: X86, vcpu: Vcpu, host: boolean): number {
  const h = hostOf(x86);
  if (host) return h.debugctlHost;
  const s = stateOf(vcpu);
  let bits = 0;
  if ((h.debugctlHost & DEBUGCTL_BUS_LOCK_DETECT) !== 0 && s.busLock) bits |= DEBUGCTL_BUS_LOCK_DETECT;
  if ((h.debugctlHost & DEBUGCTL_LBR) !== 0 && s.pmu.lbr) bits |= DEBUGCTL_LBR | DEBUGCTL_FREEZE_LBRS_ON_PMI;
  if ((h.debugctlHost & DEBUGCTL_RTM_DEBUG) !== 0 && s.rtm) bits |= DEBUGCTL_RTM_DEBUG;
  return bits;
}

/**
 * vmx_set_msr DEBUGCTL: vmx_is_valid_debugctl tolerates BTF and LBR outside the supported set
 * (logged as unimplemented), refuses other bits; the stored value keeps only supported bits.
 */
function setDebugctl(x86: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  const supported = supportedDebugctl(x86, vcpu, host);
  if (hi !== 0 || (lo & ~supported & ~(DEBUGCTL_BTF | DEBUGCTL_LBR)) !== 0) return MSR_ERR;
  return x86.store(vcpu, M.MSR_IA32_DEBUGCTLMSR, lo & supported, 0);
}

/** vmx_set_msr PERF_CAPABILITIES, then kvm_set_msr_common; a changed value refreshes the PMU. */
function setPerfCapabilities(x86: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  const h = hostOf(x86);
  const s = stateOf(vcpu);
  if (x86.rules.perfCapNeedsPmu && (lo !== 0 || hi !== 0) && s.pmu.version === 0) return MSR_ERR;
  if ((lo & PERF_CAP_LBR_FMT) !== 0) {
    if ((lo & PERF_CAP_LBR_FMT) !== (h.perfCapLo & PERF_CAP_LBR_FMT) || !s.modelConsistent) return MSR_ERR;
  }
  if ((lo & PERF_CAP_PEBS_FORMAT) !== 0) {
    if ((lo & PERF_CAP_PEBS_MASK) !== (h.perfCapLo & PERF_CAP_PEBS_MASK)) return MSR_ERR;
    if (!s.ds || !s.dtes64 || !s.modelConsistent) return MSR_ERR;
  }
  const at = slotOf(M.MSR_IA32_PERF_CAPABILITIES) * 2;
  const oldLo = vcpu.msrs[at]!;
  const oldHi = vcpu.msrs[at + 1]!;
  const ret = x86.setMsrCommon(vcpu, M.MSR_IA32_PERF_CAPABILITIES, host, lo, hi);
  if (ret === MSR_OK && (oldLo !== lo >>> 0 || oldHi !== hi >>> 0)) {
    pmuRefreshFor(x86, h, vcpu, s, vcpu.cpuid);
  }
  return ret;
}
