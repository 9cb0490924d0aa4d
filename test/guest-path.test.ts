// The guest's RDMSR/WRMSR (kvm_emulate_rdmsr/kvm_emulate_wrmsr): MSR filters (kvm_msr_allowed),
// userspace exits (kvm_msr_user_space) with the kvm_run bytes, and their completion.
import { describe, expect, test } from 'vitest';
import { encodeEnableCap, encodeMsrFilter } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN } from '../src/abi/layout.js';
import { KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR } from '../src/kvm/x86/guest-msr.js';
import { datas, getMsr, machine, msrs, setMsr, type Machine } from './helpers.js';

function filter(m: Machine, flags: number, ranges: { flags: number; base: number; bits: number[]; nmsrs: number }[]): number {
  let addr = 0x100000;
  const encoded = ranges.map((r) => {
    const bitmap = new Uint8Array(Math.ceil(r.nmsrs / 64) * 8);
    for (const b of r.bits) bitmap[b >>> 3]! |= 1 << (b & 7);
    m.kvm.memory.map(addr, bitmap);
    const out = { flags: r.flags, nmsrs: r.nmsrs, base: r.base, bitmap: BigInt(addr) };
    addr += 0x10000;
    return out;
  });
  return m.kvm.ioctl(m.vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags, ranges: encoded }));
}
const userSpaceMsr = (m: Machine, mask: number): number =>
  m.kvm.ioctl(m.vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [BigInt(mask)]));

describe('guest RDMSR/WRMSR through the same rules', () => {
  test('a handled MSR reads and writes; a refused one is #GP; an unknown one is #GP', () => {
    const m = machine();
    expect(m.kvm.wrmsr(m.vcpu, 0x277, 0x0606060606060606n)).toEqual({ kind: 'ok', value: 0x0606060606060606n });
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toEqual({ kind: 'ok', value: 0x0606060606060606n });
    expect(m.kvm.wrmsr(m.vcpu, 0x277, 2n)).toEqual({ kind: 'gp' });
    expect(m.kvm.rdmsr(m.vcpu, 0x12345678)).toEqual({ kind: 'gp' });
  });
  test('the "advertised MSRs read 0, take 0" rule is for userspace only', () => {
    const m = machine();
    expect(datas((() => { const b = msrs([0x48]); m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b); return b; })())).toEqual([0n]);
    expect(m.kvm.rdmsr(m.vcpu, 0x48)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x48, 0n)).toEqual({ kind: 'gp' });
  });
  test('host-only MSRs refuse the guest: SMI_COUNT, UCODE_REV writes retire without effect', () => {
    const m = machine();
    expect(m.kvm.wrmsr(m.vcpu, 0x34, 1n)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x8b, 5n)).toEqual({ kind: 'ok', value: 5n });
    expect(m.kvm.rdmsr(m.vcpu, 0x8b)).toEqual({ kind: 'ok', value: 0n });
    expect(m.kvm.rdmsr(m.vcpu, 0x17b)).toEqual({ kind: 'gp' }); // MCG_CTL without MCG_CTL_P
  });
  test('KVM_CAP_MSR_PLATFORM_INFO decides whether the guest may read PLATFORM_INFO', () => {
    const m = machine();
    expect(m.kvm.rdmsr(m.vcpu, 0xce)).toEqual({ kind: 'ok', value: 0x80000000n });
    m.kvm.ioctlOrThrow(m.vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.MSR_PLATFORM_INFO, [0n]));
    expect(m.kvm.rdmsr(m.vcpu, 0xce)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0xce, 0x80000000n)).toEqual({ kind: 'gp' });
  });
});

