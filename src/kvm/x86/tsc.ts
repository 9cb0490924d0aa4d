// The guest TSC and the MSRs that move with it (arch/x86/kvm/x86.c: kvm_synchronize_tsc,
// kvm_guest_time_update, kvm_set_tsc_khz, adjust_tsc_offset_guest; lapic.c for TSC_DEADLINE):
// IA32_TSC, IA32_TSC_ADJUST, IA32_TSC_DEADLINE, and KVM_SET_TSC_KHZ.
import { uptime } from 'node:os';
import { CAP } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_OK, type MsrValue } from './msr-ret.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';
import { versioned, type VersionedRule } from './release.js';
import { tscDeadlineArmed } from '../state/vcpu-state.js';

export const VM_TSC_KHZ_BEFORE_VCPUS: VersionedRule = versioned({
  id: 'tsc.vm-khz-before-vcpus',
  family: 'tsc',
  kernel: 'kvm_arch_vm_ioctl (KVM_SET_TSC_KHZ)',
  holds: 'the VM-wide KVM_SET_TSC_KHZ is refused (EINVAL) once any vCPU exists',
  otherwise: 'it is taken at any time, for vCPUs created later (seen live on 6.12.117)',
  where: { since: '6.15' },
  note: 'assumed release: absent from 6.12.118, present on 6.18.44',
});

export const SYNC_SLOP_AFTER_USER_WRITE: VersionedRule = versioned({
  id: 'tsc.sync-slop-after-user-write',
  family: 'tsc',
  kernel: 'kvm_synchronize_tsc (kvm->arch.user_set_tsc)',
  holds: "a host write of IA32_TSC within a second of where the VM's last write would be now joins that TSC generation only once userspace has written the TSC before (vCPU creation's write of 0 does not count)",
  otherwise: "every host write within that second joins the generation, the first one too",
  where: { since: '6.12' },
  note: '"KVM: x86: Don\'t sync user-written TSC against startup values"; absent from 6.1.192, present in 6.12.0, the release between not checked',
});

export const TSC_AUX_HIGH_BITS: VersionedRule = versioned({
  id: 'tsc.aux-high-bits',
  family: 'tsc',
  kernel: '__kvm_set_msr (MSR_TSC_AUX)',
  holds: "a TSC_AUX write with bits 63:32 set fails unless the vCPU's CPUID vendor is AMD or Hygon (a fresh vCPU has none, so it fails); on AMD the bits are dropped",
  otherwise: 'it fails only when the CPUID vendor is Intel; otherwise the bits are dropped (a fresh vCPU takes the write)',
  where: { since: '6.12' },
  note: 'seen live on kvm_intel 6.1.192; the release between 6.1 and 6.12 not checked',
});

const TWO32 = 4294967296;
const TWO64 = TWO32 * TWO32;
const KVM_CAP_TSC_CONTROL = 60;
/** kvm_caps.max_guest_tsc_khz on hosts with TSC scaling, capped at u32 (not in profiles; a documented bound). */
const MAX_GUEST_TSC_KHZ = 0xffffffff;
const EINVAL = 22;
/** x modulo 2^64, for a double within one wrap of [0, 2^64) (precise to the double's 53 bits). */
const wrap64 = (x: number): number => (x >= TWO64 ? x - TWO64 : x < 0 ? x + TWO64 : x);
/** (hi:lo) + cycles modulo 2^64, into out; cycles is an integer, possibly negative. */
function addCycles(lo: number, hi: number, cycles: number, out: MsrValue): void {
  const addHi = Math.floor(cycles / TWO32);
  const sum = lo + (cycles - addHi * TWO32);
  out.lo = sum >>> 0;
  out.hi = (hi + addHi + (sum >= TWO32 ? 1 : 0)) >>> 0;
}
/** out += (dLo, dHi), modulo 2^64; the deltas may be negative differences of u32 halves. */
function addHalves(out: MsrValue, dLo: number, dHi: number): void {
  const lo = out.lo + dLo;
  const carry = Math.floor(lo / TWO32);
  out.lo = (lo - carry * TWO32) >>> 0;
  out.hi = (out.hi + dHi + carry) >>> 0;
}
/** How long before performance.now()'s origin this machine booted, in ms. */
const HOST_BOOT_AGO_MS = Math.max(0, uptime() * 1000 - performance.now());

