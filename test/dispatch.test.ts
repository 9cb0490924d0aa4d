// The per-fd-kind dispatchers: kvm_dev_ioctl/kvm_arch_dev_ioctl, kvm_vm_ioctl/kvm_arch_vm_ioctl,
// kvm_vcpu_ioctl/kvm_arch_vcpu_ioctl, with their errno for each refused input.
import { describe, expect, test } from 'vitest';
import { decodeCpuid2, encodeCpuid2, encodeEnableCap, encodeMsrFilter, encodeMsrs } from '../src/abi/codecs.js';
import { E2BIG, EBADF, EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, ENOTTY } from '../src/abi/errno.js';
import { _IOW } from '../src/abi/ioc.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { Kvm, KvmError } from '../src/kvm/kvm.js';
import { datas, machine, msrs } from './helpers.js';

describe('file descriptors', () => {
  test('only /dev/kvm opens; closed and unknown fds give EBADF', () => {
    const { kvm, sys, vm, vcpu } = machine();
    expect(kvm.open('/dev/null')).toBe(-ENOENT);
    expect(kvm.ioctl(99, I.KVM_GET_API_VERSION)).toBe(-EBADF);
    expect(kvm.ioctl(-1, I.KVM_GET_API_VERSION)).toBe(-EBADF);
    expect(kvm.close(vcpu)).toBe(0);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, msrs([0x277]))).toBe(-EBADF);
    expect(kvm.close(vcpu)).toBe(-EBADF);
    // A VM outlives its fd while a vCPU fd refers to it; a closed VM fd is gone.
    expect(kvm.close(vm)).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, 1)).toBe(-EBADF);
    expect(kvm.fdKind(sys)).toBe('system');
  });
  test('fds are the lowest free numbers from 3, like a fresh process', () => {
    const { kvm, sys, vm, vcpu } = machine();
    expect([sys, vm, vcpu]).toEqual([3, 4, 5]);
    kvm.close(vm);
    expect(kvm.open('/dev/kvm')).toBe(4);
  });
});

describe('do_vfs_ioctl, before KVM sees the request', () => {
  test('FIOCLEX, FIONCLEX, FIONBIO, FIOASYNC, FIOQSIZE and FIGETBSZ on every fd kind', () => {
    const { kvm, sys, vm, vcpu } = machine();
    for (const fd of [sys, vm, vcpu]) {
      expect(kvm.ioctl(fd, 0x5451, 0)).toBe(0);
      expect(kvm.ioctl(fd, 0x5450, 0)).toBe(0);
      expect(kvm.ioctl(fd, 0x5421, new Uint8Array(4))).toBe(0);
      expect(kvm.ioctl(fd, 0x5421, 0)).toBe(-EFAULT);
      expect(kvm.ioctl(fd, 0x5452, new Uint8Array(4))).toBe(0);
      expect(kvm.ioctl(fd, 0x5452, Uint8Array.of(1, 0, 0, 0))).toBe(-ENOTTY);
      expect(kvm.ioctl(fd, 0x5460, new Uint8Array(8))).toBe(-ENOTTY);
      const bsz = new Uint8Array(4);
      expect(kvm.ioctl(fd, 0x2, bsz)).toBe(0);
      expect(new DataView(bsz.buffer).getInt32(0, true)).toBe(4096);
    }
    // FIONREAD is not the VFS's on an anonymous inode: it reaches KVM.
    expect(kvm.ioctl(vm, 0x541b, new Uint8Array(4))).toBe(-ENOTTY);
    expect(kvm.ioctl(vcpu, 0x541b, new Uint8Array(4))).toBe(-EINVAL);
  });
});

