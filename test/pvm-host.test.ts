// What the kvm_pvm host here answered (../shared/reference/vendor-msr-spec.md Appendix A, measured
// on 6.18.44 on 2026-11-25), pinned against kvmsr with the built-in profile, and the profile's own
// fresh-vCPU values reproduced by kvmsr's rules.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { datas, machine, msrs, sourceProfile } from './helpers.js';

const ONES = 0xffffffffffffffffn;
const get = (m: ReturnType<typeof machine>, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
const set = (m: ReturnType<typeof machine>, index: number, v: bigint): boolean =>
  m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[index, v]])) === 1;
const withSupportedCpuid = (m: ReturnType<typeof machine>): void => {
  const n = m.kvm.profile.supportedCpuid.length;
  const b = encodeCpuid2([], n, n);
  m.kvm.ioctlOrThrow(m.sys, I.KVM_GET_SUPPORTED_CPUID, b);
  m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_CPUID2, b);
};

test('every fresh-vCPU value in the profile is what kvmsr reads (IA32_TSC by rule)', () => {
  const m = machine();
  for (const { index, value } of sourceProfile().vcpuReset) {
    if (index === 0x10) {
      expect(get(m, index)).not.toBeNull();
      continue;
    }
    expect(get(m, index), `0x${index.toString(16)}`).toBe(value);
  }
});

describe('kvm_pvm measurements (Appendix A)', () => {
  test('VM_CR 0xc0010114: GET fails', () => expect(get(machine(), 0xc0010114)).toBeNull());
  test('VM_HSAVE_PA: SET 0 and ~0 succeed, the value is dropped', () => {
    const m = machine();
    expect(get(m, 0xc0010117)).toBe(0n);
    expect(set(m, 0xc0010117, 0n)).toBe(true);
    expect(set(m, 0xc0010117, ONES)).toBe(true);
    expect(get(m, 0xc0010117)).toBe(0n);
  });
  test('VIRT_SPEC_CTRL: SET ~0 succeeds and reads 0', () => {
    const m = machine();
    expect(set(m, 0xc001011f, 0n)).toBe(true);
    expect(set(m, 0xc001011f, ONES)).toBe(true);
    expect(get(m, 0xc001011f)).toBe(0n);
  });
  test('TSC_RATIO: reads 1.0, SET 0 succeeds, SET ~0 fails', () => {
    const m = machine();
    expect(get(m, 0xc0000104)).toBe(0x100000000n);
    expect(set(m, 0xc0000104, 0n)).toBe(true);
    expect(set(m, 0xc0000104, ONES)).toBe(false);
  });
  test('DE_CFG: GET fails on the vCPU', () => expect(get(machine(), 0xc0011029)).toBeNull());
  test('SYSENTER_CS keeps all 64 bits', () => {
    const m = machine();
    expect(set(m, 0x174, ONES)).toBe(true);
    expect(get(m, 0x174)).toBe(ONES);
  });
  test('UCODE_REV reads 0 on a plain vCPU', () => expect(get(machine(), 0x8b)).toBe(0n));
  test('ARCH_CAPABILITIES reads 0; SET 1 fails before and after KVM_SET_CPUID2', () => {
    const m = machine();
    expect(get(m, 0x10a)).toBe(0n);
    expect(set(m, 0x10a, 1n)).toBe(false);
    withSupportedCpuid(m);
    expect(set(m, 0x10a, 1n)).toBe(false);
  });
  test('TSC_AUX: high bits fail before KVM_SET_CPUID2 (Intel-compatible), are truncated after', () => {
    const m = machine();
    expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(false);
    withSupportedCpuid(m);
    expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(true);
    expect(get(m, 0xc0000103)).toBe(0xffffffffn);
  });
  test('XSS: GET 0, SET 0 fails (not advertised, no XSAVES)', () => {
    const m = machine();
    expect(get(m, 0xda0)).toBe(0n);
    expect(set(m, 0xda0, 0n)).toBe(false);
  });
  test.each([0xc1, 0x186, 0xc0010000, 0xc0010004].map((i) => [`0x${i.toString(16)}`, i] as const))('legacy PMU MSR %s: SET ~0 succeeds, reads 0', (_name, index) => {
    const m = machine();
    expect(set(m, index, ONES)).toBe(true);
    expect(get(m, index)).toBe(0n);
  });
});