describe('KVM_X86_SET_MSR_FILTER (kvm_msr_allowed)', () => {
  test('a deny bit blocks the guest but never the host ioctls', () => {
    const m = machine();
    // Range over 0x270.. with the bit for 0x277 clear: denied for reads and writes.
    expect(filter(m, 0, [{ flags: 3, base: 0x270, nmsrs: 16, bits: [0, 1, 2] }])).toBe(0);
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x277, 0x0606060606060606n)).toEqual({ kind: 'gp' });
    const b = msrs([0x277]);
    expect(m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b)).toBe(1);
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0x277, 0x0606060606060606n]]))).toBe(1);
  });
  test('bits are little-endian within the bitmap; outside every range the default applies', () => {
    const m = machine();
    expect(filter(m, 1, [{ flags: 1, base: 0x270, nmsrs: 64, bits: [7] }])).toBe(0);
    expect(m.kvm.rdmsr(m.vcpu, 0x277).kind).toBe('ok');
    expect(m.kvm.rdmsr(m.vcpu, 0x276)).toEqual({ kind: 'gp' });
    // Default deny: an MSR outside the ranges is filtered; the range is read-only, so writes too.
    expect(m.kvm.rdmsr(m.vcpu, 0x1a0)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x277, 0n)).toEqual({ kind: 'gp' });
  });
  test('the first range that matches decides; x2APIC MSRs 0x800-0x8ff are never filtered', () => {
    const m = machine();
    expect(filter(m, 1, [
      { flags: 1, base: 0x270, nmsrs: 16, bits: [] },
      { flags: 1, base: 0x270, nmsrs: 16, bits: [7] },
    ])).toBe(0);
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toEqual({ kind: 'gp' });
    // 0x830 is filtered by nothing, even under default deny (it then fails as unknown, not filtered).
    expect(userSpaceMsr(m, KVM_MSR_EXIT_REASON_FILTER | KVM_MSR_EXIT_REASON_UNKNOWN)).toBe(0);
    const r = m.kvm.rdmsr(m.vcpu, 0x830);
    expect(r).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_UNKNOWN });
  });
  test('a new filter replaces the old one', () => {
    const m = machine();
    filter(m, 1, [{ flags: 3, base: 0, nmsrs: 64, bits: [] }]);
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toEqual({ kind: 'gp' });
    filter(m, 0, []);
    expect(m.kvm.rdmsr(m.vcpu, 0x277).kind).toBe('ok');
  });
});

describe('KVM_CAP_X86_USER_SPACE_MSR exits (kvm_msr_user_space)', () => {
  test('UNKNOWN: an unhandled RDMSR exits with the kvm_run msr fields filled byte-exactly', () => {
    const m = machine();
    expect(userSpaceMsr(m, KVM_MSR_EXIT_REASON_UNKNOWN)).toBe(0);
    const run = m.kvm.runPage(m.vcpu)!;
    run.fill(0xaa, 32, 56);
    const r = m.kvm.rdmsr(m.vcpu, 0x12345678);
    expect(r).toEqual({ kind: 'exit', exitReason: KVM_EXIT_X86_RDMSR, reason: KVM_MSR_EXIT_REASON_UNKNOWN, index: 0x12345678, data: 0n });
    expect(Buffer.from(run.subarray(8, 12)).toString('hex')).toBe('1d000000');
    // error 0, pad zeroed, reason, index, data
    expect(Buffer.from(run.subarray(32, 56)).toString('hex')).toBe('0000000000000000' + '02000000' + '78563412' + '0000000000000000');
  });
  test('completion with data gives the guest the value; with error it is #GP', () => {
    const m = machine();
    userSpaceMsr(m, KVM_MSR_EXIT_REASON_UNKNOWN);
    m.kvm.rdmsr(m.vcpu, 0x12345678);
    const run = new DataView(m.kvm.runPage(m.vcpu)!.buffer);
    run.setBigUint64(48, 0xfeedn, true);
    expect(m.kvm.completeMsrExit(m.vcpu)).toEqual({ kind: 'ok', value: 0xfeedn });
    expect(m.kvm.completeMsrExit(m.vcpu)).toBeNull();
    m.kvm.rdmsr(m.vcpu, 0x12345678);
    run.setUint8(32, 1);
    expect(m.kvm.completeMsrExit(m.vcpu)).toEqual({ kind: 'gp' });
  });
  test('INVAL: a refused WRMSR exits with its data; a reason not in the mask is a #GP', () => {
    const m = machine();
    userSpaceMsr(m, KVM_MSR_EXIT_REASON_INVAL);
    expect(m.kvm.wrmsr(m.vcpu, 0x277, 2n)).toEqual({ kind: 'exit', exitReason: KVM_EXIT_X86_WRMSR, reason: KVM_MSR_EXIT_REASON_INVAL, index: 0x277, data: 2n });
    expect(m.kvm.completeMsrExit(m.vcpu)).toEqual({ kind: 'ok', value: 2n });
    expect(m.kvm.wrmsr(m.vcpu, 0x12345678, 1n)).toEqual({ kind: 'gp' });
  });
  test('FILTER: a filtered access exits with reason FILTER', () => {
    const m = machine();
    userSpaceMsr(m, KVM_MSR_EXIT_REASON_FILTER);
    filter(m, 1, [{ flags: 3, base: 0, nmsrs: 64, bits: [] }]);
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_FILTER, index: 0x277 });
  });
  test('KVM_RUN completes a pending exit before it runs the guest', () => {
    const m = machine();
    userSpaceMsr(m, KVM_MSR_EXIT_REASON_UNKNOWN);
    m.kvm.rdmsr(m.vcpu, 0x12345678);
    m.kvm.ioctl(m.vcpu, I.KVM_RUN, 0);
    expect(m.kvm.completeMsrExit(m.vcpu)).toBeNull();
    expect(m.kvm.vcpuOf(m.vcpu)!.hasRun).toBe(true);
  });
  test('ignore_msrs turns an unknown guest access into success, so no exit', () => {
    const m = machine({ ignoreMsrs: true });
    userSpaceMsr(m, KVM_MSR_EXIT_REASON_UNKNOWN);
    expect(m.kvm.rdmsr(m.vcpu, 0x12345678)).toEqual({ kind: 'ok', value: 0n });
  });
});

