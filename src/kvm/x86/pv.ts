// KVM's paravirtual MSRs (arch/x86/kvm/x86.c kvm_get/set_msr_common, kvm_pv_enable_async_pf,
// kvm_write_system_time, lapic.c kvm_lapic_set_pv_eoi): the kvmclock pair MSR_KVM_WALL_CLOCK(_NEW)
// and MSR_KVM_SYSTEM_TIME(_NEW) (0x11, 0x12, 0x4b564d00, 0x4b564d01), async PF (0x4b564d02,
// 0x4b564d06, 0x4b564d07), steal time (0x4b564d03), PV EOI (0x4b564d04) and poll control
// (0x4b564d05). Each needs its KVM_CPUID_FEATURES bit once KVM_CAP_ENFORCE_PV_FEATURE_CPUID is on.
import { M } from './msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

import { versioned, type VersionedRule } from './release.js';

export const PV_UNSUPPORTED: VersionedRule = versioned({
  id: 'pv.unsupported-without-cpuid',
  family: 'pv',
  kernel: 'kvm_get_msr_common, kvm_set_msr_common (the PV MSR cases)',
  holds: 'a PV MSR whose KVM_CPUID_FEATURES bit the vCPU lacks (with KVM_CAP_ENFORCE_PV_FEATURE_CPUID) is unsupported: on 6.12.75+ the host then reads 0 and writes 0 (the listed-MSR exemption); on 6.1.167+ the host fails too (6.1 exempts only msrs_to_save), unless ignore_msrs',
  otherwise: 'the access returns 1: host and guest fail, and ignore_msrs does not help',
  where: { since: '6.14', backports: ['6.1.167', '6.12.75'] },
  note: '"KVM: x86: Return \"unsupported\" instead of \"invalid\" on access to unsupported PV MSR" (5bb9ac186512); its mainline release assumed',
});

const TWO32 = 4294967296;

/** The PV MSRs this module answers. */
export function isPvMsr(index: number): boolean {
  return index === M.MSR_KVM_WALL_CLOCK || index === M.MSR_KVM_SYSTEM_TIME || (index >= M.MSR_KVM_WALL_CLOCK_NEW && index <= M.MSR_KVM_ASYNC_PF_ACK);
}

/** The KVM_FEATURE_* bit each PV MSR needs (guest_pv_has). */
export function pvFeatureOf(index: number): number {
  switch (index) {
    case M.MSR_KVM_WALL_CLOCK:
    case M.MSR_KVM_SYSTEM_TIME:
      return M.KVM_FEATURE_CLOCKSOURCE;
    case M.MSR_KVM_WALL_CLOCK_NEW:
    case M.MSR_KVM_SYSTEM_TIME_NEW:
      return M.KVM_FEATURE_CLOCKSOURCE2;
    case M.MSR_KVM_ASYNC_PF_EN:
      return M.KVM_FEATURE_ASYNC_PF;
    case M.MSR_KVM_ASYNC_PF_INT:
    case M.MSR_KVM_ASYNC_PF_ACK:
      return M.KVM_FEATURE_ASYNC_PF_INT;
    case M.MSR_KVM_STEAL_TIME:
      return M.KVM_FEATURE_STEAL_TIME;
    case M.MSR_KVM_PV_EOI_EN:
      return M.KVM_FEATURE_PV_EOI;
    default:
      return M.KVM_FEATURE_POLL_CONTROL;
  }
}

/**
 * What a PV MSR whose feature the vCPU lacks answers: KVM_MSR_RET_UNSUPPORTED (the host may then
 * read 0 and write 0 where the release exempts listed MSRs), or before the change a plain 1.
 */
function missing(x: X86): number {
  return x.rules.pvUnsupported ? MSR_UNSUPPORTED : MSR_ERR;
}

export function getPvMsr(x: X86, vcpu: Vcpu, index: number, out: MsrValue): number {
  if (!x.guestPvHas(vcpu, pvFeatureOf(index))) return missing(x);
  switch (index) {
    case M.MSR_KVM_WALL_CLOCK:
    case M.MSR_KVM_WALL_CLOCK_NEW:
      out.lo = vcpu.vm.wallClockLo;
      out.hi = vcpu.vm.wallClockHi;
      return MSR_OK;
    case M.MSR_KVM_ASYNC_PF_ACK:
      out.lo = 0;
      out.hi = 0;
      return MSR_OK;
    default:
      return x.load(vcpu, index, out);
  }
}

