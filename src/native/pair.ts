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

const MSR_IA32_TSC = 0x10;

export class Pair {
  constructor(
    readonly real: KvmLike,
    readonly emu: KvmLike,
  ) {}

  open(): FdPair {
    const real = this.real.open('/dev/kvm');
    const emu = this.emu.open('/dev/kvm');
    if (real < 0 || emu < 0) throw new Error(`open /dev/kvm: real ${real}, kvmsr ${emu}`);
    return { real, emu };
  }

  /** An fd-returning ioctl on both sides (KVM_CREATE_VM, KVM_CREATE_VCPU). */
  create(fd: FdPair, req: number, arg: number): FdPair {
    const real = this.real.ioctl(fd.real, req, arg);
    const emu = this.emu.ioctl(fd.emu, req, arg);
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
    const realRet = this.real.ioctl(fd.real, req, arg instanceof Uint8Array ? realBytes : arg);
    const emuRet = this.emu.ioctl(fd.emu, req, arg instanceof Uint8Array ? emuBytes : arg);
    const rules: string[] = [];
    if (req === I.KVM_GET_MSRS) this.tscByRule(realBytes, emuBytes, Math.min(realRet, emuRet), rules);
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
   * IA32_TSC moves with time: the two values must be equal or both non-zero, or, where the emulated
   * side's profile has an unstable TSC, within 50 ms of cycles of each other; then both are blanked
   * so the byte comparison covers everything else.
   */
  private tscByRule(a: Uint8Array, b: Uint8Array, processed: number, rules: string[]): void {
    if (a.length < KVM_MSRS_LAYOUT.size) return;
    const da = new DataView(a.buffer, a.byteOffset, a.byteLength);
    const db = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const n = Math.min(da.getUint32(0, true), Math.floor((a.length - 8) / 16), Math.max(0, processed));
    for (let i = 0; i < n; i++) {
      const off = KVM_MSRS_LAYOUT.entries + i * KVM_MSR_ENTRY_LAYOUT.size;
      if (da.getUint32(off, true) !== MSR_IA32_TSC) continue;
      const va = da.getBigUint64(off + 8, true);
      const vb = db.getBigUint64(off + 8, true);
      if (va === vb) continue;
      const profile = (this.emu as { profile?: HostProfile }).profile; // a Kvm has one; the real kernel does not
      if (profile?.tscUnstable === true) {
        // kvm_arch_vcpu_load pins the TSC to last_guest_tsc at the start of each ioctl, and the kernel's
        // read comes some cycles later; a synchronizing write (kvm_synchronize_tsc) adds the host time
        // since the VM's last write, which each side measures on its own clock. Modulo 2^64: a value
        // just below 2^64 wraps.
        const window = BigInt(profile.tscKhz) * 50n;
        const gap = BigInt.asUintN(64, va - vb);
        const apart = gap < window || BigInt.asUintN(64, -gap) < window;
        rules.push(`IA32_TSC (entry ${i}) compared by rule, since the host TSC is unstable and its value depends on host time between calls: within 50 ms of cycles of each other, modulo 2^64 (real 0x${va.toString(16)}, kvmsr 0x${vb.toString(16)})`);
        if (apart) {
          da.setBigUint64(off + 8, 0n, true);
          db.setBigUint64(off + 8, 0n, true);
        }
        continue;
      }
      rules.push(`IA32_TSC (entry ${i}) compared by rule, since it moves with time: equal, or both non-zero (real 0x${va.toString(16)}, kvmsr 0x${vb.toString(16)})`);
      if (va !== 0n && vb !== 0n) {
        da.setBigUint64(off + 8, 0n, true);
        db.setBigUint64(off + 8, 0n, true);
      }
    }
  }
}
