// The fast-path classes of every MSR slot (fast-path.ts): which host reads and writes the bulk
// loops of msr-io.ts answer inline, built once per (profile, vendor) from the vendor's hooks and
// what kvm_get/set_msr_common do for the host. Anything a class cannot decide goes down the full
// path (FAST_SLOW).
import { CAP } from './cpuid-caps.js';
import {
  FAST_SLOW,
  GATED_CAP,
  GATED_PV,
  GET_LOAD,
  GET_LOAD_IF_CAP,
  GET_PV_LOAD,
  GET_PV_WALL_CLOCK,
  GET_PV_ZERO,
  GET_TSC,
  GET_TSC_DEADLINE,
  SET_TSC_DEADLINE,
  GET_ZERO,
  PV_PARAM,
  SET_PV_STORE_KVMCLOCK,
  SET_CANONICAL,
  SET_CANONICALIZE,
  SET_DROP,
  SET_PAT,
  SET_PV_STORE,
  SET_PV_WALL_CLOCK,
  SET_PV_ZERO_ONLY,
  SET_PV_ZERO_STORE,
  SET_STORE,
  SET_ZERO_ONLY,
  SET_ZERO_STORE,
  SET_STORE_IF_CAP_ELSE_DROP,
  SET_STORE_IF_CAP_ELSE_ZERO_ONLY,
  SET_PV_BIT0_STORE,
  SET_PV_BYTE_STORE_IF_IRQCHIP,
  SET_PLATFORM_INFO,
  SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY,
  CAP_PARAM,
  UNHANDLED,
} from './fast-path.js';
import { isCetMsr } from './cet.js';
import { isImmutableFeatureMsr } from './feature-msrs.js';
import { isHvMsr } from './hyperv.js';
import { DROPPED_WRITE_MSRS, isLegacyPmuMsr, ZERO_READ_MSRS } from './legacy-msrs.js';
import { isMceBankMsr } from './mce.js';
import { M } from './msr-index.js';
import { indexOfSlot, SLOT_COUNT } from './msr-slots.js';
import { isMtrrRange } from './mtrr.js';
import { pvFeatureOf } from './pv.js';
import type { X86 } from './x86.js';

/** The bit number of a CAP bit. */
function capIndex(bit: number): number {
  return Math.log2(bit);
}

export function buildFastClasses(x: X86): void {
  for (let s = 0; s < SLOT_COUNT; s++) {
    const index = indexOfSlot(s);
    // CET MSRs pass the gates of __kvm_get/set_msr first: always the full path.
    if (isCetMsr(index)) continue;
    const advertised = x.advertised.has(index);
    // What a host access that no handler claims answers (access.ts): 0 where the release exempts
    // the index (every listed MSR from 6.12; on 6.1 msrs_to_save only), else the full path.
    const exempt = x.rules.hostExemptionAnywhere ? advertised : x.msrsToSave.has(index);
    const g = x.vendor.fastGetClass(x, index);
    switch (g & 0xff) {
      case UNHANDLED:
        x.fastGet[s] = exempt ? GET_ZERO : FAST_SLOW;
        break;
      case GATED_CAP:
        if (advertised) {
          x.fastGet[s] = GET_LOAD_IF_CAP;
          x.capMask[s] = 2 ** (g >>> 8);
        }
        break;
      case GATED_PV:
        x.fastGet[s] = GET_PV_LOAD;
        x.pvBit[s] = g >>> 8;
        break;
      default:
        x.fastGet[s] = g & 0x7f;
        if ((g & PV_PARAM) !== 0) x.pvBit[s] = g >>> 8;
    }
    const v = x.vendor.fastSetClass(x, index);
    switch (index) {
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_CSTAR:
      case M.MSR_LSTAR:
        x.fastSet[s] = v === SET_STORE ? SET_CANONICAL : FAST_SLOW;
        break;
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
        x.fastSet[s] = v === SET_STORE ? SET_CANONICALIZE : FAST_SLOW;
        break;
      case M.MSR_TSC_AUX:
        break;
      default:
        if ((v & 0xff) === UNHANDLED) {
          x.fastSet[s] = exempt ? SET_ZERO_ONLY : FAST_SLOW;
        } else if ((v & 0xff) === GATED_CAP) {
          if (advertised) {
            x.fastSet[s] = SET_STORE_IF_CAP_ELSE_ZERO_ONLY;
            x.capMask[s] = 2 ** (v >>> 8);
          }
        } else if ((v & CAP_PARAM) !== 0 && (v & 0xc0) === 0) {
          x.fastSet[s] = v & 0x1f;
          x.capMask[s] = 2 ** (v >>> 8);
        } else if ((v & 0xff) === GATED_PV) {
          x.fastSet[s] = SET_PV_STORE;
          x.pvBit[s] = v >>> 8;
        } else {
          x.fastSet[s] = v & 0x7f;
          if ((v & PV_PARAM) !== 0) x.pvBit[s] = v >>> 8;
        }
    }
  }
}

