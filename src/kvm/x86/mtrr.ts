// MTRRs (arch/x86/kvm/mtrr.c: kvm_mtrr_get_msr, kvm_mtrr_set_msr, kvm_mtrr_valid).
import { M } from './msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

const KVM_NR_VAR_MTRR = 8;

/** The indices kvm_get/set_msr_common send to the MTRR code: MTRRcap, 0x200-0x26f, MTRRdefType. */
export function isMtrrRange(index: number): boolean {
  return index === M.MSR_MTRRcap || index === M.MSR_MTRRdefType || (index >= M.MSR_MTRRphysBase0 && index <= M.MSR_MTRRfix4K_F8000);
}
/** find_mtrr: the MSRs that are MTRRs (variable pairs, the fixed ranges, the default type). */
function isMtrr(index: number): boolean {
  return (
    (index >= M.MSR_MTRRphysBase0 && index < M.MSR_MTRRphysBase0 + 2 * KVM_NR_VAR_MTRR) ||
    index === M.MSR_MTRRfix64K_00000 ||
    index === M.MSR_MTRRfix64K_00000 + 8 ||
    index === M.MSR_MTRRfix64K_00000 + 9 ||
    (index >= M.MSR_MTRRfix4K_F8000 - 7 && index <= M.MSR_MTRRfix4K_F8000) ||
    index === M.MSR_MTRRdefType
  );
}
/** valid_mtrr_type: UC, WC, WT, WP, WB. */
function validMtrrType(t: number): boolean {
  return t < 8 && ((1 << t) & 0x73) !== 0;
}

/** kvm_mtrr_get_msr: MTRRcap is fixed (WC, FIX, 8 variable ranges); the rest are stored. */
export function getMtrr(x: X86, vcpu: Vcpu, index: number, out: MsrValue): number {
  if (index === M.MSR_MTRRcap) {
    out.lo = 0x500 | KVM_NR_VAR_MTRR;
    out.hi = 0;
    return MSR_OK;
  }
  return isMtrr(index) ? x.load(vcpu, index, out) : MSR_ERR;
}

/** kvm_mtrr_set_msr and kvm_mtrr_valid. */
export function setMtrr(x: X86, vcpu: Vcpu, index: number, lo: number, hi: number): number {
  if (index === M.MSR_MTRRcap) return MSR_UNSUPPORTED; // read-only: kvm_set_msr_common has no case
  if (!isMtrr(index)) return MSR_ERR;
  if (index === M.MSR_MTRRdefType) {
    if ((lo & ~0xcff) !== 0 || hi !== 0 || !validMtrrType(lo & 0xff)) return MSR_ERR;
  } else if (index >= M.MSR_MTRRfix64K_00000) {
    for (let b = 0; b < 4; b++) if (!validMtrrType((lo >>> (8 * b)) & 0xff) || !validMtrrType((hi >>> (8 * b)) & 0xff)) return MSR_ERR;
  } else {
    // Variable ranges: no bits at or above the guest's MAXPHYADDR; base has a type, mask bits 10:0 clear.
    const maxPhy = vcpu.maxPhyAddr;
    const hiReserved = maxPhy >= 64 ? 0 : maxPhy <= 32 ? -1 : ~((1 << (maxPhy - 32)) - 1);
    if ((hi & hiReserved) !== 0) return MSR_ERR;
    if ((index & 1) === 0) {
      if (!validMtrrType(lo & 0xff) || (lo & 0xf00) !== 0) return MSR_ERR;
    } else if ((lo & 0x7ff) !== 0) {
      return MSR_ERR;
    }
  }
  return x.store(vcpu, index, lo, hi);
}
