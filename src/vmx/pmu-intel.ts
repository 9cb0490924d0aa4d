// The Intel vPMU's MSRs (arch/x86/kvm/pmu.c kvm_pmu_refresh/kvm_pmu_get_msr/kvm_pmu_set_msr and
// arch/x86/kvm/vmx/pmu_intel.c intel_pmu_refresh/intel_is_valid_msr/intel_pmu_get_msr/
// intel_pmu_set_msr). The vPMU has no counters until KVM_SET_CPUID2 gives a leaf 0xA; until then
// nothing here owns an index and kvm_get/set_msr_common answer (0 for the four legacy P6 MSRs,
// KVM_MSR_RET_UNSUPPORTED for the rest). Counters are emulated and never count: a counter reads
// back what was written, masked to its width. Values live in the vCPU's slots: GP counter i in
// 0xc1+i (the full-width alias 0x4c1+i shares it), event selector i in 0x186+i, fixed counter i
// in 0x309+i, the global MSRs in their own slots.
import { MSR_ERR, MSR_OK, type MsrValue } from '../kvm/x86/msr-ret.js';
import { slotOf } from '../kvm/x86/msr-slots.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { X86 } from '../kvm/x86/x86.js';

export const enum P {
  PERFCTR0 = 0xc1,
  EVNTSEL0 = 0x186,
  FIXED_CTR0 = 0x309,
  FIXED_CTR_CTRL = 0x38d,
  GLOBAL_STATUS = 0x38e,
  GLOBAL_CTRL = 0x38f,
  GLOBAL_OVF_CTRL = 0x390,
  PEBS_ENABLE = 0x3f1,
  PEBS_DATA_CFG = 0x3f2,
  PMC0 = 0x4c1,
  DS_AREA = 0x600,
}
/** KVM_MAX_NR_INTEL_GP_COUNTERS and KVM_MAX_NR_FIXED_COUNTERS. */
export const MAX_GP = 8;
export const MAX_FIXED = 3;

const PERF_CAP_LBR_FMT = 0x3f;
const PERF_CAP_PEBS_FORMAT = 0xf00;
const PERF_CAP_PEBS_BASELINE = 1 << 14;
const PMU_CAP_FW_WRITES = 1 << 13;

/** What the host's PMU allows (kvm_pmu_cap), as KVM_GET_SUPPORTED_CPUID leaf 0xA reports it. */
export interface PmuHostCaps {
  enablePmu: boolean;
  nrGp: number;
  gpWidth: number;
  nrFixed: number;
  fixedWidth: number;
  /** The host has HLE or RTM (boot_cpu_has). */
  hleOrRtm: boolean;
  /** kvm_caps.supported_perf_cap has an LBR format, so vmx_lbr_caps has records. */
  lbrFmt: number;
}

/** What the guest CPUID and PERF_CAPABILITIES give intel_pmu_refresh. */
export interface PmuGuestModel {
  /** CPUID.0xA eax/edx, or null without the leaf. */
  leafA: { eax: number; edx: number } | null;
  /** intel_pmu_refresh's HLE/RTM test on CPUID.7.0 EBX (see vmx-ops.ts HLE_RTM_AS_TESTED). */
  hleOrRtm: boolean;
  /** vcpu_get_perf_capabilities: PERF_CAPABILITIES when the guest has PDCM, else 0 (low half). */
  perfCap: number;
  /** Guest CPUID has DS (guest_cpuid_has). */
  ds: boolean;
  /** cpuid_model_is_consistent. */
  modelConsistent: boolean;
}

/** struct kvm_pmu as far as MSR answers depend on it; 64-bit masks as (lo, hi) u32 halves. */
export class IntelPmu {
  version = 0;
  nrGp = 0;
  nrFixed = 0;
  gpLo = 0;
  gpHi = 0;
  fixedLo = 0;
  fixedHi = 0;
  eventselRsvdLo = 0x00200000;
  eventselRsvdHi = 0xffffffff;
  /** raw_event_mask has HSW_IN_TX_CHECKPOINTED: counter 2 may set it. */
  inTxCheckpointed = false;
  fixedCtrlRsvdLo = 0xffffffff;
  fixedCtrlRsvdHi = 0xffffffff;
  globalCtrlRsvdLo = 0xffffffff;
  globalCtrlRsvdHi = 0xffffffff;
  globalStatusRsvdLo = 0xffffffff;
  globalStatusRsvdHi = 0xffffffff;
  pebsEnableRsvdLo = 0xffffffff;
  pebsEnableRsvdHi = 0xffffffff;
  pebsDataCfgRsvdLo = 0xffffffff;
  pebsDataCfgRsvdHi = 0xffffffff;
  perfCap = 0;
  ds = false;
  /** intel_pmu_lbr_is_enabled: the vCPU's LBR record count is non-zero. */
  lbr = false;
}

