// msr_io and __msr_io (arch/x86/kvm/x86.c): copy in the header, refuse nmsrs >= MAX_IO_MSRS,
// copy in the entries, run each through do_msr until the first failure, and (for reads) copy all
// entries back. kvmsr works on the caller's bytes in place when they are aligned: entries after a
// failure are left as they were, which is what the kernel's copy-back of its unmodified copy produces.
//
// The loop allocates nothing and uses no BigInt: an entry's index and data are read as u32s, and
// MSRs with a fast-path class (fast-path.ts) are served straight from the vCPU's typed array.
import { endianness } from 'node:os';
import * as Errno from '../../abi/errno.js';
import { KVM_MSR_ENTRY_LAYOUT, KVM_MSRS_LAYOUT, MAX_IO_MSRS } from '../../abi/layout.js';
import * as FastPath from './fast-path.js';
import * as MsrRet from './msr-ret.js';
import type { MsrValue } from './msr-ret.js';
import * as MsrSlots from './msr-slots.js';
import type { Vcpu } from '../vcpu.js';
import * as PatModule from './pat.js';
import * as PvModule from './pv.js';
import * as TscModule from './tsc.js';
import type { X86 } from './x86.js';

// Module-local copies of the imported names the loops use. V8 loads an imported binding through
// its module cell and checks it for the TDZ hole on every use, even in optimized code; a const of
// this module is folded to its value (and a function to a direct, inlinable call). Seen in the
// optimized code of the loops (node --print-opt-code): with the imports used directly, each case
// of the class switch was a cell load, a hole check and a compare instead of one jump table.
const {
  FAST_SLOW,
  GET_LOAD,
  GET_LOAD_IF_CAP,
  GET_PV_LOAD,
  GET_PV_WALL_CLOCK,
  GET_TSC_DEADLINE,
  SET_TSC_DEADLINE,
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
} = FastPath;
const { MSR_OK, MSR_ERR } = MsrRet;
const { E2BIG, EFAULT } = Errno;
const { slotOf, SLOT_COUNT } = MsrSlots;
/** Every slot FAST_SLOW (0): the full path for each entry. */
const ALL_SLOW = new Uint8Array(SLOT_COUNT);
const { patValid } = PatModule;
const { readTsc } = TscModule;

export const MSR_IO_GET = 0;
export const MSR_IO_SET = 1;
export const MSR_IO_GET_FEATURE = 2;

const ENTRY = KVM_MSR_ENTRY_LAYOUT.size;
const HEADER = KVM_MSRS_LAYOUT.size;
const NMSRS = KVM_MSRS_LAYOUT.nmsrs;
const ENTRIES = KVM_MSRS_LAYOUT.entries;
const MAX_ENTRIES = MAX_IO_MSRS;
const PLATFORM_INFO_CPUID_FAULT = 0x80000000 | 0;
/** The u32 word of MISC_FEATURES_ENABLES (0x140) in a vCPU's MSR array. */
const MISC_FEATURES_SLOT = 2 * slotOf(0x140);
/** The words of KVM_SYSTEM_TIME and KVM_SYSTEM_TIME_NEW, which share vcpu->arch.time. */
const SYSTEM_TIME_SLOT = 2 * slotOf(0x12);
const SYSTEM_TIME_NEW_SLOT = 2 * slotOf(0x4b564d01);
const LITTLE_ENDIAN = endianness() === 'LE';
const DATA = KVM_MSR_ENTRY_LAYOUT.data;

/** The kernel's copy of the entries when the caller's cannot be used in place (see msrIo). */
const SCRATCH_U32 = new Uint32Array((MAX_IO_MSRS * ENTRY) >>> 2);
const SCRATCH_I32 = new Int32Array(SCRATCH_U32.buffer);

