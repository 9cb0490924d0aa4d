// The rest of a vCPU's state API (arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl, regs.c, lapic.c): stored
// and returned as the kernel does, starting from the host's fresh answers (fresh-state.ts). kvmsr
// runs no guest code, so these change only by the ioctls themselves; where one of them changes what
// an MSR ioctl answers, it goes through the MSR model: KVM_SET_SREGS/SREGS2 set EFER (set_efer) and
// the APIC base (kvm_apic_set_base, host-initiated); KVM_GET_SREGS reads them back; KVM_SET_LAPIC
// moves the LVT timer in and out of TSC-deadline mode, which decides what IA32_TSC_DEADLINE holds.
import { eferFitsCpuid } from '../x86/efer.js';
import { EBUSY, EFAULT, EINVAL } from '../../abi/errno.js';
import {
  KVM_GUEST_DEBUG_LAYOUT,
  KVM_GUESTDBG_ENABLE,
  KVM_GUESTDBG_INJECT_BP,
  KVM_GUESTDBG_INJECT_DB,
  KVM_GUESTDBG_SINGLESTEP,
  KVM_RUN_LAYOUT,
  KVM_RUN_X86_SMM,
} from '../../abi/layout.js';
import * as I from '../../abi/kvm-ioctls.js';
import type { FreshState } from './fresh-state.js';
import { STATE_SIZES } from './fresh-state.js';
import type { Kvm } from '../kvm.js';
import { copyIn as input, copyOut as out } from './state-copy.js';
import { M } from '../x86/msr-index.js';
import { findCpuid } from '../profile.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from '../x86/x86.js';
import { CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME } from '../x86/control-bits.js';
import { validCr4 } from '../x86/cr4.js';

// struct kvm_sregs / kvm_sregs2 offsets (linux/kvm.h).
const SR_CS = 0;
const SR_FS = 72; // kvm_segment.base of fs
const SR_GS = 96;
const SR_CR0 = 224;
const SR_CR3 = 240;
const SR_CR4 = 248;
const SR_CR8 = 256;
const SR_EFER = 264;
const SR_APIC_BASE = 272;
const SR_COMMON = 280; // kvm_sregs: interrupt_bitmap here; kvm_sregs2: flags, pad, pdptrs[4]
const SREGS2_FLAGS_PDPTRS_VALID = 1;


// kvm_lapic_state register offsets (APIC_* in apicdef.h).
const APIC_ID = 0x20;
const APIC_LVR = 0x30;
const APIC_TASKPRI = 0x80;
const APIC_PROCPRI = 0xa0;
const APIC_LDR = 0xd0;
const APIC_ISR = 0x100;
const APIC_LVTT = 0x320;
const APIC_LVT0 = 0x350;
const APIC_TMCCT = 0x390;
const APIC_LVT_TIMER_TSCDEADLINE = 2 << 17;
const APIC_BASE_ENABLE = 1 << 11;
const APIC_BASE_X2APIC = 1 << 10;

// kvm_vcpu_events (linux/kvm.h).
const EV_FLAGS = 20;
const VCPUEVENT_VALID_NMI_PENDING = 0x1;
const VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
const VCPUEVENT_VALID_SHADOW = 0x4;
const VCPUEVENT_VALID_SMM = 0x8;
const VCPUEVENT_VALID_PAYLOAD = 0x10;
const VCPUEVENT_VALID_TRIPLE_FAULT = 0x20;

export const MP_STATE_RUNNABLE = 0;
export const MP_STATE_UNINITIALIZED = 1;
const MP_STATE_INIT_RECEIVED = 2;
export const MP_STATE_HALTED = 3;
const MP_STATE_SIPI_RECEIVED = 4;
const MP_STATE_MAX = 8; // KVM_MP_STATE_SUSPENDED

/** One vCPU's state beyond its MSRs, made on its first state ioctl (MSR-only runs never pay for it). */
export class VcpuState {
  readonly regs: Uint8Array;
  /** The kvm_sregs2 bytes; cr8, EFER and the APIC base live elsewhere (the LAPIC's TPR, the MSRs). */
  readonly sregs2: Uint8Array;
  readonly xsave: Uint8Array;
  /**
   * The raw FXSAVE area as KVM_GET_FPU reads it. Not the same bytes as the XSAVE legacy region: the
   * uABI XSAVE form shows the init state for components not in xstate_bv (MXCSR 0x1f80 where the
   * fresh raw area holds 0), so the two are kept apart and copied where the kernel copies them.
   */
  readonly fpu: Uint8Array;
  xcr0 = 1;
  /** Null without an in-kernel LAPIC (KVM_GET_LAPIC is then EINVAL). */
  readonly lapic: Uint8Array | null;
  readonly events: Uint8Array;
  readonly debugregs: Uint8Array;
  mpState: number;
  /** vcpu->arch.cr8, kept only without an in-kernel LAPIC. */
  cr8 = 0;
  /** apic->lapic_timer.timer_mode and tscdeadline (IA32_TSC_DEADLINE's value in TSC-deadline mode). */
  timerMode = 0;
  tscDeadlineLo = 0;
  tscDeadlineHi = 0;
  vapicAddr = 0n;
  tprAccessReporting = false;
  /** vcpu->arch.pending_external_vector: an ExtINT KVM_INTERRUPT queued with a split irqchip; -1: none. */
  pendingExternalVector = -1;