/** A counter mask of `width` bits as (lo, hi). */
function widthMask(width: number): [number, number] {
  if (width <= 0) return [0, 0];
  if (width >= 64) return [0xffffffff, 0xffffffff];
  if (width >= 32) return [0xffffffff, 2 ** (width - 32) - 1];
  return [2 ** width - 1, 0];
}

/** kvm_pmu_refresh (with kvm_pmu_reset) and intel_pmu_refresh. */
export function pmuRefresh(x86: X86, vcpu: Vcpu, pmu: IntelPmu, host: PmuHostCaps, g: PmuGuestModel): void {
  // kvm_pmu_reset: counters, event selectors, FIXED_CTR_CTRL, GLOBAL_CTRL and GLOBAL_STATUS to 0.
  // (PEBS_ENABLE, DS_AREA and PEBS_DATA_CFG keep their values.)
  for (let i = 0; i < MAX_GP; i++) {
    x86.store(vcpu, P.PERFCTR0 + i, 0, 0);
    x86.store(vcpu, P.EVNTSEL0 + i, 0, 0);
  }
  for (let i = 0; i < MAX_FIXED; i++) x86.store(vcpu, P.FIXED_CTR0 + i, 0, 0);
  x86.store(vcpu, P.FIXED_CTR_CTRL, 0, 0);
  x86.store(vcpu, P.GLOBAL_CTRL, 0, 0);
  x86.store(vcpu, P.GLOBAL_STATUS, 0, 0);
  Object.assign(pmu, new IntelPmu());
  if (!host.enablePmu) return;

  // intel_pmu_refresh: nothing without CPUID leaf 0xA or with version 0.
  if (g.leafA === null) return;
  const { eax, edx } = g.leafA;
  pmu.version = eax & 0xff;
  if (pmu.version === 0) return;
  pmu.nrGp = Math.min((eax >>> 8) & 0xff, host.nrGp, MAX_GP);
  [pmu.gpLo, pmu.gpHi] = widthMask(Math.min((eax >>> 16) & 0xff, host.gpWidth));
  if (pmu.version > 1) {
    pmu.nrFixed = Math.min(edx & 0x1f, host.nrFixed, MAX_FIXED);
    [pmu.fixedLo, pmu.fixedHi] = widthMask(Math.min((edx >>> 5) & 0xff, host.fixedWidth));
  }
  // Each fixed counter's KERNEL, USER and PMI bits (intel_pmu_enable_fixed_counter_bits).
  for (let i = 0; i < pmu.nrFixed; i++) pmu.fixedCtrlRsvdLo = (pmu.fixedCtrlRsvdLo & ~(0xb << (4 * i))) >>> 0;
  const gpBits = 2 ** pmu.nrGp - 1;
  pmu.globalCtrlRsvdLo = ~gpBits >>> 0;
  pmu.globalCtrlRsvdHi = ~(2 ** pmu.nrFixed - 1) >>> 0;
  // GLOBAL_STATUS also has OVF_BUF (62) and COND_CHGD (63); ToPA PMI (55) only with pt_mode=1.
  pmu.globalStatusRsvdLo = pmu.globalCtrlRsvdLo;
  pmu.globalStatusRsvdHi = (pmu.globalCtrlRsvdHi & ~0xc0000000) >>> 0;
  if (g.hleOrRtm && host.hleOrRtm) {
    pmu.eventselRsvdHi = (pmu.eventselRsvdHi ^ 1) >>> 0; // HSW_IN_TX allowed
    pmu.inTxCheckpointed = true;
  }
  pmu.perfCap = g.perfCap;
  pmu.ds = g.ds;
  pmu.lbr = g.modelConsistent && (g.perfCap & PERF_CAP_LBR_FMT) !== 0 && host.lbrFmt !== 0;
  if ((g.perfCap & PERF_CAP_PEBS_FORMAT) !== 0) {
    if ((g.perfCap & PERF_CAP_PEBS_BASELINE) !== 0) {
      pmu.pebsEnableRsvdLo = pmu.globalCtrlRsvdLo;
      pmu.pebsEnableRsvdHi = pmu.globalCtrlRsvdHi;
      pmu.eventselRsvdHi = (pmu.eventselRsvdHi & ~4) >>> 0; // ICL_EVENTSEL_ADAPTIVE (bit 34)
      pmu.pebsDataCfgRsvdLo = ~0xff00000f >>> 0;
      for (let i = 0; i < pmu.nrFixed; i++) pmu.fixedCtrlRsvdLo = (pmu.fixedCtrlRsvdLo & ~(0x4 << (4 * i))) >>> 0;
    } else {
      pmu.pebsEnableRsvdLo = ~gpBits >>> 0;
    }
  }
  // kvm_pmu_refresh: a PMU with PERF_GLOBAL_CTRL starts with every GP counter enabled.
  if (pmu.version > 1 && pmu.nrGp > 0) x86.store(vcpu, P.GLOBAL_CTRL, gpBits, 0);
}

