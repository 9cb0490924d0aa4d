// The AMD SVM vendor module (kvm_amd: arch/x86/kvm/svm/svm.c and the AMD vPMU, svm/pmu.c) as the
// 6.18 kernel answers host and guest MSR accesses (../shared/reference/vendor-msr-spec.md §4, §6.4,
// §8.2). Where 6.12 (the source read) differs from 6.18, the 6.18 shape is used and the line says so.
//
// State lives in the vCPU's slot array: each MSR in its own slot, except
//  - SYSENTER_EIP/ESP: the slot's upper half is svm->sysenter_e?p_hi, the shadow that only an
//    Intel-compatible vCPU sees (the VMCB field holds bits 31:0, the slot's lower half);
//  - the AMD PMU: counter i's event select and count live in the F15H_PERF_CTLi/CTRi slots, and
//    the K7 indices alias counters 0-3 (get_gp_pmc_amd), so both names see one value.
// What is not an MSR value (the vPMU shape, the guest family/model, MAXPHYADDR) is kept per vCPU
// on the vCPU (vendorState), recomputed at vCPU creation and KVM_SET_CPUID2.
import { commonFastGetClass, commonFastSetClass } from '../kvm/x86/fast-classes.js';
import { CAP } from '../kvm/x86/cpuid-caps.js';
import { FAST_SLOW, GET_LOAD, GET_ZERO, SET_DROP, SET_STORE, UNHANDLED } from '../kvm/x86/fast-path.js';
import { M } from '../kvm/x86/msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from '../kvm/x86/msr-ret.js';
import { findCpuid } from '../kvm/profile.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { VendorOps } from '../kvm/vendor.js';
import { zero, type X86 } from '../kvm/x86/x86.js';

const EFER_SVME = 1 << 12;
const EFER_FFXSR = 1 << 14;
const EFER_AUTOIBRS = 1 << 21;
/** SVM_VM_CR_VALID_MASK, SVM_VM_CR_SVM_LOCK_MASK, SVM_VM_CR_SVM_DIS_MASK. */
const VM_CR_VALID = 0x1f;
const VM_CR_LOCK = 1 << 3;
const VM_CR_SVMDIS = 1 << 4;
const DEBUGCTL_LBR = 1 << 0;
const DEBUGCTL_BTF = 1 << 1;
const SPEC_CTRL_SSBD = 1 << 2;
/** SVM_TSC_RATIO_RSVD (bits 63:40), as a mask of the upper half. */
const TSC_RATIO_RSVD_HI = 0xffffff00;
/** __svm_vcpu_reset with KVM_X86_QUIRK_STUFF_FEATURE_MSRS. */
const SVM_UCODE_REV = 0x01000065;
/** AMD64_NUM_COUNTERS, AMD64_NUM_COUNTERS_CORE. */
const AMD_LEGACY_COUNTERS = 4;
const AMD_CORE_COUNTERS = 6;
/** amd_pmu_refresh: eventsel reserved bits 0xfffffff000280000, as halves. */
const EVENTSEL_RSVD_LO = 0x00280000;
const EVENTSEL_RSVD_HI = 0xfffffff0;
/** 48-bit counters: the upper half keeps bits 47:32. */
const COUNTER_HI_MASK = 0xffff;

/** What the host and module parameters fix for every vCPU (per X86, i.e. per Kvm). */
interface SvmHost {
  nested: boolean;
  lbrv: boolean;
  /** kvm.enable_pmu. */
  pmu: boolean;
  /** kvm_pmu_cap.num_counters_gp after svm_set_cpu_caps. */
  hostGp: number;
  /** svm_get_feature_msr(MSR_AMD64_DE_CFG): the DE_CFG bits a write may set. */
  deCfgLo: number;
  deCfgHi: number;
  /** SPEC_CTRL bits the host CPU accepts (kvm_spec_ctrl_test_value's trial write). */
  specCtrlLo: number;
  specCtrlHi: number;
  /** kvm_caps.default_tsc_scaling_ratio, upper and lower half. */
  tscRatioLo: number;
  tscRatioHi: number;
}