  constructor(vcpu: Vcpu, fresh: FreshState, xsaveSize: number) {
    this.regs = fresh.regs.slice();
    this.sregs2 = fresh.sregs2.slice();
    this.xsave = new Uint8Array(Math.max(STATE_SIZES.xsave, xsaveSize));
    this.xsave.set(fresh.xsave);
    this.fpu = fresh.fpu.slice();
    this.xcr0 = Number(new DataView(fresh.xcrs.buffer, fresh.xcrs.byteOffset).getBigUint64(16, true) & 0xffffffffn);
    this.events = fresh.events.slice();
    this.debugregs = fresh.debugregs.slice();
    const bsp = vcpu.id === vcpu.vm.caps.bspVcpuId; // kvm_vcpu_is_reset_bsp
    if (vcpu.vm.irqchip) {
      const l = fresh.lapic.slice();
      const dv = new DataView(l.buffer);
      dv.setUint32(APIC_ID, (vcpu.id << 24) >>> 0, true); // kvm_apic_set_xapic_id
      // kvm_lapic_reset: LINT0 is ExtINT on the BSP, masked elsewhere.
      dv.setUint32(APIC_LVT0, bsp ? 0x700 : 0x10000, true);
      this.lapic = l;
    } else {
      this.lapic = null;
    }
    // kvm_arch_vcpu_create: an AP waits for INIT/SIPI when the LAPIC is in the kernel.
    this.mpState = vcpu.vm.irqchip && !bsp ? MP_STATE_UNINITIALIZED : MP_STATE_RUNNABLE;
  }
}

/** The low half of the vCPU's CR4 (0 before any state ioctl: a fresh vCPU's CR4 is 0). */
export function cr4Lo(vcpu: Vcpu): number {
  const s = vcpu.state;
  return s === null ? 0 : s.sregs2[SR_CR4]! | (s.sregs2[SR_CR4 + 1]! << 8) | (s.sregs2[SR_CR4 + 2]! << 16) | (s.sregs2[SR_CR4 + 3]! << 24);
}

export function vcpuState(k: Kvm, vcpu: Vcpu): VcpuState {
  if (vcpu.state === null) vcpu.state = new VcpuState(vcpu, k.freshState, xsaveSize(k));
  return vcpu.state;
}

/** KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2): the bytes KVM_GET_XSAVE2 copies out. */
export function xsaveSize(k: Kvm): number {
  return Math.max(STATE_SIZES.xsave, k.profile.extensions.vm[I.KVM_CAP.XSAVE2] ?? k.profile.extensions.system[I.KVM_CAP.XSAVE2] ?? 0);
}

/** The vCPU state ioctls; undefined for a request that is not one of them. */
export function vcpuStateIoctl(k: Kvm, vcpu: Vcpu, req: number, arg: IoctlArg): number | undefined {
  switch (req) {
    case I.KVM_GET_REGS:
      return out(k, arg, getRegs(vcpu, vcpuState(k, vcpu)));
    case I.KVM_SET_REGS: {
      const b = input(k, arg, STATE_SIZES.regs);
      if (!b) return -EFAULT;
      const s = vcpuState(k, vcpu);
      const rflags = u64(b, RFLAGS);
      s.regs.set(b);
      setRflags(k, vcpu, s, rflags | 0x2n); // __set_regs: kvm_set_rflags(rflags | X86_EFLAGS_FIXED)
      return 0;
    }
    case I.KVM_SET_GUEST_DEBUG:
      return setGuestDebug(k, vcpu, arg);
    case I.KVM_GET_SREGS:
    case I.KVM_GET_SREGS2:
      return getSregs(k, vcpu, arg, req === I.KVM_GET_SREGS2);
    case I.KVM_SET_SREGS:
    case I.KVM_SET_SREGS2:
      return setSregs(k, vcpu, arg, req === I.KVM_SET_SREGS2);
    case I.KVM_GET_FPU:
      return out(k, arg, vcpuState(k, vcpu).fpu);
    case I.KVM_SET_FPU: {
      const b = input(k, arg, STATE_SIZES.fpu);
      if (!b) return -EFAULT;
      // kvm_arch_vcpu_ioctl_set_fpu writes the FXSAVE area (reserved bytes zeroed); XSAVE shows it.
      const s = vcpuState(k, vcpu);
      s.fpu.fill(0);
      s.fpu.set(b.subarray(0, 412));
      fpuIntoXsave(s.fpu, s.xsave);
      return 0;
    }
    case I.KVM_GET_XSAVE:
      // kvm_vcpu_ioctl_x86_get_xsave: EINVAL when the guest's xstate is larger than struct kvm_xsave.
      if (xsaveSize(k) > STATE_SIZES.xsave) return -EINVAL;
      return out(k, arg, vcpuState(k, vcpu).xsave.subarray(0, STATE_SIZES.xsave));
    case I.KVM_GET_XSAVE2:
      return out(k, arg, vcpuState(k, vcpu).xsave);
    case I.KVM_SET_XSAVE:
      return setXsave(k, vcpu, arg);
    case I.KVM_GET_XCRS:
      return getXcrs(k, vcpu, arg);
    case I.KVM_SET_XCRS:
      return setXcrs(k, vcpu, arg);
    case I.KVM_GET_LAPIC: {
      const s = vcpuState(k, vcpu);
      if (!s.lapic) return -EINVAL; // lapic_in_kernel
      return getLapic(k, vcpu, s, arg);
    }
    case I.KVM_SET_LAPIC: {
      const s = vcpuState(k, vcpu);
      if (!s.lapic) return -EINVAL;
      return setLapic(k, vcpu, s, arg);
    }
    case I.KVM_GET_VCPU_EVENTS:
      return getEvents(k, vcpu, arg);
    case I.KVM_SET_VCPU_EVENTS:
      return setEvents(k, vcpu, arg);
    case I.KVM_GET_DEBUGREGS:
      return out(k, arg, vcpuState(k, vcpu).debugregs);
    case I.KVM_SET_DEBUGREGS:
      return setDebugregs(k, vcpu, arg);
    case I.KVM_GET_MP_STATE: {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, vcpuState(k, vcpu).mpState, true);
      return out(k, arg, b);
    }
    case I.KVM_SET_MP_STATE:
      return setMpState(k, vcpu, arg);
    case I.KVM_SET_VAPIC_ADDR: {
      const b = input(k, arg, 8);
      if (!b) return -EFAULT;
      if (!vcpu.vm.irqchip) return -EINVAL;
      // kvm_lapic_set_vapic_addr: 0 turns it off; else its u32 must be in guest memory (a memslot),
      // within one page (kvm_gpc_activate; -EINVAL either way).
      const addr = new DataView(b.buffer).getBigUint64(0, true);
      if (addr !== 0n) {
        if (addr > BigInt(Number.MAX_SAFE_INTEGER) || (addr & 0xfffn) > 4096n - 4n) return -EINVAL;
        if (!vcpu.vm.gpaRangeMapped(Number(addr), 4)) return -EINVAL;
      }
      vcpuState(k, vcpu).vapicAddr = addr;
      return 0;
    }
    case I.KVM_TPR_ACCESS_REPORTING: {
      const b = input(k, arg, 40);
      if (!b) return -EFAULT;
      const dv = new DataView(b.buffer);
      if (dv.getUint32(4, true) !== 0) return -EINVAL; // kvm_vcpu_ioctl_tpr_access_reporting: flags
      vcpuState(k, vcpu).tprAccessReporting = dv.getUint32(0, true) !== 0;
      return k.args.copyOut(0, b) ? 0 : -EFAULT;
    }
    default:
      return undefined;
  }
}