/** Whether kvm_pmu_is_valid_msr claims `index` (intel_msr_idx_to_pmc || intel_is_valid_msr). */
export function pmuOwns(pmu: IntelPmu, index: number): boolean {
  if (index >= P.PERFCTR0 && index < P.PERFCTR0 + pmu.nrGp) return true;
  if (index >= P.EVNTSEL0 && index < P.EVNTSEL0 + pmu.nrGp) return true;
  if (index >= P.FIXED_CTR0 && index < P.FIXED_CTR0 + pmu.nrFixed) return true;
  if (index >= P.PMC0 && index < P.PMC0 + pmu.nrGp) return (pmu.perfCap & PMU_CAP_FW_WRITES) !== 0;
  switch (index) {
    case P.FIXED_CTR_CTRL:
    case P.GLOBAL_STATUS:
    case P.GLOBAL_CTRL:
    case P.GLOBAL_OVF_CTRL:
      return pmu.version > 1; // kvm_pmu_has_perf_global_ctrl
    case P.PEBS_ENABLE:
      return (pmu.perfCap & PERF_CAP_PEBS_FORMAT) !== 0;
    case P.DS_AREA:
      return pmu.ds;
    case P.PEBS_DATA_CFG:
      // The kernel compares the masked field with 3, so any non-zero PEBS format passes.
      return (pmu.perfCap & PERF_CAP_PEBS_BASELINE) !== 0 && (pmu.perfCap & PERF_CAP_PEBS_FORMAT) > 3;
    default:
      // The LBR stack MSRs (intel_pmu_is_valid_lbr_msr) are not modelled: see pmu.lbr.
      return false;
  }
}

/** Whether `index` is one of the MSRs the Intel vPMU can ever own (for the fast-path classes). */
export function isIntelPmuMsr(index: number): boolean {
  return (
    (index >= P.PERFCTR0 && index < P.PERFCTR0 + MAX_GP) ||
    (index >= P.EVNTSEL0 && index < P.EVNTSEL0 + MAX_GP) ||
    (index >= P.FIXED_CTR0 && index < P.FIXED_CTR0 + MAX_FIXED) ||
    (index >= P.PMC0 && index < P.PMC0 + MAX_GP) ||
    (index >= P.FIXED_CTR_CTRL && index <= P.GLOBAL_OVF_CTRL) ||
    index === P.PEBS_ENABLE ||
    index === P.PEBS_DATA_CFG ||
    index === P.DS_AREA
  );
}

/** kvm_pmu_get_msr then intel_pmu_get_msr, for an index pmuOwns claims. */
export function pmuGet(x86: X86, vcpu: Vcpu, index: number, out: MsrValue): number {
  if (index === P.GLOBAL_OVF_CTRL) {
    out.lo = 0;
    out.hi = 0;
    return MSR_OK;
  }
  // Counters are stored already masked to their width (pmc_write_counter), so a read is a load.
  const slot = index >= P.PMC0 && index < P.PMC0 + MAX_GP ? index - P.PMC0 + P.PERFCTR0 : index;
  return x86.load(vcpu, slot, out);
}