/** Per-vCPU facts that are not MSR values. */
interface SvmVcpu {
  /** struct kvm_pmu version and nr_arch_gp_counters. */
  pmuVersion: number;
  nrGp: number;
  /** What F15H_IC_CFG reads, or -1 when the guest CPUID has no leaf 1 (family/model unknown). */
  icCfg: number;
  /** cpuid_maxphyaddr. */
  maxPhyAddr: number;
}

function param(x86: X86, key: string, dflt: boolean): boolean {
  const v = x86.profile.host.moduleParams[key];
  return v === undefined ? dflt : ['Y', 'y', '1'].includes(v);
}

function cpuidBit(x86: X86, fn: number, reg: 'eax' | 'ebx' | 'ecx' | 'edx', bit: number, index = 0): boolean {
  const e = findCpuid(x86.profile.supportedCpuid, fn, index);
  return e !== undefined && ((e[reg] >>> bit) & 1) === 1;
}

function hostOf(x86: X86): SvmHost {
  let h = x86.vendorHost as SvmHost | undefined;
  if (h !== undefined) return h;
  const pmu = param(x86, 'kvm.enable_pmu', true);
  // svm_set_cpu_caps: PERFCTR_CORE needs >= 6 host counters, PERFMON_V2 reports the count.
  let hostGp = AMD_LEGACY_COUNTERS;
  if (cpuidBit(x86, 0x80000022, 'eax', 0)) hostGp = (findCpuid(x86.profile.supportedCpuid, 0x80000022, 0)?.ebx ?? 0) & 0xf;
  else if (cpuidBit(x86, 0x80000001, 'ecx', 23)) hostGp = AMD_CORE_COUNTERS;
  const de = x86.profile.featureMsrs.find((m) => m.index === M.MSR_AMD64_DE_CFG)?.value ?? 0n;
  // The host accepts the SPEC_CTRL bits it enumerates: IBRS, STIBP, SSBD (AMD or Intel bits), PSFD.
  let spec = 0;
  if (cpuidBit(x86, 0x80000008, 'ebx', 14) || cpuidBit(x86, 7, 'edx', 26)) spec |= 1 << 0;
  if (cpuidBit(x86, 0x80000008, 'ebx', 15) || cpuidBit(x86, 7, 'edx', 27)) spec |= 1 << 1;
  if (cpuidBit(x86, 0x80000008, 'ebx', 24) || cpuidBit(x86, 7, 'edx', 31)) spec |= SPEC_CTRL_SSBD;
  if (cpuidBit(x86, 0x80000008, 'ebx', 28)) spec |= 1 << 7;
  const specCtrl = x86.profile.specCtrlAccepted ?? BigInt(spec >>> 0);
  // Without TSC scaling tsc_scaling_ratio_frac_bits stays 0 and the default ratio is 1.
  const scaling = param(x86, 'kvm_amd.tsc_scaling', true);
  h = {
    nested: param(x86, 'kvm_amd.nested', true),
    lbrv: param(x86, 'kvm_amd.lbrv', true),
    pmu,
    hostGp,
    deCfgLo: Number(de & 0xffffffffn),
    deCfgHi: Number((de >> 32n) & 0xffffffffn),
    // A measured profile knows what the host CPU really takes (a VM host may take bits it hides).
    specCtrlLo: Number(specCtrl & 0xffffffffn),
    specCtrlHi: Number(specCtrl >> 32n),
    tscRatioLo: scaling ? 0 : 1,
    tscRatioHi: scaling ? 1 : 0,
  };
  x86.vendorHost = h;
  return h;
}

function vcpuState(vcpu: Vcpu): SvmVcpu {
  let s = vcpu.vendorState as SvmVcpu | undefined;
  if (s === undefined) {
    s = { pmuVersion: 0, nrGp: 0, icCfg: -1, maxPhyAddr: 36 };
    vcpu.vendorState = s;
  }
  return s;
}

/** guest_has_spec_ctrl_msr. */
function guestHasSpecCtrl(x86: X86, vcpu: Vcpu): boolean {
  return x86.hasCap(vcpu, CAP.SPEC_CTRL | CAP.AMD_STIBP | CAP.AMD_IBRS | CAP.AMD_SSBD);
}