const u64 = (b: Uint8Array, off: number): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(off, true);
const setU64 = (b: Uint8Array, off: number, v: bigint): void => new DataView(b.buffer, b.byteOffset).setBigUint64(off, v, true);
const u32 = (b: Uint8Array, off: number): number => new DataView(b.buffer, b.byteOffset).getUint32(off, true);
const setU32 = (b: Uint8Array, off: number, v: number): void => new DataView(b.buffer, b.byteOffset).setUint32(off, v >>> 0, true);

function msr64(k: Kvm, vcpu: Vcpu, index: number): bigint {
  const v = { lo: 0, hi: 0 };
  k.x86.load(vcpu, index, v);
  return (BigInt(v.hi >>> 0) << 32n) | BigInt(v.lo >>> 0);
}

// ---- REGS: RFLAGS as the vendor's get/set_rflags and guest debugging see it ----

const RIP = 128;
const RFLAGS = 136;
const X86_EFLAGS_TF = 0x100n;
const X86_EFLAGS_IF = 0x200n;

/** kvm_get_linear_rip: RIP in 64-bit mode (EFER.LMA and CS.L), else CS.base + RIP truncated to 32 bits. */
function linearRip(k: Kvm, vcpu: Vcpu, s: VcpuState): bigint {
  const rip = u64(s.regs, RIP);
  const lma = (msr64(k, vcpu, M.MSR_EFER) & BigInt(EFER_LMA)) !== 0n;
  if (lma && s.sregs2[SR_CS + 19] !== 0) return rip;
  return (u64(s.sregs2, SR_CS) + rip) & 0xffffffffn;
}

/** kvm_get_rflags: the single-step trap flag KVM itself set is not the guest's. */
function getRflags(vcpu: Vcpu, s: VcpuState): bigint {
  const r = u64(s.regs, RFLAGS);
  return (vcpu.guestDebug & KVM_GUESTDBG_SINGLESTEP) !== 0 ? r & ~X86_EFLAGS_TF : r;
}

/** kvm_set_rflags: while single-stepping at singlestep_rip, TF is set for the guest. */
function setRflags(k: Kvm, vcpu: Vcpu, s: VcpuState, rflags: bigint): void {
  let r = rflags;
  if ((vcpu.guestDebug & KVM_GUESTDBG_SINGLESTEP) !== 0 && linearRip(k, vcpu, s) === vcpu.singlestepRip) r |= X86_EFLAGS_TF;
  setU64(s.regs, RFLAGS, r);
}

/** __get_regs: the stored registers with RFLAGS as kvm_get_rflags reads it. */
function getRegs(vcpu: Vcpu, s: VcpuState): Uint8Array {
  if ((vcpu.guestDebug & KVM_GUESTDBG_SINGLESTEP) === 0) return s.regs;
  const b = s.regs.slice();
  setU64(b, RFLAGS, getRflags(vcpu, s));
  return b;
}

// ---- KVM_SET_GUEST_DEBUG (kvm_arch_vcpu_ioctl_set_guest_debug) ----

const DB_VECTOR = 1;
const BP_VECTOR = 3;
const DF_VECTOR = 8;

/** kvm_is_exception_pending: a queued (not yet injected) exception, or a triple fault requested. */
function exceptionPending(s: VcpuState): boolean {
  return s.events[3] !== 0 || s.events[28] !== 0;
}

/**
 * kvm_queue_exception (kvm_multiple_exception with no error code, no payload): queued as pending;
 * after an injected #DF it becomes a triple fault; #DB and #BP are benign, so they replace an
 * injected exception of any other vector.
 */
function queueException(s: VcpuState, nr: number): void {
  const e = s.events;
  if (e[0] !== 0 && e[1] === DF_VECTOR) {
    e[28] = 1; // kvm_make_request(KVM_REQ_TRIPLE_FAULT)
    return;
  }
  e[0] = 0; // exception.injected
  e[1] = nr;
  e[2] = 0; // has_error_code
  e[3] = 1; // exception.pending
  e.fill(0, 4, 8); // error_code
  e.fill(0, 55, 64); // exception_has_payload, exception_payload
}