describe('common rules on the listed MSRs', () => {
  test('CR_PAT: kvm_pat_valid refuses types 2 and 3 and reserved bits', () => {
    const m = machine();
    expect(set(m, 0x277, 0x0606060606060606n)).toBe(true);
    expect(set(m, 0x277, 0x0000000000000002n)).toBe(false);
    expect(set(m, 0x277, 0x0000000000000003n)).toBe(false);
    expect(set(m, 0x277, 0x0000000000000008n)).toBe(false);
    expect(set(m, 0x277, 0x0700000000000000n)).toBe(true);
    expect(get(m, 0x277)).toBe(0x0700000000000000n);
  });
  test('canonical checks: LSTAR refuses non-canonical, SYSENTER_EIP is made canonical', () => {
    const m = machine();
    expect(set(m, 0xc0000082, 0x0000800000000000n)).toBe(false);
    expect(set(m, 0xc0000082, 0xffff800000000000n)).toBe(true);
    expect(set(m, 0x176, 0x0000800000000000n)).toBe(true);
    expect(get(m, 0x176)).toBe(0xffff800000000000n);
  });
  test('an advertised MSR nobody handles reads 0 and takes only 0 (kvm_do_msr_access)', () => {
    const m = machine();
    expect(get(m, 0x48)).toBe(0n);
    expect(set(m, 0x48, 0n)).toBe(true);
    expect(set(m, 0x48, 1n)).toBe(false);
    expect(set(m, 0x1db, 0n)).toBe(true);
    expect(set(m, 0x1db, 1n)).toBe(false);
  });
  test('ignore_msrs turns unhandled accesses into success and reports them', () => {
    const lines: string[] = [];
    const m = machine({ ignoreMsrs: true, reportIgnoredMsrs: true, log: (l) => lines.push(l) });
    expect(get(m, 0x12345678)).toBe(0n);
    expect(set(m, 0x12345678, 5n)).toBe(true);
    expect(lines).toEqual(['kvm: ignored rdmsr: 0x12345678 data 0x0', 'kvm: ignored wrmsr: 0x12345678 data 0x5']);
    // An ERR is not ignored.
    expect(set(m, 0x277, 2n)).toBe(false);
  });
  test('immutable feature MSRs after KVM_RUN: only the current value, else EINVAL', () => {
    const m = machine();
    m.kvm.markRan(m.vcpu);
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0xce, 0x80000000n]]))).toBe(1);
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0xce, 0n]]))).toBe(0);
    // UCODE_REV is a feature MSR but not immutable.
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0x8b, 5n]]))).toBe(1);
  });
  test('KVM PV MSRs: ASYNC_PF_INT needs an in-kernel LAPIC; POLL_CONTROL takes bit 0 only', () => {
    const m = machine();
    expect(set(m, 0x4b564d06, 0n)).toBe(false);
    expect(set(m, 0x4b564d05, 0n)).toBe(true);
    expect(set(m, 0x4b564d05, 2n)).toBe(false);
    const kvm = new Kvm();
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
    const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, msrs([[0x4b564d06, 0x20n]]))).toBe(1);
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, msrs([[0x4b564d06, 0x100n]]))).toBe(0);
  });
  test('the wall clock MSR is VM-wide', () => {
    const kvm = new Kvm();
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const a = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const b = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 1);
    kvm.ioctlOrThrow(a, I.KVM_SET_MSRS, msrs([[0x11, 0x1000n]]));
    const r = msrs([0x11]);
    kvm.ioctlOrThrow(b, I.KVM_GET_MSRS, r);
    expect(datas(r)[0]).toBe(0x1000n);
  });
});
