// Speculation-control command MSRs of kvm_set_msr_common: IA32_PRED_CMD and IA32_FLUSH_CMD.
import { CAP } from './cpuid-caps.js';
import { findCpuid } from '../profile.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED } from './msr-ret.js';
import { versioned, type VersionedRule } from './release.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

export const COMMON_PRED_FLUSH: VersionedRule = versioned({
  id: 'spec-ctrl.common-pred-flush',
  family: 'spec-ctrl',
  kernel: 'kvm_set_msr_common (MSR_IA32_PRED_CMD, MSR_IA32_FLUSH_CMD); 6.1: vmx_set_msr, svm_set_msr',
  holds: 'PRED_CMD takes IBPB and SBPB (each where the host has it), 0 always; FLUSH_CMD takes L1D_FLUSH where the host has it',
  otherwise: 'PRED_CMD is vendor code and takes 0 or IBPB only, and nothing at all (not even 0) on a host without IBPB; FLUSH_CMD has no handler (unsupported)',
  where: { since: '6.5' },
  note: 'assumed release of "Move MSR_IA32_PRED_CMD WRMSR emulation to common code" and "Virtualize FLUSH_L1D"; 6.1.192 has neither, 6.12.0 both',
});

/** Whether the host has a feature, as KVM_GET_SUPPORTED_CPUID reports it (boot_cpu_has). */
export function hostHas(x: X86, f: 'IBPB' | 'SBPB' | 'FLUSH_L1D'): boolean {
  const c = x.profile.supportedCpuid;
  const bit = (leaf: number, reg: 'eax' | 'ebx' | 'edx', b: number): boolean => {
    const e = findCpuid(c, leaf, 0);
    return e !== undefined && ((e[reg] >>> b) & 1) === 1;
  };
  if (f === 'IBPB') return bit(7, 'edx', 26) || bit(0x80000008, 'ebx', 12);
  if (f === 'SBPB') return bit(0x80000021, 'eax', 27);
  return bit(7, 'edx', 28);
}

/** MSR_IA32_PRED_CMD (write-only): IBPB (bit 0) and SBPB (bit 7), each if the host and (for a guest) its CPUID have it. */
export function setPredCmd(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (!x.rules.commonPredFlush) {
    if (!host && !(x.hasCap(vcpu, CAP.SPEC_CTRL) || x.hasCap(vcpu, CAP.AMD_IBPB))) return MSR_ERR;
    if (hi !== 0 || (lo & ~1) !== 0 || !hostHas(x, 'IBPB')) return MSR_ERR;
    return MSR_OK;
  }
  let reserved = ~(1 | (1 << 7));
  if (!host) {
    // guest_has_pred_cmd_msr (kvmsr tracks no SBPB capability, so a guest never gets SBPB).
    const ibpb = x.hasCap(vcpu, CAP.SPEC_CTRL) || x.hasCap(vcpu, CAP.AMD_IBPB);
    if (!ibpb) return MSR_ERR;
    reserved |= 1 << 7;
  }
  if (!hostHas(x, 'IBPB')) reserved |= 1;
  if (!hostHas(x, 'SBPB')) reserved |= 1 << 7;
  if (hi !== 0 || (lo & reserved) !== 0) return MSR_ERR;
  return MSR_OK;
}

/** MSR_IA32_FLUSH_CMD (write-only): L1D_FLUSH (bit 0) on a host that has it; the guest needs FLUSH_L1D too. */
export function setFlushCmd(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (!x.rules.commonPredFlush) return MSR_UNSUPPORTED;
  if (!host && !x.hasCap(vcpu, CAP.FLUSH_L1D)) return MSR_ERR;
  if (!hostHas(x, 'FLUSH_L1D') || hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
  return MSR_OK;
}
