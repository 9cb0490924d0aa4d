// MTRRs (arch/x86/kvm/mtrr.c: kvm_mtrr_get_msr, kvm_mtrr_set_msr, kvm_mtrr_valid): QEMU saves and
// restores them through KVM_GET/SET_MSRS though KVM does not list them.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { datas, machine, msrs, type Machine } from './helpers.js';

const get = (m: Machine, i: number): bigint | null => {
  const b = msrs([i]);
  return m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
const set = (m: Machine, i: number, v: bigint): boolean => m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[i, v]])) === 1;

describe('MTRRs', () => {
  test('MTRRcap reads WC | FIX | 8 variable ranges and is read-only', () => {
    const m = machine();
    expect(get(m, 0xfe)).toBe(0x508n);
    expect(set(m, 0xfe, 0x508n)).toBe(false);
  });
  test('every MTRR reads 0 on a fresh vCPU; holes in 0x200-0x26f fail', () => {
    const m = machine();
    for (const i of [0x200, 0x20f, 0x250, 0x258, 0x259, 0x268, 0x26f, 0x2ff]) expect(get(m, i), `0x${i.toString(16)}`).toBe(0n);
    for (const i of [0x210, 0x24f, 0x251, 0x25a, 0x267]) expect(get(m, i), `0x${i.toString(16)}`).toBeNull();
  });
  test('kvm_mtrr_valid: types 0, 1, 4, 5, 6 only; MTRRdefType bits outside 0xcff; variable ranges by MAXPHYADDR', () => {
    const m = machine();
    expect(set(m, 0x2ff, 0xc06n)).toBe(true);
    expect(set(m, 0x2ff, 0x1006n)).toBe(false);
    expect(set(m, 0x2ff, 0x2n)).toBe(false);
    expect(set(m, 0x250, 0x0606060606060606n)).toBe(true);
    expect(set(m, 0x250, 0x0606060606060602n)).toBe(false);
    expect(set(m, 0x200, 0x80000006n)).toBe(true); // base, type WB
    expect(set(m, 0x200, 0x80000106n)).toBe(false); // bits 11:8
    expect(set(m, 0x201, 0xf80000800n)).toBe(true); // mask, valid bit 11
    expect(set(m, 0x201, 0xf80000801n)).toBe(false); // bits 10:0
    expect(set(m, 0x201, 0x1000000000n)).toBe(false); // bit 36: above the default MAXPHYADDR of 36
    expect(get(m, 0x201)).toBe(0xf80000800n);
  });
  test('KVM_SET_CPUID2 sets MAXPHYADDR from leaf 0x80000008', () => {
    const m = machine();
    const n = m.kvm.profile.supportedCpuid.length;
    const c = encodeCpuid2([], n, n);
    m.kvm.ioctlOrThrow(m.sys, I.KVM_GET_SUPPORTED_CPUID, c);
    m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_CPUID2, c); // 0x80000008 EAX 0x3030: 48 bits
    expect(set(m, 0x201, 0x1000000000n)).toBe(true);
    expect(set(m, 0x201, 0x1000000000000n)).toBe(false);
  });
});