describe('__kvm_valid_efer (guest WRMSR EFER)', () => {
  test('the guest needs LM for LME, NX for NX, SVM for SVME; the host only the reserved-bit check', async () => {
    const { builtinProfile } = await import('../src/profiles.js');
    const { Kvm } = await import('../src/kvm/kvm.js');
    const { encodeCpuid2 } = await import('../src/abi/codecs.js');
    const kvm = new Kvm({ profile: builtinProfile('svm-amd-derived') });
    const sys = kvm.open('/dev/kvm');
    const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    expect(kvm.wrmsr(v, 0xc0000080, 0x100n)).toEqual({ kind: 'gp' }); // LME, no CPUID yet
    expect(kvm.ioctl(v, I.KVM_SET_MSRS, msrs([[0xc0000080, 0x1100n]]))).toBe(1); // the host may
    kvm.ioctlOrThrow(v, I.KVM_SET_CPUID2, encodeCpuid2(kvm.profile.supportedCpuid));
    expect(kvm.wrmsr(v, 0xc0000080, 0x901n).kind).toBe('ok'); // SCE | LME | NX
    expect(kvm.wrmsr(v, 0xc0000080, 0x1901n).kind).toBe('ok'); // + SVME: the supported CPUID has SVM
  });
});

describe('what a live kernel\'s guest showed (test/guest-live.test.ts on kvm_amd 6.12)', () => {
  test('MISC_ENABLE: the guest may not change BTS/PEBS_UNAVAIL, and its writes to EMON are ignored', () => {
    const m = machine();
    expect(getMsr(m, 0x1a0)).toBe(0x1800n);
    expect(m.kvm.wrmsr(m.vcpu, 0x1a0, 0n).kind).toBe('gp');
    expect(m.kvm.wrmsr(m.vcpu, 0x1a0, 0x1801n).kind).toBe('ok');
    expect(m.kvm.wrmsr(m.vcpu, 0x1a0, 0x1880n).kind).toBe('ok');
    expect(getMsr(m, 0x1a0)).toBe(0x1800n);
    // The host may write anything (kvm_set_msr_common checks only the guest).
    expect(setMsr(m, 0x1a0, 0x80n)).toBe(true);
    expect(getMsr(m, 0x1a0)).toBe(0x80n);
    expect(m.kvm.wrmsr(m.vcpu, 0x1a0, 0x1880n).kind).toBe('gp');
  });

  test('before 6.18 there are no CET MSRs: the guest\'s 0x4b564dff is an unknown MSR, not an invalid access', async () => {
    const { builtinProfile } = await import('../src/profiles.js');
    const m = machine({ profile: builtinProfile('kvm-amd-6.12-qemu-tcg') });
    m.kvm.ioctl(m.vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [3n]));
    expect(m.kvm.rdmsr(m.vcpu, 0x4b564dff)).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_UNKNOWN });
    expect(m.kvm.wrmsr(m.vcpu, 0x6a2, 0n)).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_UNKNOWN });
    const now = machine({ profile: builtinProfile('svm-amd-derived') });
    now.kvm.ioctl(now.vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [3n]));
    expect(now.kvm.rdmsr(now.vcpu, 0x4b564dff)).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_INVAL });
  });
});
