// Feature MSRs a vCPU carries from KVM's feature list (arch/x86/kvm/x86.c: kvm_get/set_msr_common,
// kvm_is_immutable_feature_msr, do_set_msr): IA32_ARCH_CAPABILITIES, IA32_PERF_CAPABILITIES,
// MSR_PLATFORM_INFO with MSR_MISC_FEATURES_ENABLES (CPUID faulting), and the VMX capability MSRs'
// freeze after KVM_RUN (their values are vmx/nested-msrs.ts's).
import { CAP } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_ERR, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import { versioned, type VersionedRule } from './release.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

export const IMMUTABLE_AFTER_RUN: VersionedRule = versioned({
  id: 'feature-msrs.immutable-after-run',
  family: 'feature-msrs',
  kernel: 'do_set_msr, kvm_is_immutable_feature_msr',
  holds: 'after KVM_RUN a host write to a VMX capability MSR, DE_CFG, ARCH_CAPABILITIES or PERF_CAPABILITIES must equal the current value, else KVM_SET_MSRS stops there (short count)',
  otherwise: 'the host may change them after KVM_RUN',
  where: { since: '6.6' },
  note: 'assumed release of kvm_is_immutable_feature_msr: absent from 6.1.192, present in 6.12.0',
});

export const PLATFORM_INFO_IMMUTABLE: VersionedRule = versioned({
  id: 'feature-msrs.platform-info-immutable',
  family: 'feature-msrs',
  kernel: 'kvm_is_immutable_feature_msr',
  holds: 'MSR_PLATFORM_INFO is one of the MSRs frozen after KVM_RUN',
  otherwise: 'MSR_PLATFORM_INFO may still change after KVM_RUN',
  where: { since: '6.13' },
});

export const NEED_CPUID: VersionedRule = versioned({
  id: 'feature-msrs.need-cpuid',
  family: 'feature-msrs',
  kernel: 'kvm_get_msr_common, kvm_set_msr_common (MSR_IA32_ARCH_CAPABILITIES, MSR_IA32_PERF_CAPABILITIES)',
  holds: 'ARCH_CAPABILITIES and PERF_CAPABILITIES are unsupported, for the host too, unless the vCPU model has the CPUID bit (listed: reads 0, writes of 0 pass)',
  otherwise: 'the host always reads and writes them; the guest needs the CPUID bit',
  where: { since: '6.14' },
});

/** kvm_is_immutable_feature_msr on this release (the VMX capability MSRs, DE_CFG, ARCH_CAP, PERF_CAP; PLATFORM_INFO from 6.13). */
export function isImmutableFeatureMsr(x: X86, index: number): boolean {
  if (!x.rules.immutableFeatureMsrs) return false;
  if (index >= M.KVM_FIRST_EMULATED_VMX_MSR && index <= M.KVM_LAST_EMULATED_VMX_MSR) return true;
  return (
    index === M.MSR_AMD64_DE_CFG ||
    index === M.MSR_IA32_ARCH_CAPABILITIES ||
    index === M.MSR_IA32_PERF_CAPABILITIES ||
    (index === M.MSR_PLATFORM_INFO && x.rules.platformInfoImmutable)
  );
}

/** The feature MSR the vCPU reads with its CPUID bit (ARCH_CAPABILITIES: ARCH_CAPABILITIES; PERF_CAPABILITIES: PDCM). */
function featureCap(index: number): number {
  return index === M.MSR_IA32_ARCH_CAPABILITIES ? CAP.ARCH_CAPABILITIES : CAP.PDCM;
}

export function getCapabilitiesMsr(x: X86, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
  if (!x.hasCap(vcpu, featureCap(index))) {
    if (x.rules.featureMsrsNeedCpuid) return MSR_UNSUPPORTED;
    if (!host) return MSR_ERR;
  }
  return x.load(vcpu, index, out);
}

export function setArchCapabilities(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (x.rules.featureMsrsNeedCpuid && !x.hasCap(vcpu, CAP.ARCH_CAPABILITIES)) return MSR_UNSUPPORTED;
  // From 6.14 a guest write is unsupported (KVM_MSR_EXIT_REASON_UNKNOWN), as seen live on
  // kvm_pvm 6.18.44; before, kvm_set_msr_common returned 1.
  if (!host) return x.rules.featureMsrsNeedCpuid ? MSR_UNSUPPORTED : MSR_ERR;
  return x.store(vcpu, M.MSR_IA32_ARCH_CAPABILITIES, lo, hi);
}

export function setPerfCapabilities(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (x.rules.featureMsrsNeedCpuid && !x.hasCap(vcpu, CAP.PDCM)) return MSR_UNSUPPORTED;
  if (!host) return MSR_ERR;
  if ((lo & ~x.supportedPerfCapLo) !== 0 || (hi & ~x.supportedPerfCapHi) !== 0) return MSR_ERR;
  return x.store(vcpu, M.MSR_IA32_PERF_CAPABILITIES, lo, hi);
}

/** MSR_PLATFORM_INFO: host-only writes; clearing CPUID_FAULT support while CPUID faulting is enabled is refused. */
export function setPlatformInfo(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (!host) return MSR_ERR;
  if ((lo & M.PLATFORM_INFO_CPUID_FAULT_LO) === 0 && (x.crossLoadLo(vcpu, M.MSR_MISC_FEATURES_ENABLES) & 1) !== 0) return MSR_ERR;
  return x.store(vcpu, M.MSR_PLATFORM_INFO, lo, hi);
}

/** MSR_MISC_FEATURES_ENABLES: only CPUID faulting (bit 0), and only where PLATFORM_INFO offers it. */
export function setMiscFeaturesEnables(x: X86, vcpu: Vcpu, lo: number, hi: number): number {
  if (hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
  if ((lo & 1) !== 0 && (x.crossLoadLo(vcpu, M.MSR_PLATFORM_INFO) & M.PLATFORM_INFO_CPUID_FAULT_LO) === 0) return MSR_ERR;
  return x.store(vcpu, M.MSR_MISC_FEATURES_ENABLES, lo, hi);
}
