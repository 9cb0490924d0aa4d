// kvm_intel's rules that changed between kernel releases (vmx.c), read by kvm/x86/rules.ts and
// applied in vmx-ops.ts. Kept apart from the vendor hooks so the rule table has no import cycle.
import { versioned, type VersionedRule } from '../kvm/x86/release.js';

export const FEAT_CTL_HOST_SUPPORTED: VersionedRule = versioned({
  id: 'vmx.feat-ctl-host-supported',
  family: 'vmx',
  kernel: 'vmx_set_msr (MSR_IA32_FEAT_CTL), is_vmx_feature_control_msr_valid',
  holds: 'a host write may set any bit of KVM_SUPPORTED_FEATURE_CONTROL (lock, VMX in/outside SMX, SGX, SGX_LC, LMCE), whatever the vCPU model',
  otherwise: "a host write may set only the vCPU's valid bits (lock; VMX with nested and VMX in CPUID; SGX bits with SGX in CPUID; LMCE with MCG_LMCE_P), as the guest",
  where: { since: '6.12' },
  note: 'seen live on kvm_intel 6.1.192; the release between 6.1 and 6.12 not checked',
});

export const PERF_CAP_NEEDS_PMU: VersionedRule = versioned({
  id: 'vmx.perf-cap-needs-pmu',
  family: 'vmx',
  kernel: 'vmx_set_msr (MSR_IA32_PERF_CAPABILITIES)',
  holds: 'a non-zero PERF_CAPABILITIES write fails while the vPMU has version 0 (`if (data && !vcpu_to_pmu(vcpu)->version) return 1;`), host writes too',
  otherwise: 'no such check',
  where: { until: '6.18' },
  note: 'present in 6.1.192 and 6.12.118, absent on 6.18.44; the release that dropped it not checked',
});
