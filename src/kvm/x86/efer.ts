// EFER (arch/x86/kvm/x86.c set_efer, __kvm_valid_efer).
import { CAP } from './cpuid-caps.js';
import { versioned, type VersionedRule } from './release.js';
import { EFER_LMA, EFER_LME, EFER_NX } from './control-bits.js';
import { M } from './msr-index.js';
import { MSR_ERR } from './msr-ret.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

/** set_efer: reserved bits fail (host too); LMA keeps its current value. */
export function setEfer(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (hi !== 0 || (lo & ~x.eferAllowed) !== 0) return MSR_ERR;
  const cur = x.scratch;
  x.load(vcpu, M.MSR_EFER, cur);
  // (The guest's "no LME change while paging" rule needs CR0, which the MSR path does not see.)
  if (!host && !eferFitsCpuid(x, vcpu, lo)) return MSR_ERR;
  return x.store(vcpu, M.MSR_EFER, (lo & ~EFER_LMA) | (cur.lo & EFER_LMA), 0);
}

/** __kvm_valid_efer: each EFER feature bit needs its guest CPUID bit (set_efer for the guest, kvm_valid_efer). */
export function eferFitsCpuid(x: X86, vcpu: Vcpu, lo: number): boolean {
  if ((lo & (1 << 21)) !== 0 && !x.hasCap(vcpu, CAP.AUTOIBRS)) return false;
  if ((lo & (1 << 14)) !== 0 && !x.hasCap(vcpu, CAP.FXSR_OPT)) return false;
  if ((lo & (1 << 12)) !== 0 && !x.hasCap(vcpu, CAP.SVM)) return false;
  if ((lo & (EFER_LME | EFER_LMA)) !== 0 && !x.hasCap(vcpu, CAP.LM)) return false;
  if ((lo & EFER_NX) !== 0 && !x.hasCap(vcpu, CAP.NX)) return false;
  return true;
}

export const SREGS_EFER_CHECKED: VersionedRule = versioned({
  id: 'efer.sregs-valid',
  family: 'efer',
  kernel: 'kvm_is_valid_sregs (kvm_valid_efer)',
  holds: "KVM_SET_SREGS/SREGS2 refuse (EINVAL) an EFER whose feature bits the vCPU's CPUID lacks (LME/LMA without LM, NX without NX, ...)",
  otherwise: 'KVM_SET_SREGS checks only reserved EFER bits; KVM_SET_MSRS of EFER never checks the CPUID, on any release',
  where: { since: '6.13', backports: ['6.12.112'] },
  note: "6.12.112's \"KVM: x86: Check EFER validity on KVM_SET_SREGS*\"; on 6.13-6.18 kvmsr applies it as before (the 6.18.44 harvests agreed), which no live case has contradicted",
});