/**
 * @param dv a DataView over the buffer that holds the struct
 * @param u32 the same buffer as u32 words, from byte 0 of dv's buffer
 * @param i32 the same words as int32
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
  if (avail < HEADER) return -EFAULT;
  const n = dv.getUint32(base + NMSRS, true);
  if (n >= MAX_ENTRIES) return -E2BIG;
  if (avail - HEADER < n * ENTRY) return -EFAULT;
  x86.clockMs = NaN; // each ioctl reads the clock afresh, at most once
  const first = base + ENTRIES;
  if (op === MSR_IO_GET_FEATURE) return featureLoop(x86, dv, first, n, out);
  // The loops work on u32 words. A 4-byte-aligned buffer on a little-endian host is used in place;
  // any other is copied into scratch words first (what the kernel's memdup_user does) and, for
  // reads, all n entries copied back (its copy_to_user), which gives the same bytes.
  if ((first & 3) === 0 && LITTLE_ENDIAN) {
    const w = first >>> 2;
    return op === MSR_IO_GET ? getLoop(x86, vcpu as Vcpu, u32, i32, w, n, out) : setLoop(x86, vcpu as Vcpu, i32, w, n);
  }
  const words = n * (ENTRY >>> 2);
  for (let j = 0; j < words; j++) SCRATCH_U32[j] = dv.getUint32(first + 4 * j, true);
  if (op === MSR_IO_SET) return setLoop(x86, vcpu as Vcpu, SCRATCH_I32, 0, n);
  const r = getLoop(x86, vcpu as Vcpu, SCRATCH_U32, SCRATCH_I32, 0, n, out);
  for (let j = 0; j < words; j++) dv.setUint32(first + 4 * j, SCRATCH_U32[j]!, true);
  return r;
}

/**
 * KVM_GET_MSRS over u32 words: first is the word of the first entry (its index; the data follows at + 2).
 * Every fast class is handled inline, so the loop calls out only for the TSC and the full path.
 * No MSR access changes the gates (capabilities, PV features: CPUID and KVM_ENABLE_CAP set them),
 * so both loops read them once.
 */
function getLoop(x86: X86, vcpu: Vcpu, u32: Uint32Array, i32: Int32Array, first: number, n: number, out: MsrValue): number {
  const msrs = vcpu.msrs;
  const fast = x86.fastGet;
  const capMask = x86.capMask;
  const pvBit = x86.pvBit;
  const caps = vcpu.capBits;
  const pv = pvMask(vcpu);
  // w: a fresh int32 local (a parameter as loop variable stays a tagged value).
  for (let i = 0, w = first | 0; i < n; i++, w += 4) {
    const index = i32[w]!;
    const s = slotOf(index);
    const k = s >= 0 ? fast[s]! : FAST_SLOW;
    switch (k) {
      case GET_LOAD:
        u32[w + 2] = msrs[2 * s]!;
        u32[w + 3] = msrs[2 * s + 1]!;
        continue;
      case GET_ZERO:
        u32[w + 2] = 0;
        u32[w + 3] = 0;
        continue;
      case GET_LOAD_IF_CAP:
        // Without the capability the read is unsupported but advertised: 0.
        if ((caps & capMask[s]!) !== 0) {
          u32[w + 2] = msrs[2 * s]!;
          u32[w + 3] = msrs[2 * s + 1]!;
        } else {
          u32[w + 2] = 0;
          u32[w + 3] = 0;
        }
        continue;
      case GET_PV_LOAD:
        if (((pv >>> pvBit[s]!) & 1) === 0) break;
        u32[w + 2] = msrs[2 * s]!;
        u32[w + 3] = msrs[2 * s + 1]!;
        continue;
      case GET_PV_ZERO:
        if (((pv >>> pvBit[s]!) & 1) === 0) break;
        u32[w + 2] = 0;
        u32[w + 3] = 0;
        continue;
      case GET_PV_WALL_CLOCK:
        if (((pv >>> pvBit[s]!) & 1) === 0) break;
        u32[w + 2] = vcpu.vm.wallClockLo;
        u32[w + 3] = vcpu.vm.wallClockHi;
        continue;
      case GET_TSC_DEADLINE:
        // kvm_get_lapic_tscdeadline_msr: 0 outside TSC-deadline mode; in it, the full path.
        if (vcpu.tscDeadlineMode) break;
        u32[w + 2] = 0;
        u32[w + 3] = 0;
        continue;
    }
    const r = k === GET_TSC ? readTsc(x86, vcpu, out) : x86.doGetMsr(vcpu, index >>> 0, out);
    // A failed read zeroes the entry's data (kvm_do_msr_access) before the loop stops; before
    // 6.12 a failure other than "unsupported" left the VMM's data (access.ts FAILED_READ_ZEROED).
    if (r === MSR_ERR && !x86.rules.failedReadZeroed) return i;
    u32[w + 2] = out.lo;
    u32[w + 3] = out.hi;
    if (r !== MSR_OK) return i;
  }
  return n;
}