/** adjust_tsc_khz: khz moved by ppm parts per million, rounded down as the kernel's u64 division does. */
export function adjustTscKhz(khz: number, ppm: number): number {
  return Math.floor((khz * (1e6 + ppm)) / 1e6);
}

/** kvm.tsc_tolerance_ppm from a profile's module parameters (the kernel's default: 250). */
export function tscTolerancePpm(params: Record<string, string>): number {
  return Number(params['kvm.tsc_tolerance_ppm'] ?? '250');
}

export function readTsc(x: X86, vcpu: Vcpu, out: MsrValue): number {
  if (!x.vendor.tscOffsetHonored) {
    // The guest sees the host TSC: cycles since the host booted, estimated from this machine's uptime.
    addCycles(0, 0, hostTscShare(x, x.clock(), x.tscKhz), out);
    return MSR_OK;
  }
  if (x.tscUnstable) {
    // kvm_arch_vcpu_load with kvm_check_tsc_unstable(): the offset is recomputed so the guest TSC
    // reads vcpu->arch.last_guest_tsc, which only a TSC write or a guest run moves.
    out.lo = vcpu.tscBaseLo;
    out.hi = vcpu.tscBaseHi;
    return MSR_OK;
  }
  // kvm_scale_tsc(rdtsc(), l1_tsc_scaling_ratio) + l1_tsc_offset; a ratio of 0 (vcpu.tscKhz 0)
  // leaves the offset alone, which stands still.
  addCycles(vcpu.tscBaseLo, vcpu.tscBaseHi, Math.floor((x.clock() - vcpu.tscBaseAt) * vcpu.tscKhz), out);
  return MSR_OK;
}

export function writeTsc(x: X86, vcpu: Vcpu, lo: number, hi: number): void {
  vcpu.tscBaseLo = lo >>> 0;
  vcpu.tscBaseHi = hi >>> 0;
  vcpu.tscBaseAt = x.clock();
  vcpu.tscEstimated = false;
}

/** Whether a read of the vCPU's IA32_TSC rests on kvmsr's estimate of the host TSC. */
export function tscEstimated(x: X86, vcpu: Vcpu): boolean {
  return !x.vendor.tscOffsetHonored || (vcpu.tscEstimated && !x.tscUnstable);
}

/** Adds `cycles` (an integer, possibly negative) to the vCPU's TSC base, modulo 2^64. */
export function shiftTscBase(x: X86, vcpu: Vcpu, cycles: number): void {
  const sum = x.scratch;
  addCycles(vcpu.tscBaseLo, vcpu.tscBaseHi, cycles, sum);
  vcpu.tscBaseLo = sum.lo;
  vcpu.tscBaseHi = sum.hi;
}

/**
 * The host TSC's share of a reading at `atMs` for a vCPU running at `khz` (kvm_scale_tsc(rdtsc(),
 * ratio)), estimated from this machine's uptime: the offset stays when the ratio changes, so this
 * much moves with it. Only a change between ratios needs it, and kvmsr cannot know rdtsc exactly.
 */
export function hostTscShare(x: X86, atMs: number, khz: number): number {
  return Math.floor((HOST_BOOT_AGO_MS + atMs) * khz);
}

/**
 * kvm_vcpu_write_tsc_multiplier: the vCPU's TSC now advances at `rate` (0: the ratio was never
 * written). The offset stays, so on a stable host the reading jumps by the host TSC's share.
 */
export function writeTscMultiplier(x: X86, vcpu: Vcpu, rate: number): void {
  if (rate === vcpu.tscKhz) return;
  if (x.vendor.tscOffsetHonored && !x.tscUnstable) {
    const now = x.clock();
    readTsc(x, vcpu, x.scratch);
    writeTsc(x, vcpu, x.scratch.lo, x.scratch.hi);
    shiftTscBase(x, vcpu, hostTscShare(x, now, rate) - hostTscShare(x, now, vcpu.tscKhz));
    vcpu.tscEstimated = true;
  }
  vcpu.tscKhz = rate;
}

