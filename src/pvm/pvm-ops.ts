// The PVM vendor module (kvm_pvm, out of tree: virt-pvm/linux arch/x86/kvm/pvm/pvm.c), as the
// running 6.18.44 host answers. Where the stored source and the host's measurements differ, the
// host wins (../shared/reference/vendor-msr-spec.md Appendix A): this host keeps SYSENTER_CS,
// lists and drops VIRT_SPEC_CTRL, answers TSC_RATIO, and its vendor hooks return
// KVM_MSR_RET_UNSUPPORTED for what they do not handle.
import { commonFastGetClass, commonFastSetClass } from '../kvm/x86/fast-classes.js';
import { FAST_SLOW, GET_LOAD, GET_ZERO, SET_DROP, SET_STORE } from '../kvm/x86/fast-path.js';
import { findCpuid } from '../kvm/profile.js';
import { M } from '../kvm/x86/msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from '../kvm/x86/msr-ret.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { VendorOps } from '../kvm/vendor.js';
import { zero, type X86 } from '../kvm/x86/x86.js';

/** SVM_TSC_RATIO_DEFAULT: 1.0 in 8.32 fixed point (upper half 1). */
const TSC_RATIO_DEFAULT_HI = 1;
const EFER_FFXSR = 1 << 14;

export const pvmOps: VendorOps = {
  module: 'kvm_pvm',

  // pvm_set_cpu_caps enables NX (when the host has it, as every x86-64 does) and FFXSR when the
  // host has FXSR_OPT.
  eferExtraBits(x86: X86): number {
    const e = findCpuid(x86.profile.supportedCpuid, 0x80000001, 0);
    return e !== undefined && ((e.edx >>> 25) & 1) === 1 ? EFER_FFXSR : 0;
  },

  // pvm_write_tsc_offset forces the TSC offset to 0: the guest reads the host's TSC, and a host
  // write of IA32_TSC does not move it.
  tscOffsetHonored: false,

  // pvm_hardware_setup needs host RDTSCP and registers TSC_AUX as a user-return MSR (the guest
  // view of CPUID on a PVM host hides RDTSCP, so the profile's CPUID cannot tell).
  tscAuxUserReturn: true,

  vcpuCreate(): void {
    // vcpu_pvm is zero-allocated; the profile's reset values already apply.
  },

  vcpuAfterSetCpuid(): void {
    // pvm_vcpu_after_set_cpuid is empty.
  },

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
      case M.MSR_IA32_FEAT_CTL:
      case M.MSR_IA32_BNDCFGS:
        return x86.load(vcpu, index, out);
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        return zero(out);
      case M.MSR_AMD64_TSC_RATIO:
        out.lo = 0;
        out.hi = TSC_RATIO_DEFAULT_HI;
        return MSR_OK;
      default:
        return x86.getMsrCommon(vcpu, index, host, out);
    }
  },

  setMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    switch (index) {
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_CSTAR:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_LSTAR:
      case M.MSR_TSC_AUX:
        // The canonical checks and TSC_AUX truncation already ran in __kvm_set_msr.
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_STAR:
        // Guest writes must keep PVM's code segments; the host's are stored as given.
        if (!host && (((hi & 0xfffc) === 0) || ((((hi >>> 16) | 3) + 16) !== 0x33))) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        return MSR_OK; // accepted and dropped
      case M.MSR_IA32_FEAT_CTL:
        // Only an Intel host has the MSR; only the lock bit is valid.
        if (x86.profile.host.cpuVendor !== 'GenuineIntel') return MSR_ERR;
        if (hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
        return x86.store(vcpu, index, lo, hi);
      case M.MSR_IA32_BNDCFGS:
        return MSR_ERR; // kvm_mpx_supported() is false on this AMD host
      case M.MSR_AMD64_TSC_RATIO:
        // Without TSC scaling only 0 (ignored) or the default ratio is accepted.
        if (!host) return MSR_ERR;
        return lo === 0 && (hi === 0 || hi === TSC_RATIO_DEFAULT_HI) ? MSR_OK : MSR_ERR;
      default:
        return x86.setMsrCommon(vcpu, index, host, lo, hi);
    }
  },

  fastGetClass(x86: X86, index: number): number {
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
      case M.MSR_IA32_FEAT_CTL:
      case M.MSR_IA32_BNDCFGS:
        return GET_LOAD;
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        return GET_ZERO;
      case M.MSR_TSC_AUX:
      case M.MSR_AMD64_TSC_RATIO:
        return FAST_SLOW;
      default:
        return commonFastGetClass(x86, index);
    }
  },

  fastSetClass(x86: X86, index: number): number {
    switch (index) {
      case M.MSR_IA32_SYSENTER_CS:
      case M.MSR_IA32_SYSENTER_ESP:
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_CSTAR:
      case M.MSR_SYSCALL_MASK:
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_LSTAR:
      case M.MSR_STAR:
        return SET_STORE;
      case M.MSR_IA32_DEBUGCTLMSR:
      case M.MSR_AMD64_VIRT_SPEC_CTRL:
        return SET_DROP;
      case M.MSR_TSC_AUX:
      case M.MSR_IA32_FEAT_CTL:
      case M.MSR_IA32_BNDCFGS:
      case M.MSR_AMD64_TSC_RATIO:
        return FAST_SLOW;
      default:
        return commonFastSetClass(x86, index);
    }
  },

  getFeatureMsr(): number {
    return MSR_UNSUPPORTED;
  },
};