function setGuestDebug(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, KVM_GUEST_DEBUG_LAYOUT.size);
  if (!b) return -EFAULT; // kvm_vcpu_ioctl's copy_from_user
  // No guest here has protected state (guest_state_protected: SEV-ES, TDX), and the kernel checks no
  // other control bit (6.12; kvm_pvm 6.18.44 v1272 takes 0x80000000 and 0x400 alike).
  const control = u32(b, KVM_GUEST_DEBUG_LAYOUT.control);
  const s = vcpuState(k, vcpu);
  if ((control & (KVM_GUESTDBG_INJECT_DB | KVM_GUESTDBG_INJECT_BP)) !== 0) {
    if (exceptionPending(s)) return -EBUSY;
    queueException(s, (control & KVM_GUESTDBG_INJECT_DB) !== 0 ? DB_VECTOR : BP_VECTOR);
  }
  const rflags = getRflags(vcpu, s);
  vcpu.guestDebug = (control & KVM_GUESTDBG_ENABLE) !== 0 ? control : 0;
  // eff_db and guest_debug_dr7 (USE_HW_BP) are the hardware's, never read back by an ioctl.
  vcpu.guestDebugRegs.set(b.subarray(KVM_GUEST_DEBUG_LAYOUT.debugreg, KVM_GUEST_DEBUG_LAYOUT.size));
  if ((vcpu.guestDebug & KVM_GUESTDBG_SINGLESTEP) !== 0) vcpu.singlestepRip = linearRip(k, vcpu, s);
  setRflags(k, vcpu, s, rflags);
  return 0;
}

// ---- what KVM_RUN reads and writes in kvm_run (kvm_arch_vcpu_ioctl_run, post_kvm_run_save) ----

/** kvm_get_cr8: the in-kernel LAPIC's TPR[7:4], else vcpu->arch.cr8. */
function cr8Of(s: VcpuState): number {
  return s.lapic ? (s.lapic[APIC_TASKPRI]! & 0xf0) >> 4 : s.cr8;
}

/**
 * kvm_vcpu_ready_for_interrupt_injection, without an in-kernel PIC (so without a LAPIC either:
 * kvmsr has no split irqchip): interrupts allowed (RFLAGS.IF, no STI or MOV SS shadow), no
 * interrupt waiting for its injection (kvm_cpu_has_extint), no event to reinject, no exception pending.
 */
function readyForInjection(s: VcpuState): boolean {
  const e = s.events;
  const allowed = (u64(s.regs, RFLAGS) & X86_EFLAGS_IF) !== 0n && (e[11]! & 3) === 0;
  const reinject = e[0] !== 0 || e[8] !== 0 || e[12] !== 0;
  return allowed && e[8] === 0 && !reinject && !exceptionPending(s);
}

/** post_kvm_run_save: the fields every return of KVM_RUN fills from the vCPU's state. */
export function postRunSave(k: Kvm, vcpu: Vcpu, run: DataView): void {
  const s = vcpuState(k, vcpu);
  run.setUint8(KVM_RUN_LAYOUT.ifFlag, (u64(s.regs, RFLAGS) & X86_EFLAGS_IF) !== 0n ? 1 : 0);
  run.setBigUint64(KVM_RUN_LAYOUT.cr8, BigInt(cr8Of(s)), true);
  run.setBigUint64(KVM_RUN_LAYOUT.apicBase, msr64(k, vcpu, M.MSR_IA32_APICBASE), true);
  run.setUint8(KVM_RUN_LAYOUT.readyForInterruptInjection, vcpu.vm.irqchip || readyForInjection(s) ? 1 : 0);
  // is_smm; is_guest_mode is never true (kvmsr has no nested state).
  if (s.events[24] !== 0) run.setUint16(KVM_RUN_LAYOUT.flags, run.getUint16(KVM_RUN_LAYOUT.flags, true) | KVM_RUN_X86_SMM, true);
}

/** kvm_set_cr8 from run->cr8 (KVM_RUN without an in-kernel LAPIC): false for reserved bits (EINVAL). */
export function setCr8FromRun(k: Kvm, vcpu: Vcpu, cr8: bigint): boolean {
  const s = vcpuState(k, vcpu);
  if (s.lapic) return true;
  if ((cr8 & ~0xfn) !== 0n) return false;
  s.cr8 = Number(cr8);
  return true;
}

// ---- SREGS (regs.c: __get_sregs_common, kvm_is_valid_sregs, __set_sregs_common) ----

function getSregs(k: Kvm, vcpu: Vcpu, arg: IoctlArg, two: boolean): number {
  const s = vcpuState(k, vcpu);
  const b = new Uint8Array(two ? STATE_SIZES.sregs2 : STATE_SIZES.sregs);
  b.set(s.sregs2.subarray(0, SR_COMMON));
  setU64(b, SR_CR8, BigInt(s.lapic ? (s.lapic[APIC_TASKPRI]! & 0xf0) >> 4 : s.cr8));
  setU64(b, SR_EFER, msr64(k, vcpu, M.MSR_EFER));
  setU64(b, SR_APIC_BASE, msr64(k, vcpu, M.MSR_IA32_APICBASE));
  // The FS and GS bases are the segment cache's, which MSR_FS_BASE/MSR_GS_BASE read too.
  setU64(b, SR_FS, msr64(k, vcpu, M.MSR_FS_BASE));
  setU64(b, SR_GS, msr64(k, vcpu, M.MSR_GS_BASE));
  if (two) {
    // kvm_vcpu_ioctl_x86_get_sregs2: the PDPTRs when the guest is in PAE paging.
    const cr0 = u64(b, SR_CR0);
    const pae = (cr0 & BigInt(CR0_PG)) !== 0n && (u64(b, SR_CR4) & BigInt(CR4_PAE)) !== 0n && (u64(b, SR_EFER) & BigInt(EFER_LMA)) === 0n;
    if (pae) {
      setU32(b, SR_COMMON, SREGS2_FLAGS_PDPTRS_VALID);
      b.set(s.sregs2.subarray(SR_COMMON + 8, SR_COMMON + 40), SR_COMMON + 8);
    }
  } else if (s.events[8] !== 0 && s.events[10] === 0) {
    // __get_sregs: an injected, non-soft interrupt shows in interrupt_bitmap.
    const nr = s.events[9]!;
    b[SR_COMMON + (nr >> 3)]! |= 1 << (nr & 7);
  }
  return out(k, arg, b);
}

