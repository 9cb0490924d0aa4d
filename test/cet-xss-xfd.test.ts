// CET, XSS and XFD (6.18 __kvm_get_msr/__kvm_set_msr gates, kvm_is_valid_u_s_cet,
// guest_supported_xss, kvm_guest_supported_xfd) on the Intel profile, whose host has CET and AMX.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { builtinProfile } from '../src/profiles.js';
import { datas, msrs } from './helpers.js';

function setup(withCpuid: boolean) {
  const kvm = new Kvm({ profile: builtinProfile('vmx-intel-derived') });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  if (withCpuid) kvm.ioctlOrThrow(vcpu, I.KVM_SET_CPUID2, encodeCpuid2(kvm.profile.supportedCpuid));
  const get = (i: number): bigint | null => {
    const b = msrs([i]);
    return kvm.ioctl(vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
  };
  const set = (i: number, v: bigint): boolean => kvm.ioctl(vcpu, I.KVM_SET_MSRS, msrs([[i, v]])) === 1;
  return { kvm, vcpu, get, set };
}

describe('CET MSRs', () => {
  test('without SHSTK/IBT in the vCPU model they are advertised but unsupported: read 0, take only 0', () => {
    const m = setup(false);
    for (const i of [0x6a0, 0x6a2, 0x6a4, 0x6a8]) {
      expect(m.get(i), `0x${i.toString(16)}`).toBe(0n);
      expect(m.set(i, 0n)).toBe(true);
      expect(m.set(i, 4n)).toBe(false);
    }
  });
  test('kvm_is_valid_u_s_cet: reserved bits 9:6, a misaligned legacy bitmap, SUPPRESS with WAIT_ENDBR', () => {
    const m = setup(true);
    expect(m.set(0x6a0, 0x1n)).toBe(true); // SH_STK_EN
    expect(m.get(0x6a0)).toBe(0x1n);
    expect(m.set(0x6a2, 0x4n | 0x10000000_00000000n)).toBe(true); // ENDBR_EN, bitmap base
    expect(m.get(0x6a2)).toBe(0x4n | 0x10000000_00000000n);
    expect(m.set(0x6a0, 0x40n)).toBe(false);
    expect(m.set(0x6a0, 0x1000n)).toBe(false);
    expect(m.set(0x6a0, 0xc00n)).toBe(false);
  });
  test('PLx_SSP and INT_SSP_TAB: canonical, and PLx_SSP 4-byte aligned', () => {
    const m = setup(true);
    expect(m.set(0x6a4, 0xffff800000001000n)).toBe(true);
    expect(m.get(0x6a4)).toBe(0xffff800000001000n);
    expect(m.set(0x6a5, 0x1002n)).toBe(false);
    expect(m.set(0x6a7, 0x0100000000000000n)).toBe(false); // non-canonical even with LA57
    expect(m.set(0x6a8, 0x1002n)).toBe(true); // no alignment rule for the table
  });
  test('the internal guest SSP 0x4b564dff: the host may use it, the guest may not', () => {
    const m = setup(true);
    expect(m.set(0x4b564dff, 0x2000n)).toBe(true);
    expect(m.get(0x4b564dff)).toBe(0x2000n);
    expect(m.kvm.rdmsr(m.vcpu, 0x4b564dff)).toEqual({ kind: 'gp' });
  });
});

describe('XSS and XFD', () => {
  test('XSS takes only the bits the guest CPUID and KVM both have (0xD.1 ECX: CET_U, CET_S)', () => {
    expect(setup(false).set(0xda0, 0n)).toBe(true); // advertised: 0 passes without XSAVES
    const m = setup(true);
    expect(m.set(0xda0, 0x1800n)).toBe(true);
    expect(m.get(0xda0)).toBe(0x1800n);
    expect(m.set(0xda0, 0x1n)).toBe(false);
  });
  test('XFD and XFD_ERR take only XTILEDATA (bit 18) when the guest has it; the guest needs the XFD bit', () => {
    const m = setup(true);
    expect(m.set(0x1c4, 1n << 18n)).toBe(true);
    expect(m.get(0x1c4)).toBe(1n << 18n);
    expect(m.set(0x1c5, 1n << 18n)).toBe(true);
    expect(m.set(0x1c4, 1n << 17n)).toBe(false);
    const f = setup(false);
    expect(f.set(0x1c4, 1n << 18n)).toBe(false); // no guest XCR0 yet
    expect(f.kvm.rdmsr(f.vcpu, 0x1c4)).toEqual({ kind: 'gp' });
    expect(f.get(0x1c4)).toBe(0n);
  });
});
