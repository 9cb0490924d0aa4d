// The fast-path classes must answer exactly as the full kvm_do_msr_access path: for every MSR slot
// kvmsr stores, in several vCPU states, with several values, a KVM_GET_MSRS/KVM_SET_MSRS through
// the fast path and one with the fast path turned off give the same return, bytes and state.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { indexOfSlot, SLOT_COUNT, slotOf } from '../src/kvm/msr-slots.js';
import { msrs } from './helpers.js';

type Setup = (kvm: Kvm, sys: number, vm: number, vcpu: number) => void;
const STATES: [string, boolean, Setup][] = [
  ['fresh vCPU', false, () => undefined],
  ['after KVM_SET_CPUID2 (supported CPUID)', false, (kvm, sys, _vm, vcpu) => {
    const n = kvm.profile.supportedCpuid.length;
    const b = encodeCpuid2([], n, n);
    kvm.ioctlOrThrow(sys, I.KVM_GET_SUPPORTED_CPUID, b);
    kvm.ioctlOrThrow(vcpu, I.KVM_SET_CPUID2, b);
  }],
  ['PV CPUID enforced with no PV features', false, (kvm, _sys, _vm, vcpu) => {
    kvm.ioctlOrThrow(vcpu, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.ENFORCE_PV_FEATURE_CPUID, [1n]));
  }],
  ['with an irqchip, after KVM_RUN', true, (kvm, _sys, _vm, vcpu) => {
    kvm.markRan(vcpu);
  }],
  ['ignore_msrs', false, () => undefined],
];
const VALUES = [0n, 1n, 0xffffffffffffffffn, 0x0006060606060606n, 0xffff800000001000n, 0x0000800000000000n, 0x80000000n];

function build(fastPath: boolean, irqchip: boolean, ignoreMsrs: boolean, setup: Setup) {
  const kvm = new Kvm({ fastPath, ignoreMsrs, now: () => 1000 });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  if (irqchip) kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  setup(kvm, sys, vm, vcpu);
  return { kvm, vcpu, state: kvm.vcpuOf(vcpu)! };
}

describe('fast path equals the full path', () => {
  test.each(STATES)('every slot, %s', (name, irqchip, setup) => {
    const ignore = name === 'ignore_msrs';
    const fast = build(true, irqchip, ignore, setup);
    const slow = build(false, irqchip, ignore, setup);
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
      for (const v of VALUES) {
        const r1 = fast.kvm.ioctl(fast.vcpu, I.KVM_SET_MSRS, msrs([[index, v]]));
        const r2 = slow.kvm.ioctl(slow.vcpu, I.KVM_SET_MSRS, msrs([[index, v]]));
        expect(r1, `SET 0x${index.toString(16)} = 0x${v.toString(16)}`).toBe(r2);
        expect([fast.state.msrs[2 * s], fast.state.msrs[2 * s + 1]], `state 0x${index.toString(16)} after 0x${v.toString(16)}`).toEqual([
          slow.state.msrs[2 * s],
          slow.state.msrs[2 * s + 1],
        ]);
      }
    }
    expect(checked).toBeGreaterThan(30);
    expect(Buffer.from(fast.state.msrs.buffer).equals(Buffer.from(slow.state.msrs.buffer))).toBe(true);
  });
});