function setSregs(k: Kvm, vcpu: Vcpu, arg: IoctlArg, two: boolean): number {
  const b = input(k, arg, two ? STATE_SIZES.sregs2 : STATE_SIZES.sregs);
  if (!b) return -EFAULT;
  const s = vcpuState(k, vcpu);
  let pdptrsValid = false;
  const cr0 = u64(b, SR_CR0);
  const cr4 = u64(b, SR_CR4);
  const efer = u64(b, SR_EFER);
  if (two) {
    // kvm_vcpu_ioctl_x86_set_sregs2
    const flags = u32(b, SR_COMMON);
    if ((flags & ~SREGS2_FLAGS_PDPTRS_VALID) !== 0) return -EINVAL;
    pdptrsValid = (flags & SREGS2_FLAGS_PDPTRS_VALID) !== 0;
    const pae = (cr0 & BigInt(CR0_PG)) !== 0n && (cr4 & BigInt(CR4_PAE)) !== 0n && (efer & BigInt(EFER_LMA)) === 0n;
    if (pdptrsValid && !pae) return -EINVAL;
  }
  if (!validSregs(k, vcpu, b, cr0, cr4, efer)) return -EINVAL;
  // kvm_apic_set_base, host-initiated: what a KVM_SET_MSRS of the APIC base would refuse fails here.
  const base = u64(b, SR_APIC_BASE);
  if (k.x86.setMsr(vcpu, M.MSR_IA32_APICBASE, true, Number(base & 0xffffffffn) | 0, Number(base >> 32n) | 0) !== 0) return -EINVAL;
  s.sregs2.set(b.subarray(0, SR_COMMON));
  // kvm_set_segment: what MSR_FS_BASE and MSR_GS_BASE read from now on.
  const fs = u64(b, SR_FS);
  const gs = u64(b, SR_GS);
  k.x86.store(vcpu, M.MSR_FS_BASE, Number(fs & 0xffffffffn) | 0, Number(fs >> 32n) | 0);
  k.x86.store(vcpu, M.MSR_GS_BASE, Number(gs & 0xffffffffn) | 0, Number(gs >> 32n) | 0);
  // set_efer (the vendor's): stored as given, LMA included; kvm_valid_efer already checked it.
  k.x86.store(vcpu, M.MSR_EFER, Number(efer & 0xffffffffn) | 0, Number(efer >> 32n) | 0);
  const cr8 = Number(u64(b, SR_CR8) & 0xfn);
  if (s.lapic) s.lapic[APIC_TASKPRI] = cr8 << 4; // kvm_set_cr8 -> kvm_lapic_set_tpr
  else s.cr8 = Number(u64(b, SR_CR8) & 0xffffffffn);
  if (s.lapic) updatePpr(s.lapic);
  if (two) {
    if (pdptrsValid) s.sregs2.set(b.subarray(SR_COMMON + 8, SR_COMMON + 40), SR_COMMON + 8);
    else s.sregs2.fill(0, SR_COMMON + 8, SR_COMMON + 40); // load_pdptrs reads guest memory kvmsr has not got
  } else {
    // __set_sregs: the first set bit of interrupt_bitmap is queued as an injected interrupt.
    for (let i = 0; i < 256; i++) {
      if ((b[SR_COMMON + (i >> 3)]! & (1 << (i & 7))) !== 0) {
        s.events[8] = 1;
        s.events[9] = i;
        s.events[10] = 0;
        break;
      }
    }
  }
  // "Older userspace won't unhalt the vcpu on reset."
  const rip = u64(s.regs, 128);
  const cs = s.sregs2;
  if (vcpu.id === 0 && rip === 0xfff0n && (cs[SR_CS + 12]! | (cs[SR_CS + 13]! << 8)) === 0xf000 && u64(cs, SR_CS) === 0xffff0000n && (cr0 & BigInt(CR0_PE)) === 0n) {
    s.mpState = MP_STATE_RUNNABLE;
  }
  return 0;
}

/** kvm_is_valid_sregs, with kvm_is_valid_cr0, kvm_is_valid_cr4 (x86/cr4.ts) and kvm_valid_efer. */
function validSregs(k: Kvm, vcpu: Vcpu, b: Uint8Array, cr0: bigint, cr4: bigint, efer: bigint): boolean {
  const lme = (efer & BigInt(EFER_LME)) !== 0n;
  const lma = (efer & BigInt(EFER_LMA)) !== 0n;
  if (lme && (cr0 & BigInt(CR0_PG)) !== 0n) {
    if ((cr4 & BigInt(CR4_PAE)) === 0n || !lma) return false;
    // kvm_vcpu_is_legal_cr3: no bits above the guest's MAXPHYADDR.
    if (u64(b, SR_CR3) >> BigInt(vcpu.maxPhyAddr) !== 0n) return false;
  } else if (lma || b[SR_CS + 19] !== 0) {
    // struct kvm_segment: selector at 12, l at 19 (g, which flat segments set, is 20).
    return false; // EFER.LMA or CS.L outside 64-bit mode
  }
  if (cr0 >> 32n !== 0n) return false;
  if ((cr0 & BigInt(CR0_NW)) !== 0n && (cr0 & BigInt(CR0_CD)) === 0n) return false;
  if ((cr0 & BigInt(CR0_PG)) !== 0n && (cr0 & BigInt(CR0_PE)) === 0n) return false;
  if (!validCr4(k.x86, k.profile, vcpu, cr4)) return false;
  // kvm_valid_efer: efer_reserved_bits, then __kvm_valid_efer's guest-CPUID checks.
  if (efer >> 32n !== 0n) return false;
  const lo = Number(efer) | 0;
  return (lo & ~k.x86.eferAllowed) === 0 && (!k.x86.rules.sregsEferChecked || eferFitsCpuid(k.x86, vcpu, lo));
}

