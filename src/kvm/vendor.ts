// The vendor interface, in the spirit of kvm_x86_ops: the MSR hooks each vendor module provides.
import type { MsrValue } from './x86/msr-ret.js';
import type { VendorModule } from './profile.js';
import type { Vcpu } from './vcpu.js';
import type { X86 } from './x86/x86.js';

export interface VendorOps {
  readonly module: VendorModule;
  /** EFER bits the vendor enables beyond SCE, LME, LMA and NX (kvm_enable_efer_bits). */
  eferExtraBits(x86: X86): number;
  /** Whether the vendor registers TSC_AUX as a user-return MSR (kvm_is_supported_user_return_msr); undefined: the host has RDTSCP or RDPID. */
  readonly tscAuxUserReturn?: boolean;
  /** kvm_caps.supported_mce_cap after the vendor's hardware_setup; default MCG_CTL_P | MCG_SER_P. */
  readonly supportedMceCap?: bigint;
  /** False when the vendor cannot offset the guest TSC (PVM), so a host TSC write has no effect. */
  readonly tscOffsetHonored: boolean;
  /** Vendor part of vCPU creation and reset (vmx_vcpu_create/svm_vcpu_create/pvm_vcpu_create). */
  vcpuCreate(x86: X86, vcpu: Vcpu): void;
  /** vcpu_after_set_cpuid: what the vendor recomputes after KVM_SET_CPUID2. */
  vcpuAfterSetCpuid(x86: X86, vcpu: Vcpu): void;
  /** get_msr: handles its own indices, passes the rest to x86.getMsrCommon. */
  getMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number;
  /** set_msr: handles its own indices, passes the rest to x86.setMsrCommon. */
  setMsr(x86: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number;
  /** The fast-path class of a host read of `index` (fast-path.ts), or x86.commonFastGetClass(index). */
  fastGetClass(x86: X86, index: number): number;
  /** The fast-path class of what set_msr does with a host write, after __kvm_set_msr's checks. */
  fastSetClass(x86: X86, index: number): number;
  /** get_feature_msr: the vendor's part of KVM_GET_MSRS on /dev/kvm. */
  getFeatureMsr(x86: X86, index: number, out: MsrValue): number;
  /**
   * A guest RDMSR/WRMSR the vendor's MSR bitmap passes through (the filter allowed it): the CPU
   * answers it and KVM never sees it, so there is no userspace exit. MSR_OK (a read fills `out`),
   * MSR_ERR for the CPU's own #GP, or null when KVM intercepts the access. Absent: all intercepted.
   */
  guestPassthrough?(x86: X86, vcpu: Vcpu, index: number, write: boolean, lo: number, hi: number, out: MsrValue): number | null;
}
