// Machine-check MSRs (get_msr_mce, set_msr_mce, kvm_vcpu_ioctl_x86_setup_mce): a new vCPU has
// KVM_MAX_MCE_BANKS (32) banks and no MCG_CTL_P until KVM_X86_SETUP_MCE.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import { EFAULT, EINVAL } from '../src/abi/errno.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { datas, machine, msrs, type Machine } from './helpers.js';
import { builtinProfile } from '../src/profiles.js';

const ONES = 0xffffffffffffffffn;
const get = (m: Machine, i: number): bigint | null => {
  const b = msrs([i]);
  return m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
const set = (m: Machine, i: number, v: bigint): number => m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[i, v]]));
const setupMce = (m: Machine, cap: bigint): number => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, cap, true);
  return m.kvm.ioctl(m.vcpu, I.KVM_X86_SETUP_MCE, b);
};

describe('machine-check MSRs', () => {
  test('MCG_CAP reads KVM_MAX_MCE_BANKS; writing it is unsupported', () => {
    const m = machine();
    expect(get(m, 0x179)).toBe(0x20n);
    expect(set(m, 0x179, 0x20n)).toBe(0);
  });
  test('get_msr_mce: the 32 banks (0x400-0x47f) read 0 for the host; P5_MC_ADDR/TYPE read 0', () => {
    const m = machine();
    for (const i of [0x400, 0x401, 0x402, 0x403, 0x47f, 0x0, 0x1]) expect(get(m, i), `0x${i.toString(16)}`).toBe(0n);
    // CTL2 needs MCG_CMCI_P for the guest only.
    expect(get(m, 0x280)).toBe(0n);
    expect(m.kvm.rdmsr(m.vcpu, 0x280)).toEqual({ kind: 'gp' });
  });
  test('set_msr_mce: MCi_CTL takes 0 or all-ones (bits 10 and 0 may be clear); other bank registers any value', () => {
    const m = machine();
    expect(set(m, 0x400, ONES)).toBe(1);
    expect(set(m, 0x400, ONES & ~0x401n)).toBe(1);
    expect(set(m, 0x400, ONES & ~0x2n)).toBe(0);
    expect(set(m, 0x400, 0x1234n)).toBe(0);
    expect(set(m, 0x401, 0xdeadbeefn)).toBe(1); // MCi_STATUS, host
    expect(get(m, 0x401)).toBe(0xdeadbeefn);
    expect(set(m, 0x402, ONES)).toBe(1);
    // CTL2 without MCG_CMCI_P: the host may write only 0.
    expect(set(m, 0x280, 0n)).toBe(1);
    expect(set(m, 0x280, 1n)).toBe(0);
  });
  test('set_msr_mce: a guest may write a non-zero MCi_STATUS only on AMD with HWCR.McStatusWrEn', () => {
    const m = machine();
    expect(m.kvm.wrmsr(m.vcpu, 0x401, 1n)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x401, 0n)).toEqual({ kind: 'ok', value: 0n });
    const n = m.kvm.profile.supportedCpuid.length;
    const c = encodeCpuid2([], n, n);
    m.kvm.ioctlOrThrow(m.sys, I.KVM_GET_SUPPORTED_CPUID, c);
    m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_CPUID2, c); // AuthenticAMD
    expect(m.kvm.wrmsr(m.vcpu, 0x401, 1n)).toEqual({ kind: 'gp' });
    expect(set(m, 0xc0010015, 1n << 18n)).toBe(1);
    expect(m.kvm.wrmsr(m.vcpu, 0x401, 1n)).toEqual({ kind: 'ok', value: 1n });
  });
  test('KVM_X86_SETUP_MCE: bank count and capabilities checked; MCG_CTL and MCi_CTL become all-ones; fewer banks hide the rest', () => {
    const m = machine();
    expect(setupMce(m, 0n)).toBe(-EINVAL);
    expect(setupMce(m, 33n)).toBe(-EINVAL);
    expect(setupMce(m, 0x400n | 4n)).toBe(-EINVAL); // CMCI_P is not supported on this host
    expect(m.kvm.ioctl(m.vcpu, I.KVM_X86_SETUP_MCE, new Uint8Array(4))).toBe(-EFAULT);
    expect(setupMce(m, 0x100n | 4n)).toBe(0); // MCG_CTL_P, 4 banks
    expect(get(m, 0x179)).toBe(0x104n);
    expect(get(m, 0x17b)).toBe(ONES);
    expect(get(m, 0x400)).toBe(ONES);
    expect(get(m, 0x40c)).toBe(ONES);
    expect(get(m, 0x40f)).toBe(0n);
    expect(get(m, 0x410)).toBeNull(); // bank 4 does not exist now
    expect(set(m, 0x17b, 0n)).toBe(1);
    expect(set(m, 0x17b, 5n)).toBe(0);
    expect(m.kvm.rdmsr(m.vcpu, 0x17b)).toEqual({ kind: 'ok', value: 0n });
  });
  test('KVM_X86_GET_MCE_CAP_SUPPORTED reports MCG_CTL_P | MCG_SER_P on this host', () => {
    const m = machine();
    const b = new Uint8Array(8);
    expect(m.kvm.ioctl(m.sys, I.KVM_X86_GET_MCE_CAP_SUPPORTED, b)).toBe(0);
    expect(new DataView(b.buffer).getBigUint64(0, true)).toBe(0x1000100n);
    expect(m.kvm.ioctl(m.sys, I.KVM_X86_GET_MCE_CAP_SUPPORTED, 0)).toBe(-EFAULT);
  });
  test('SMBASE without CONFIG_KVM_SMM (KVM_CAP_X86_SMM 0, as on the kvm_pvm 6.18.44 hosts): no handler, host or guest', () => {
    const m = machine({ profile: builtinProfile('pvm-amd-epyc-6.18.44-v669') });
    expect(m.kvm.profile.extensions.system[117]).toBeUndefined();
    expect(get(m, 0x9e)).toBeNull();
    expect(set(m, 0x9e, 0n)).toBe(0);
    expect(m.kvm.rdmsr(m.vcpu, 0x9e)).toEqual({ kind: 'gp' });
  });
  test('SMBASE with CONFIG_KVM_SMM: the host reads and writes it; the guest gets #GP', () => {
    const m = machine({ profile: builtinProfile('svm-amd-derived') });
    expect(get(m, 0x9e)).toBe(0x30000n);
    expect(set(m, 0x9e, 0x40000n)).toBe(1);
    expect(get(m, 0x9e)).toBe(0x40000n);
    expect(m.kvm.rdmsr(m.vcpu, 0x9e)).toEqual({ kind: 'gp' });
  });
});