// ---- FPU: struct kvm_fpu is the legacy FXSAVE region of the guest's xstate ----

function fpuFromXsave(x: Uint8Array): Uint8Array {
  const f = new Uint8Array(STATE_SIZES.fpu);
  for (let i = 0; i < 8; i++) f.set(x.subarray(32 + 16 * i, 48 + 16 * i), 16 * i); // fpr
  f.set(x.subarray(0, 4), 128); // fcw, fsw
  f[132] = x[4]!; // ftwx (abridged tag)
  f.set(x.subarray(6, 8), 134); // last_opcode
  f.set(x.subarray(8, 24), 136); // last_ip, last_dp
  f.set(x.subarray(160, 416), 152); // xmm
  f.set(x.subarray(24, 28), 408); // mxcsr
  return f;
}

function fpuIntoXsave(f: Uint8Array, x: Uint8Array): void {
  for (let i = 0; i < 8; i++) x.set(f.subarray(16 * i, 16 * i + 16), 32 + 16 * i);
  x.set(f.subarray(128, 132), 0);
  x[4] = f[132]!;
  x.set(f.subarray(134, 136), 6);
  x.set(f.subarray(136, 152), 8);
  x.set(f.subarray(152, 408), 160);
  x.set(f.subarray(408, 412), 24);
}

// ---- XSAVE and XCR0 (fpu_copy_uabi_to_guest_fpstate, __kvm_set_xcr) ----

/** kvm_caps.supported_xcr0: what KVM_GET_SUPPORTED_CPUID's leaf 0xd offers. */
export function supportedXcr0(k: Kvm): bigint {
  const d = findCpuid(k.profile.supportedCpuid, 0xd, 0);
  return d ? (BigInt(d.edx >>> 0) << 32n) | BigInt(d.eax >>> 0) : 3n;
}

/** vcpu->arch.guest_supported_xcr0: the guest CPUID's leaf 0xd, within what KVM supports. */
function guestSupportedXcr0(k: Kvm, vcpu: Vcpu): bigint {
  const d = findCpuid(vcpu.cpuid, 0xd, 0);
  const guest = d ? (BigInt(d.edx >>> 0) << 32n) | BigInt(d.eax >>> 0) : 0n;
  return guest & supportedXcr0(k);
}

function setXsave(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const size = xsaveSize(k);
  const b = input(k, arg, size);
  if (!b) return -EFAULT;
  const xfeatures = u64(b, 512);
  const mxcsrMask = u32(b, 28) || 0xffbf;
  const s = vcpuState(k, vcpu);
  if (!hostXsave(k)) {
    // fpu_copy_uabi_to_guest_fpstate without XSAVE: FP and SSE at most, MXCSR valid, and only the
    // legacy FXSAVE area is taken (GET_XSAVE then reports FP|SSE whatever was set).
    if ((xfeatures & ~3n) !== 0n || (u32(b, 24) & ~mxcsrMask) !== 0) return -EINVAL;
    s.xsave.set(b.subarray(0, 512));
    const f = fpuFromXsave(b);
    s.fpu.set(f.subarray(0, 412));
    return 0;
  }
  // copy_uabi_to_xstate: the standard (uncompacted) format, features the guest FPU has, MXCSR valid.
  if ((xfeatures & ~supportedXcr0(k)) !== 0n) return -EINVAL;
  if (u64(b, 520) !== 0n) return -EINVAL;
  for (let i = 528; i < 576; i++) if (b[i] !== 0) return -EINVAL;
  if ((u32(b, 24) & ~mxcsrMask) !== 0 && (xfeatures & 3n) !== 0n) return -EINVAL;
  s.xsave.set(b);
  // The raw area takes the components the header says are present (copy_uabi_to_xstate).
  const f = fpuFromXsave(b);
  if ((xfeatures & 1n) !== 0n) {
    s.fpu.set(f.subarray(0, 152));
  }
  if ((xfeatures & 2n) !== 0n) {
    s.fpu.set(f.subarray(152, 408), 152);
    s.fpu.set(f.subarray(408, 412), 408);
  }
  return 0;
}

/**
 * boot_cpu_has(X86_FEATURE_XSAVE), which KVM_CHECK_EXTENSION(KVM_CAP_XCRS) reports (a host may lack
 * it: Bochs's corei7_skylake_x model has no XSAVE).
 */
function hostXsave(k: Kvm): boolean {
  const p = k.profile;
  const cap = p.extensions.system[I.KVM_CAP.XCRS] ?? p.extensions.vm[I.KVM_CAP.XCRS];
  if (cap !== undefined || p.source === 'capture') return (cap ?? 0) > 0; // a capture keeps the non-zero caps
  // A derived profile: the XSAVE bit of its supported CPUID (leaf 1 ECX bit 26) says it.
  return (((findCpuid(p.supportedCpuid, 1, 0)?.ecx ?? 0) >>> 26) & 1) === 1;
}

