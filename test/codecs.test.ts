// Codec round trips (property-based) and the _IOC encoding.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import * as C from '../src/abi/codecs.js';
import { _IOC, _IOR, _IOW, _IOWR, decodeIoc } from '../src/abi/ioc.js';
import { KVM_GET_MSRS, KVM_SET_MSRS, KVMIO, ioctlName } from '../src/abi/kvm-ioctls.js';
import { msrLabel, parseMsr } from '../src/abi/msr-names.js';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

describe('codecs', () => {
  test('kvm_msrs round-trips every field, reserved and pad included', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ index: u32, reserved: u32, data: u64 }), { maxLength: 40 }), u32, (entries, pad) => {
        const b = C.encodeMsrs({ nmsrs: entries.length, pad, entries });
        expect(b.length).toBe(8 + 16 * entries.length);
        const d = C.decodeMsrs(b);
        expect(d).toEqual({ nmsrs: entries.length, pad, entries, truncated: false });
      }),
    );
  });
  test('a kvm_msrs whose nmsrs exceeds the buffer decodes what fits and says so', () => {
    const b = C.encodeMsrs({ nmsrs: 5, entries: [{ index: 1, data: 2n }] });
    expect(C.decodeMsrs(b)).toMatchObject({ nmsrs: 5, truncated: true, entries: [{ index: 1, data: 2n }] });
  });
  test('kvm_msr_list, kvm_cpuid2, kvm_msr_filter and kvm_enable_cap round-trip', () => {
    fc.assert(
      fc.property(fc.array(u32, { maxLength: 50 }), (idx) => {
        const b = C.encodeMsrList(idx.length);
        const dv = new DataView(b.buffer);
        idx.forEach((v, i) => dv.setUint32(4 + 4 * i, v, true));
        expect(C.decodeMsrList(b)).toEqual({ nmsrs: idx.length, indices: idx, truncated: false });
      }),
    );
    const cpuidEntry = fc.record({ function: u32, index: u32, flags: u32, eax: u32, ebx: u32, ecx: u32, edx: u32 });
    fc.assert(
      fc.property(fc.array(cpuidEntry, { maxLength: 20 }), (entries) => {
        expect(C.decodeCpuid2(C.encodeCpuid2(entries))).toEqual({ nent: entries.length, entries });
      }),
    );
    const range = fc.record({ flags: u32, nmsrs: u32, base: u32, bitmap: u64 });
    fc.assert(
      fc.property(u32, fc.array(range, { minLength: 16, maxLength: 16 }), (flags, ranges) => {
        expect(C.decodeMsrFilter(C.encodeMsrFilter({ flags, ranges }))).toEqual({ flags, ranges });
      }),
    );
    fc.assert(
      fc.property(u32, u32, fc.tuple(u64, u64, u64, u64), (cap, flags, args) => {
        expect(C.decodeEnableCap(C.encodeEnableCap(cap, args, flags))).toEqual({ cap, flags, args });
      }),
    );
  });
  test('decoders refuse buffers shorter than the struct header', () => {
    expect(() => C.decodeMsrs(new Uint8Array(7))).toThrow(RangeError);
    expect(() => C.decodeMsrList(new Uint8Array(3))).toThrow(RangeError);
    expect(() => C.decodeMsrFilter(new Uint8Array(391))).toThrow(RangeError);
  });
});

describe('_IOC', () => {
  test('encodes and decodes direction, type, number and size', () => {
    expect(KVM_GET_MSRS).toBe(0xc008ae88);
    expect(KVM_SET_MSRS).toBe(0x4008ae89);
    expect(decodeIoc(KVM_GET_MSRS)).toEqual({ dir: 3, type: KVMIO, nr: 0x88, size: 8 });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0x3fff }), (dir, type, nr, size) => {
        expect(decodeIoc(_IOC(dir, type, nr, size))).toEqual({ dir, type, nr, size });
      }),
    );
    expect(_IOR(1, 2, 3)).toBe(_IOC(2, 1, 2, 3));
    expect(_IOW(1, 2, 3)).toBe(_IOC(1, 1, 2, 3));
    expect(_IOWR(1, 2, 3)).toBe(_IOC(3, 1, 2, 3));
    expect(ioctlName(KVM_GET_MSRS)).toBe('KVM_GET_MSRS');
    expect(ioctlName(0x1234)).toBe('0x1234');
  });
  test('MSR names parse both ways', () => {
    expect(parseMsr('IA32_TSC')).toBe(0x10);
    expect(parseMsr('msr_ia32_tsc')).toBe(0x10);
    expect(parseMsr('0xc0000080')).toBe(0xc0000080);
    expect(parseMsr('0x100000000')).toBeUndefined();
    expect(parseMsr('nope')).toBeUndefined();
    expect(msrLabel(0x174)).toBe('0x174 IA32_SYSENTER_CS');
  });
});