/** page_address_valid: page aligned and below 2^cpuid_maxphyaddr. */
function pageAddressValid(maxPhy: number, lo: number, hi: number): boolean {
  if ((lo & 0xfff) !== 0) return false;
  if (maxPhy >= 64) return true;
  if (maxPhy >= 32) return hi >>> (maxPhy - 32) === 0;
  return hi === 0 && lo >>> maxPhy === 0;
}

// ---- the AMD vPMU (svm/pmu.c, pmu.c) ----

/** Result of pmuGet/pmuSet when the PMU does not claim the index (kvm_pmu_is_valid_msr false). */
const NOT_PMU = -1000;

/** The F15H slot index holding counter idx's event select (or count when `counter`). */
function pmcIndex(idx: number, counter: boolean): number {
  return M.MSR_F15H_PERF_CTL0 + 2 * idx + (counter ? 1 : 0);
}

/** kvm_pmu_refresh + amd_pmu_refresh (also kvm_pmu_init at vCPU creation). */
function pmuRefresh(x86: X86, vcpu: Vcpu, h: SvmHost, s: SvmVcpu): void {
  // kvm_pmu_reset: counters, event selects, GLOBAL_CTL and GLOBAL_STATUS back to 0.
  for (let i = 0; i < 12; i++) x86.store(vcpu, M.MSR_F15H_PERF_CTL0 + i, 0, 0);
  for (let i = 0; i < 8; i++) x86.store(vcpu, M.MSR_K7_EVNTSEL0 + i, 0, 0);
  for (let i = 0; i < 4; i++) x86.store(vcpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS + i, 0, 0);
  s.pmuVersion = 0;
  s.nrGp = 0;
  if (!h.pmu) return;
  // 6.18 tests guest_cpu_cap_has (CPUID bit and KVM support); 6.12 used guest_cpuid_has.
  s.pmuVersion = 1;
  let n = AMD_LEGACY_COUNTERS;
  if (x86.hasCap(vcpu, CAP.PERFMON_V2)) {
    s.pmuVersion = 2;
    n = (findCpuid(vcpu.cpuid, 0x80000022)?.ebx ?? 0) & 0xf;
  } else if (x86.hasCap(vcpu, CAP.PERFCTR_CORE)) {
    n = AMD_CORE_COUNTERS;
  }
  s.nrGp = Math.min(n, h.hostGp);
  // At RESET GLOBAL_CTL enables every GP counter (kvm_pmu_has_perf_global_ctrl: version > 1).
  if (s.pmuVersion > 1 && s.nrGp > 0) x86.store(vcpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL, (1 << s.nrGp) - 1, 0);
}

/** Which GP counter a K7 or F15H index names, and whether it is the count; -1 if neither range. */
function pmcOf(x86: X86, vcpu: Vcpu, index: number): number {
  if (index >= M.MSR_K7_EVNTSEL0 && index <= M.MSR_K7_EVNTSEL3) return (index - M.MSR_K7_EVNTSEL0) << 1;
  if (index >= M.MSR_K7_PERFCTR0 && index <= M.MSR_K7_PERFCTR3) return ((index - M.MSR_K7_PERFCTR0) << 1) | 1;
  if (index >= M.MSR_F15H_PERF_CTL0 && index <= M.MSR_F15H_PERF_CTR5 && x86.hasCap(vcpu, CAP.PERFCTR_CORE)) {
    return index - M.MSR_F15H_PERF_CTL0;
  }
  return -1;
}

function isGlobal(index: number): boolean {
  return index >= M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS && index <= M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET;
}