export function buildFastSetRan(x: X86): void {
  x.fastSetRan.set(x.fastSet);
  for (let s = 0; s < SLOT_COUNT; s++) if (isImmutableFeatureMsr(x, indexOfSlot(s))) x.fastSetRan[s] = FAST_SLOW;
}

/** Fast-path read classes of what kvm_get_msr_common does for the host. */
export function commonFastGetClass(x: X86, index: number): number {
  if (x.hyperv && isHvMsr(index)) return FAST_SLOW;
  if (isLegacyPmuMsr(index) || ZERO_READ_MSRS.has(index)) return GET_ZERO;
  if (isMceBankMsr(index) || isMtrrRange(index)) return FAST_SLOW;
  switch (index) {
    case M.MSR_IA32_APICBASE:
      return GET_LOAD;
    case M.MSR_IA32_SMBASE:
      return x.smm ? GET_LOAD : FAST_SLOW;
    case M.MSR_IA32_MCG_CAP:
      return GET_LOAD;
    case M.MSR_IA32_P5_MC_ADDR:
    case M.MSR_IA32_P5_MC_TYPE:
      return GET_ZERO;
    case M.MSR_IA32_UCODE_REV:
    case M.MSR_IA32_CR_PAT:
    case M.MSR_IA32_TSC_ADJUST:
    case M.MSR_IA32_MISC_ENABLE:
    case M.MSR_SMI_COUNT:
    case M.MSR_IA32_POWER_CTL:
    case M.MSR_MISC_FEATURES_ENABLES:
    case M.MSR_K7_HWCR:
    case M.MSR_IA32_MCG_STATUS:
    case M.MSR_IA32_MCG_CTL:
    case M.MSR_EFER:
      return GET_LOAD;
    case M.MSR_VM_HSAVE_PA:
    case M.MSR_IA32_LASTBRANCHFROMIP:
    case M.MSR_IA32_LASTBRANCHTOIP:
    case M.MSR_IA32_LASTINTFROMIP:
    case M.MSR_IA32_LASTINTTOIP:
      return GET_ZERO;
    case M.MSR_IA32_TSC_DEADLINE:
      return GET_TSC_DEADLINE; // the LAPIC timer mode decides (vcpu-state.ts)
    case M.MSR_IA32_PERF_STATUS:
    case M.MSR_K7_CLK_CTL:
    case M.MSR_IA32_BBL_CR_CTL3:
    case M.MSR_AMD64_OSVW_ID_LENGTH:
    case M.MSR_AMD64_OSVW_STATUS:
      return FAST_SLOW;
    case M.MSR_IA32_ARCH_CAPABILITIES:
      if (!x.rules.featureMsrsNeedCpuid) return FAST_SLOW;
      return GATED_CAP | (capIndex(CAP.ARCH_CAPABILITIES) << 8);
    case M.MSR_IA32_PERF_CAPABILITIES:
      if (!x.rules.featureMsrsNeedCpuid) return FAST_SLOW;
      return GATED_CAP | (capIndex(CAP.PDCM) << 8);
    case M.MSR_KVM_SYSTEM_TIME:
    case M.MSR_KVM_SYSTEM_TIME_NEW:
    case M.MSR_KVM_ASYNC_PF_EN:
    case M.MSR_KVM_ASYNC_PF_INT:
    case M.MSR_KVM_STEAL_TIME:
    case M.MSR_KVM_PV_EOI_EN:
    case M.MSR_KVM_POLL_CONTROL:
      return GATED_PV | (pvFeatureOf(index) << 8);
    case M.MSR_PLATFORM_INFO:
      return GET_LOAD; // host reads are never gated
    case M.MSR_KVM_ASYNC_PF_ACK:
      return GET_PV_ZERO | PV_PARAM | (M.KVM_FEATURE_ASYNC_PF_INT << 8);
    case M.MSR_KVM_WALL_CLOCK:
      return GET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE << 8);
    case M.MSR_KVM_WALL_CLOCK_NEW:
      return GET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE2 << 8);
    case M.MSR_IA32_TSC:
      return GET_TSC;
    case M.MSR_IA32_XSS:
    case M.MSR_IA32_XFD:
    case M.MSR_IA32_XFD_ERR:
      return FAST_SLOW;
    default:
      return UNHANDLED;
  }
}

