// msr_io, __msr_io and the list ioctls as arch/x86/kvm/x86.c has them: errno paths, the count
// returned, and what KVM_GET_MSRS copies back for processed, failing and unprocessed entries.
import { describe, expect, test } from 'vitest';
import { decodeMsrList, encodeMsrList, encodeMsrs } from '../src/abi/codecs.js';
import { E2BIG, EFAULT } from '../src/abi/errno.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { datas, hexdump, machine, msrs, sourceProfile } from './helpers.js';

const PAT = 0x277;
const UNKNOWN = 0x12345678;

describe('msr_io', () => {
  test('E2BIG when nmsrs >= MAX_IO_MSRS (256), before the entries are read', () => {
    const { kvm, vcpu } = machine();
    for (const n of [256, 257, 0xffffffff]) {
      const b = new Uint8Array(8); // no room for entries: E2BIG comes first
      new DataView(b.buffer).setUint32(0, n, true);
      expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b), `nmsrs ${n}`).toBe(-E2BIG);
      expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, b), `nmsrs ${n}`).toBe(-E2BIG);
    }
  });

  test('nmsrs 255 is processed in full', () => {
    const { kvm, vcpu } = machine();
    const b = msrs(Array.from({ length: 255 }, () => PAT));
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b)).toBe(255);
    expect(datas(b).every((d) => d === 0x0007040600070406n)).toBe(true);
  });

  test('EFAULT when the header or the entries are not all mapped; nothing is processed', () => {
    const { kvm, vcpu } = machine();
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, new Uint8Array(7))).toBe(-EFAULT);
    const b = msrs([PAT, PAT]);
    const short = b.subarray(0, b.length - 1);
    const before = hexdump(short);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, short)).toBe(-EFAULT);
    expect(hexdump(short)).toBe(before);
    // SET: a short entry array changes no state.
    const set = msrs([[PAT, 0x0606060606060606n], [PAT, 0n]]).subarray(0, 8 + 16 + 8);
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, set)).toBe(-EFAULT);
    const r = msrs([PAT]);
    kvm.ioctl(vcpu, I.KVM_GET_MSRS, r);
    expect(datas(r)[0]).toBe(0x0007040600070406n);
    // A NULL or unmapped address faults too.
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, 0)).toBe(-EFAULT);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, 0x1000)).toBe(-EFAULT);
  });

  test('nmsrs 0 returns 0 and writes nothing', () => {
    const { kvm, vcpu } = machine();
    const b = new Uint8Array(8);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b)).toBe(0);
    expect(hexdump(b)).toBe('0000000000000000');
  });

  test.each([
    ['start', [UNKNOWN, PAT, PAT], 0],
    ['middle', [PAT, UNKNOWN, PAT], 1],
    ['end', [PAT, PAT, UNKNOWN], 2],
  ])('an unknown index at the %s stops the loop there', (_where, indices, stop) => {
    const { kvm, vcpu } = machine();
    const b = msrs(indices.map((i) => [i, 0x1111111111111111n] as [number, bigint]));
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b)).toBe(stop);
    const d = datas(b);
    for (let i = 0; i < 3; i++) {
      // Processed entries get the value, the failing one is zeroed, later ones are copied back as given.
      const want = i < stop ? 0x0007040600070406n : i === stop ? 0n : 0x1111111111111111n;
      expect(d[i], `entry ${i}`).toBe(want);
    }
    const s = msrs(indices.map((i) => [i, 0n] as [number, bigint]));
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, s)).toBe(stop);
  });

  test.each([1, 2, 3])('a struct at byte offset %i (not 4-aligned) gives the bytes and counts of an aligned one', (shift) => {
    // kvmsr copies an unaligned struct's entries in and (for reads) back out; an aligned one is
    // used in place. Both must leave the caller the same bytes, a failing entry included.
    const indices: [number, bigint][] = [[PAT, 0x0606060606060606n], [0x174, 0x2222n], [UNKNOWN, 0x3333n], [PAT, 0x4444n]];
    const aligned = machine();
    const shifted = machine();
    for (const req of [I.KVM_GET_MSRS, I.KVM_SET_MSRS]) {
      const a = msrs(indices);
      const backing = new Uint8Array(a.length + 8).fill(0xee);
      const u = backing.subarray(shift, shift + a.length);
      u.set(a);
      expect(shifted.kvm.ioctl(shifted.vcpu, req, u)).toBe(aligned.kvm.ioctl(aligned.vcpu, req, a));
      expect(hexdump(u)).toBe(hexdump(a));
      // Nothing outside the struct is written.
      expect(hexdump(backing.subarray(0, shift))).toBe('ee'.repeat(shift));
      expect(hexdump(backing.subarray(shift + a.length))).toBe('ee'.repeat(8 - shift));
    }
    // What SET stored reads back the same through both.
    const a = msrs([PAT]);
    const u = new Uint8Array(a.length + 1).subarray(1);
    u.set(a);
    aligned.kvm.ioctl(aligned.vcpu, I.KVM_GET_MSRS, a);
    shifted.kvm.ioctl(shifted.vcpu, I.KVM_GET_MSRS, u);
    expect(hexdump(u)).toBe(hexdump(a));
  });

  test('reserved and pad fields are copied back untouched', () => {
    const { kvm, vcpu } = machine();
    const b = encodeMsrs({ nmsrs: 2, pad: 0xdeadbeef, entries: [{ index: PAT, reserved: 0xabcd, data: 0n }, { index: UNKNOWN, reserved: 7, data: 5n }] });
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b)).toBe(1);
    const dv = new DataView(b.buffer);
    expect(dv.getUint32(4, true)).toBe(0xdeadbeef);
    expect(dv.getUint32(12, true)).toBe(0xabcd);
    expect(dv.getUint32(28, true)).toBe(7);
  });

  test('KVM_SET_MSRS copies nothing back', () => {
    const { kvm, vcpu } = machine();
    const b = msrs([[PAT, 0x0606060606060606n], [UNKNOWN, 9n]]);
    const before = hexdump(b);
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, b)).toBe(1);
    expect(hexdump(b)).toBe(before);
  });

  test('write-back of every value read: without an irqchip it stops at KVM_ASYNC_PF_INT', () => {
    // kvm_pv_enable_async_pf_int refuses any write, even 0, without an in-kernel LAPIC.
    const { kvm, sys, vcpu } = machine();
    const list = encodeMsrList(64);
    kvm.ioctlOrThrow(sys, I.KVM_GET_MSR_INDEX_LIST, list);
    const indices = decodeMsrList(list).indices.filter((i) => i !== 0x10);
    const b = msrs(indices);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b)).toBe(indices.length);
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, b)).toBe(indices.indexOf(0x4b564d06));
  });

  test('write-back of every value read succeeds with an irqchip and reads back the same', () => {
    const kvm = new Kvm({ profile: sourceProfile() });
    const sys = kvm.open('/dev/kvm');
    const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
    kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
    const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const list = encodeMsrList(64);
    kvm.ioctlOrThrow(sys, I.KVM_GET_MSR_INDEX_LIST, list);
    const indices = decodeMsrList(list).indices.filter((i) => i !== 0x10);
    const b = msrs(indices);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, b)).toBe(indices.length);
    expect(kvm.ioctl(vcpu, I.KVM_SET_MSRS, b)).toBe(indices.length);
    const again = msrs(indices);
    kvm.ioctl(vcpu, I.KVM_GET_MSRS, again);
    expect(hexdump(again)).toBe(hexdump(b));
  });

  test('a pointer argument resolves through the emulated user memory', () => {
    const { kvm, vcpu } = machine();
    const b = msrs([PAT]);
    kvm.memory.map(0x10000, b);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, 0x10000)).toBe(1);
    expect(datas(b)[0]).toBe(0x0007040600070406n);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, 0x10000n)).toBe(1);
    // nmsrs larger than the mapping holds: EFAULT.
    new DataView(b.buffer).setUint32(0, 2, true);
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, 0x10000)).toBe(-EFAULT);
  });
});

