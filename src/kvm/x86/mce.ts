// Machine-check MSRs (arch/x86/kvm/x86.c get_msr_mce, set_msr_mce, kvm_vcpu_ioctl_x86_setup_mce):
// MCG_CAP/STATUS/CTL and the banks, MCi_CTL/STATUS/ADDR/MISC (0x400..) and MCi_CTL2 (0x280..).
import { M } from './msr-index.js';
import { MSR_ERR, type MsrValue } from './msr-ret.js';
import { slotOf } from './msr-slots.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

/** KVM_MAX_MCE_BANKS: a new vCPU's MCG_CAP until KVM_X86_SETUP_MCE. */
export const KVM_MAX_MCE_BANKS = 32;
export const MCG_CTL_P = 1 << 8;
/** kvm_caps.supported_mce_cap before the vendor adds to it: MCG_CTL_P | MCG_SER_P. */
export const DEFAULT_MCE_CAP = 0x1000100n;
const MCG_CMCI_P = 1 << 10;
const EINVAL = 22;

/** The machine-check bank MSRs get_msr_mce/set_msr_mce handle: MCi_CTL2 and MCi_CTL/STATUS/ADDR/MISC. */
export function isMceBankMsr(index: number): boolean {
  return (index >= M.MSR_IA32_MC0_CTL2 && index < M.MSR_IA32_MC0_CTL2 + KVM_MAX_MCE_BANKS) ||
    (index >= M.MSR_IA32_MC0_CTL && index < M.MSR_IA32_MC0_CTL + 4 * KVM_MAX_MCE_BANKS);
}

export function mcgCap(vcpu: Vcpu): number {
  return vcpu.msrs[slotOf(M.MSR_IA32_MCG_CAP) * 2]!;
}

/** get_msr_mce for the banks: MCi_CTL/STATUS/ADDR/MISC (0x400..) and MCi_CTL2 (0x280..). */
export function getMce(x: X86, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
  const cap = mcgCap(vcpu);
  const banks = cap & 0xff;
  if (index < M.MSR_IA32_MC0_CTL) {
    if (index > M.MSR_IA32_MC0_CTL2 + banks - 1) return MSR_ERR;
    if ((cap & MCG_CMCI_P) === 0 && !host) return MSR_ERR;
    return x.load(vcpu, index, out);
  }
  if (index > M.MSR_IA32_MC0_CTL + 4 * banks - 1) return MSR_ERR;
  return x.load(vcpu, index, out);
}

/** set_msr_mce for the banks. */
export function setMce(x: X86, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
  const cap = mcgCap(vcpu);
  const banks = cap & 0xff;
  const nonzero = lo !== 0 || hi !== 0;
  if (index < M.MSR_IA32_MC0_CTL) {
    if (index > M.MSR_IA32_MC0_CTL2 + banks - 1) return MSR_ERR;
    if ((cap & MCG_CMCI_P) === 0 && (nonzero || !host)) return MSR_ERR;
    // Only CMCI_EN (bit 30) and the threshold (bits 14:0) exist.
    if (hi !== 0 || (lo & ~(0x40000000 | 0x7fff)) !== 0) return MSR_ERR;
    return x.store(vcpu, index, lo, hi);
  }
  if (index > M.MSR_IA32_MC0_CTL + 4 * banks - 1) return MSR_ERR;
  const reg = (index - M.MSR_IA32_MC0_CTL) & 3;
  // MCi_CTL: 0 or all-ones, where bits 10 and 0 may be clear (old Linux and UnixWare quirks).
  if (reg === 0 && nonzero && ((lo | 0x401) !== -1 || hi !== -1)) return MSR_ERR;
  // MCi_STATUS: the guest may write non-zero only on AMD with HWCR.McStatusWrEn.
  if (reg === 1 && !host && nonzero) {
    const hwcr = x.crossLoadLo(vcpu, M.MSR_K7_HWCR);
    if (!vcpu.amdCompatible || (hwcr & (1 << 18)) === 0) return MSR_ERR;
  }
  return x.store(vcpu, index, lo, hi);
}

/** kvm_vcpu_ioctl_x86_setup_mce. Returns 0 or -EINVAL. */
export function setupMce(x: X86, vcpu: Vcpu, capLo: number, capHi: number): number {
  const banks = capLo & 0xff;
  if (banks === 0 || banks > KVM_MAX_MCE_BANKS) return -EINVAL;
  if ((capLo & ~(x.supportedMceCapLo | 0xff | 0xff0000)) !== 0 || (capHi & ~x.supportedMceCapHi) !== 0) return -EINVAL;
  x.store(vcpu, M.MSR_IA32_MCG_CAP, capLo, capHi);
  if ((capLo & MCG_CTL_P) !== 0) x.store(vcpu, M.MSR_IA32_MCG_CTL, -1, -1);
  for (let b = 0; b < banks; b++) {
    x.store(vcpu, M.MSR_IA32_MC0_CTL + 4 * b, -1, -1);
    if ((capLo & MCG_CMCI_P) !== 0) x.store(vcpu, M.MSR_IA32_MC0_CTL2 + b, 0, 0);
  }
  return 0;
}

/** get_msr_mce's MCG_CTL: the guest needs MCG_CTL_P in MCG_CAP. */
export function getMcgCtl(x: X86, vcpu: Vcpu, host: boolean, out: MsrValue): number {
  if (!host && (mcgCap(vcpu) & MCG_CTL_P) === 0) return MSR_ERR;
  return x.load(vcpu, M.MSR_IA32_MCG_CTL, out);
}

