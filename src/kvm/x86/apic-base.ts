// IA32_APICBASE (arch/x86/kvm/lapic.c kvm_apic_set_base, via kvm_set_apic_base).
import { CAP } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_ERR } from './msr-ret.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

const APICBASE_X2APIC = 1 << 10;

/**
 * kvm_apic_set_base: reserved bits (above MAXPHYADDR, 7:0 and 9, and x2APIC without the CPUID
 * bit) and the invalid mode (x2APIC without enable) fail; a guest may not leave x2APIC for xAPIC
 * or go from disabled straight to x2APIC. kvmsr keeps the value; the LAPIC itself is not modelled.
 */
export function setApicBase(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  const maxPhy = vcpu.maxPhyAddr;
  const hiReserved = maxPhy >= 64 ? 0 : maxPhy <= 32 ? -1 : ~((1 << (maxPhy - 32)) - 1);
  const x2 = x.hasCap(vcpu, CAP.X2APIC) ? 0 : APICBASE_X2APIC;
  if ((hi & hiReserved) !== 0 || (lo & (0x2ff | x2)) !== 0) return MSR_ERR;
  const mode = (lo >>> 10) & 3; // 0 disabled, 1 invalid, 2 xAPIC, 3 x2APIC
  if (mode === 1) return MSR_ERR;
  if (!host) {
    const cur = x.scratch;
    x.load(vcpu, M.MSR_IA32_APICBASE, cur);
    const old = (cur.lo >>> 10) & 3;
    if ((old === 3 && mode === 2) || (old === 0 && mode === 3)) return MSR_ERR;
  }
  return x.store(vcpu, M.MSR_IA32_APICBASE, lo, hi);
}
