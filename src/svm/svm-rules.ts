// kvm_amd's rules that changed between kernel releases (svm.c), read by kvm/x86/rules.ts and
// applied in svm-ops.ts. Kept apart from the vendor hooks so the rule table has no import cycle.
import { versioned, type VersionedRule } from '../kvm/x86/release.js';

export const SYSENTER_HI_UNLESS_AMD: VersionedRule = versioned({
  id: 'svm.sysenter-hi-unless-amd',
  family: 'svm',
  kernel: 'svm_get_msr, svm_set_msr (MSR_IA32_SYSENTER_EIP/ESP, guest_cpuid_is_intel_compatible)',
  holds: "SYSENTER_EIP/ESP keep bits 63:32 unless the vCPU's CPUID vendor is AMD or Hygon (a fresh vCPU keeps them)",
  otherwise: "they keep bits 63:32 only when the CPUID vendor is Intel (a fresh vCPU drops them; seen live on kvm_amd 6.1.192)",
  where: { since: '6.12' },
  note: 'the release between 6.1 and 6.12 not checked',
});

export const DE_CFG_GUEST_BITS: VersionedRule = versioned({
  id: 'svm.de-cfg-guest-bits',
  family: 'svm',
  kernel: 'svm_set_msr (MSR_AMD64_DE_CFG)',
  holds: 'a guest may write any subset of the DE_CFG bits KVM supports',
  otherwise: 'a guest may write only the supported value itself ("Don\'t allow the guest to change a bit, #GP"; seen live on kvm_amd 6.1.192)',
  where: { since: '6.13', backports: ['6.12.7'] },
  note: '"KVM: SVM: Allow guest writes to set MSR_AMD64_DE_CFG bits" (6.12.7); its mainline release assumed',
});

export const DEBUGCTL_BTF_DROPPED: VersionedRule = versioned({
  id: 'svm.debugctl-btf-dropped',
  family: 'svm',
  kernel: 'svm_set_msr (MSR_IA32_DEBUGCTLMSR, with lbrv)',
  holds: 'with lbrv, DEBUGCTL.BTF is dropped and only LBR may be set',
  otherwise: 'with lbrv, bits 5:2 are dropped (from 6.1.131), BTF and LBR kept',
  where: { since: '6.14', backports: ['6.12.19'] },
  note: '"KVM: SVM: Suppress DEBUGCTL.BTF on AMD" (6.12.19); not seen live (every kvm_amd here runs lbrv=0)',
});