describe('system fd', () => {
  test('KVM_GET_API_VERSION is 12 and refuses a non-zero argument', () => {
    const { kvm, sys } = machine();
    expect(kvm.ioctl(sys, I.KVM_GET_API_VERSION, 0)).toBe(12);
    expect(kvm.ioctl(sys, I.KVM_GET_API_VERSION, 1)).toBe(-EINVAL);
  });
  test('KVM_GET_VCPU_MMAP_SIZE is three pages on x86 and refuses an argument', () => {
    const { kvm, sys } = machine();
    expect(kvm.ioctl(sys, I.KVM_GET_VCPU_MMAP_SIZE, 0)).toBe(3 * 4096);
    expect(kvm.ioctl(sys, I.KVM_GET_VCPU_MMAP_SIZE, 5)).toBe(-EINVAL);
  });
  test('KVM_CREATE_VM takes only supported VM types', () => {
    const { kvm, sys } = machine();
    expect(kvm.ioctl(sys, I.KVM_CREATE_VM, 0)).toBeGreaterThan(0);
    expect(kvm.ioctl(sys, I.KVM_CREATE_VM, 7)).toBe(-EINVAL);
    expect(kvm.ioctl(sys, I.KVM_CREATE_VM, 64)).toBe(-EINVAL);
  });
  test('KVM_CHECK_EXTENSION answers from the profile, 0 for unknown capabilities', () => {
    const { kvm, sys, vm } = machine();
    expect(kvm.ioctl(sys, I.KVM_CHECK_EXTENSION, KVM_CAP.GET_MSR_FEATURES)).toBe(1);
    expect(kvm.ioctl(vm, I.KVM_CHECK_EXTENSION, KVM_CAP.X86_USER_SPACE_MSR)).toBe(1);
    expect(kvm.ioctl(sys, I.KVM_CHECK_EXTENSION, 100000)).toBe(0);
  });
  test('an unknown request gets kvm_arch_dev_ioctl\'s EINVAL', () => {
    const { kvm, sys } = machine();
    expect(kvm.ioctl(sys, I.KVM_SET_MSRS, msrs([]))).toBe(-EINVAL);
    expect(kvm.ioctl(sys, 0xdeadbeef, 0)).toBe(-EINVAL);
    expect(kvm.ioctl(sys, I.KVM_CREATE_VCPU, 0)).toBe(-EINVAL);
  });
  test('KVM_GET_MSRS on /dev/kvm reads feature MSRs; advertised non-feature MSRs read 0', () => {
    const { kvm, sys } = machine();
    const b = msrs([0x8b, 0x10a, 0x345, 0xce, 0x174]);
    expect(kvm.ioctl(sys, I.KVM_GET_MSRS, b)).toBe(5);
    expect(datas(b)).toEqual([0x1000065n, 0x400000000c000069n, 0n, 0x80000000n, 0n]);
    const bad = msrs([[0x12345678, 5n], [0x8b, 0x66n]]);
    expect(kvm.ioctl(sys, I.KVM_GET_MSRS, bad)).toBe(0);
    expect(datas(bad)).toEqual([0n, 0x66n]);
    expect(kvm.ioctl(sys, I.KVM_GET_MSRS, msrs([0xc0011029]))).toBe(0);
    expect(kvm.ioctl(sys, I.KVM_GET_MSRS, msrs([0x480]))).toBe(0);
  });
  test('KVM_GET_SUPPORTED_CPUID: E2BIG for nent 0 or too small, the count on success', () => {
    const { kvm, sys } = machine();
    const n = kvm.profile.supportedCpuid.length;
    expect(kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, encodeCpuid2([], 0, 0))).toBe(-E2BIG);
    expect(kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, encodeCpuid2([], n - 1, n - 1))).toBe(-E2BIG);
    const b = encodeCpuid2([], n + 2, n + 2);
    expect(kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, b)).toBe(0);
    expect(decodeCpuid2(b).entries).toEqual(kvm.profile.supportedCpuid);
    const short = encodeCpuid2([], 1, n);
    expect(kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, short)).toBe(-EFAULT);
  });
});