function getXcrs(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = new Uint8Array(STATE_SIZES.xcrs);
  // kvm_vcpu_ioctl_x86_get_xcrs: no XCRs at all without host XSAVE (the zeroed struct).
  if (!hostXsave(k)) return out(k, arg, b);
  setU32(b, 0, 1); // nr_xcrs; xcrs[0].xcr = XCR_XFEATURE_ENABLED_MASK (0)
  setU64(b, 16, BigInt(vcpuState(k, vcpu).xcr0));
  return out(k, arg, b);
}

function setXcrs(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, STATE_SIZES.xcrs);
  if (!b) return -EFAULT;
  if (!hostXsave(k)) return -EINVAL; // kvm_vcpu_ioctl_x86_set_xcrs
  const n = u32(b, 0);
  if (n > 16 || u32(b, 4) !== 0) return -EINVAL; // KVM_MAX_XCRS, flags
  for (let i = 0; i < n; i++) {
    if (u32(b, 8 + 16 * i) !== 0) continue;
    const v = u64(b, 16 + 16 * i);
    // __kvm_set_xcr: x87 always; AVX needs SSE; only what the guest may use; MPX and AVX-512 in groups.
    const valid = guestSupportedXcr0(k, vcpu) | 1n;
    if ((v & 1n) === 0n || (v & ~valid) !== 0n) return -EINVAL;
    if ((v & 4n) !== 0n && (v & 2n) === 0n) return -EINVAL;
    if (((v & 0x8n) !== 0n) !== ((v & 0x10n) !== 0n)) return -EINVAL;
    if ((v & 0xe0n) !== 0n && ((v & 0xe0n) !== 0xe0n || (v & 4n) === 0n)) return -EINVAL;
    vcpuState(k, vcpu).xcr0 = Number(v);
    break;
  }
  return 0;
}

// ---- LAPIC (lapic.c: kvm_apic_get_state, kvm_apic_set_state) ----

function x2apicMode(k: Kvm, vcpu: Vcpu): boolean {
  return (Number(msr64(k, vcpu, M.MSR_IA32_APICBASE) & 0xffffn) & (APIC_BASE_ENABLE | APIC_BASE_X2APIC)) === (APIC_BASE_ENABLE | APIC_BASE_X2APIC);
}

function getLapic(k: Kvm, vcpu: Vcpu, s: VcpuState, arg: IoctlArg): number {
  const l = s.lapic!.slice();
  // The timer's current count: kvmsr runs no timer (TMCCT reads 0, as with no timer armed).
  setU32(l, APIC_TMCCT, 0);
  if (x2apicMode(k, vcpu)) setU32(l, APIC_ID, vcpu.id << 24); // kvm_apic_state_fixup(get), !x2apic_format
  return out(k, arg, l);
}

function setLapic(k: Kvm, vcpu: Vcpu, s: VcpuState, arg: IoctlArg): number {
  const b = input(k, arg, STATE_SIZES.lapic);
  if (!b) return -EFAULT;
  if (x2apicMode(k, vcpu)) {
    // kvm_apic_state_fixup(set): the x2APIC ID is read-only; the LDR follows from it.
    setU32(b, APIC_ID, vcpu.id);
    setU32(b, APIC_LDR, (((vcpu.id >>> 4) << 16) | (1 << (vcpu.id & 0xf))) >>> 0);
  }
  const l = s.lapic!;
  l.set(b);
  // kvm_apic_set_version: 6 LVT entries, 7 with CMCI in MCG_CAP; no directed EOI with the in-kernel IOAPIC.
  const mcgCap = msr64(k, vcpu, M.MSR_IA32_MCG_CAP);
  setU32(l, APIC_LVR, 0x14 | (((mcgCap & (1n << 10n)) !== 0n ? 6 : 5) << 16));
  updatePpr(l);
  updateLvtt(k, vcpu, s);
  setU32(l, APIC_TMCCT, 0);
  return 0;
}

/** apic_update_lvtt: entering or leaving TSC-deadline mode clears the deadline. */
export function updateLvtt(k: Kvm, vcpu: Vcpu, s: VcpuState): void {
  if (!s.lapic) return;
  // kvm_vcpu_after_set_cpuid: the mask follows the guest's CPUID entry itself, not KVM's caps
  // (KVM offers the TSC-deadline timer through KVM_CAP_TSC_DEADLINE_TIMER, not the supported CPUID).
  const mask = (((findCpuid(vcpu.cpuid, 1, 0)?.ecx ?? 0) >>> 24) & 1) === 1 ? 3 << 17 : 1 << 17;
  const mode = u32(s.lapic, APIC_LVTT) & mask;
  if (mode === s.timerMode) return;
  if ((s.timerMode === APIC_LVT_TIMER_TSCDEADLINE) !== (mode === APIC_LVT_TIMER_TSCDEADLINE)) {
    setU32(s.lapic, 0x380, 0); // APIC_TMICT
    s.tscDeadlineLo = 0;
    s.tscDeadlineHi = 0;
  }
  s.timerMode = mode;
  vcpu.tscDeadlineMode = mode === APIC_LVT_TIMER_TSCDEADLINE;
}

/** apic_update_ppr: the processor priority is the TPR or the highest in-service class. */
function updatePpr(l: Uint8Array): void {
  let isrv = 0;
  for (let r = 7; r >= 0 && isrv === 0; r--) {
    const w = u32(l, APIC_ISR + 0x10 * r);
    if (w !== 0) isrv = r * 32 + 31 - Math.clz32(w);
  }
  const tpr = l[APIC_TASKPRI]!;
  setU32(l, APIC_PROCPRI, (tpr & 0xf0) >= (isrv & 0xf0) ? tpr : isrv & 0xf0);
}

const APIC_BASE_SCRATCH = { lo: 0, hi: 0 };