/**
 * kvm_guest_time_update with tsc_catchup at a guest entry: the offset is moved up to
 * this_tsc_write plus the virtual cycles since this_tsc_nsec (compute_guest_tsc), if that is
 * ahead. tsc_catchup is set for good when set_tsc_khz took a rate above the host's without TSC
 * scaling (tsc_always_catchup), and on an unstable host by every kvm_arch_vcpu_load, which also
 * requests the clock update (KVM_REQ_GLOBAL_CLOCK_UPDATE, as there is no master clock).
 * Without a master clock the kernel takes that time from the clock itself, as kvmsr does; with
 * one, from the master clock's last update, which kvmsr cannot know, so the value is an estimate.
 */
export function enterGuest(x: X86, vcpu: Vcpu): void {
  if ((!vcpu.tscCatchup && !x.tscUnstable) || !x.vendor.tscOffsetHonored) return;
  const now = x.clock();
  const target = x.scratch;
  addCycles(vcpu.thisTscLo, vcpu.thisTscHi, Math.floor((now - vcpu.thisTscAt) * vcpu.virtualTscKhz), target);
  const tLo = target.lo;
  const tHi = target.hi;
  readTsc(x, vcpu, target);
  if (tHi > target.hi || (tHi === target.hi && tLo > target.lo)) {
    writeTsc(x, vcpu, tLo, tHi);
    vcpu.tscEstimated = !x.tscUnstable; // timed by the master clock only on a stable host
  }
}

/**
 * kvm_synchronize_tsc for a host write of (lo, hi), or for vCPU creation (user = false, value 0).
 * A write of 0, or (after a user write) a value within a second of where the last write's TSC
 * would be now, joins the VM's current TSC generation instead of setting the value; anything
 * else starts a new generation at the value. Every rate here is virtual_tsc_khz (nsec_to_cycles).
 */
export function synchronizeTsc(x: X86, vcpu: Vcpu, lo: number, hi: number, user: boolean): void {
  // A vendor that cannot offset the TSC (PVM) ignores it all.
  if (!x.vendor.tscOffsetHonored) return;
  const vm = vcpu.vm;
  const now = x.clock();
  const khz = vcpu.virtualTscKhz;
  const data = (hi >>> 0) * TWO32 + (lo >>> 0);
  let synchronizing = false;
  if (data === 0) {
    synchronizing = true;
  } else if (vm.userSetTsc || !x.rules.tscSlopAfterUserWrite) {
    // u64 arithmetic: a value just below 2^64 (a small negative TSC) plus the elapsed cycles wraps.
    const expected = wrap64(vm.lastTscWrite + Math.floor((now - vm.lastTscWriteAt) * khz));
    const hz = khz * 1000;
    synchronizing = data < wrap64(expected + hz) && wrap64(data + hz) > expected;
  }
  if (user) vm.userSetTsc = true;
  let written = data; // what __kvm_synchronize_tsc records as kvm->arch.last_tsc_write
  if (synchronizing && vm.tscGenerationAt >= 0 && khz === vm.lastTscKhz) {
    if (x.tscUnstable) {
      // Matched on an unstable TSC: the value written plus the cycles since the VM's last write
      // becomes last_guest_tsc (and the VM's last write); the generation stays.
      vcpu.tscBaseLo = lo >>> 0;
      vcpu.tscBaseHi = hi >>> 0;
      shiftTscBase(x, vcpu, Math.floor((now - vm.lastTscWriteAt) * khz));
      vcpu.tscBaseAt = now;
      vcpu.tscEstimated = false;
      written = vcpu.tscBaseHi * TWO32 + vcpu.tscBaseLo;
    } else {
      // The generation's offset (cur_tsc_offset). A vCPU whose ratio differs from the one that
      // started it reads that offset against its own share of the host TSC.
      vcpu.tscBaseLo = vm.tscGenerationLo;
      vcpu.tscBaseHi = vm.tscGenerationHi;
      vcpu.tscBaseAt = vm.tscGenerationAt;
      vcpu.tscEstimated = false;
      if (vcpu.tscKhz !== vm.tscGenerationRate) {
        const at = vm.tscGenerationAt;
        shiftTscBase(x, vcpu, hostTscShare(x, at, vcpu.tscKhz) - hostTscShare(x, at, vm.tscGenerationRate));
        vcpu.tscEstimated = true;
      }
    }
  } else {
    vcpu.tscBaseLo = lo >>> 0;
    vcpu.tscBaseHi = hi >>> 0;
    vcpu.tscBaseAt = now;
    vcpu.tscEstimated = false;
    startGeneration(vcpu, now);
  }
  recordSync(vcpu, written, now, khz);
}