/** kvm_pmu_is_valid_msr then kvm_pmu_get_msr / amd_pmu_get_msr. */
function pmuGet(x86: X86, vcpu: Vcpu, index: number, out: MsrValue): number {
  const s = vcpuState(vcpu);
  if (s.pmuVersion === 0) return NOT_PMU;
  const p = pmcOf(x86, vcpu, index);
  if (p >= 0) {
    // The range is valid as a whole; a counter beyond nr_arch_gp_counters has no pmc: ERR.
    if (p >> 1 >= s.nrGp) return MSR_ERR;
    return x86.load(vcpu, pmcIndex(p >> 1, (p & 1) === 1), out);
  }
  if (isGlobal(index) && s.pmuVersion > 1) {
    if (index === M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS || index === M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL) return x86.load(vcpu, index, out);
    return zero(out);
  }
  return NOT_PMU;
}

/** kvm_pmu_is_valid_msr then kvm_pmu_set_msr / amd_pmu_set_msr: AMD ignores reserved bits. */
function pmuSet(x86: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
  const s = vcpuState(vcpu);
  if (s.pmuVersion === 0) return NOT_PMU;
  const p = pmcOf(x86, vcpu, index);
  if (p >= 0) {
    const idx = p >> 1;
    if (idx >= s.nrGp) return MSR_ERR;
    // pmc_write_counter masks to 48 bits; an event select drops its reserved bits.
    if ((p & 1) === 1) return x86.store(vcpu, pmcIndex(idx, true), lo, hi & COUNTER_HI_MASK);
    return x86.store(vcpu, pmcIndex(idx, false), lo & ~EVENTSEL_RSVD_LO, hi & ~EVENTSEL_RSVD_HI);
  }
  if (!isGlobal(index) || s.pmuVersion <= 1) return NOT_PMU;
  const counters = (1 << s.nrGp) - 1; // ~global_ctrl_rsvd == ~global_status_rsvd
  const cur = x86.scratchOut;
  switch (index) {
    case M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS:
      // Read-only for the guest (writes ignored); the host may restore unreserved bits.
      if (!host) return MSR_OK;
      if (hi !== 0 || (lo & ~counters) !== 0) return MSR_ERR;
      return x86.store(vcpu, index, lo, 0);
    case M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL:
      return x86.store(vcpu, index, lo & counters, 0);
    case M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR:
      if (!host) {
        x86.load(vcpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, cur);
        x86.store(vcpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, cur.lo & ~lo, cur.hi & ~hi);
      }
      return MSR_OK;
    default: // STATUS_SET
      if (!host) {
        x86.load(vcpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, cur);
        x86.store(vcpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, cur.lo | (lo & counters), cur.hi);
      }
      return MSR_OK;
  }
}

function isPmuIndex(index: number): boolean {
  return (
    (index >= M.MSR_K7_EVNTSEL0 && index <= M.MSR_K7_PERFCTR3) ||
    (index >= M.MSR_F15H_PERF_CTL0 && index <= M.MSR_F15H_PERF_CTR5) ||
    isGlobal(index)
  );
}

/** svm_set_vm_cr: the new value is stored before the SVMDIS-while-SVME check fails. */
function setVmCr(x86: X86, vcpu: Vcpu, lo: number, hi: number): number {
  if (hi !== 0 || (lo & ~VM_CR_VALID) !== 0) return MSR_ERR;
  const cur = x86.scratchOut;
  x86.load(vcpu, M.MSR_VM_CR, cur);
  let chg = VM_CR_VALID;
  if ((cur.lo & VM_CR_SVMDIS) !== 0) chg &= ~(VM_CR_LOCK | VM_CR_SVMDIS);
  const v = (cur.lo & ~chg) | (lo & chg);
  x86.store(vcpu, M.MSR_VM_CR, v, 0);
  x86.load(vcpu, M.MSR_EFER, cur);
  if ((v & VM_CR_SVMDIS) !== 0 && (cur.lo & EFER_SVME) !== 0) return MSR_ERR;
  return MSR_OK;
}

/** The SYSENTER_EIP/ESP shadow of bits 63:32 applies to this vCPU. */
function sysenterHiKept(x86: X86, vcpu: Vcpu): boolean {
  return x86.rules.svmSysenterHiUnlessAmd ? !vcpu.amdCompatible : vcpu.intelVendor;
}

