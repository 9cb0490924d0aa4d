// IA32_APICBASE (kvm_lapic_reset, kvm_apic_set_base): the register value and its rules; the LAPIC
// behind it is not modelled.
import { describe, expect, test } from 'vitest';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { builtinProfile } from '../src/profiles.js';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import { datas, msrs } from './helpers.js';

function vcpus(profile = builtinProfile('pvm-amd-epyc-6.18.44-v782-derived')) {
  const kvm = new Kvm({ profile });
  const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
  const a = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  const b = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 1);
  const get = (fd: number): bigint => {
    const m = msrs([0x1b]);
    kvm.ioctlOrThrow(fd, I.KVM_GET_MSRS, m);
    return datas(m)[0]!;
  };
  const set = (fd: number, v: bigint): boolean => kvm.ioctl(fd, I.KVM_SET_MSRS, msrs([[0x1b, v]])) === 1;
  return { kvm, a, b, get, set };
}

describe('IA32_APICBASE', () => {
  test('kvm_lapic_reset: enabled at 0xfee00000, BSP only on vCPU 0', () => {
    const t = vcpus();
    expect(t.get(t.a)).toBe(0xfee00900n);
    expect(t.get(t.b)).toBe(0xfee00800n);
  });
  test('kvm_apic_set_base: reserved bits, x2APIC without the CPUID bit, and the invalid mode fail', () => {
    const t = vcpus();
    expect(t.set(t.a, 0xfee00000n)).toBe(true); // disabled
    expect(t.set(t.a, 0xfee00001n)).toBe(false); // bits 7:0
    expect(t.set(t.a, 0xfee00200n)).toBe(false); // bit 9
    expect(t.set(t.a, 0xfee00c00n)).toBe(false); // x2APIC: not in this vCPU's CPUID
    expect(t.set(t.a, 0x1000000000n | 0x800n)).toBe(false); // above MAXPHYADDR 36
    expect(t.get(t.a)).toBe(0xfee00000n);
  });
  test('with X2APIC in the CPUID: the host may go anywhere valid, the guest may not leave x2APIC for xAPIC', () => {
    const t = vcpus(builtinProfile('vmx-intel-derived'));
    t.kvm.ioctlOrThrow(t.a, I.KVM_SET_CPUID2, encodeCpuid2(t.kvm.profile.supportedCpuid));
    expect(t.kvm.wrmsr(t.a, 0x1b, 0xfee00d00n).kind).toBe('ok'); // x2APIC
    expect(t.kvm.wrmsr(t.a, 0x1b, 0xfee00900n)).toEqual({ kind: 'gp' });
    expect(t.kvm.wrmsr(t.a, 0x1b, 0xfee00500n)).toEqual({ kind: 'gp' }); // invalid mode
    expect(t.set(t.a, 0xfee00900n)).toBe(true); // the host may
    expect(t.set(t.a, 0xfee00100n)).toBe(true); // disable
    expect(t.kvm.wrmsr(t.a, 0x1b, 0xfee00d00n)).toEqual({ kind: 'gp' }); // disabled straight to x2APIC
  });
});
