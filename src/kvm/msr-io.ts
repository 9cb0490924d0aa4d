// msr_io and __msr_io (arch/x86/kvm/x86.c): copy in the header, refuse nmsrs >= MAX_IO_MSRS,
// copy in the entries, run each through do_msr until the first failure, and (for reads) copy all
// entries back. kvmsr works on the caller's bytes in place: entries after a failure are left as
// they were, which is what the kernel's copy-back of its unmodified copy produces.
//
// The loop allocates nothing and uses no BigInt: an entry's index and data are read as u32s, and
// MSRs with a fast-path class (fast-path.ts) are served straight from the vCPU's typed array.
import { endianness } from 'node:os';
import { E2BIG, EFAULT } from '../abi/errno.js';
import { KVM_MSR_ENTRY_LAYOUT, KVM_MSRS_LAYOUT, MAX_IO_MSRS } from '../abi/layout.js';
import {
  GET_LOAD,
  GET_LOAD_IF_CAP,
  GET_PV_LOAD,
  GET_PV_WALL_CLOCK,
  GET_PV_ZERO,
  GET_TSC,
  GET_ZERO,
  SET_CANONICAL,
  SET_CANONICALIZE,
  SET_DROP,
  SET_PAT,
  SET_PV_STORE,
  SET_PV_WALL_CLOCK,
  SET_PV_STORE_KVMCLOCK,
  SET_PV_ZERO_ONLY,
  SET_PV_ZERO_STORE,
  SET_STORE,
  SET_STORE_IF_CAP_ELSE_DROP,
  SET_STORE_IF_CAP_ELSE_ZERO_ONLY,
  SET_PV_BIT0_STORE,
  SET_PV_BYTE_STORE_IF_IRQCHIP,
  SET_PLATFORM_INFO,
  SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY,
  SET_ZERO_ONLY,
  SET_ZERO_STORE,
} from './fast-path.js';
import { MSR_OK, type MsrValue } from './msr-ret.js';
import { slotOf } from './msr-slots.js';
import type { Vcpu } from './vcpu.js';
import { patValid, zero, type X86 } from './x86.js';

export const MSR_IO_GET = 0;
export const MSR_IO_SET = 1;
export const MSR_IO_GET_FEATURE = 2;

const ENTRY = KVM_MSR_ENTRY_LAYOUT.size;
const PLATFORM_INFO_CPUID_FAULT = 0x80000000 | 0;
/** The u32 word of MISC_FEATURES_ENABLES (0x140) in a vCPU's MSR array. */
const MISC_FEATURES_SLOT = 2 * slotOf(0x140);
/** The words of KVM_SYSTEM_TIME and KVM_SYSTEM_TIME_NEW, which share vcpu->arch.time. */
const SYSTEM_TIME_SLOT = 2 * slotOf(0x12);
const SYSTEM_TIME_NEW_SLOT = 2 * slotOf(0x4b564d01);
const LITTLE_ENDIAN = endianness() === 'LE';
const DATA = KVM_MSR_ENTRY_LAYOUT.data;

/**
 * @param dv a DataView over the buffer that holds the struct
 * @param base the struct's offset in dv
 * @param avail how many bytes from base are mapped (copy_from_user faults past it)
 */
export function msrIo(
  x86: X86,
  vcpu: Vcpu | null,
  dv: DataView,
  u32: Uint32Array,
  i32: Int32Array,
  base: number,
  avail: number,
  op: number,
  out: MsrValue,
): number {
  if (avail < KVM_MSRS_LAYOUT.size) return -EFAULT;
  const n = dv.getUint32(base + KVM_MSRS_LAYOUT.nmsrs, true);
  if (n >= MAX_IO_MSRS) return -E2BIG;
  if (avail - KVM_MSRS_LAYOUT.size < n * ENTRY) return -EFAULT;
  x86.clockMs = NaN; // each ioctl reads the clock afresh, at most once
  const first = base + KVM_MSRS_LAYOUT.entries;
  if (op === MSR_IO_GET) {
    // An aligned buffer is read and written as u32s; any other goes through the DataView.
    if ((first & 3) === 0 && LITTLE_ENDIAN) return getLoopAligned(x86, vcpu as Vcpu, u32, i32, first >>> 2, n, out);
    return getLoop(x86, vcpu as Vcpu, dv, first, n, out);
  }
  if (op === MSR_IO_SET) return setLoop(x86, vcpu as Vcpu, dv, first, n);
  return featureLoop(x86, dv, first, n, out);
}

