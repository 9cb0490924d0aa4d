// CET state MSRs (6.18's __kvm_get_msr/__kvm_set_msr gates and kvm_set_xstate_msr): U_CET, S_CET,
// PL0-3_SSP, INT_SSP_TAB and KVM's internal GUEST_SSP. Before 6.18 none has a handler.
import { CAP } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED } from './msr-ret.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';
import { versioned, type VersionedRule } from './release.js';

export const CET_VIRTUALIZATION: VersionedRule = versioned({
  id: 'cet.msrs',
  family: 'cet',
  kernel: '__kvm_get_msr, __kvm_set_msr (kvm_cet_*)',
  holds: 'the CET MSRs exist on a vCPU with SHSTK or IBT and are listed (KVM_GET_MSR_INDEX_LIST) where the host has them',
  otherwise: 'no CET MSR has a handler: host and guest accesses are unsupported',
  where: { since: '6.18' },
});

/** The CET MSRs whose existence __kvm_get_msr/__kvm_set_msr gate on SHSTK/IBT (6.18). */
export function isCetMsr(index: number): boolean {
  return (index >= M.MSR_IA32_U_CET && index <= M.MSR_IA32_INT_SSP_TAB && index !== 0x6a1 && index !== 0x6a3) || index === M.MSR_KVM_INTERNAL_GUEST_SSP;
}

/** The CET gates of __kvm_get_msr/__kvm_set_msr (6.18): the MSRs exist only with SHSTK/IBT. */
export function cetGate(x: X86, vcpu: Vcpu, index: number, host: boolean): number {
  // CET virtualization came in 6.18: before it no CET MSR has a handler (seen on 6.12: the guest's
  // access to 0x4b564dff exits with KVM_MSR_EXIT_REASON_UNKNOWN).
  if (!x.rules.cetMsrs) return MSR_UNSUPPORTED;
  const shstk = x.hasCap(vcpu, CAP.SHSTK);
  if (index === M.MSR_IA32_U_CET || index === M.MSR_IA32_S_CET) return shstk || x.hasCap(vcpu, CAP.IBT) ? MSR_OK : MSR_UNSUPPORTED;
  if (index === M.MSR_KVM_INTERNAL_GUEST_SSP && !host) return MSR_ERR;
  if (!shstk) return MSR_UNSUPPORTED;
  if (index === M.MSR_IA32_INT_SSP_TAB && !x.hasCap(vcpu, CAP.LM)) return MSR_UNSUPPORTED;
  return MSR_OK;
}

/** kvm_is_valid_u_s_cet. */
function validUSCet(x: X86, vcpu: Vcpu, lo: number, hi: number): boolean {
  if ((lo & 0x3c0) !== 0) return false; // reserved bits 9:6
  if (!x.hasCap(vcpu, CAP.SHSTK) && (lo & 0x3) !== 0) return false;
  if (!x.hasCap(vcpu, CAP.IBT) && ((lo & 0x3c) !== 0 || (lo & ~0x3ff) !== 0 || hi !== 0)) return false;
  if ((lo & 0x3000) !== 0) return false; // the legacy bitmap base (bits 63:12) is 4-byte aligned
  return !((lo & (1 << 10)) !== 0 && (lo & (1 << 11)) !== 0); // SUPPRESS with WAIT_ENDBR
}

/** __kvm_set_msr's CET checks; MSR_OK when the write may go on to the vendor. */
export function cetSetCheck(x: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
  const r = cetGate(x, vcpu, index, host);
  if (r !== MSR_OK) return r;
  if (index === M.MSR_IA32_U_CET || index === M.MSR_IA32_S_CET) return validUSCet(x, vcpu, lo, hi) ? MSR_OK : MSR_ERR;
  if (x.isNoncanonical(vcpu, hi)) return MSR_ERR;
  // PLx_SSP (and the internal SSP) must be 4-byte aligned.
  if (index !== M.MSR_IA32_INT_SSP_TAB && (lo & 3) !== 0) return MSR_ERR;
  return MSR_OK;
}
