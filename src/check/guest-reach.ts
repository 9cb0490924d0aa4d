// Whether the guest itself can change an MSR on the vCPU model a capture set up: kvmsr's guest
// path (handle_wrmsr, host_initiated = false) on a vCPU with the capture's CPUID and irqchip. An MSR
// the guest cannot change has nothing to lose across a save and restore, whatever the VMM does.
import { decodeMsrs, encodeMsrs } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { Kvm } from '../kvm/kvm.js';
import type { HostProfile } from '../kvm/profile.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';

export class GuestReach {
  private readonly kvm: Kvm;
  private readonly vcpus = new Map<string, number>();
  private readonly vm: number;

  constructor(
    profile: HostProfile,
    private readonly capture: ParsedCapture,
    private readonly keyOf: (r: CaptureRecord) => string,
  ) {
    this.kvm = new Kvm({ profile, now: () => 0 });
    this.vm = this.kvm.ioctl(this.kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    if (capture.records.some((r) => r.request === I.KVM_CREATE_IRQCHIP && r.ret === 0)) this.kvm.ioctl(this.vm, I.KVM_CREATE_IRQCHIP, 0);
  }

  /** A kvmsr vCPU with the CPUID the capture last set on `key` before its first KVM_RUN. */
  private vcpu(key: string): number {
    let fd = this.vcpus.get(key);
    if (fd !== undefined) return fd;
    fd = this.kvm.ioctl(this.vm, I.KVM_CREATE_VCPU, this.vcpus.size);
    for (const r of this.capture.records) {
      if (this.keyOf(r) !== key || r.fdKind !== 'vcpu') continue;
      if (r.request === I.KVM_RUN) break;
      if (r.request === I.KVM_SET_CPUID2 && r.ret === 0 && r.in) this.kvm.ioctl(fd, I.KVM_SET_CPUID2, r.in.slice());
    }
    this.vcpus.set(key, fd);
    return fd;
  }

  /** True when a guest RDMSR of it succeeds on this vCPU model (no #GP, no exit). */
  canRead(key: string, index: number): boolean {
    return this.kvm.rdmsr(this.vcpu(key), index).kind === 'ok';
  }

  /** Neither a guest RDMSR nor a guest WRMSR reaches it: a wrong value is one the guest cannot tell. */
  hidden(key: string, index: number): boolean {
    return !this.canRead(key, index) && !this.canChange(key, index);
  }

  /**
   * True when some guest WRMSR changes what the MSR reads: tried with the value it holds with one
   * low bit flipped, 1, and 0. False when every try is refused (#GP) or changes nothing.
   */
  canChange(key: string, index: number): boolean {
    const fd = this.vcpu(key);
    const read = (): bigint | null => {
      const b = encodeMsrs([{ index, data: 0n }]);
      return this.kvm.ioctl(fd, I.KVM_GET_MSRS, b) === 1 ? decodeMsrs(b).entries[0]!.data : null;
    };
    const before = read();
    if (before === null) return false;
    for (const v of [before ^ 1n, before ^ 2n, 1n, 0n]) {
      if (v === before) continue;
      if (this.kvm.wrmsr(fd, index, v).kind !== 'ok') continue;
      const after = read();
      // Put it back for the next question.
      this.kvm.ioctl(fd, I.KVM_SET_MSRS, encodeMsrs([{ index, data: before }]));
      if (after !== before) return true;
    }
    return false;
  }
}