function getLoop(x86: X86, vcpu: Vcpu, dv: DataView, off: number, n: number, out: MsrValue): number {
  const msrs = vcpu.msrs;
  const fast = x86.fastGet;
  for (let i = 0; i < n; i++, off += ENTRY) {
    const index = dv.getInt32(off, true);
    const s = slotOf(index);
    const k = s >= 0 ? fast[s]! : 0;
    if (k === GET_LOAD) {
      dv.setUint32(off + DATA, msrs[2 * s]!, true);
      dv.setUint32(off + DATA + 4, msrs[2 * s + 1]!, true);
    } else if (k === GET_ZERO) {
      dv.setUint32(off + DATA, 0, true);
      dv.setUint32(off + DATA + 4, 0, true);
    } else {
      const r = getOther(x86, vcpu, index, s, k, out);
      // A failed read zeroes the entry's data (kvm_do_msr_access) before the loop stops.
      dv.setUint32(off + DATA, out.lo, true);
      dv.setUint32(off + DATA + 4, out.hi, true);
      if (r !== MSR_OK) return i;
    }
  }
  return n;
}

/** The gated fast classes, then the full path, for one read. */
function getOther(x86: X86, vcpu: Vcpu, index: number, s: number, k: number, out: MsrValue): number {
  switch (k) {
    case GET_LOAD_IF_CAP:
      if ((vcpu.capBits & x86.capMask[s]!) !== 0) return load(vcpu, s, out);
      return zero(out); // unsupported without the capability, but advertised: 0
    case GET_PV_LOAD:
      if (pvHas(vcpu, x86.pvBit[s]!)) return load(vcpu, s, out);
      break;
    case GET_PV_ZERO:
      if (pvHas(vcpu, x86.pvBit[s]!)) return zero(out);
      break;
    case GET_TSC:
      return x86.readTsc(vcpu, out);
    case GET_PV_WALL_CLOCK:
      if (pvHas(vcpu, x86.pvBit[s]!)) {
        out.lo = vcpu.vm.wallClockLo;
        out.hi = vcpu.vm.wallClockHi;
        return MSR_OK;
      }
      break;
  }
  return x86.doGetMsr(vcpu, index >>> 0, out);
}

function load(vcpu: Vcpu, s: number, out: MsrValue): number {
  out.lo = vcpu.msrs[2 * s]!;
  out.hi = vcpu.msrs[2 * s + 1]!;
  return MSR_OK;
}

/** getLoop over u32 words: w is the word index of the first entry. Loads and zeros stay inline. */
function getLoopAligned(x86: X86, vcpu: Vcpu, u32: Uint32Array, i32: Int32Array, w: number, n: number, out: MsrValue): number {
  const msrs = vcpu.msrs;
  const fast = x86.fastGet;
  for (let i = 0; i < n; i++, w += 4) {
    const index = i32[w]!;
    const s = slotOf(index);
    const k = s >= 0 ? fast[s]! : 0;
    if (k === GET_LOAD) {
      u32[w + 2] = msrs[2 * s]!;
      u32[w + 3] = msrs[2 * s + 1]!;
    } else if (k === GET_ZERO) {
      u32[w + 2] = 0;
      u32[w + 3] = 0;
    } else if (k === GET_PV_LOAD && (!vcpu.enforcePvCpuid || ((vcpu.pvFeatures >>> x86.pvBit[s]!) & 1) === 1)) {
      u32[w + 2] = msrs[2 * s]!;
      u32[w + 3] = msrs[2 * s + 1]!;
    } else {
      const r = getOther(x86, vcpu, index, s, k, out);
      u32[w + 2] = out.lo;
      u32[w + 3] = out.hi;
      if (r !== MSR_OK) return i;
    }
  }
  return n;
}