/** A new TSC generation (cur_tsc_generation++): the vCPU's TSC as it is now. */
function startGeneration(vcpu: Vcpu, now: number): void {
  const vm = vcpu.vm;
  vm.tscGenerationLo = vcpu.tscBaseLo;
  vm.tscGenerationHi = vcpu.tscBaseHi;
  vm.tscGenerationAt = now;
  vm.tscGenerationRate = vcpu.tscKhz;
}

/** The end of __kvm_synchronize_tsc: the vCPU records the generation it joined, the VM the write. */
function recordSync(vcpu: Vcpu, written: number, now: number, khz: number): void {
  const vm = vcpu.vm;
  vcpu.thisTscLo = vm.tscGenerationLo;
  vcpu.thisTscHi = vm.tscGenerationHi;
  vcpu.thisTscAt = vm.tscGenerationAt;
  vm.lastTscWrite = written;
  vm.lastTscWriteAt = now;
  vm.lastTscKhz = khz;
}

/**
 * The vCPU ioctl KVM_SET_TSC_KHZ: 0 means the kernel's tsc_khz (the refined rate, not the one a
 * new vCPU gets). Returns 0 or -EINVAL.
 */
export function setTscKhz(x: X86, vcpu: Vcpu, arg: number): number {
  let khz = ((arg % TWO32) + TWO32) % TWO32; // (u32)arg
  if (hasTscScaling(x) && khz >= MAX_GUEST_TSC_KHZ) return -EINVAL;
  if (khz === 0) khz = x.hostTscKhz;
  return kvmSetTscKhz(x, vcpu, khz) === 0 ? 0 : -EINVAL;
}

/**
 * kvm_set_tsc_khz and set_tsc_khz for a nonzero rate. virtual_tsc_khz (what KVM_GET_TSC_KHZ
 * reports) changes first, even when the rate cannot follow. Within kvm.tsc_tolerance_ppm of the
 * kernel's tsc_khz the default multiplier is written; otherwise a host with TSC scaling
 * (KVM_CAP_TSC_CONTROL) scales, and one without leaves the multiplier as it was: a faster rate
 * is caught up only while the guest runs (tsc_always_catchup), a slower one fails ("user
 * requested TSC rate below hardware speed"). Returns 0 or -1.
 */
export function kvmSetTscKhz(x: X86, vcpu: Vcpu, khz: number): number {
  vcpu.virtualTscKhz = khz;
  const host = x.hostTscKhz;
  if (khz >= adjustTscKhz(host, -x.tscTolerancePpm) && khz <= adjustTscKhz(host, x.tscTolerancePpm)) {
    writeTscMultiplier(x, vcpu, host);
    return 0;
  }
  if (hasTscScaling(x)) {
    writeTscMultiplier(x, vcpu, khz);
    return 0;
  }
  if (khz > host) {
    vcpu.tscCatchup = true; // tsc_catchup and tsc_always_catchup, never cleared
    return 0;
  }
  return -1;
}

/** KVM_CAP_TSC_CONTROL: the host can scale the guest TSC. */
export function hasTscScaling(x: X86): boolean {
  const ext = x.profile.extensions;
  return (ext.vm[KVM_CAP_TSC_CONTROL] ?? ext.system[KVM_CAP_TSC_CONTROL] ?? 0) > 0;
}

export function addToTsc(x: X86, vcpu: Vcpu, dLo: number, dHi: number): void {
  const t = x.scratch;
  readTsc(x, vcpu, t);
  addHalves(t, dLo, dHi);
  writeTsc(x, vcpu, t.lo, t.hi);
}

/** kvm_get_msr_common MSR_IA32_TSC: the guest reads what its last entry set. */
export function getTscMsr(x: X86, vcpu: Vcpu, host: boolean, out: MsrValue): number {
  if (!host) enterGuest(x, vcpu);
  return readTsc(x, vcpu, out);
}

/** kvm_set_msr_common MSR_IA32_TSC: the host's write synchronizes; the guest's moves TSC_ADJUST too. */
export function setTscMsr(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (host) {
    synchronizeTsc(x, vcpu, lo, hi, true);
    return MSR_OK;
  }
  readTsc(x, vcpu, x.scratch);
  const dLo = (lo >>> 0) - x.scratch.lo;
  const dHi = (hi >>> 0) - x.scratch.hi;
  writeTsc(x, vcpu, lo, hi);
  x.load(vcpu, M.MSR_IA32_TSC_ADJUST, x.scratch);
  addHalves(x.scratch, dLo, dHi);
  x.store(vcpu, M.MSR_IA32_TSC_ADJUST, x.scratch.lo, x.scratch.hi);
  return MSR_OK;
}

