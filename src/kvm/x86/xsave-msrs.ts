// XSAVE-managed MSRs of kvm_get/set_msr_common: IA32_XSS, IA32_XFD and IA32_XFD_ERR.
import { CAP } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_ERR, MSR_UNSUPPORTED } from './msr-ret.js';
import { versioned, type VersionedRule } from './release.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

export const XSS_SUPPORTED: VersionedRule = versioned({
  id: 'xsave.xss-bits',
  family: 'xsave',
  kernel: 'kvm_set_msr_common (MSR_IA32_XSS), kvm_caps.supported_xss',
  holds: 'IA32_XSS is unsupported without XSAVES; with it, it takes the bits the guest CPUID and KVM both have (CET state on 6.18), and it is listed',
  otherwise: 'the guest needs XSAVES; kvm_caps.supported_xss is 0, so only 0 is accepted',
  where: { since: '6.18' },
});

export function setXss(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (!x.rules.xssSupported) {
    if (!host && !x.hasCap(vcpu, CAP.XSAVES)) return MSR_ERR;
    return lo !== 0 || hi !== 0 ? MSR_ERR : x.store(vcpu, M.MSR_IA32_XSS, 0, 0);
  }
  if (!x.hasCap(vcpu, CAP.XSAVES)) return MSR_UNSUPPORTED;
  const okLo = x.guestSupported(vcpu, 0xd, 1, 'ecx');
  const okHi = x.guestSupported(vcpu, 0xd, 1, 'edx');
  if ((lo & ~okLo) !== 0 || (hi & ~okHi) !== 0) return MSR_ERR;
  return x.store(vcpu, M.MSR_IA32_XSS, lo, hi);
}

/** MSR_IA32_XFD and XFD_ERR: kvm_guest_supported_xfd, the dynamic user states (XTILEDATA, bit 18) of guest_supported_xcr0. */
export function setXfd(x: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
  if (!host && !x.hasCap(vcpu, CAP.XFD)) return MSR_ERR;
  const xcr0Lo = x.guestSupported(vcpu, 0xd, 0, 'eax');
  if ((lo & ~(xcr0Lo & (1 << 18))) !== 0 || hi !== 0) return MSR_ERR;
  return x.store(vcpu, index, lo, hi);
}
