// The fast-path equivalence check, shared by the PVM, VMX and SVM tests: for every MSR slot with a
// fast class, a KVM_GET_MSRS/KVM_SET_MSRS through the fast path and one with it turned off must give
// the same return, bytes and state.
import { expect } from 'vitest';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm, type KvmOptions } from '../src/kvm/kvm.js';
import { indexOfSlot, SLOT_COUNT, slotOf } from '../src/kvm/x86/msr-slots.js';
import { msrs } from './helpers.js';

export type Setup = (kvm: Kvm, sys: number, vm: number, vcpu: number) => void;
export const DEFAULT_VALUES = [0n, 1n, 0xffffffffffffffffn, 0x0006060606060606n, 0xffff800000001000n, 0x0000800000000000n, 0x80000000n, 0x0100000000000000n];

function build(opts: KvmOptions, fastPath: boolean, irqchip: boolean, setup: Setup) {
  const kvm = new Kvm({ ...opts, fastPath, now: () => 1000 });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  if (irqchip) kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  setup(kvm, sys, vm, vcpu);
  return { kvm, vcpu, state: kvm.vcpuOf(vcpu)! };
}

/** Returns how many slots had a fast class (and were checked). */
export function expectFastPathEqualsFullPath(opts: KvmOptions, irqchip: boolean, setup: Setup, values = DEFAULT_VALUES): number {
  const fast = build(opts, true, irqchip, setup);
  const slow = build(opts, false, irqchip, setup);
  let checked = 0;
  for (let s = 0; s < SLOT_COUNT; s++) {
    const index = indexOfSlot(s);
    expect(slotOf(index)).toBe(s);
    if (fast.kvm.x86.fastGet[s] === 0 && fast.kvm.x86.fastSet[s] === 0) continue;
    checked++;
    const g1 = msrs([[index, 0x5555n]]);
    const g2 = msrs([[index, 0x5555n]]);
    expect(fast.kvm.ioctl(fast.vcpu, I.KVM_GET_MSRS, g1), `GET 0x${index.toString(16)}`).toBe(slow.kvm.ioctl(slow.vcpu, I.KVM_GET_MSRS, g2));
    expect(Buffer.from(g1).equals(Buffer.from(g2)), `GET bytes 0x${index.toString(16)}`).toBe(true);
    for (const v of values) {
      const r1 = fast.kvm.ioctl(fast.vcpu, I.KVM_SET_MSRS, msrs([[index, v]]));
      const r2 = slow.kvm.ioctl(slow.vcpu, I.KVM_SET_MSRS, msrs([[index, v]]));
      expect(r1, `SET 0x${index.toString(16)} = 0x${v.toString(16)}`).toBe(r2);
      expect([fast.state.msrs[2 * s], fast.state.msrs[2 * s + 1]], `state 0x${index.toString(16)} after 0x${v.toString(16)}`).toEqual([
        slow.state.msrs[2 * s],
        slow.state.msrs[2 * s + 1],
      ]);
    }
  }
  expect(Buffer.from(fast.state.msrs.buffer).equals(Buffer.from(slow.state.msrs.buffer))).toBe(true);
  expect([fast.state.vm.wallClockLo, fast.state.vm.wallClockHi]).toEqual([slow.state.vm.wallClockLo, slow.state.vm.wallClockHi]);
  return checked;
}
