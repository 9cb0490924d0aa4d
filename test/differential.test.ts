// The same buffers to the real /dev/kvm (through koffi) and to kvmsr with a profile captured here,
// compared by return value and every byte. Skips, visibly, where /dev/kvm is absent.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeMsrList, decodeMsrs, encodeCpuid2, encodeMsrList, encodeMsrs } from '../src/abi/codecs.js';
import { _IO, _IOWR } from '../src/abi/ioc.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { loadRealKvm, realKvmStatus, type RealKvm } from '../src/native/real-kvm.js';
import { Pair, type FdPair, type PairResult } from '../src/native/pair.js';
import { captureProfile } from '../src/profile/capture.js';

const status = realKvmStatus();
if (!status.ok) console.warn(`differential: skipped: ${status.reason}`);

const agree = (r: PairResult, what: string): void => {
  expect(r.differences, `${what}\n${r.rules.join('\n')}`).toEqual([]);
};
const msrBuf = (indices: number[], data = 0n): Uint8Array => encodeMsrs(indices.map((index) => ({ index, data })));

describe.skipIf(!status.ok)(`differential against /dev/kvm${status.ok ? '' : ` (skipped: ${status.reason})`}`, () => {
  let real: RealKvm;
  let profile: HostProfile;
  let pair: Pair;
  let sys: FdPair;
  let vm: FdPair;
  let vcpu: FdPair;
  beforeAll(() => {
    real = loadRealKvm()!;
    profile = captureProfile();
    pair = new Pair(real, new Kvm({ profile }));
    sys = pair.open();
    vm = pair.create(sys, I.KVM_CREATE_VM, 0);
    vcpu = pair.create(vm, I.KVM_CREATE_VCPU, 0);
  }, 120_000); // profile capture probes the host, slowly under an emulated CPU
  afterAll(() => {
    for (const fd of [vcpu, vm, sys]) if (fd) pair.close(fd);
  });

  test.each([
    ['KVM_GET_MSR_INDEX_LIST', I.KVM_GET_MSR_INDEX_LIST],
    ['KVM_GET_MSR_FEATURE_INDEX_LIST', I.KVM_GET_MSR_FEATURE_INDEX_LIST],
  ])('%s with nmsrs 0, too small, exact and larger', (_n, req) => {
    const count = decodeMsrList(pair.run(sys, req, encodeMsrList(0)).realBytes).nmsrs;
    for (const [cap, n] of [[0, 0], [count, count - 1], [count, count], [count + 8, count + 8]] as const) {
      agree(pair.run(sys, req, encodeMsrList(cap, n)), `capacity ${cap} nmsrs ${n}`);
    }
  });

  test('feature MSRs on /dev/kvm: each alone, all at once, and with unknown and listed non-feature indices', () => {
    const features = profile.featureMsrs.map((m) => m.index);
    for (const i of features) agree(pair.run(sys, I.KVM_GET_MSRS, msrBuf([i])), `feature 0x${i.toString(16)}`);
    agree(pair.run(sys, I.KVM_GET_MSRS, msrBuf(features)), 'all feature MSRs');
    agree(pair.run(sys, I.KVM_GET_MSRS, msrBuf([0x12345678, ...features], 0x66n)), 'unknown first');
    agree(pair.run(sys, I.KVM_GET_MSRS, msrBuf([...features, ...profile.msrIndexList])), 'features then the index list');
  });

  test('each listed MSR read alone on a fresh vCPU, then all at once', () => {
    for (const i of profile.msrIndexList) agree(pair.run(vcpu, I.KVM_GET_MSRS, msrBuf([i], 0x5555n)), `0x${i.toString(16)}`);
    agree(pair.run(vcpu, I.KVM_GET_MSRS, msrBuf(profile.msrIndexList)), 'all listed');
  });

  test('unknown indices at the start, middle and end of a batch', () => {
    const l = profile.msrIndexList.slice(0, 6);
    for (const b of [[0x12345678, ...l], [...l.slice(0, 3), 0x12345678, ...l.slice(3)], [...l, 0x12345678]]) {
      agree(pair.run(vcpu, I.KVM_GET_MSRS, msrBuf(b, 0x77n)), b.map((i) => i.toString(16)).join(','));
      agree(pair.run(vcpu, I.KVM_SET_MSRS, msrBuf(b, 0n)), 'SET ' + b.map((i) => i.toString(16)).join(','));
    }
  });

  test('nmsrs 255, 256 and 257', () => {
    const pick = (n: number): number[] => Array.from({ length: n }, (_, i) => profile.msrIndexList[i % profile.msrIndexList.length]!);
    for (const n of [255, 256, 257]) agree(pair.run(vcpu, I.KVM_GET_MSRS, msrBuf(pick(n))), `nmsrs ${n}`);
  });

  test('write-back of the values read, then read again', () => {
    const r = pair.run(vcpu, I.KVM_GET_MSRS, msrBuf(profile.msrIndexList));
    agree(r, 'read');
    const values = decodeMsrs(r.realBytes).entries.filter((e) => e.index !== 0x10);
    agree(pair.run(vcpu, I.KVM_SET_MSRS, encodeMsrs(values)), 'write-back');
    agree(pair.run(vcpu, I.KVM_GET_MSRS, msrBuf(profile.msrIndexList)), 'read after write-back');
  });

  test('after KVM_SET_CPUID2 with the supported CPUID', () => {
    const v2 = pair.create(vm, I.KVM_CREATE_VCPU, 1);
    const n = profile.supportedCpuid.length;
    const cpuid = pair.run(sys, I.KVM_GET_SUPPORTED_CPUID, encodeCpuid2([], n, n));
    agree(cpuid, 'KVM_GET_SUPPORTED_CPUID');
    agree(pair.run(v2, I.KVM_SET_CPUID2, cpuid.realBytes), 'KVM_SET_CPUID2');
    for (const i of profile.msrIndexList) agree(pair.run(v2, I.KVM_GET_MSRS, msrBuf([i])), `0x${i.toString(16)} after CPUID`);
    pair.close(v2);
  });

  test('requests a fd kind does not take get the kernel\'s errno on each kind', () => {
    const buf = (): Uint8Array => msrBuf([0x277]);
    const cases: [string, () => FdPair, number, Uint8Array | number][] = [
      ['0x1234 on /dev/kvm', () => sys, 0x1234, 0],
      ['0x1234 on a VM', () => vm, 0x1234, 0],
      ['0x1234 on a vCPU', () => vcpu, 0x1234, 0],
      ['_IO(KVMIO, 0xff) on /dev/kvm', () => sys, _IO(0xae, 0xff), 0],
      ['_IO(KVMIO, 0xff) on a VM', () => vm, _IO(0xae, 0xff), 0],
      ['_IO(KVMIO, 0xff) on a vCPU', () => vcpu, _IO(0xae, 0xff), 0],
      ['KVM_GET_MSRS with another size on a vCPU', () => vcpu, _IOWR(0xae, 0x88, 16), buf()],
      ['KVM_GET_MSRS on a VM', () => vm, I.KVM_GET_MSRS, buf()],
      ['KVM_SET_MSRS on /dev/kvm', () => sys, I.KVM_SET_MSRS, buf()],
      ['KVM_GET_MSR_INDEX_LIST on a VM', () => vm, I.KVM_GET_MSR_INDEX_LIST, encodeMsrList(64)],
      ['KVM_GET_MSR_INDEX_LIST on a vCPU', () => vcpu, I.KVM_GET_MSR_INDEX_LIST, encodeMsrList(64)],
      ['KVM_CREATE_VCPU on /dev/kvm', () => sys, I.KVM_CREATE_VCPU, 5],
      ['KVM_CREATE_VM on a vCPU', () => vcpu, I.KVM_CREATE_VM, 0],
      ['KVM_CHECK_EXTENSION on a vCPU', () => vcpu, I.KVM_CHECK_EXTENSION, 0],
    ];
    for (const [what, fd, req, arg] of cases) agree(pair.run(fd(), req, arg), what);
  });

  test('IA32_TSC across vCPU creation, host writes, KVM_SET_TSC_KHZ and a second vCPU', () => {
    const vm2 = pair.create(sys, I.KVM_CREATE_VM, 0);
    const a = pair.create(vm2, I.KVM_CREATE_VCPU, 0);
    const tsc = (v: FdPair, what: string): void => agree(pair.run(v, I.KVM_GET_MSRS, msrBuf([0x10])), `read ${what}`);
    const write = (v: FdPair, x: bigint, what: string): void => {
      agree(pair.run(v, I.KVM_SET_MSRS, encodeMsrs([{ index: 0x10, data: x }])), `write ${what}`);
      tsc(v, `after writing ${what}`);
    };
    const sleep = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    agree(pair.run(vm2, I.KVM_GET_TSC_KHZ, 0), 'VM KVM_GET_TSC_KHZ');
    agree(pair.run(a, I.KVM_GET_TSC_KHZ, 0), 'vCPU KVM_GET_TSC_KHZ');
    tsc(a, 'on a fresh vCPU');
    sleep(20);
    tsc(a, '20 ms later');
    write(a, 0n, '0');
    write(a, 1n << 28n, '2^28 (within a second of the last write)');
    write(a, 1n << 40n, '2^40 (a new generation)');
    sleep(20);
    const b = pair.create(vm2, I.KVM_CREATE_VCPU, 1);
    tsc(b, 'on a vCPU created after that');
    write(b, 0n, '0 on the second vCPU');
    agree(pair.run(vm2, I.KVM_SET_TSC_KHZ, 0), 'VM KVM_SET_TSC_KHZ(0) once vCPUs exist');
    agree(pair.run(a, I.KVM_SET_TSC_KHZ, 0), 'vCPU KVM_SET_TSC_KHZ(0)');
    agree(pair.run(a, I.KVM_GET_TSC_KHZ, 0), 'KVM_GET_TSC_KHZ after KVM_SET_TSC_KHZ(0)');
    tsc(a, 'after KVM_SET_TSC_KHZ(0)');
    for (const khz of [profile.tscKhz, Math.floor(profile.tscKhz * 0.9), Math.floor(profile.tscKhz * 1.1)]) {
      agree(pair.run(a, I.KVM_SET_TSC_KHZ, khz), `KVM_SET_TSC_KHZ(${khz})`);
      agree(pair.run(a, I.KVM_GET_TSC_KHZ, 0), `KVM_GET_TSC_KHZ after KVM_SET_TSC_KHZ(${khz})`);
      tsc(a, `after KVM_SET_TSC_KHZ(${khz})`);
    }
    write(a, 0n, '0 on the first vCPU again');
    write(b, 1n << 50n, '2^50 on the second vCPU');
    write(a, 0n, '0 on the first vCPU, joining that generation');
    for (const fd of [b, a, vm2]) pair.close(fd);
  });

  test('with an in-kernel irqchip', () => {
    const vm2 = pair.create(sys, I.KVM_CREATE_VM, 0);
    agree(pair.run(vm2, I.KVM_CREATE_IRQCHIP, 0), 'KVM_CREATE_IRQCHIP');
    const v = pair.create(vm2, I.KVM_CREATE_VCPU, 0);
    const r = pair.run(v, I.KVM_GET_MSRS, msrBuf(profile.msrIndexList));
    agree(r, 'read with irqchip');
    const values = decodeMsrs(r.realBytes).entries.filter((e) => e.index !== 0x10);
    agree(pair.run(v, I.KVM_SET_MSRS, encodeMsrs(values)), 'write-back with irqchip');
    pair.close(v);
    pair.close(vm2);
  });
});

describe('the FFI path to the real libc', () => {
  const real = loadRealKvm();
  test.skipIf(real === null)(`open and ioctl answer with the kernel's errno${real ? '' : ' (skipped: koffi not loadable)'}`, () => {
    const r = real!;
    expect(r.open('/nonexistent/kvm')).toBe(-2); // ENOENT, as kvmsr answers for any other path
    const fd = r.open('/dev/null');
    expect(fd).toBeGreaterThanOrEqual(0);
    expect(r.ioctl(fd, I.KVM_GET_API_VERSION, 0)).toBe(-25); // ENOTTY from a non-KVM file
    expect(r.close(fd)).toBe(0);
  });
});