/** kvm_pmu_set_msr then intel_pmu_set_msr, for an index pmuOwns claims. */
export function pmuSet(x86: X86, vcpu: Vcpu, pmu: IntelPmu, index: number, host: boolean, lo: number, hi: number): number {
  switch (index) {
    case P.GLOBAL_STATUS:
      if (!host) return MSR_ERR; // read-only for the guest
      if ((lo & pmu.globalStatusRsvdLo) !== 0 || (hi & pmu.globalStatusRsvdHi) !== 0) return MSR_ERR;
      return x86.store(vcpu, index, lo, hi);
    case P.GLOBAL_CTRL:
      if ((lo & pmu.globalCtrlRsvdLo) !== 0 || (hi & pmu.globalCtrlRsvdHi) !== 0) return MSR_ERR;
      return x86.store(vcpu, index, lo, hi);
    case P.GLOBAL_OVF_CTRL: {
      if ((lo & pmu.globalStatusRsvdLo) !== 0 || (hi & pmu.globalStatusRsvdHi) !== 0) return MSR_ERR;
      // The guest's write clears GLOBAL_STATUS bits; the host's is validated only.
      if (!host) {
        const s = slotOf(P.GLOBAL_STATUS) * 2;
        vcpu.msrs[s] = (vcpu.msrs[s]! & ~lo) >>> 0;
        vcpu.msrs[s + 1] = (vcpu.msrs[s + 1]! & ~hi) >>> 0;
      }
      return MSR_OK;
    }
    case P.FIXED_CTR_CTRL:
      if ((lo & pmu.fixedCtrlRsvdLo) !== 0 || (hi & pmu.fixedCtrlRsvdHi) !== 0) return MSR_ERR;
      return x86.store(vcpu, index, lo, hi);
    case P.PEBS_ENABLE:
      if ((lo & pmu.pebsEnableRsvdLo) !== 0 || (hi & pmu.pebsEnableRsvdHi) !== 0) return MSR_ERR;
      return x86.store(vcpu, index, lo, hi);
    case P.DS_AREA:
      if (x86.isNoncanonical(vcpu, hi)) return MSR_ERR;
      return x86.store(vcpu, index, lo, hi);
    case P.PEBS_DATA_CFG:
      if ((lo & pmu.pebsDataCfgRsvdLo) !== 0 || (hi & pmu.pebsDataCfgRsvdHi) !== 0) return MSR_ERR;
      return x86.store(vcpu, index, lo, hi);
  }
  if (index >= P.EVNTSEL0 && index < P.EVNTSEL0 + MAX_GP) {
    let rsvdHi = pmu.eventselRsvdHi;
    // Only GP counter 2 may set IN_TX_CHECKPOINTED (bit 33).
    if (index - P.EVNTSEL0 === 2 && pmu.inTxCheckpointed) rsvdHi = (rsvdHi ^ 2) >>> 0;
    if ((lo & pmu.eventselRsvdLo) !== 0 || (hi & rsvdHi) !== 0) return MSR_ERR;
    return x86.store(vcpu, index, lo, hi);
  }
  if (index >= P.FIXED_CTR0 && index < P.FIXED_CTR0 + MAX_FIXED) {
    return x86.store(vcpu, index, lo & pmu.fixedLo, hi & pmu.fixedHi);
  }
  const fullWidth = index >= P.PMC0;
  const slot = fullWidth ? index - P.PMC0 + P.PERFCTR0 : index;
  // Full-width writes refuse bits above the counter width.
  if (fullWidth && ((lo & ~pmu.gpLo) !== 0 || (hi & ~pmu.gpHi) !== 0)) return MSR_ERR;
  // A guest write through the legacy alias is sign-extended from bit 31; the host's is taken as is.
  if (!host && !fullWidth) hi = lo >> 31;
  return x86.store(vcpu, slot, lo & pmu.gpLo, hi & pmu.gpHi);
}