describe('VM fd', () => {
  test('KVM_CREATE_VCPU: duplicate ids EEXIST, ids past the limit EINVAL', () => {
    const { kvm, vm } = machine();
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0)).toBe(-EEXIST);
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, 1)).toBeGreaterThan(0);
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, 1 << 20)).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, -1)).toBe(-EINVAL);
  });
  test('KVM_CREATE_IRQCHIP: EINVAL once a vCPU exists, EEXIST the second time', () => {
    const { kvm, vm } = machine();
    expect(kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP)).toBe(-EINVAL);
    const kvm2 = new Kvm();
    const vm2 = kvm2.ioctl(kvm2.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    expect(kvm2.ioctl(vm2, I.KVM_CREATE_IRQCHIP)).toBe(0);
    expect(kvm2.ioctl(vm2, I.KVM_CREATE_IRQCHIP)).toBe(-EEXIST);
  });
  test('KVM_ENABLE_CAP: flags, the user-space MSR reason mask, short buffers', () => {
    const { kvm, vm } = machine();
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [7n]))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [8n]))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [1n], 1))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, new Uint8Array(103))).toBe(-EFAULT);
  });
  test('KVM_ENABLE_CAP: the caps QEMU enables on every VM are accepted as the kernel accepts them', () => {
    // Seen in QEMU 7.2 captures on kvm_amd 6.12: MANUAL_DIRTY_LOG_PROTECT2 3, EXCEPTION_PAYLOAD 1,
    // X86_TRIPLE_FAULT_EVENT 1, MAX_VCPU_ID, all answered 0.
    const kvm = new Kvm();
    const vm = kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const cap = (c: number, v: bigint) => kvm.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(c, [v]));
    expect(cap(KVM_CAP.MANUAL_DIRTY_LOG_PROTECT2, 3n)).toBe(0);
    expect(cap(KVM_CAP.MANUAL_DIRTY_LOG_PROTECT2, 1n)).toBe(0);
    expect(cap(KVM_CAP.MANUAL_DIRTY_LOG_PROTECT2, 2n)).toBe(-EINVAL); // INITIALLY_SET needs ENABLE
    expect(cap(KVM_CAP.MANUAL_DIRTY_LOG_PROTECT2, 4n)).toBe(-EINVAL);
    expect(cap(KVM_CAP.EXCEPTION_PAYLOAD, 1n)).toBe(0);
    expect(cap(KVM_CAP.X86_TRIPLE_FAULT_EVENT, 1n)).toBe(0);
    // MAX_VCPU_ID: at most KVM_MAX_VCPU_IDS, set once, and then it bounds KVM_CREATE_VCPU's id.
    const limit = BigInt(kvm.profile.extensions.vm[KVM_CAP.MAX_VCPU_ID] ?? kvm.profile.extensions.system[KVM_CAP.MAX_VCPU_ID] ?? 4096);
    expect(cap(KVM_CAP.MAX_VCPU_ID, limit + 1n)).toBe(-EINVAL);
    expect(cap(KVM_CAP.MAX_VCPU_ID, 2n)).toBe(0);
    expect(cap(KVM_CAP.MAX_VCPU_ID, 2n)).toBe(0);
    expect(cap(KVM_CAP.MAX_VCPU_ID, 4n)).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, 1)).toBeGreaterThan(0);
    expect(kvm.ioctl(vm, I.KVM_CREATE_VCPU, 2)).toBe(-EINVAL);
    expect(kvm.unmodeled).toEqual([]);
  });
  test('KVM_X86_SET_MSR_FILTER: the EINVAL and EFAULT cases of kvm_vm_ioctl_set_msr_filter', () => {
    const { kvm, vm } = machine();
    const bitmap = new Uint8Array(8).fill(0xff);
    kvm.memory.map(0x20000, bitmap);
    const range = (over: object) => ({ flags: 1, nmsrs: 64, base: 0, bitmap: 0x20000n, ...over });
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({})] }))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 2, ranges: [] }))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 1, ranges: [] }))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [] }))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({ flags: 0 })] }))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({ flags: 4 })] }))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({ nmsrs: 0x600 * 8 + 1 })] }))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({ nmsrs: 65 })] }))).toBe(-EFAULT);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({ bitmap: 0n })] }))).toBe(-EFAULT);
    // A range with nmsrs 0 is skipped whatever its other fields say.
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [range({ nmsrs: 0, flags: 99 })] }))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, new Uint8Array(391))).toBe(-EFAULT);
  });
  test('an unknown request gets kvm_arch_vm_ioctl\'s ENOTTY', () => {
    const { kvm, vm } = machine();
    expect(kvm.ioctl(vm, I.KVM_GET_MSRS, msrs([0x277]))).toBe(-ENOTTY);
    expect(kvm.ioctl(vm, 0x1234, 0)).toBe(-ENOTTY);
  });
});

