// The fast-path classes must answer exactly as the full kvm_do_msr_access path: for every MSR slot
// kvmsr stores, in several vCPU states, with several values, a KVM_GET_MSRS/KVM_SET_MSRS through
// the fast path and one with the fast path turned off give the same return, bytes and state.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { expectFastPathEqualsFullPath } from './fast-path-check.js';

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

describe('fast path equals the full path', () => {
  test.each(STATES)('every slot, %s', (name, irqchip, setup) => {
    const checked = expectFastPathEqualsFullPath({ ignoreMsrs: name === 'ignore_msrs' }, irqchip, setup, VALUES);
    expect(checked).toBeGreaterThan(30);
  });
});
