// KVM_RUN (kvm_vcpu_ioctl's KVM_RUN case, kvm_arch_vcpu_ioctl_run, vcpu_run in arch/x86/kvm/x86.c)
// for a guest that is halted and never wakes: kvmsr runs no guest instruction. What it models is
// everything KVM_RUN does around the guest: immediate_exit, the KVM_SET_SIGNAL_MASK mask, the
// sync-regs block, run->cr8 without an in-kernel LAPIC, the completion of a pending MSR exit, the
// Hyper-V exits a host MSR write left, the first guest entry (kvm_vcpu_has_run), the halt, the wait
// for a signal, and post_kvm_run_save.
//
// The wait itself happens in the thread that called KVM_RUN: the `kvmsr run` library waits until a
// signal outside the mask Kvm.runWait names is pending, then writes exit_reason = KVM_EXIT_INTR.
// Through the TypeScript API (no thread, no signals) a KVM_RUN that would wait gets a signal at once.
// docs/run-kvm-run.md tells what a VMM sees.
import { EINTR, EINVAL } from '../abi/errno.js';
import { KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_UNKNOWN, KVM_RUN_LAYOUT, KVM_SYNC_X86_VALID_FIELDS } from '../abi/layout.js';
import * as I from '../abi/kvm-ioctls.js';
import { STATE_SIZES } from './state/fresh-state.js';
import { MP_STATE_HALTED, MP_STATE_RUNNABLE, MP_STATE_UNINITIALIZED, postRunSave, setCr8FromRun, vcpuState, vcpuStateIoctl } from './state/vcpu-state.js';
import type { Kvm } from './kvm.js';
import type { IoctlArg } from './user-arg.js';
import type { Vcpu } from './vcpu.js';
import { completeMsrExit } from './x86/guest-msr.js';
import { hvTakeExit } from './x86/hyperv.js';
import { enterGuest } from './x86/tsc.js';

/** The calling thread's signals as the kernel's sigset_t (bit n-1 for signal n): blocked, and pending for it. */
export interface RunSignals {
  blocked: bigint;
  pending: bigint;
}

const SIGSET_BITS = (1n << 64n) - 1n;
/** kvm_vcpu_ioctl_set_sigmask: sigdelsetmask(sigmask(SIGKILL) | sigmask(SIGSTOP)). */
const UNBLOCKABLE = (1n << 8n) | (1n << 18n); // SIGKILL (9), SIGSTOP (19)
const SYNC_REGS = 1n;
const SYNC_SREGS = 2n;
const SYNC_EVENTS = 4n;

const runView = (vcpu: Vcpu): DataView => new DataView(vcpu.run.buffer, vcpu.run.byteOffset, vcpu.run.byteLength);

/** KVM_SET_SIGNAL_MASK's mask as kvm_vcpu_ioctl_set_sigmask keeps it. */
export function kernelSigmask(set: bigint): bigint {
  return set & SIGSET_BITS & ~UNBLOCKABLE;
}

/** KVM_RUN on a vCPU: 0 with an exit in kvm_run, or -errno. Sets k.runWait when the thread must wait. */
export function kvmRun(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  k.runWait = null;
  // kvm_vcpu_ioctl: "if (arg) goto out" before kvm_arch_vcpu_ioctl_run (no post_kvm_run_save).
  if (k.args.intValue(arg) !== 0) return -EINVAL;
  const run = runView(vcpu);
  // vcpu->wants_to_run = !READ_ONCE(vcpu->run->immediate_exit__unsafe)
  const wants = run.getUint8(KVM_RUN_LAYOUT.immediateExit) === 0;
  // kvm_sigset_activate: inside KVM_RUN the vCPU's mask replaces the thread's.
  const sig = k.runSignals;
  const mask = vcpu.sigmask ?? (sig ? sig.blocked & SIGSET_BITS : 0n);
  const signalPending = sig !== null && (sig.pending & ~mask & SIGSET_BITS) !== 0n;
  const r = runBody(k, vcpu, run, wants, mask, signalPending);
  // out: store_regs (kvm_valid_regs), then post_kvm_run_save, on every return of kvm_arch_vcpu_ioctl_run.
  storeRegs(k, vcpu, run);
  postRunSave(k, vcpu, run);
  return r;
}