function setLoop(x86: X86, vcpu: Vcpu, dv: DataView, off: number, n: number): number {
  const msrs = vcpu.msrs;
  const fast = vcpu.hasRun ? x86.fastSetRan : x86.fastSet;
  for (let i = 0; i < n; i++, off += ENTRY) {
    const index = dv.getInt32(off, true);
    // int32 halves: see x86.ts on why written values travel signed.
    const lo = dv.getInt32(off + DATA, true);
    let hi = dv.getInt32(off + DATA + 4, true);
    const s = slotOf(index);
    const k = s >= 0 ? fast[s]! : 0;
    // Each fast case either stores (`break store`), drops (`continue`), refuses
    // (`return i`) or leaves the switch for the one slow path below it.
    store: {
      switch (k) {
        case SET_STORE:
          break store;
        case SET_DROP:
          continue;
        case SET_CANONICAL:
          if (x86.isNoncanonical(hi)) return i;
          break store;
        case SET_CANONICALIZE:
          hi = x86.canonicalHi(hi);
          break store;
        case SET_PAT:
          if (!patValid(lo, hi)) return i;
          break store;
        case SET_PLATFORM_INFO:
          // Refused only when CPUID_FAULT is cleared while MISC_FEATURES_ENABLES has faulting on.
          if ((lo & PLATFORM_INFO_CPUID_FAULT) !== 0 || (msrs[MISC_FEATURES_SLOT]! & 1) === 0) break store;
          return i;
        case SET_ZERO_ONLY:
          if (lo === 0 && hi === 0) continue;
          break;
        case SET_ZERO_STORE:
          if (lo === 0 && hi === 0) break store;
          break;
        case SET_PV_STORE:
          if (pvHas(vcpu, x86.pvBit[s]!)) break store;
          break;
        case SET_PV_ZERO_STORE:
          if (lo === 0 && hi === 0 && pvHas(vcpu, x86.pvBit[s]!)) break store;
          break;
        case SET_PV_ZERO_ONLY:
          if (lo === 0 && hi === 0 && pvHas(vcpu, x86.pvBit[s]!)) continue;
          break;
        case SET_PV_BIT0_STORE:
          if (hi === 0 && (lo & ~1) === 0 && pvHas(vcpu, x86.pvBit[s]!)) break store;
          break;
        case SET_PV_BYTE_STORE_IF_IRQCHIP:
          if (hi === 0 && lo >>> 8 === 0 && vcpu.vm.irqchip && pvHas(vcpu, x86.pvBit[s]!)) break store;
          break;
        case SET_PV_STORE_KVMCLOCK:
          if (pvHas(vcpu, x86.pvBit[s]!)) {
            msrs[SYSTEM_TIME_SLOT] = msrs[SYSTEM_TIME_NEW_SLOT] = lo;
            msrs[SYSTEM_TIME_SLOT + 1] = msrs[SYSTEM_TIME_NEW_SLOT + 1] = hi;
            continue;
          }
          break;
        case SET_PV_WALL_CLOCK:
          if (pvHas(vcpu, x86.pvBit[s]!)) {
            vcpu.vm.wallClockLo = lo;
            vcpu.vm.wallClockHi = hi;
            continue;
          }
          break;
        case SET_STORE_IF_CAP_ELSE_DROP:
          if ((vcpu.capBits & x86.capMask[s]!) !== 0) break store;
          continue;
        case SET_STORE_IF_CAP_ELSE_ZERO_ONLY:
          if ((vcpu.capBits & x86.capMask[s]!) !== 0) break store;
          if (lo === 0 && hi === 0) continue;
          break;
        case SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY:
          if (lo === 0 && hi === 0) {
            if ((vcpu.capBits & x86.capMask[s]!) !== 0) break store;
            continue;
          }
          break;
      }
      if (x86.doSetMsr(vcpu, index >>> 0, lo, hi) !== MSR_OK) return i;
      continue;
    }
    msrs[2 * s] = lo;
    msrs[2 * s + 1] = hi;
  }
  return n;
}

/** guest_pv_has: every PV feature counts unless enforcement is on. */
function pvHas(vcpu: Vcpu, bit: number): boolean {
  return !vcpu.enforcePvCpuid || ((vcpu.pvFeatures >>> bit) & 1) === 1;
}

function featureLoop(x86: X86, dv: DataView, off: number, n: number, out: MsrValue): number {
  for (let i = 0; i < n; i++, off += ENTRY) {
    const r = x86.doGetFeatureMsr(dv.getUint32(off, true), out);
    dv.setUint32(off + DATA, out.lo, true);
    dv.setUint32(off + DATA + 4, out.hi, true);
    if (r !== MSR_OK) return i;
  }
  return n;
}
