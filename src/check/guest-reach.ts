// Whether the guest itself can change an MSR on the vCPU model a capture set up: kvmsr's guest
// path (handle_wrmsr, host_initiated = false) on a vCPU with the capture's CPUID and irqchip. An MSR
// the guest cannot change has nothing to lose across a save and restore, whatever the VMM does.
import { encodeMsrs } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import type { HostProfile } from '../kvm/profile.js';
import type { ParsedCapture } from '../capture/format.js';
import { CaptureMachine } from './machine.js';

export class GuestReach {
  private readonly m: CaptureMachine;
  /** The same vCPUs without the VMM's MSR writes: what they read at reset. */
  private readonly fresh: CaptureMachine;

  /**
   * The vCPUs as the capture left them: every call but KVM_RUN replayed in order (CPUID, caps,
   * KVM_X86_SETUP_MCE, LAPIC, the VMM's own MSR writes), so the guest path sees that vCPU model.
   */
  constructor(profile: HostProfile, capture: ParsedCapture) {
    this.m = new CaptureMachine(profile);
    for (const r of capture.records) if (r.request !== I.KVM_RUN) this.m.apply(r);
    this.m.kvm.unmodeled.length = 0;
    this.fresh = new CaptureMachine(profile);
    for (const r of capture.records) if (r.request !== I.KVM_RUN && r.request !== I.KVM_SET_MSRS) this.fresh.apply(r);
  }

  /** What a host read gives on the vCPU before the VMM's own MSR writes, or null when refused. */
  resetValue(key: string, index: number): bigint | null {
    this.fresh.vcpuFd(key, Number(key.split('vcpu')[1] ?? 0));
    return this.fresh.read(key, index);
  }

  private vcpu(key: string): number {
    return this.m.vcpuFd(key, Number(key.split('vcpu')[1] ?? 0));
  }

  /** The value a host read gives now, or null when KVM refuses it. */
  read(key: string, index: number): bigint | null {
    this.vcpu(key);
    return this.m.read(key, index);
  }

  /** True when a guest RDMSR of it succeeds on this vCPU model (no #GP, no exit). */
  canRead(key: string, index: number): boolean {
    return this.m.kvm.rdmsr(this.vcpu(key), index).kind === 'ok';
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
    const read = (): bigint | null => this.m.read(key, index);
    const before = read();
    if (before === null) return false;
    for (const v of [before ^ 1n, before ^ 2n, 1n, 0n]) {
      if (v === before) continue;
      if (this.m.kvm.wrmsr(fd, index, v).kind !== 'ok') continue;
      const after = read();
      // Put it back for the next question.
      this.m.kvm.ioctl(fd, I.KVM_SET_MSRS, encodeMsrs([{ index, data: before }]));
      if (after !== before) return true;
    }
    return false;
  }
}