function runBody(k: Kvm, vcpu: Vcpu, run: DataView, wants: boolean, mask: bigint, signalPending: boolean): number {
  run.setUint16(KVM_RUN_LAYOUT.flags, 0, true); // kvm_run->flags = 0
  const s = vcpuState(k, vcpu);
  if (s.mpState === MP_STATE_UNINITIALIZED) {
    // An AP waiting for INIT: kvm_vcpu_block until a wake-up (kvmsr's: a signal), without entering
    // the guest; exit_reason is only written when a signal ends it.
    if (!wants) return -EINTR;
    return waitForSignal(k, run, mask, signalPending);
  }
  const valid = run.getBigUint64(KVM_RUN_LAYOUT.kvmValidRegs, true);
  const dirty = run.getBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, true);
  const fields = BigInt(KVM_SYNC_X86_VALID_FIELDS);
  if ((valid & ~fields) !== 0n || (dirty & ~fields) !== 0n) return -EINVAL;
  if (dirty !== 0n && !syncRegs(k, vcpu, run)) return -EINVAL;
  // "re-sync apic's tpr": without an in-kernel LAPIC, CR8 is what userspace left in run->cr8.
  if (!setCr8FromRun(k, vcpu, run.getBigUint64(KVM_RUN_LAYOUT.cr8, true))) return -EINVAL;
  // complete_userspace_io: a pending MSR exit completes (the guest's RDMSR/WRMSR retires) even when
  // immediate_exit is set.
  completeMsrExit(vcpu);
  if (!wants) return -EINTR;
  // vcpu_run
  run.setUint32(KVM_RUN_LAYOUT.exitReason, KVM_EXIT_UNKNOWN, true);
  if (s.mpState === MP_STATE_RUNNABLE) {
    // vcpu_enter_guest: the requests first (a Hyper-V crash, reset or SynIC exit a host MSR write
    // left), then kvm_vcpu_exit_request, whose pending signal cancels the entry.
    const hv = hvTakeExit(vcpu);
    if (hv !== 0) {
      run.setUint32(KVM_RUN_LAYOUT.exitReason, hv, true);
      return 0;
    }
    if (signalPending) return interrupted(run);
    // The guest is entered (last_vmentry_cpu: kvm_vcpu_has_run), and halts: __kvm_emulate_halt.
    vcpu.hasRun = true;
    enterGuest(k.x86, vcpu);
    if (!s.lapic) {
      // No in-kernel LAPIC: userspace handles the halt.
      run.setUint32(KVM_RUN_LAYOUT.exitReason, KVM_EXIT_HLT, true);
      return 0;
    }
    s.mpState = MP_STATE_HALTED;
  }
  // vcpu_block: halted, or waiting for INIT/SIPI; kvmsr delivers no event that would wake it.
  return waitForSignal(k, run, mask, signalPending);
}

/** xfer_to_guest_mode_handle_work with a signal pending: kvm_handle_signal_exit. */
function interrupted(run: DataView): number {
  run.setUint32(KVM_RUN_LAYOUT.exitReason, KVM_EXIT_INTR, true);
  return -EINTR;
}

/**
 * The vCPU sleeps until a signal the mask does not block arrives, then KVM_RUN ends with -EINTR and
 * KVM_EXIT_INTR. Under `kvmsr run` the calling thread does the waiting (k.runWait); without a
 * thread (the TypeScript API), the signal is there at once.
 */
function waitForSignal(k: Kvm, run: DataView, mask: bigint, signalPending: boolean): number {
  if (signalPending || k.runSignals === null) return interrupted(run);
  k.runWait = mask;
  return -EINTR;
}

/** sync_regs (kvm_run_sync_regs_from_user, then the events): what userspace marked dirty in run->s.regs. */
function syncRegs(k: Kvm, vcpu: Vcpu, run: DataView): boolean {
  const page = vcpu.run;
  let dirty = run.getBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, true);
  const take = (off: number, size: number): Uint8Array => page.slice(off, off + size);
  if ((dirty & SYNC_REGS) !== 0n) {
    vcpuStateIoctl(k, vcpu, I.KVM_SET_REGS, take(KVM_RUN_LAYOUT.syncRegs, STATE_SIZES.regs));
    dirty &= ~SYNC_REGS;
    run.setBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, dirty, true);
  }
  if ((dirty & SYNC_SREGS) !== 0n) {
    if (vcpuStateIoctl(k, vcpu, I.KVM_SET_SREGS, take(KVM_RUN_LAYOUT.syncSregs, STATE_SIZES.sregs)) !== 0) return false;
    dirty &= ~SYNC_SREGS;
    run.setBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, dirty, true);
  }
  if ((dirty & SYNC_EVENTS) !== 0n) {
    if (vcpuStateIoctl(k, vcpu, I.KVM_SET_VCPU_EVENTS, take(KVM_RUN_LAYOUT.syncEvents, STATE_SIZES.events)) !== 0) return false;
    dirty &= ~SYNC_EVENTS;
    run.setBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, dirty, true);
  }
  return true;
}

/** store_regs: the state userspace asked for in kvm_valid_regs, into run->s.regs. */
function storeRegs(k: Kvm, vcpu: Vcpu, run: DataView): void {
  const valid = run.getBigUint64(KVM_RUN_LAYOUT.kvmValidRegs, true);
  if (valid === 0n) return;
  const put = (req: number, off: number, size: number): void => {
    const b = new Uint8Array(size);
    if (vcpuStateIoctl(k, vcpu, req, b) === 0) vcpu.run.set(b, off);
  };
  if ((valid & SYNC_REGS) !== 0n) put(I.KVM_GET_REGS, KVM_RUN_LAYOUT.syncRegs, STATE_SIZES.regs);
  if ((valid & SYNC_SREGS) !== 0n) put(I.KVM_GET_SREGS, KVM_RUN_LAYOUT.syncSregs, STATE_SIZES.sregs);
  if ((valid & SYNC_EVENTS) !== 0n) put(I.KVM_GET_VCPU_EVENTS, KVM_RUN_LAYOUT.syncEvents, STATE_SIZES.events);
}