export const svmOps: VendorOps = {
  module: 'kvm_amd',

  // svm_hardware_setup: NX (required), FFXSR with host FXSR_OPT, AUTOIBRS with host AUTOIBRS,
  // SVME with nested. 6.12 also enables LMSLE with nested; 6.18 no longer does.
  eferExtraBits(x86: X86): number {
    let bits = 0;
    if (cpuidBit(x86, 0x80000001, 'edx', 25)) bits |= EFER_FFXSR;
    if (cpuidBit(x86, 0x80000021, 'eax', 8)) bits |= EFER_AUTOIBRS;
    if (hostOf(x86).nested) bits |= EFER_SVME;
    return bits;
  },

  tscOffsetHonored: true,

  vcpuCreate(x86: X86, vcpu: Vcpu): void {
    const h = hostOf(x86);
    // __svm_vcpu_reset: tsc_ratio_msr = default ratio; microcode_version stuffed (quirk on).
    x86.storeReset(vcpu, M.MSR_AMD64_TSC_RATIO, h.tscRatioLo, h.tscRatioHi);
    x86.storeReset(vcpu, M.MSR_IA32_UCODE_REV, SVM_UCODE_REV, 0);
    const s = vcpuState(vcpu);
    s.icCfg = -1;
    s.maxPhyAddr = 36;
    // kvm_pmu_init: AMD's refresh needs no CPUID, so a fresh vCPU has version 1 and 4 counters.
    pmuRefresh(x86, vcpu, h, s);
  },

  vcpuAfterSetCpuid(x86: X86, vcpu: Vcpu): void {
    const s = vcpuState(vcpu);
    // guest_cpuid_family/guest_cpuid_model, as svm_get_msr(MSR_F15H_IC_CFG) reads them.
    const l1 = findCpuid(vcpu.cpuid, 1);
    if (l1 === undefined) {
      s.icCfg = -1;
    } else {
      let family = (l1.eax >>> 8) & 0xf;
      if (family === 0xf) family += (l1.eax >>> 20) & 0xff;
      let model = (l1.eax >>> 4) & 0xf;
      if (family >= 6) model += ((l1.eax >>> 16) & 0xf) << 4;
      s.icCfg = family === 0x15 && model >= 0x2 && model < 0x20 ? 0x1e : 0;
    }
    // cpuid_query_maxphyaddr.
    const x0 = findCpuid(vcpu.cpuid, 0x80000000);
    const x8 = findCpuid(vcpu.cpuid, 0x80000008);
    s.maxPhyAddr = x0 !== undefined && x0.eax >>> 0 >= 0x80000008 && x8 !== undefined ? x8.eax & 0xff : 36;
    // kvm_vcpu_after_set_cpuid ends with kvm_pmu_refresh. svm_vcpu_after_set_cpuid also forces
    // the XSAVES cap for a guest with XSAVE; kvmsr leaves CAP.XSAVES alone because 6.18's only
    // visible consumer (the XSS gate in x86.ts) tests the raw CPUID bit.
    pmuRefresh(x86, vcpu, hostOf(x86), s);
  },

  getMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    switch (index) {
      // CET state the vendor keeps in the VMCS/VMCB; __kvm_get_msr already applied the CET gates.
      case M.MSR_IA32_S_CET:
      case M.MSR_IA32_INT_SSP_TAB:
      case M.MSR_KVM_INTERNAL_GUEST_SSP:
        return x86.load(vcpu, index, out);
      case M.MSR_AMD64_TSC_RATIO:
        if (!host && !x86.hasCap(vcpu, CAP.TSCRATEMSR)) return MSR_ERR;
        return x86.load(vcpu, index, out);
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_GS_BASE:
      case M.MSR_FS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_TSC_AUX:
      case M.MSR_VM_HSAVE_PA:
      case M.MSR_VM_CR:
      case M.MSR_AMD64_DE_CFG:
        return x86.load(vcpu, index, out);
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
        // Bits 63:32 come from the shadow only while the vCPU counts as Intel (compatible).
        x86.load(vcpu, index, out);
        if (!sysenterHiKept(x86, vcpu)) out.hi = 0;
        return MSR_OK;
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_IA32_LASTBRANCHFROMIP:
      case M.MSR_IA32_LASTBRANCHTOIP:
      case M.MSR_IA32_LASTINTFROMIP:
      case M.MSR_IA32_LASTINTTOIP:
        return hostOf(x86).lbrv ? x86.load(vcpu, index, out) : zero(out);
      case M.MSR_IA32_SPEC_CTRL:
        if (!host && !guestHasSpecCtrl(x86, vcpu)) return MSR_ERR;
        return x86.load(vcpu, index, out);
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        if (!host && !x86.hasCap(vcpu, CAP.VIRT_SSBD)) return MSR_ERR;
        return x86.load(vcpu, index, out);
      case M.MSR_F15H_IC_CFG: {
        const ic = vcpuState(vcpu).icCfg;
        if (ic < 0) return x86.getMsrCommon(vcpu, index, host, out);
        out.lo = ic;
        out.hi = 0;
        return MSR_OK;
      }
      default: {
        // kvm_get_msr_common hands PMU-owned indices to the vPMU before its legacy fallback.
        if (isPmuIndex(index)) {
          const r = pmuGet(x86, vcpu, index, out);
          if (r !== NOT_PMU) return r;
        }
        return x86.getMsrCommon(vcpu, index, host, out);
      }
    }
  },

  setMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    switch (index) {
      case M.MSR_IA32_S_CET:
      case M.MSR_IA32_INT_SSP_TAB:
      case M.MSR_KVM_INTERNAL_GUEST_SSP:
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_AMD64_TSC_RATIO: {
        if (!x86.hasCap(vcpu, CAP.TSCRATEMSR)) {
          if (!host) return MSR_ERR;
          // Without TSC scaling the ratio stays at its default; 0 is accepted (QEMU 6.2).
          if (lo === 0 && hi === 0) return MSR_OK;
          const cur = x86.scratchOut;
          x86.load(vcpu, index, cur);
          return (cur.lo | 0) === (lo | 0) && (cur.hi | 0) === (hi | 0) ? MSR_OK : MSR_ERR;
        }
        if ((hi & TSC_RATIO_RSVD_HI) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      }
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_GS_BASE:
      case M.MSR_FS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_TSC_AUX:
        // Canonical checks and TSC_AUX truncation already ran in __kvm_set_msr; the VMCB
        // SYSENTER_CS field is 64 bits wide.
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
        // The shadow takes bits 63:32 only if the vCPU is Intel (compatible) at the time of the write.
        return x86.store(vcpu, index, lo, sysenterHiKept(x86, vcpu) ? hi : 0);
      case M.MSR_IA32_DEBUGCTLMSR: {
        if (!hostOf(x86).lbrv) return MSR_OK; // ignored (kvm_pr_unimpl_wrmsr)
        if (!x86.rules.svmDebugctlBtfDropped) {
          // 6.1.131 on: bits 5:2 dropped, BTF and LBR kept, the rest reserved.
          const k = lo & ~0x3c;
          if (hi !== 0 || (k & ~(DEBUGCTL_LBR | DEBUGCTL_BTF)) !== 0) return MSR_ERR;
          return x86.store(vcpu, index, k, 0);
        }
        // BTF is dropped; 6.18 treats every other bit but LBR as reserved (6.12 dropped bits 5:2).
        const l = lo & ~DEBUGCTL_BTF;
        if (hi !== 0 || (l & ~DEBUGCTL_LBR) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, l, 0);
      }
      case M.MSR_IA32_LASTBRANCHFROMIP:
      case M.MSR_IA32_LASTBRANCHTOIP:
      case M.MSR_IA32_LASTINTFROMIP:
      case M.MSR_IA32_LASTINTTOIP:
        if (!hostOf(x86).lbrv) return MSR_UNSUPPORTED;
        if (!host) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_VM_HSAVE_PA:
        // The host may restore any value (migration from old kernels); stored page aligned.
        if (!host && !pageAddressValid(vcpuState(vcpu).maxPhyAddr, lo, hi)) return MSR_ERR;
        return x86.store(vcpu, index, lo & ~0xfff, hi);
      case M.MSR_VM_CR:
        return setVmCr(x86, vcpu, lo, hi);
      case M.MSR_VM_IGNNE:
        return MSR_OK; // every value is accepted and ignored
      case M.MSR_IA32_SPEC_CTRL:
        if (!host && !guestHasSpecCtrl(x86, vcpu)) return MSR_ERR;
        if ((hi & ~hostOf(x86).specCtrlHi) !== 0 || (lo & ~hostOf(x86).specCtrlLo) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        if (!host && !x86.hasCap(vcpu, CAP.VIRT_SSBD)) return MSR_ERR;
        if (hi !== 0 || (lo & ~SPEC_CTRL_SSBD) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_AMD64_DE_CFG: {
        const h = hostOf(x86);
        if ((lo & ~h.deCfgLo) !== 0 || (hi & ~h.deCfgHi) !== 0) return MSR_ERR;
        // Before 6.12.7 the guest may not change a bit: only the supported value itself passes.
        if (!host && !x86.rules.svmDeCfgGuestBits && (lo !== h.deCfgLo || hi !== h.deCfgHi)) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      }
      default: {
        if (isPmuIndex(index)) {
          const r = pmuSet(x86, vcpu, index, host, lo, hi);
          if (r !== NOT_PMU) return r;
        }
        return x86.setMsrCommon(vcpu, index, host, lo, hi);
      }
    }
  },

  fastGetClass(x86: X86, index: number): number {
    const h = hostOf(x86);
    switch (index) {
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_GS_BASE:
      case M.MSR_FS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_VM_HSAVE_PA:
      case M.MSR_VM_CR:
      case M.MSR_AMD64_DE_CFG:
      case M.MSR_AMD64_TSC_RATIO:
      case M.MSR_IA32_SPEC_CTRL:
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        return GET_LOAD; // host reads are never gated
      case M.MSR_TSC_AUX:
        return x86.tscAuxSupported ? GET_LOAD : FAST_SLOW;
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_IA32_LASTBRANCHFROMIP:
      case M.MSR_IA32_LASTBRANCHTOIP:
      case M.MSR_IA32_LASTINTFROMIP:
      case M.MSR_IA32_LASTINTTOIP:
        return h.lbrv ? GET_LOAD : GET_ZERO;
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_F15H_IC_CFG:
        return FAST_SLOW;
      default:
        if (h.pmu && isPmuIndex(index)) return FAST_SLOW;
        return commonFastGetClass(x86, index);
    }
  },

  fastSetClass(x86: X86, index: number): number {
    const h = hostOf(x86);
    switch (index) {
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_GS_BASE:
      case M.MSR_FS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_IA32_SYSENTER_CS:
        return SET_STORE;
      case M.MSR_VM_IGNNE:
        return SET_DROP;
      case M.MSR_IA32_DEBUGCTLMSR:
        return h.lbrv ? FAST_SLOW : SET_DROP;
      case M.MSR_IA32_LASTBRANCHFROMIP:
      case M.MSR_IA32_LASTBRANCHTOIP:
      case M.MSR_IA32_LASTINTFROMIP:
      case M.MSR_IA32_LASTINTTOIP:
        return h.lbrv ? SET_STORE : UNHANDLED;
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_TSC_AUX:
      case M.MSR_VM_HSAVE_PA:
      case M.MSR_VM_CR:
      case M.MSR_AMD64_TSC_RATIO:
      case M.MSR_IA32_SPEC_CTRL:
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
      case M.MSR_AMD64_DE_CFG:
        return FAST_SLOW;
      default:
        if (h.pmu && isPmuIndex(index)) return FAST_SLOW;
        return commonFastSetClass(x86, index);
    }
  },

  // svm_get_feature_msr: only DE_CFG, whose LFENCE-serializing bit the host's profile gives.
  getFeatureMsr(x86: X86, index: number, out: MsrValue): number {
    if (index !== M.MSR_AMD64_DE_CFG) return MSR_UNSUPPORTED;
    const h = hostOf(x86);
    out.lo = h.deCfgLo;
    out.hi = h.deCfgHi;
    return MSR_OK;
  },
};