/**
 * kvm_apic_present and apic_lvtt_tscdeadline: whether IA32_TSC_DEADLINE reaches the timer
 * (kvm_get/set_lapic_tscdeadline_msr). The APIC's software enable (SPIV) is not asked: a vCPU
 * whose SPIV is still 0xff keeps and reads back its deadline (measured on kvm_pvm 6.18.44 v1272).
 */
export function tscDeadlineArmed(x86: X86, vcpu: Vcpu): boolean {
  const s = vcpu.state;
  if (!s || !s.lapic || !vcpu.tscDeadlineMode) return false;
  x86.load(vcpu, M.MSR_IA32_APICBASE, APIC_BASE_SCRATCH);
  return (APIC_BASE_SCRATCH.lo & APIC_BASE_ENABLE) !== 0;
}

// ---- VCPU_EVENTS (kvm_vcpu_ioctl_x86_get/set_vcpu_events) ----

function getEvents(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const s = vcpuState(k, vcpu);
  const b = s.events.slice();
  if (b[1] === BP_VECTOR || b[1] === 4) {
    // kvm_exception_is_soft (#BP, #OF): not reported, the instruction raises it again.
    b[0] = 0;
    b[3] = 0;
  } else if (!vcpu.vm.exceptionPayload) {
    b[0]! |= b[3]!; // pending and injected conflated without KVM_CAP_EXCEPTION_PAYLOAD
  }
  let flags = VCPUEVENT_VALID_NMI_PENDING | VCPUEVENT_VALID_SHADOW | VCPUEVENT_VALID_SMM;
  if (vcpu.vm.exceptionPayload) flags |= VCPUEVENT_VALID_PAYLOAD;
  else b.fill(0, 55, 64);
  if (vcpu.vm.tripleFaultEvent) flags |= VCPUEVENT_VALID_TRIPLE_FAULT;
  else b[28] = 0;
  setU32(b, EV_FLAGS, flags);
  b.fill(0, 29, 55);
  return out(k, arg, b);
}

function setEvents(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, STATE_SIZES.events);
  if (!b) return -EFAULT;
  const flags = u32(b, EV_FLAGS);
  const all = VCPUEVENT_VALID_NMI_PENDING | VCPUEVENT_VALID_SIPI_VECTOR | VCPUEVENT_VALID_SHADOW | VCPUEVENT_VALID_SMM | VCPUEVENT_VALID_PAYLOAD | VCPUEVENT_VALID_TRIPLE_FAULT;
  if ((flags & ~all) !== 0) return -EINVAL;
  if ((flags & VCPUEVENT_VALID_PAYLOAD) !== 0) {
    if (!vcpu.vm.exceptionPayload) return -EINVAL;
    if (b[3] !== 0) b[0] = 0; // a pending exception is not also injected
    else b[55] = 0;
  } else {
    b[3] = 0;
    b[55] = 0;
  }
  if ((b[0] !== 0 || b[3] !== 0) && (b[1]! > 31 || b[1] === 2)) return -EINVAL; // NMI_VECTOR
  const st = vcpuState(k, vcpu);
  const smm = (flags & VCPUEVENT_VALID_SMM) !== 0;
  // "INITs are latched while in SMM": entering SMM with an INIT already received is refused.
  if (smm && (b[24] !== 0 || b[25] !== 0) && st.mpState === MP_STATE_INIT_RECEIVED) return -EINVAL;
  // The exception, interrupt, NMI and SIPI parts are taken before the SMM and triple-fault checks
  // below, so a refusal there leaves them set (kvm_vcpu_ioctl_x86_set_vcpu_events' order).
  const s = st.events;
  s.set(b.subarray(0, 8), 0);
  s[8] = b[8]!;
  s[9] = b[9]!;
  s[10] = b[10]!;
  if ((flags & VCPUEVENT_VALID_SHADOW) !== 0) s[11] = b[11]!;
  s[12] = b[12]!;
  if ((flags & VCPUEVENT_VALID_NMI_PENDING) !== 0) s[13] = b[13]!;
  s[14] = b[14]!;
  if ((flags & VCPUEVENT_VALID_SIPI_VECTOR) !== 0) s.set(b.subarray(16, 20), 16);
  s.set(b.subarray(55, 64), 55);
  if (smm) {
    // Without CONFIG_KVM_SMM there is no SMM to enter, pend or be inside an NMI in.
    if (!k.x86.smm && (b[24] !== 0 || b[25] !== 0 || b[26] !== 0)) return -EINVAL;
    s.set(b.subarray(24, 28), 24);
  }
  if ((flags & VCPUEVENT_VALID_TRIPLE_FAULT) !== 0) {
    if (!vcpu.vm.tripleFaultEvent) return -EINVAL;
    s[28] = b[28]!;
  }
  return 0;
}

// ---- DEBUGREGS, MP_STATE ----

function setDebugregs(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, STATE_SIZES.debugregs);
  if (!b) return -EFAULT;
  // kvm_vcpu_ioctl_x86_set_debugregs: no flags; DR6 and DR7 fit in 32 bits.
  if (u32(b, 48) !== 0) return -EINVAL;
  if (u32(b, 36) !== 0 || u32(b, 44) !== 0) return -EINVAL;
  const d = vcpuState(k, vcpu).debugregs;
  d.fill(0);
  d.set(b.subarray(0, 48));
  return 0;
}

function setMpState(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, 4);
  if (!b) return -EFAULT;
  const mp = u32(b, 0);
  // kvm_arch_vcpu_ioctl_set_mpstate
  if (mp > MP_STATE_MAX) return -EINVAL;
  if (!vcpu.vm.irqchip && mp !== MP_STATE_RUNNABLE) return -EINVAL;
  const s = vcpuState(k, vcpu);
  s.mpState = mp === MP_STATE_SIPI_RECEIVED ? MP_STATE_INIT_RECEIVED : mp;
  return 0;
}