describe('KVM_GET_MSR_INDEX_LIST and KVM_GET_MSR_FEATURE_INDEX_LIST', () => {
  const lists = [
    ['KVM_GET_MSR_INDEX_LIST', I.KVM_GET_MSR_INDEX_LIST],
    ['KVM_GET_MSR_FEATURE_INDEX_LIST', I.KVM_GET_MSR_FEATURE_INDEX_LIST],
  ] as const;
  test.each(lists)('%s: nmsrs 0 and too small give E2BIG with the count written back', (_n, req) => {
    const { kvm, sys } = machine();
    const b0 = encodeMsrList(0);
    expect(kvm.ioctl(sys, req, b0)).toBe(-E2BIG);
    const count = decodeMsrList(b0).nmsrs;
    expect(count).toBeGreaterThan(0);
    const small = encodeMsrList(count, count - 1);
    expect(kvm.ioctl(sys, req, small)).toBe(-E2BIG);
    expect(decodeMsrList(small).nmsrs).toBe(count);
    expect(hexdump(small.subarray(4))).toBe('00'.repeat(count * 4));
  });
  test.each(lists)('%s: exact and larger succeed; bytes past the list are untouched', (_n, req) => {
    const { kvm, sys } = machine();
    const b0 = encodeMsrList(0);
    kvm.ioctl(sys, req, b0);
    const count = decodeMsrList(b0).nmsrs;
    const exact = encodeMsrList(count);
    expect(kvm.ioctl(sys, req, exact)).toBe(0);
    const big = encodeMsrList(count + 3);
    big.fill(0xee, 4);
    expect(kvm.ioctl(sys, req, big)).toBe(0);
    expect(decodeMsrList(big).nmsrs).toBe(count);
    expect(hexdump(big.subarray(4, 4 + count * 4))).toBe(hexdump(exact.subarray(4)));
    expect(hexdump(big.subarray(4 + count * 4))).toBe('ee'.repeat(12));
  });
  test.each(lists)('%s: EFAULT when nmsrs claims more room than is mapped, after a partial copy', (_n, req) => {
    const { kvm, sys } = machine();
    expect(kvm.ioctl(sys, req, new Uint8Array(3))).toBe(-EFAULT);
    const b = new Uint8Array(4 + 4);
    new DataView(b.buffer).setUint32(0, 1000, true);
    expect(kvm.ioctl(sys, req, b)).toBe(-EFAULT);
    expect(decodeMsrList(b).nmsrs).toBeGreaterThan(1);
    expect(hexdump(b.subarray(4))).not.toBe('00000000');
  });
});