/** KVM_SET_MSRS over int32 words (see getLoop). */
function setLoop(x86: X86, vcpu: Vcpu, i32: Int32Array, first: number, n: number): number {
  const msrs = vcpu.msrs;
  // A Xen hypercall-page MSR (KVM_XEN_HVM_CONFIG) takes every write of its index: all go the full path then.
  const fast = vcpu.vm.xenHvmMsr !== 0 ? ALL_SLOW : vcpu.hasRun ? x86.fastSetRan : x86.fastSet;
  const capMask = x86.capMask;
  const pvBit = x86.pvBit;
  const caps = vcpu.capBits;
  const pv = pvMask(vcpu);
  for (let i = 0, w = first | 0; i < n; i++, w += 4) {
    const index = i32[w]!;
    // int32 halves: see x86.ts on why written values travel signed.
    const lo = i32[w + 2]!;
    let hi = i32[w + 3]!;
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
        case SET_TSC_DEADLINE:
          // kvm_set_lapic_tscdeadline_msr ignores it outside TSC-deadline mode.
          if (!vcpu.tscDeadlineMode) continue;
          break;
        case SET_CANONICAL:
          if (x86.isNoncanonical(vcpu, hi)) return i;
          break store;
        case SET_CANONICALIZE:
          hi = x86.canonicalHi(vcpu, hi);
          break store;
        case SET_PAT:
          if (!patValid(lo, hi)) return i;
          break store;
        case SET_PLATFORM_INFO:
          // Refused only when CPUID_FAULT is cleared while MISC_FEATURES_ENABLES has faulting on,
          // which the full path decides (the measured rule may keep 0x140 out of the check).
          if ((lo & PLATFORM_INFO_CPUID_FAULT) !== 0 || (msrs[MISC_FEATURES_SLOT]! & 1) === 0) break store;
          break;
        case SET_ZERO_ONLY:
          if (lo === 0 && hi === 0) continue;
          break;
        case SET_ZERO_STORE:
          if (lo === 0 && hi === 0) break store;
          break;
        case SET_PV_STORE:
          if (((pv >>> pvBit[s]!) & 1) !== 0) break store;
          break;
        case SET_PV_ZERO_STORE:
          if (lo === 0 && hi === 0 && ((pv >>> pvBit[s]!) & 1) !== 0) break store;
          break;
        case SET_PV_ZERO_ONLY:
          if (lo === 0 && hi === 0 && ((pv >>> pvBit[s]!) & 1) !== 0) continue;
          break;
        case SET_PV_BIT0_STORE:
          if (hi === 0 && (lo & ~1) === 0 && ((pv >>> pvBit[s]!) & 1) !== 0) break store;
          break;
        case SET_PV_BYTE_STORE_IF_IRQCHIP:
          if (hi === 0 && lo >>> 8 === 0 && vcpu.vm.irqchip && ((pv >>> pvBit[s]!) & 1) !== 0) break store;
          break;
        case SET_PV_STORE_KVMCLOCK:
          if (((pv >>> pvBit[s]!) & 1) !== 0) {
            msrs[SYSTEM_TIME_SLOT] = msrs[SYSTEM_TIME_NEW_SLOT] = lo;
            msrs[SYSTEM_TIME_SLOT + 1] = msrs[SYSTEM_TIME_NEW_SLOT + 1] = hi;
            vcpu.pvTimeActive = PvModule.pvTimeActiveAfter(vcpu.pvTimeActive, lo); // kvm_write_system_time's pvclock cache
            continue;
          }
          break;
        case SET_PV_WALL_CLOCK:
          if (((pv >>> pvBit[s]!) & 1) !== 0) {
            vcpu.vm.wallClockLo = lo;
            vcpu.vm.wallClockHi = hi;
            continue;
          }
          break;
        case SET_STORE_IF_CAP_ELSE_DROP:
          if ((caps & capMask[s]!) !== 0) break store;
          continue;
        case SET_STORE_IF_CAP_ELSE_ZERO_ONLY:
          if ((caps & capMask[s]!) !== 0) break store;
          if (lo === 0 && hi === 0) continue;
          break;
        case SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY:
          if (lo === 0 && hi === 0) {
            if ((caps & capMask[s]!) !== 0) break store;
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

/** guest_pv_has as a mask: every PV feature counts unless enforcement is on. No write changes it. */
function pvMask(vcpu: Vcpu): number {
  return vcpu.enforcePvCpuid ? vcpu.pvFeatures : -1;
}

function featureLoop(x86: X86, dv: DataView, off: number, n: number, out: MsrValue): number {
  for (let i = 0; i < n; i++, off += ENTRY) {
    const r = x86.doGetFeatureMsr(dv.getUint32(off, true), out);
    if (r === MSR_ERR && !x86.rules.failedReadZeroed) return i;
    dv.setUint32(off + DATA, out.lo, true);
    dv.setUint32(off + DATA + 4, out.hi, true);
    if (r !== MSR_OK) return i;
  }
  return n;
}