/** Fast-path write classes of what kvm_set_msr_common does for the host. */
export function commonFastSetClass(x: X86, index: number): number {
  if (x.hyperv && isHvMsr(index)) return FAST_SLOW;
  if (isLegacyPmuMsr(index) || DROPPED_WRITE_MSRS.has(index)) return SET_DROP;
  if (isMceBankMsr(index) || isMtrrRange(index)) return FAST_SLOW;
  switch (index) {
    case M.MSR_IA32_APICBASE:
    case M.MSR_IA32_PRED_CMD:
    case M.MSR_IA32_FLUSH_CMD:
      return FAST_SLOW;
    case M.MSR_IA32_SMBASE:
      return x.smm ? SET_STORE : FAST_SLOW;
    case M.MSR_IA32_MISC_ENABLE:
    case M.MSR_IA32_POWER_CTL:
    case M.MSR_IA32_MCG_STATUS:
    case M.MSR_SMI_COUNT:
    case M.MSR_IA32_UCODE_REV:
      return SET_STORE;
    case M.MSR_VM_HSAVE_PA:
      return SET_DROP;
    case M.MSR_IA32_TSC_DEADLINE:
      return SET_TSC_DEADLINE;
    case M.MSR_FAM10H_MMIO_CONF_BASE:
    case M.MSR_AMD64_OSVW_ID_LENGTH:
    case M.MSR_AMD64_OSVW_STATUS:
      return FAST_SLOW;
    case M.MSR_IA32_CR_PAT:
      return SET_PAT;
    case M.MSR_KVM_SYSTEM_TIME:
    case M.MSR_KVM_SYSTEM_TIME_NEW:
      return SET_PV_STORE_KVMCLOCK | PV_PARAM | (pvFeatureOf(index) << 8); // one value for both
    case M.MSR_K7_HWCR:
    case M.MSR_IA32_MCG_CTL:
    case M.MSR_MISC_FEATURES_ENABLES:
      return SET_ZERO_STORE;
    // With the PV feature, 0 is always valid and stored (without an irqchip ASYNC_PF_EN stores
    // nothing, but then it can only ever hold 0).
    case M.MSR_KVM_ASYNC_PF_EN:
    case M.MSR_KVM_STEAL_TIME:
    case M.MSR_KVM_PV_EOI_EN:
      return SET_PV_ZERO_STORE | PV_PARAM | (pvFeatureOf(index) << 8);
    case M.MSR_KVM_POLL_CONTROL:
      return SET_PV_BIT0_STORE | PV_PARAM | (pvFeatureOf(index) << 8);
    case M.MSR_KVM_ASYNC_PF_INT:
      return SET_PV_BYTE_STORE_IF_IRQCHIP | PV_PARAM | (pvFeatureOf(index) << 8);
    case M.MSR_PLATFORM_INFO:
      return SET_PLATFORM_INFO;
    case M.MSR_IA32_PERF_CAPABILITIES:
      if (!x.rules.featureMsrsNeedCpuid) return FAST_SLOW;
      return SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY | CAP_PARAM | (capIndex(CAP.PDCM) << 8);
    case M.MSR_KVM_ASYNC_PF_ACK:
      return SET_PV_ZERO_ONLY | PV_PARAM | (M.KVM_FEATURE_ASYNC_PF_INT << 8);
    case M.MSR_KVM_WALL_CLOCK:
      return SET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE << 8);
    case M.MSR_KVM_WALL_CLOCK_NEW:
      return SET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE2 << 8);
    case M.MSR_IA32_ARCH_CAPABILITIES:
      if (!x.rules.featureMsrsNeedCpuid) return FAST_SLOW;
      // Stored with the CPUID bit; without it, advertised-but-unsupported (writes of 0 pass).
      return GATED_CAP | (capIndex(CAP.ARCH_CAPABILITIES) << 8);
    case M.MSR_IA32_TSC_ADJUST:
      // A host write is stored with the CPUID bit and dropped without; it never moves the TSC.
      return SET_STORE_IF_CAP_ELSE_DROP | CAP_PARAM | (capIndex(CAP.TSC_ADJUST) << 8);
    case M.MSR_IA32_TSC:
      // A vendor that cannot offset the TSC ignores host writes (kvm_synchronize_tsc returns early).
      return x.vendor.tscOffsetHonored ? FAST_SLOW : SET_DROP;
    case M.MSR_EFER:
    case M.MSR_IA32_XSS:
    case M.MSR_IA32_XFD:
    case M.MSR_IA32_XFD_ERR:
      return FAST_SLOW;
    default:
      return UNHANDLED;
  }
}