/**
 * kvm_write_system_time: bit 0 activates the pvclock cache at the rest of the value (kvm_gpc_activate,
 * which refuses, leaving the cache as it was, a pvclock_vcpu_time_info of 32 bytes that would cross
 * its page), a clear bit 0 deactivates it. Measured on kvm_pvm 6.18.44 v1272: enabled at 0x1ff0 after
 * 0x1000 stays active; enabled at 0x1ff0 from inactive stays inactive.
 */
export function pvTimeActiveAfter(active: boolean, lo: number): boolean {
  if ((lo & 1) === 0) return false;
  return (lo & 0xffe) + 32 <= 4096 ? true : active;
}

export function setPvMsr(x: X86, vcpu: Vcpu, index: number, lo: number, hi: number): number {
  if (!x.guestPvHas(vcpu, pvFeatureOf(index))) return missing(x);
  switch (index) {
    case M.MSR_KVM_WALL_CLOCK:
    case M.MSR_KVM_WALL_CLOCK_NEW:
      vcpu.vm.wallClockLo = lo;
      vcpu.vm.wallClockHi = hi;
      return MSR_OK;
    case M.MSR_KVM_SYSTEM_TIME:
    case M.MSR_KVM_SYSTEM_TIME_NEW:
      // kvm_write_system_time: both MSRs set vcpu->arch.time, which both read back (seen live on
      // kvm_amd 6.12: SYSTEM_TIME_NEW = 1, then SYSTEM_TIME reads 1).
      x.store(vcpu, M.MSR_KVM_SYSTEM_TIME, lo, hi);
      vcpu.pvTimeActive = pvTimeActiveAfter(vcpu.pvTimeActive, lo);
      return x.store(vcpu, M.MSR_KVM_SYSTEM_TIME_NEW, lo, hi);
    case M.MSR_KVM_ASYNC_PF_EN:
      return enableAsyncPf(x, vcpu, lo, hi);
    case M.MSR_KVM_ASYNC_PF_INT:
      if (hi !== 0 || lo >>> 8 !== 0) return MSR_ERR;
      if (!vcpu.vm.irqchip) return MSR_ERR;
      return x.store(vcpu, index, lo, hi);
    case M.MSR_KVM_ASYNC_PF_ACK:
      return MSR_OK;
    case M.MSR_KVM_STEAL_TIME:
      if ((lo & 0x3e) !== 0) return MSR_ERR; // KVM_STEAL_RESERVED_MASK
      return x.store(vcpu, index, lo, hi);
    case M.MSR_KVM_PV_EOI_EN:
      // kvm_lapic_set_pv_eoi: 4-byte aligned address; when enabled it must be in a memslot.
      if ((lo & 0x2) !== 0) return MSR_ERR;
      if ((lo & 1) !== 0 && !vcpu.vm.gpaRangeMapped((hi >>> 0) * TWO32 + ((lo & ~1) >>> 0), 1)) return MSR_ERR;
      return x.store(vcpu, index, lo, hi);
    default: // MSR_KVM_POLL_CONTROL
      if (hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
      return x.store(vcpu, index, lo, hi);
  }
}

/** kvm_pv_enable_async_pf. */
function enableAsyncPf(x: X86, vcpu: Vcpu, lo: number, hi: number): number {
  if ((lo & 0x30) !== 0) return MSR_ERR;
  if (!x.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_VMEXIT) && (lo & 0x4) !== 0) return MSR_ERR;
  if (!x.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_INT) && (lo & 0x8) !== 0) return MSR_ERR;
  if (!vcpu.vm.irqchip) return lo !== 0 || hi !== 0 ? MSR_ERR : MSR_OK;
  // The value is stored before the GPA is checked, so a failed enable still changes it.
  x.store(vcpu, M.MSR_KVM_ASYNC_PF_EN, lo, hi);
  // kvm_pv_async_pf_enabled: only ENABLED together with DELIVERY_AS_INT looks up the GPA.
  if ((lo & 0x9) !== 0x9) return MSR_OK;
  const gpa = (hi >>> 0) * TWO32 + ((lo & ~0x3f) >>> 0);
  return vcpu.vm.gpaRangeMapped(gpa, 8) ? MSR_OK : MSR_ERR;
}