/** set_msr_mce's MCG_CTL: without MCG_CTL_P only the host may write, and only 0; then 0 or all-ones. */
export function setMcgCtl(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if ((mcgCap(vcpu) & MCG_CTL_P) === 0 && (lo !== 0 || hi !== 0 || !host)) return MSR_ERR;
  // (lo & hi) is -1 for all-ones whether the halves came in signed or unsigned.
  if ((lo | hi) !== 0 && (lo & hi) !== -1) return MSR_ERR;
  return x.store(vcpu, M.MSR_IA32_MCG_CTL, lo, hi);
}

const MCI_STATUS_VAL_HI = 1 << 31; // bit 63
const MCI_STATUS_OVER_HI = 1 << 30; // bit 62
const MCI_STATUS_UC_HI = 1 << 29; // bit 61
const MCI_STATUS_PCC_HI = 1 << 25; // bit 57
const MCI_STATUS_S_HI = 1 << 24; // bit 56
const MCI_STATUS_AR_HI = 1 << 23; // bit 55
const X86_CR4_MCE = 1 << 6;

/** struct kvm_x86_mce, as KVM_X86_SET_MCE reads it (each u64 as two u32 halves). */
export interface InjectedMce {
  statusLo: number;
  statusHi: number;
  addrLo: number;
  addrHi: number;
  miscLo: number;
  miscHi: number;
  mcgStatusLo: number;
  mcgStatusHi: number;
  bank: number;
}

/** What an injected #MC leaves besides the bank: the exception queued, or a triple fault requested. */
export type MceEffect = 'none' | 'machine-check' | 'triple-fault';

/**
 * kvm_vcpu_ioctl_x86_set_mce (and kvm_vcpu_x86_set_ucna): logs an error in bank `m.bank` the way a
 * CPU would. Returns -EINVAL, or 0 with what else the vCPU must show (the caller queues #MC or the
 * triple fault in the vCPU's events). `cr4` is the vCPU's CR4 (low half).
 */
export function injectMce(x: X86, vcpu: Vcpu, m: InjectedMce, cr4: number): { ret: number; effect: MceEffect } {
  const cap = mcgCap(vcpu);
  const banks = cap & 0xff;
  if (m.bank >= banks || (m.statusHi & MCI_STATUS_VAL_HI) === 0) return { ret: -EINVAL, effect: 'none' };
  const base = M.MSR_IA32_MC0_CTL + 4 * m.bank;
  const uc = (m.statusHi & MCI_STATUS_UC_HI) !== 0;
  const put = (statusHi: number): void => {
    x.store(vcpu, base + 2, m.addrLo, m.addrHi);
    x.store(vcpu, base + 3, m.miscLo, m.miscHi);
    x.store(vcpu, base + 1, m.statusLo, statusHi);
  };
  // is_ucna: an uncorrected error with no action required, the guest told by CMCI at most.
  const ucna = m.mcgStatusLo === 0 && m.mcgStatusHi === 0 && uc && (m.statusHi & (MCI_STATUS_PCC_HI | MCI_STATUS_S_HI | MCI_STATUS_AR_HI)) === 0;
  if (ucna) {
    put(m.statusHi);
    x.store(vcpu, M.MSR_IA32_MCG_STATUS, m.mcgStatusLo, m.mcgStatusHi);
    return { ret: 0, effect: 'none' };
  }
  const scratch: MsrValue = { lo: 0, hi: 0 };
  const allOnes = (index: number): boolean => {
    x.load(vcpu, index, scratch);
    return (scratch.lo & scratch.hi) === -1;
  };
  // Uncorrected error reporting off (MCG_CTL, or the bank's MCi_CTL, not all ones): dropped.
  if (uc && (cap & MCG_CTL_P) !== 0 && !allOnes(M.MSR_IA32_MCG_CTL)) return { ret: 0, effect: 'none' };
  if (uc && !allOnes(base)) return { ret: 0, effect: 'none' };
  x.load(vcpu, base + 1, scratch);
  const oldValid = (scratch.hi & MCI_STATUS_VAL_HI) !== 0;
  const oldUc = (scratch.hi & MCI_STATUS_UC_HI) !== 0;
  if (uc) {
    x.load(vcpu, M.MSR_IA32_MCG_STATUS, scratch);
    // A #MC inside a #MC (MCG_STATUS.MCIP), or with CR4.MCE clear, shuts the vCPU down.
    if ((scratch.lo & 4) !== 0 || (cr4 & X86_CR4_MCE) === 0) return { ret: 0, effect: 'triple-fault' };
    x.store(vcpu, M.MSR_IA32_MCG_STATUS, m.mcgStatusLo, m.mcgStatusHi);
    put(oldValid ? m.statusHi | MCI_STATUS_OVER_HI : m.statusHi);
    return { ret: 0, effect: 'machine-check' };
  }
  if (!oldValid || !oldUc) {
    put(oldValid ? m.statusHi | MCI_STATUS_OVER_HI : m.statusHi);
  } else {
    x.load(vcpu, base + 1, scratch);
    x.store(vcpu, base + 1, scratch.lo, scratch.hi | MCI_STATUS_OVER_HI); // an uncorrected one stays
  }
  return { ret: 0, effect: 'none' };
}