/** MSR_IA32_TSC_ADJUST: stored only when the guest CPUID has TSC_ADJUST; a host write never moves the TSC. */
export function setTscAdjust(x: X86, vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
  if (!x.hasCap(vcpu, CAP.TSC_ADJUST)) return MSR_OK;
  if (!host) {
    // adjust_tsc_offset_guest: the guest's TSC moves by the difference.
    const cur = x.scratch;
    x.load(vcpu, M.MSR_IA32_TSC_ADJUST, cur);
    addToTsc(x, vcpu, (lo >>> 0) - cur.lo, (hi >>> 0) - cur.hi);
  }
  return x.store(vcpu, M.MSR_IA32_TSC_ADJUST, lo, hi);
}

/**
 * kvm_get_lapic_tscdeadline_msr: 0 unless the in-kernel LAPIC is on and its LVT timer is in
 * TSC-deadline mode (KVM_SET_LAPIC sets that: vcpu-state.ts). No guest runs, so it never expires.
 */
export function getTscDeadline(x: X86, vcpu: Vcpu, out: MsrValue): number {
  if (!tscDeadlineArmed(x, vcpu)) {
    out.lo = 0;
    out.hi = 0;
    return MSR_OK;
  }
  out.lo = vcpu.state!.tscDeadlineLo;
  out.hi = vcpu.state!.tscDeadlineHi;
  return MSR_OK;
}

/** kvm_set_lapic_tscdeadline_msr: kept only in TSC-deadline mode, ignored otherwise. */
export function setTscDeadline(x: X86, vcpu: Vcpu, lo: number, hi: number): number {
  if (tscDeadlineArmed(x, vcpu)) {
    vcpu.state!.tscDeadlineLo = lo;
    vcpu.state!.tscDeadlineHi = hi;
  }
  return MSR_OK;
}

/**
 * KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET): vcpu->arch.l1_tsc_offset, the guest
 * TSC less the host's scaled to the vCPU's rate (kvmsr's estimate of the host TSC; 0 where the
 * vendor cannot offset the TSC, as on PVM, measured). Into out as two u32 halves.
 */
export function getTscOffset(x: X86, vcpu: Vcpu, out: MsrValue): void {
  if (!x.vendor.tscOffsetHonored) {
    out.lo = 0;
    out.hi = 0;
    return;
  }
  readTsc(x, vcpu, out);
  addCycles(out.lo, out.hi, -hostTscShare(x, x.clock(), vcpu.tscKhz), out);
}

/**
 * KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET) (kvm_arch_tsc_set_attr): the guest TSC
 * becomes the host's plus the offset, as __kvm_synchronize_tsc sets it, a user write: it joins the
 * VM's generation when the VM's last write set this very offset at this rate, else starts one.
 * Ignored where the vendor cannot offset the TSC (PVM: taken, and GET still reads 0, measured).
 */
export function setTscOffset(x: X86, vcpu: Vcpu, lo: number, hi: number): void {
  if (!x.vendor.tscOffsetHonored) return;
  const vm = vcpu.vm;
  const now = x.clock();
  const khz = vcpu.virtualTscKhz;
  const offset = (hi >>> 0) * TWO32 + (lo >>> 0);
  const matched = khz !== 0 && vm.lastTscKhz === khz && vm.lastTscOffset === offset;
  const tsc = x.scratch;
  addCycles(lo >>> 0, hi >>> 0, hostTscShare(x, now, vcpu.tscKhz), tsc);
  vcpu.tscBaseLo = tsc.lo;
  vcpu.tscBaseHi = tsc.hi;
  vcpu.tscBaseAt = now;
  vcpu.tscEstimated = true; // it rests on kvmsr's estimate of the host TSC
  vm.userSetTsc = true;
  if (!matched) startGeneration(vcpu, now);
  recordSync(vcpu, tsc.hi * TWO32 + tsc.lo, now, khz);
  vm.lastTscOffset = offset;
}