describe('vCPU fd', () => {
  test('an unknown request, or one of another ioctl type, gets EINVAL', () => {
    const { kvm, vcpu } = machine();
    expect(kvm.ioctl(vcpu, I.KVM_CREATE_VCPU, 0)).toBe(-EINVAL);
    expect(kvm.ioctl(vcpu, _IOW(0x54, 0x01, 8), 0)).toBe(-EINVAL);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSR_INDEX_LIST, new Uint8Array(4))).toBe(-EINVAL);
  });
  test('KVM_SET_CPUID2 / KVM_GET_CPUID2 round trip, E2BIG and EFAULT', () => {
    const { kvm, sys, vcpu } = machine();
    const n = kvm.profile.supportedCpuid.length;
    const sup = encodeCpuid2([], n, n);
    kvm.ioctlOrThrow(sys, I.KVM_GET_SUPPORTED_CPUID, sup);
    expect(kvm.ioctl(vcpu, I.KVM_SET_CPUID2, sup)).toBe(0);
    expect(kvm.ioctl(vcpu, I.KVM_GET_CPUID2, encodeCpuid2([], 0, 0))).toBe(-E2BIG);
    const got = encodeCpuid2([], n, n);
    expect(kvm.ioctl(vcpu, I.KVM_GET_CPUID2, got)).toBe(0);
    expect(Buffer.from(got).equals(Buffer.from(sup))).toBe(true);
    expect(kvm.ioctl(vcpu, I.KVM_SET_CPUID2, encodeCpuid2([], 0, 257))).toBe(-E2BIG);
    expect(kvm.ioctl(vcpu, I.KVM_SET_CPUID2, encodeCpuid2([], 1, 2))).toBe(-EFAULT);
  });
  test('after KVM_RUN only the same CPUID may be set again', () => {
    const { kvm, vcpu } = machine();
    const c = encodeCpuid2([{ function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 }]);
    expect(kvm.ioctl(vcpu, I.KVM_SET_CPUID2, c)).toBe(0);
    kvm.markRan(vcpu);
    expect(kvm.ioctl(vcpu, I.KVM_SET_CPUID2, c)).toBe(0);
    expect(kvm.ioctl(vcpu, I.KVM_SET_CPUID2, encodeCpuid2([]))).toBe(-EINVAL);
  });
  test('ioctls kvmsr does not model answer ENOSYS and are recorded', () => {
    const kvm = new Kvm();
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    // An MSI to a logical destination would be delivered by the LAPICs' logical IDs, not modelled.
    kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
    const msi = new Uint8Array(32);
    new DataView(msi.buffer).setUint32(0, 0xfee00004, true); // address_lo: destination mode logical
    expect(kvm.ioctl(vm, I.KVM_SIGNAL_MSI, msi)).toBe(-ENOSYS);
    expect(kvm.unmodeled.map((u) => u.name)).toEqual(['KVM_SIGNAL_MSI']);
  });
  test('ioctlOrThrow carries the errno name', () => {
    const { kvm, vcpu } = machine();
    expect(() => kvm.ioctlOrThrow(vcpu, I.KVM_GET_MSRS, encodeMsrs({ nmsrs: 300, entries: [] }))).toThrow(KvmError);
    try {
      kvm.ioctlOrThrow(vcpu, I.KVM_GET_MSRS, encodeMsrs({ nmsrs: 300, entries: [] }));
    } catch (e) {
      expect((e as KvmError).code).toBe('E2BIG');
      expect((e as KvmError).errno).toBe(E2BIG);
      expect((e as Error).message).toContain('KVM_GET_MSRS');
    }
  });
});
