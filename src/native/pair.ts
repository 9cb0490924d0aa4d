// Runs the same ioctl with the same bytes on the real /dev/kvm and on kvmsr, and compares the
// return values and every byte written back. Values that move with time are compared by rule,
// and the rule is stated in the result.
import { KVM_MSR_ENTRY_LAYOUT, KVM_MSRS_LAYOUT } from '../abi/layout.js';
import * as I from '../abi/kvm-ioctls.js';
import type { HostProfile } from '../kvm/profile.js';
import type { RealKvm } from './real-kvm.js';

/** Anything with open/close/ioctl on numbers and byte buffers: the real /dev/kvm or a Kvm. */
export type KvmLike = RealKvm;

/** A file descriptor on both sides. */
export interface FdPair {
  real: number;
  emu: number;
}

export interface PairResult {
  realRet: number;
  emuRet: number;
  realBytes: Uint8Array;
  emuBytes: Uint8Array;
  /** Empty when they agree; otherwise what differs. */
  differences: string[];
  /** The by-rule comparisons that were applied (e.g. IA32_TSC). */
  rules: string[];
}

import { MOVING_MSRS, movingAgree, movingRule, MSR_IA32_TSC } from '../kvm/x86/moving-msrs.js';

/**
 * KVM_GET_SUPPORTED_CPUID runs CPUID on whichever CPU the ioctl lands on, and KVM leaves that CPU's
 * APIC IDs in the answer (leaf 1 EBX[31:24], the x2APIC ID in EDX of leaves 0xb and 0x1f, leaf
 * 0x8000001e's extended APIC, core and node IDs): those bytes are taken from the kernel's answer.
 */
export const APIC_ID_RULE = "KVM_GET_SUPPORTED_CPUID: the APIC IDs of the CPU the ioctl ran on (leaf 1 EBX[31:24], 0xb/0x1f EDX, 0x8000001e) taken from the kernel's answer";

export function apicIdsByRule(a: Uint8Array, b: Uint8Array, rules: string[]): void {
  if (a.length < 8 || b.length !== a.length) return;
  const da = new DataView(a.buffer, a.byteOffset, a.byteLength);
  const n = Math.min(da.getUint32(0, true), Math.floor((a.length - 8) / 40));
  const fields: [number, number, number][] = []; // [leaf, register offset, mask]
  fields.push([1, 16, 0xff000000], [0xb, 24, 0xffffffff], [0x1f, 24, 0xffffffff], [0x8000001e, 12, 0xffffffff], [0x8000001e, 16, 0xff], [0x8000001e, 20, 0xff]);
  let changed = false;
  for (let i = 0; i < n; i++) {
    const off = 8 + i * 40;
    const fn = da.getUint32(off, true);
    for (const [leaf, reg, mask] of fields) {
      if (fn !== leaf) continue;
      const db = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const va = da.getUint32(off + reg, true);
      const vb = db.getUint32(off + reg, true);
      if (((va ^ vb) & mask) === 0) continue;
      db.setUint32(off + reg, (vb & ~mask) | (va & mask), true);
      changed = true;
    }
  }
  if (changed) rules.push(APIC_ID_RULE);
}

export class Pair {
  /**
   * The longest time one call took on both sides together, in ms: each side reads its clock at
   * its own call, so two clock-derived values (a TSC set at one call, read at another) can be
   * apart by up to this much, on top of the clocks' own drift.
   */
  private maxLagMs = 0;

  constructor(
    readonly real: KvmLike,
    readonly emu: KvmLike,
  ) {}

  /** The longest time one paired call took so far, in ms (it widens the IA32_TSC window). */
  get longestCallMs(): number {
    return this.maxLagMs;
  }

  private noteLag(t0: number): void {
    const lag = performance.now() - t0;
    if (lag > this.maxLagMs) this.maxLagMs = lag;
  }

  open(): FdPair {
    const real = this.real.open('/dev/kvm');
    const emu = this.emu.open('/dev/kvm');
    if (real < 0 || emu < 0) throw new Error(`open /dev/kvm: real ${real}, kvmsr ${emu}`);
    return { real, emu };
  }

  /** An fd-returning ioctl on both sides (KVM_CREATE_VM, KVM_CREATE_VCPU). */
  create(fd: FdPair, req: number, arg: number): FdPair {
    const t0 = performance.now();
    const real = this.real.ioctl(fd.real, req, arg);
    const emu = this.emu.ioctl(fd.emu, req, arg);
    this.noteLag(t0);
    if (real < 0 || emu < 0) throw new Error(`${I.ioctlName(req)}(${arg}): real ${real}, kvmsr ${emu}`);
    return { real, emu };
  }

  close(fd: FdPair): void {
    this.real.close(fd.real);
    this.emu.close(fd.emu);
  }

