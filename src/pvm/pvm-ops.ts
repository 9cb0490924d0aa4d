// The PVM vendor module (kvm_pvm, out of tree: virt-pvm/linux arch/x86/kvm/pvm/pvm.c), as the
// running 6.18.44 host answers: pvm_get_msr, pvm_set_msr and pvm_get_feature_msr. PVM keeps the
// syscall/sysenter MSRs and segment bases of the guest itself; everything else goes to x86.c.
import * as M from '../kvm/msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from '../kvm/msr-ret.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { VendorOps } from '../kvm/vendor.js';
import type { X86 } from '../kvm/x86.js';

/** SVM_TSC_RATIO_DEFAULT: 1.0 in 8.32 fixed point. */
const TSC_RATIO_DEFAULT_HI = 1;

export const pvmOps: VendorOps = {
  module: 'kvm_pvm',

  vcpuCreate(): void {
    // pvm_vcpu_create leaves the MSRs it owns at 0; the profile's reset values already apply.
  },

  vcpuAfterSetCpuid(): void {},

  getMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    switch (index) {
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_TSC_AUX:
      case M.MSR_IA32_SPEC_CTRL:
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_EFER:
        return x86.load(vcpu, index, out);
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        out.lo = 0;
        out.hi = 0;
        return MSR_OK;
      case M.MSR_AMD64_TSC_RATIO:
        out.lo = 0;
        out.hi = TSC_RATIO_DEFAULT_HI;
        return MSR_OK;
      case M.MSR_IA32_XSS:
        if (!host) return MSR_ERR;
        return x86.load(vcpu, index, out);
      default:
        return x86.getMsrCommon(vcpu, index, host, out);
    }
  },

  setMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    switch (index) {
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_STAR:
      case M.MSR_LSTAR:
      case M.MSR_CSTAR:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_TSC_AUX:
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_SPEC_CTRL:
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_DEBUGCTLMSR:
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_EFER:
        // set_efer: SCE, LME, LMA and NX only; LMA keeps its current value.
        if (hi !== 0 || (lo & ~0xd01) !== 0) return MSR_ERR;
        x86.load(vcpu, index, x86.scratchOut);
        return x86.store(vcpu, index, (lo & ~0x400) | (x86.scratchOut.lo & 0x400), 0);
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        return MSR_OK; // accepted and dropped on this host (measured: ~0 is taken, reads 0)
      case M.MSR_AMD64_TSC_RATIO:
        // Without TSC scaling only the default ratio, or 0 (ignored), is accepted.
        if (!host) return MSR_ERR;
        if ((lo === 0 && hi === 0) || (lo === 0 && hi === TSC_RATIO_DEFAULT_HI)) return MSR_OK;
        return MSR_ERR;
      case M.MSR_IA32_XSS:
        // 6.18: XSS needs XSAVES in the guest CPUID, host or guest.
        return MSR_UNSUPPORTED;
      default:
        return x86.setMsrCommon(vcpu, index, host, lo, hi);
    }
  },

  getFeatureMsr(): number {
    return MSR_UNSUPPORTED;
  },
};
