// MSR_K7_HWCR (arch/x86/kvm/x86.c kvm_set_msr_common): the AMD hardware configuration MSR.
import { M } from './msr-index.js';
import { MSR_ERR } from './msr-ret.js';
import { versioned, type VersionedRule } from './release.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

export const HWCR_TSC_FREQ_SEL: VersionedRule = versioned({
  id: 'hwcr.tsc-freq-sel',
  family: 'hwcr',
  kernel: 'kvm_set_msr_common (MSR_K7_HWCR)',
  holds: 'McStatusWrEn (bit 18) and TscFreqSel (bit 24) may be set, in any combination',
  otherwise: 'the value (after dropping bits 3, 6 and 8) must be exactly 0 or bit 18',
  where: { since: '6.12' },
  note: 'present in 6.12.0, absent from 6.1.192; the mainline release between them not checked',
});

/** Flush-filter disable (6), IGNNE emulation (8) and TLB cache disable (3) are ignored. */
const IGNORED = 0x40 | 0x100 | 0x8;
const MC_STATUS_WR_EN = 1 << 18;
const TSC_FREQ_SEL = 1 << 24;

export function setHwcr(x: X86, vcpu: Vcpu, lo: number, hi: number): number {
  const l = lo & ~IGNORED;
  if (x.rules.hwcrTscFreqSel) {
    if ((l & ~(MC_STATUS_WR_EN | TSC_FREQ_SEL)) !== 0 || hi !== 0) return MSR_ERR;
  } else if ((l !== 0 && l !== MC_STATUS_WR_EN) || hi !== 0) {
    return MSR_ERR;
  }
  return x.store(vcpu, M.MSR_K7_HWCR, l, 0);
}