  /** Sends a copy of `bytes` (or an integer) to each side and compares. */
  run(fd: FdPair, req: number, arg: Uint8Array | number): PairResult {
    const realBytes = arg instanceof Uint8Array ? arg.slice() : new Uint8Array(0);
    const emuBytes = arg instanceof Uint8Array ? arg.slice() : new Uint8Array(0);
    const t0 = performance.now();
    const realRet = this.real.ioctl(fd.real, req, arg instanceof Uint8Array ? realBytes : arg);
    const emuRet = this.emu.ioctl(fd.emu, req, arg instanceof Uint8Array ? emuBytes : arg);
    this.noteLag(t0);
    const rules: string[] = [];
    if (req === I.KVM_GET_MSRS) this.tscByRule(realBytes, emuBytes, Math.min(realRet, emuRet), rules, fd.emu);
    if (req === I.KVM_GET_SUPPORTED_CPUID && realRet === 0 && emuRet === 0) apicIdsByRule(realBytes, emuBytes, rules);
    const differences: string[] = [];
    if (realRet !== emuRet) differences.push(`return value: real ${realRet}, kvmsr ${emuRet}`);
    for (let i = 0; i < realBytes.length; i++) {
      if (realBytes[i] !== emuBytes[i]) {
        differences.push(`byte ${i}: real 0x${realBytes[i]!.toString(16)}, kvmsr 0x${emuBytes[i]!.toString(16)}`);
        if (differences.length > 16) break;
      }
    }
    return { realRet, emuRet, realBytes, emuBytes, differences, rules };
  }

  /**
   * IA32_TSC moves with time: the two values must be within 50 ms of cycles of each other (modulo
   * 2^64) plus the longest paired call so far, or, where kvmsr's value rests on its estimate of the host TSC (PVM, or a change of TSC
   * multiplier), equal or both non-zero; then both are blanked so the byte comparison covers
   * everything else. Each rule applied is stated.
   */
  private tscByRule(a: Uint8Array, b: Uint8Array, processed: number, rules: string[], emuFd: number): void {
    if (a.length < KVM_MSRS_LAYOUT.size) return;
    const da = new DataView(a.buffer, a.byteOffset, a.byteLength);
    const db = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const n = Math.min(da.getUint32(0, true), Math.floor((a.length - 8) / 16), Math.max(0, processed));
    const emu = this.emu as { profile?: HostProfile; tscEstimated?: (fd: number) => boolean }; // a Kvm has both
    for (let i = 0; i < n; i++) {
      const off = KVM_MSRS_LAYOUT.entries + i * KVM_MSR_ENTRY_LAYOUT.size;
      const index = da.getUint32(off, true);
      if (!MOVING_MSRS.has(index) || db.getUint32(off, true) !== index) continue;
      const va = da.getBigUint64(off + 8, true);
      const vb = db.getBigUint64(off + 8, true);
      if (va === vb) continue;
      if (index !== MSR_IA32_TSC) {
        // Hyper-V's reference counter and VP runtime (moving-msrs.ts).
        rules.push(`${movingRule(index)!} (entry ${i}: real 0x${va.toString(16)}, kvmsr 0x${vb.toString(16)})`);
        if (movingAgree(index, va, vb)) {
          da.setBigUint64(off + 8, 0n, true);
          db.setBigUint64(off + 8, 0n, true);
        }
        continue;
      }
      const values = `(real 0x${va.toString(16)}, kvmsr 0x${vb.toString(16)})`;
      let agree: boolean;
      if (emu.tscEstimated?.(emuFd) === true) {
        rules.push(`IA32_TSC (entry ${i}) compared by rule, since kvmsr's value rests on its estimate of the host TSC: equal, or both non-zero ${values}`);
        agree = va !== 0n && vb !== 0n;
      } else {
        // Stable host: offset + rdtsc, which each side advances on its own clock. Unstable host:
        // kvm_arch_vcpu_load pins the TSC to last_guest_tsc at the start of each ioctl, and a
        // synchronizing write (kvm_synchronize_tsc) adds the host time since the VM's last write.
        // Modulo 2^64: a value just below 2^64 wraps.
        const why = emu.profile?.tscUnstable === true ? 'the host TSC is unstable and its value depends on host time between calls' : 'it moves with time';
        const ms = 50 + Math.ceil(this.maxLagMs);
        const window = BigInt(emu.profile?.tscKhz ?? 0) * BigInt(ms);
        const gap = BigInt.asUintN(64, va - vb);
        agree = gap < window || BigInt.asUintN(64, -gap) < window;
        rules.push(`IA32_TSC (entry ${i}) compared by rule, since ${why}: within 50 ms of cycles of each other, plus the longest time one paired call took (${ms - 50} ms so far), modulo 2^64 ${values}`);
      }
      if (agree) {
        da.setBigUint64(off + 8, 0n, true);
        db.setBigUint64(off + 8, 0n, true);
      }
    }
  }
}
