// The versioned rules of the x86 MSR code, read as booleans. Each rule sits beside its family's
// code (cet.ts, pv.ts, feature-msrs.ts, ...) with the releases it holds for; this file only
// evaluates them for one release, once per X86, so the MSR paths read a field, not a table.
import { FAILED_READ_ZEROED, HOST_EXEMPTION_ANYWHERE } from './access.js';
import { CANONICAL_BY_HOST_LA57 } from './canonical.js';
import { CET_VIRTUALIZATION } from './cet.js';
import { SREGS_EFER_CHECKED } from './efer.js';
import { IMMUTABLE_AFTER_RUN, NEED_CPUID, PLATFORM_INFO_IMMUTABLE } from './feature-msrs.js';
import { HWCR_TSC_FREQ_SEL } from './hwcr.js';
import { HV_TSC_INVARIANT_CONTROL } from './hyperv.js';
import { PV_UNSUPPORTED } from './pv.js';
import { ruleHolds, type Release, type VersionedRule } from './release.js';
import { COMMON_PRED_FLUSH } from './spec-ctrl.js';
import { SYNC_SLOP_AFTER_USER_WRITE, TSC_AUX_HIGH_BITS, VM_TSC_KHZ_BEFORE_VCPUS } from './tsc.js';
import { XEN_MSR_RANGE } from './xen.js';
import { XSS_SUPPORTED } from './xsave-msrs.js';
import { BOOT_CPU_ID_CHECKED, GET_NR_MMU_PAGES } from '../state/vm-caps.js';
import { FEAT_CTL_HOST_SUPPORTED, PERF_CAP_NEEDS_PMU } from '../../vmx/vmx-rules.js';
import { DE_CFG_GUEST_BITS, DEBUGCTL_BTF_DROPPED, SYSENTER_HI_UNLESS_AMD } from '../../svm/svm-rules.js';

const RULES = {
  hostExemptionAnywhere: HOST_EXEMPTION_ANYWHERE,
  commonPredFlush: COMMON_PRED_FLUSH,
  failedReadZeroed: FAILED_READ_ZEROED,
  tscAuxHighBitsUnlessAmd: TSC_AUX_HIGH_BITS,
  tscSlopAfterUserWrite: SYNC_SLOP_AFTER_USER_WRITE,
  featCtlHostSupported: FEAT_CTL_HOST_SUPPORTED,
  canonicalByHostLa57: CANONICAL_BY_HOST_LA57,
  cetMsrs: CET_VIRTUALIZATION,
  sregsEferChecked: SREGS_EFER_CHECKED,
  immutableFeatureMsrs: IMMUTABLE_AFTER_RUN,
  platformInfoImmutable: PLATFORM_INFO_IMMUTABLE,
  featureMsrsNeedCpuid: NEED_CPUID,
  hwcrTscFreqSel: HWCR_TSC_FREQ_SEL,
  hvTscInvariantControl: HV_TSC_INVARIANT_CONTROL,
  pvUnsupported: PV_UNSUPPORTED,
  vmTscKhzBeforeVcpus: VM_TSC_KHZ_BEFORE_VCPUS,
  xenMsrRange: XEN_MSR_RANGE,
  xssSupported: XSS_SUPPORTED,
  perfCapNeedsPmu: PERF_CAP_NEEDS_PMU,
  svmSysenterHiUnlessAmd: SYSENTER_HI_UNLESS_AMD,
  svmDeCfgGuestBits: DE_CFG_GUEST_BITS,
  svmDebugctlBtfDropped: DEBUGCTL_BTF_DROPPED,
  bootCpuIdChecked: BOOT_CPU_ID_CHECKED,
  getNrMmuPages: GET_NR_MMU_PAGES,
} as const satisfies Record<string, VersionedRule>;

export type X86Rules = { readonly [K in keyof typeof RULES]: boolean };

export function rulesFor(r: Release): X86Rules {
  const out = {} as Record<keyof typeof RULES, boolean>;
  for (const [k, rule] of Object.entries(RULES) as [keyof typeof RULES, VersionedRule][]) out[k] = ruleHolds(rule.where, r);
  return out;
}
