// The guest's side of an MSR access (arch/x86/kvm/x86.c): kvm_emulate_rdmsr/kvm_emulate_wrmsr,
// kvm_msr_allowed (KVM_X86_SET_MSR_FILTER), kvm_msr_user_space (KVM_CAP_X86_USER_SPACE_MSR exits,
// filled into the vCPU's kvm_run page) and the completion KVM_RUN performs when userspace
// resumes. Guest accesses pass host_initiated = false to the same rules as the ioctls.
import { KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN, KVM_RUN_LAYOUT } from '../../abi/layout.js';
import { MSR_FILTERED, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import { hvSyncCr8ToTpr, hvTakeExit } from './hyperv.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

export const KVM_EXIT_X86_RDMSR = 29;
export const KVM_EXIT_X86_WRMSR = 30;
const FILTER_READ = 1;
const FILTER_WRITE = 2;

/** What the guest sees from one RDMSR or WRMSR. */
export type GuestMsrResult =
  | { kind: 'ok'; value: bigint }
  /** The access faults: the guest gets #GP(0). */
  | { kind: 'gp' }
  /** KVM_RUN returns to userspace with this exit; complete it with Kvm.completeMsrExit. */
  | { kind: 'exit'; exitReason: number; reason: number; index: number; data: bigint }
  /** KVM_RUN itself fails with this errno (a negative return from the WRMSR path). */
  | { kind: 'error'; errno: number }
  /**
   * KVM_RUN returns to userspace with this exit reason, from a request a Hyper-V MSR write left
   * (KVM_EXIT_SYSTEM_EVENT for a crash or reset, KVM_EXIT_HYPERV for SynIC/syndbg): before the
   * access when a host write left it, after the write retired when the write itself did.
   */
  | { kind: 'vmexit'; exitReason: number };

/** kvm_msr_allowed: host accesses never get here; x2APIC MSRs are never filtered. */
export function msrAllowed(vcpu: Vcpu, index: number, type: number): boolean {
  if (index >= 0x800 && index <= 0x8ff) return true;
  const f = vcpu.vm.msrFilter;
  for (const r of f.ranges) {
    const off = (index - r.base) >>> 0;
    // u32 start + nmsrs may wrap, exactly as the kernel's u32 end does.
    const end = (r.base + r.nmsrs) >>> 0;
    if (index >= r.base && index < end && (r.flags & type) !== 0) {
      return ((r.bitmap[off >>> 3]! >>> (off & 7)) & 1) === 1;
    }
  }
  return f.defaultAllow;
}

/** kvm_msr_reason. */
function exitReasonOf(r: number): number {
  if (r === MSR_UNSUPPORTED) return KVM_MSR_EXIT_REASON_UNKNOWN;
  if (r === MSR_FILTERED) return KVM_MSR_EXIT_REASON_FILTER;
  return KVM_MSR_EXIT_REASON_INVAL;
}

/** kvm_msr_user_space: fills kvm_run when userspace asked for this kind of failure. */
function userSpaceExit(vcpu: Vcpu, index: number, exitReason: number, data: bigint, r: number): GuestMsrResult | null {
  const reason = exitReasonOf(r);
  if ((vcpu.vm.userSpaceMsrMask & reason) === 0) return null;
  const run = new DataView(vcpu.run.buffer, vcpu.run.byteOffset, vcpu.run.byteLength);
  run.setUint32(KVM_RUN_LAYOUT.exitReason, exitReason, true);
  run.setUint8(KVM_RUN_LAYOUT.msrError, 0);
  for (let i = 1; i < 8; i++) run.setUint8(KVM_RUN_LAYOUT.msrError + i, 0);
  run.setUint32(KVM_RUN_LAYOUT.msrReason, reason, true);
  run.setUint32(KVM_RUN_LAYOUT.msrIndex, index >>> 0, true);
  run.setBigUint64(KVM_RUN_LAYOUT.msrData, data, true);
  vcpu.pendingMsrExit = exitReason;
  return { kind: 'exit', exitReason, reason, index: index >>> 0, data };
}

export function guestRdmsr(x86: X86, vcpu: Vcpu, index: number, out: MsrValue): GuestMsrResult {
  x86.clockMs = NaN;
  const before = hvTakeExit(vcpu);
  if (before !== 0) return { kind: 'vmexit', exitReason: before };
  if (x86.cr8SyncedTpr) hvSyncCr8ToTpr(vcpu); // the RDMSR/WRMSR's own exit
  const allowed = msrAllowed(vcpu, index, FILTER_READ);
  // Passed through (the bitmap clears the intercept only where the filter allows): the CPU's answer.
  const cpu = allowed ? (x86.vendor.guestPassthrough?.(x86, vcpu, index, false, 0, 0, out) ?? null) : null;
  if (cpu !== null && cpu !== MSR_OK) return { kind: 'gp' };
  const r = cpu ?? (allowed ? x86.accessRead(vcpu, index, false, out) : MSR_FILTERED);
  if (r === MSR_OK) return { kind: 'ok', value: (BigInt(out.hi >>> 0) << 32n) | BigInt(out.lo >>> 0) };
  return userSpaceExit(vcpu, index, KVM_EXIT_X86_RDMSR, 0n, r) ?? { kind: 'gp' };
}

const SCRATCH: MsrValue = { lo: 0, hi: 0 };

export function guestWrmsr(x86: X86, vcpu: Vcpu, index: number, value: bigint): GuestMsrResult {
  x86.clockMs = NaN;
  const before = hvTakeExit(vcpu);
  if (before !== 0) return { kind: 'vmexit', exitReason: before };
  if (x86.cr8SyncedTpr) hvSyncCr8ToTpr(vcpu); // the RDMSR/WRMSR's own exit
  const v = BigInt.asUintN(64, value);
  const lo = Number(v & 0xffffffffn) | 0;
  const hi = Number(v >> 32n) | 0;
  const allowed = msrAllowed(vcpu, index, FILTER_WRITE);
  const cpu = allowed ? (x86.vendor.guestPassthrough?.(x86, vcpu, index, true, lo, hi, SCRATCH) ?? null) : null;
  if (cpu !== null && cpu !== MSR_OK) return { kind: 'gp' };
  const r = cpu ?? (allowed ? x86.accessWrite(vcpu, index, false, lo, hi) : MSR_FILTERED);
  if (r === MSR_OK) {
    if (x86.cr8SyncedTpr) hvSyncCr8ToTpr(vcpu); // the next exit, after the write retired
    const after = hvTakeExit(vcpu);
    return after !== 0 ? { kind: 'vmexit', exitReason: after } : { kind: 'ok', value: v };
  }
  const exit = userSpaceExit(vcpu, index, KVM_EXIT_X86_WRMSR, v, r);
  if (exit) return exit;
  // Negative errors go to userspace as KVM_RUN's return value.
  if (r < 0) return { kind: 'error', errno: -r };
  return { kind: 'gp' };
}

/**
 * complete_fast_rdmsr / complete_fast_msr_access: what the guest sees once userspace resumes the
 * vCPU after an MSR exit, from run->msr.error and (for RDMSR) run->msr.data. Null when no MSR exit
 * is pending.
 */
export function completeMsrExit(vcpu: Vcpu): GuestMsrResult | null {
  const exit = vcpu.pendingMsrExit;
  if (exit === 0) return null;
  vcpu.pendingMsrExit = 0;
  const run = new DataView(vcpu.run.buffer, vcpu.run.byteOffset, vcpu.run.byteLength);
  if (run.getUint8(KVM_RUN_LAYOUT.msrError) !== 0) return { kind: 'gp' };
  // RDMSR: the guest's EDX:EAX get run->msr.data; WRMSR: the write simply retires.
  return { kind: 'ok', value: run.getBigUint64(KVM_RUN_LAYOUT.msrData, true) };
}
