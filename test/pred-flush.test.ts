// IA32_PRED_CMD and IA32_FLUSH_CMD (kvm_set_msr_common): write-only command MSRs.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { builtinProfile } from '../src/profiles.js';
import { msrs } from './helpers.js';

function vcpu(name: 'vmx-intel-derived' | 'pvm-amd-epyc-6.18.44-v782-derived', cpuid: boolean) {
  const kvm = new Kvm({ profile: builtinProfile(name) });
  const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
  const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  if (cpuid) kvm.ioctlOrThrow(v, I.KVM_SET_CPUID2, encodeCpuid2(kvm.profile.supportedCpuid));
  return { kvm, v, set: (i: number, d: bigint): number => kvm.ioctl(v, I.KVM_SET_MSRS, msrs([[i, d]])) };
}

describe('PRED_CMD and FLUSH_CMD', () => {
  test('the host may write IBPB and L1D_FLUSH where the host CPU has them, and 0; nothing reads them', () => {
    const t = vcpu('vmx-intel-derived', false);
    expect(t.set(0x49, 1n)).toBe(1);
    expect(t.set(0x49, 0n)).toBe(1);
    expect(t.set(0x49, 2n)).toBe(0);
    expect(t.set(0x10b, 1n)).toBe(1);
    expect(t.set(0x10b, 2n)).toBe(0);
    expect(t.kvm.ioctl(t.v, I.KVM_GET_MSRS, msrs([0x49]))).toBe(0);
  });
  test('the guest needs SPEC_CTRL/AMD_IBPB for PRED_CMD and FLUSH_L1D for FLUSH_CMD', () => {
    const bare = vcpu('vmx-intel-derived', false);
    expect(bare.kvm.wrmsr(bare.v, 0x49, 1n)).toEqual({ kind: 'gp' });
    expect(bare.kvm.wrmsr(bare.v, 0x10b, 1n)).toEqual({ kind: 'gp' });
    const full = vcpu('vmx-intel-derived', true);
    expect(full.kvm.wrmsr(full.v, 0x49, 1n).kind).toBe('ok');
    expect(full.kvm.wrmsr(full.v, 0x10b, 1n).kind).toBe('ok');
  });
  test('a host without L1D flush (the PVM host) refuses FLUSH_CMD', () => {
    const t = vcpu('pvm-amd-epyc-6.18.44-v782-derived', false);
    expect(t.set(0x10b, 1n)).toBe(0);
  });
});
