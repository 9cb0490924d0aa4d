// The kvm_amd vendor model (src/svm/svm-ops.ts) with the derived AMD EPYC profile: each test is
// named after the kernel rule it pins (../shared/reference/vendor-msr-spec.md §4, §6.4, §8.2,
// Appendix A). No kvm_amd host was available, so these are rules read from the source, not
// measurements.
import { expectFastPathEqualsFullPath } from './fast-path-check.js';
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap, encodeMsrList, decodeMsrList, type CpuidEntry2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { Kvm, type KvmOptions } from '../src/kvm/kvm.js';
import { slotOf } from '../src/kvm/x86/msr-slots.js';
import { parseProfile, type HostProfile } from '../src/kvm/profile.js';
import { svmOps } from '../src/svm/svm-ops.js';
import svmJson from '../src/profiles/svm-amd-derived.json' with { type: 'json' };
import { datas, getFeatureMsr, getMsr, machine, msrs, setMsr, type Machine } from './helpers.js';

const ONES = 0xffffffffffffffffn;
const PROFILE = parseProfile(svmJson, 'svm-amd-derived.json');

/** The SVM profile with some module parameters changed. */
function profileWith(params: Record<string, string>): HostProfile {
  const j = JSON.parse(JSON.stringify(svmJson)) as { host: { moduleParams: Record<string, string> } };
  Object.assign(j.host.moduleParams, params);
  return parseProfile(j, 'svm-amd-derived.json (modified)');
}
const svm = (opts: KvmOptions = {}): Machine => machine({ profile: PROFILE, vendor: svmOps, ...opts });
const pvm = (): Machine => machine();

const get = getMsr;
const set = setMsr;
const sysGet = getFeatureMsr;
const guestRd = (m: Machine, index: number) => m.kvm.rdmsr(m.vcpu, index);
const guestWr = (m: Machine, index: number, v: bigint) => m.kvm.wrmsr(m.vcpu, index, v);

/** KVM_SET_CPUID2 with the profile's supported CPUID, patched by `edit`. */
function setCpuid(m: Machine, edit: (e: CpuidEntry2[]) => CpuidEntry2[] = (e) => e): void {
  const entries = edit(m.kvm.profile.supportedCpuid.map((e) => ({ ...e })));
  m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_CPUID2, encodeCpuid2(entries));
}
const leaf = (e: CpuidEntry2[], fn: number, index = 0): CpuidEntry2 => e.find((x) => x.function === fn && x.index === index)!;
const GENUINE_INTEL = { ebx: 0x756e6547, edx: 0x49656e69, ecx: 0x6c65746e };
const intelVendor = (e: CpuidEntry2[]): CpuidEntry2[] => {
  Object.assign(leaf(e, 0), GENUINE_INTEL);
  return e;
};
const withoutLeaf = (fn: number) => (e: CpuidEntry2[]): CpuidEntry2[] => e.filter((x) => x.function !== fn);
const withBit = (fn: number, reg: 'eax' | 'ebx' | 'ecx' | 'edx', bit: number, on: boolean, index = 0) => (e: CpuidEntry2[]): CpuidEntry2[] => {
  const l = leaf(e, fn, index);
  l[reg] = on ? (l[reg] | (1 << bit)) >>> 0 : (l[reg] & ~(1 << bit)) >>> 0;
  return e;
};

describe('the derived kvm_amd profile', () => {
  test('parseProfile accepts it: kvm_amd, derived, enable_pmu=Y, nested=1, lbrv=1, ignore_msrs=N', () => {
    expect(PROFILE.source).toBe('derived');
    expect(PROFILE.host.vendorModule).toBe('kvm_amd');
    expect(PROFILE.host.moduleParams).toMatchObject({ 'kvm.ignore_msrs': 'N', 'kvm_amd.nested': '1', 'kvm.enable_pmu': 'Y', 'kvm_amd.lbrv': '1' });
    expect(PROFILE.notes).toMatch(/Derived/);
  });
  test('kvm_init_msr_lists: msrs_to_save_base, then the AMD PMU, then emulated MSRs svm_has_emulated_msr keeps', () => {
    const l = PROFILE.msrIndexList;
    expect(new Set(l).size).toBe(l.length);
    expect(l.slice(0, 8)).toEqual([0x174, 0x175, 0x176, 0xc0000081, 0xc0000083, 0xc0000102, 0xc0000084, 0xc0000082]);
    // Order of the three parts.
    expect(l.indexOf(0x1de)).toBeLessThan(l.indexOf(0xc0010000));
    expect(l.indexOf(0xc0000303)).toBeLessThan(l.indexOf(0x12));
    expect(l[l.length - 1]).toBe(0x4b564d05);
    // svm_has_emulated_msr: no MCG_EXT_CTL or VMX MSRs; VIRT_SPEC_CTRL, TSC_RATIO and SMBASE kept.
    expect(l).not.toContain(0x4d0);
    for (let i = 0x480; i <= 0x491; i++) expect(l).not.toContain(i);
    for (const i of [0xc001011f, 0xc0000104, 0x9e]) expect(l).toContain(i);
    // Probing on AMD: no FEAT_CTL, BNDCFGS, TSX_CTRL, UMWAIT, XFD, RTIT, Intel PMU.
    for (const i of [0x3a, 0xd90, 0x122, 0xe1, 0x1c4, 0x1c5, 0x570, 0xc1, 0x186, 0x309, 0x38f]) expect(l).not.toContain(i);
  });
  test('kvm_probe_feature_msr: no VMX MSRs, then DE_CFG, UCODE_REV, ARCH_CAPABILITIES, PERF_CAPABILITIES=0, PLATFORM_INFO', () => {
    expect(PROFILE.featureMsrs.map((f) => f.index)).toEqual([0xc0011029, 0x8b, 0x10a, 0x345, 0xce]);
    expect(PROFILE.featureMsrs.find((f) => f.index === 0xc0011029)!.value).toBe(2n);
    expect(PROFILE.featureMsrs.find((f) => f.index === 0x345)!.value).toBe(0n);
  });
  test('the list ioctls return the profile lists', () => {
    const m = svm();
    const b = encodeMsrList(200);
    expect(m.kvm.ioctl(m.sys, I.KVM_GET_MSR_INDEX_LIST, b)).toBe(0);
    expect(decodeMsrList(b).indices).toEqual(PROFILE.msrIndexList);
    const f = encodeMsrList(20);
    expect(m.kvm.ioctl(m.sys, I.KVM_GET_MSR_FEATURE_INDEX_LIST, f)).toBe(0);
    expect(decodeMsrList(f).indices).toEqual([0xc0011029, 0x8b, 0x10a, 0x345, 0xce]);
  });
  // SMBASE is common code (kvm_get_msr_common) that x86.ts does not model yet; see below.
  const COMMON_GAPS = new Set([0x9e]);
  test('every fresh-vCPU value in the profile is what kvmsr reads (IA32_TSC by rule)', () => {
    const m = svm();
    for (const { index, value } of PROFILE.vcpuReset) {
      if (index === 0x10) {
        expect(get(m, index)).not.toBeNull();
        continue;
      }
      if (COMMON_GAPS.has(index)) continue;
      expect(get(m, index), `0x${index.toString(16)}`).toBe(value);
    }
  });
  test('kvm_get_msr_common: SMBASE reads 0x30000 on a fresh vCPU', () => {
    expect(get(svm(), 0x9e)).toBe(0x30000n);
  });
});

describe('svm_get_msr / svm_set_msr (§4.1)', () => {
  test('svm_set_msr: VM_HSAVE_PA clears bits 11:0', () => {
    const m = svm();
    expect(set(m, 0xc0010117, ONES)).toBe(true);
    expect(get(m, 0xc0010117)).toBe(0xfffffffffffff000n);
    expect(set(m, 0xc0010117, 0x12345fffn)).toBe(true);
    expect(get(m, 0xc0010117)).toBe(0x12345000n);
  });
  test('svm_set_msr: VM_HSAVE_PA from the guest needs page_address_valid (aligned, below MAXPHYADDR)', () => {
    const m = svm();
    expect(guestWr(m, 0xc0010117, 0x1001n).kind).toBe('gp');
    expect(guestWr(m, 0xc0010117, 1n << 36n).kind).toBe('gp'); // MAXPHYADDR 36 without CPUID
    expect(guestWr(m, 0xc0010117, 0xfffff000n).kind).toBe('ok');
    expect(guestRd(m, 0xc0010117)).toEqual({ kind: 'ok', value: 0xfffff000n });
    setCpuid(m); // 0x80000008 says 52 bits
    expect(guestWr(m, 0xc0010117, 1n << 36n).kind).toBe('ok');
    expect(guestWr(m, 0xc0010117, 1n << 52n).kind).toBe('gp');
  });
  test('svm_set_vm_cr: any bit outside 4:0 fails', () => {
    const m = svm();
    expect(get(m, 0xc0010114)).toBe(0n);
    expect(set(m, 0xc0010114, 0x20n)).toBe(false);
    expect(set(m, 0xc0010114, 1n << 32n)).toBe(false);
    expect(set(m, 0xc0010114, 0x0fn)).toBe(true);
    expect(get(m, 0xc0010114)).toBe(0x0fn);
  });
  test('svm_set_vm_cr: with SVMDIS set, LOCK and SVMDIS no longer change', () => {
    const m = svm();
    expect(set(m, 0xc0010114, 0x10n)).toBe(true);
    expect(set(m, 0xc0010114, 0x0fn)).toBe(true); // bit 4 stays, bit 3 cannot be set, bits 2:0 change
    expect(get(m, 0xc0010114)).toBe(0x17n);
  });
  test('svm_set_vm_cr: SVMDIS while EFER.SVME is set fails, but the new value is kept', () => {
    const m = svm();
    expect(set(m, 0xc0000080, 0x1000n)).toBe(true);
    expect(set(m, 0xc0010114, 0x11n)).toBe(false);
    expect(get(m, 0xc0010114)).toBe(0x11n);
  });
  test('svm_get_msr has no VM_IGNNE case (read fails, not advertised); svm_set_msr accepts any value', () => {
    const m = svm();
    expect(get(m, 0xc0010115)).toBeNull();
    expect(set(m, 0xc0010115, ONES)).toBe(true);
    expect(guestWr(m, 0xc0010115, 5n).kind).toBe('ok');
  });
  test('svm_set_msr: VIRT_SPEC_CTRL takes only SSBD (bit 2); the guest needs VIRT_SSBD', () => {
    const m = svm();
    expect(set(m, 0xc001011f, 4n)).toBe(true);
    expect(get(m, 0xc001011f)).toBe(4n);
    expect(set(m, 0xc001011f, 1n)).toBe(false);
    expect(set(m, 0xc001011f, ONES)).toBe(false);
    expect(guestRd(m, 0xc001011f).kind).toBe('gp');
    expect(guestWr(m, 0xc001011f, 0n).kind).toBe('gp');
    setCpuid(m);
    expect(guestRd(m, 0xc001011f)).toEqual({ kind: 'ok', value: 4n });
    expect(guestWr(m, 0xc001011f, 0n).kind).toBe('ok');
  });
  test('svm_set_msr: TSC_RATIO without the TSCRATEMSR cap accepts only 0 (ignored) and the current ratio', () => {
    const m = svm();
    expect(get(m, 0xc0000104)).toBe(0x100000000n);
    expect(set(m, 0xc0000104, 0n)).toBe(true);
    expect(get(m, 0xc0000104)).toBe(0x100000000n);
    expect(set(m, 0xc0000104, 0x100000000n)).toBe(true);
    expect(set(m, 0xc0000104, 0x200000000n)).toBe(false);
    expect(set(m, 0xc0000104, ONES)).toBe(false);
    expect(guestRd(m, 0xc0000104).kind).toBe('gp');
    expect(guestWr(m, 0xc0000104, 0x100000000n).kind).toBe('gp');
  });
  test('svm_set_msr: TSC_RATIO with the TSCRATEMSR cap stores values, bits 63:40 reserved', () => {
    const m = svm();
    setCpuid(m);
    expect(set(m, 0xc0000104, 0x280000000n)).toBe(true);
    expect(get(m, 0xc0000104)).toBe(0x280000000n);
    expect(set(m, 0xc0000104, 0xffffffffffn)).toBe(true);
    expect(set(m, 0xc0000104, 0x10000000000n)).toBe(false);
    expect(guestRd(m, 0xc0000104)).toEqual({ kind: 'ok', value: 0xffffffffffn });
    // A guest CPUID without TSCRATEMSR closes the path again.
    const n = svm();
    setCpuid(n, withBit(0x8000000a, 'edx', 4, false));
    expect(set(n, 0xc0000104, 0x280000000n)).toBe(false);
  });
  test('svm_set_msr: DE_CFG takes the bits svm_get_feature_msr reports (LFENCE serializing, bit 1)', () => {
    const m = svm();
    expect(get(m, 0xc0011029)).toBe(0n);
    expect(set(m, 0xc0011029, 2n)).toBe(true);
    expect(get(m, 0xc0011029)).toBe(2n);
    expect(set(m, 0xc0011029, 1n)).toBe(false);
    expect(set(m, 0xc0011029, 0n)).toBe(true);
    // No CPUID gate: the guest reads it too.
    expect(guestRd(m, 0xc0011029)).toEqual({ kind: 'ok', value: 0n });
  });
  test('svm_get_feature_msr: DE_CFG on /dev/kvm reads 0x2; VMX MSRs are refused', () => {
    const m = svm();
    expect(sysGet(m, 0xc0011029)).toBe(2n);
    expect(sysGet(m, 0x480)).toBeNull();
    expect(svmOps.getFeatureMsr(m.kvm.x86, 0xc0011029, { lo: 0, hi: 0 })).toBe(0);
    expect(svmOps.getFeatureMsr(m.kvm.x86, 0x480, { lo: 0, hi: 0 })).toBe(2);
  });
  test('LS_CFG has no case in svm.c or common code: GET and SET fail', () => {
    const m = svm();
    expect(get(m, 0xc0011020)).toBeNull();
    expect(set(m, 0xc0011020, 0n)).toBe(false);
  });
  test('svm_get_msr: F15H_IC_CFG falls to common code without CPUID leaf 1, then reads 0x1e only on family 15h models 2-1fh', () => {
    const m = svm();
    expect(get(m, 0xc0011021)).toBeNull();
    setCpuid(m, withoutLeaf(1));
    expect(get(m, 0xc0011021)).toBeNull();
    setCpuid(m); // family 0x19
    expect(get(m, 0xc0011021)).toBe(0n);
    setCpuid(m, (e) => {
      leaf(e, 1).eax = 0x00600f20; // family 0x15 model 0x02
      return e;
    });
    expect(get(m, 0xc0011021)).toBe(0x1en);
    expect(set(m, 0xc0011021, 0n)).toBe(false); // no SET case anywhere
    setCpuid(m, (e) => {
      leaf(e, 1).eax = 0x00620f00; // family 0x15 model 0x20
      return e;
    });
    expect(get(m, 0xc0011021)).toBe(0n);
  });
  test('svm_set_msr: SYSENTER_CS keeps all 64 bits (a 64-bit VMCB field)', () => {
    const m = svm();
    expect(set(m, 0x174, ONES)).toBe(true);
    expect(get(m, 0x174)).toBe(ONES);
  });
  test('svm_get_msr/svm_set_msr: SYSENTER_EIP/ESP upper halves live in the shadow while the vCPU is Intel compatible', () => {
    const m = svm();
    expect(set(m, 0x176, 0xffff8000deadbeefn)).toBe(true);
    expect(set(m, 0x175, ONES)).toBe(true);
    expect(get(m, 0x176)).toBe(0xffff8000deadbeefn);
    expect(get(m, 0x175)).toBe(ONES);
    // After KVM_SET_CPUID2 with AuthenticAMD the shadow is hidden, not cleared...
    setCpuid(m);
    expect(get(m, 0x176)).toBe(0xdeadbeefn);
    expect(get(m, 0x175)).toBe(0xffffffffn);
    // ...so an Intel vendor string shows it again.
    setCpuid(m, intelVendor);
    expect(get(m, 0x176)).toBe(0xffff8000deadbeefn);
    // A write while AMD compatible stores 0 in the shadow.
    setCpuid(m);
    expect(set(m, 0x176, 0xffff800012345678n)).toBe(true);
    expect(get(m, 0x176)).toBe(0x12345678n);
    setCpuid(m, intelVendor);
    expect(get(m, 0x176)).toBe(0x12345678n);
  });
  test('__kvm_set_msr: SYSENTER_EIP is made canonical (57 bits on this LA57 host) before svm_set_msr', () => {
    const m = svm();
    // __canonical_address sign-extends from bit 56.
    expect(set(m, 0x176, 0x0100000000000000n)).toBe(true);
    expect(get(m, 0x176)).toBe(0xff00000000000000n);
    expect(set(m, 0x176, 0x0080000000000000n)).toBe(true);
    expect(get(m, 0x176)).toBe(0x0080000000000000n);
    expect(set(m, 0x176, 0x0000800000000000n)).toBe(true);
    expect(get(m, 0x176)).toBe(0x0000800000000000n); // 48-bit hosts would read 0xffff800000000000
  });
  test('svm_set_msr: STAR and SYSCALL_MASK take any 64-bit value; LSTAR/CSTAR/FS/GS/KERNEL_GS_BASE must be canonical', () => {
    const m = svm();
    for (const i of [0xc0000081, 0xc0000084]) {
      expect(set(m, i, ONES)).toBe(true);
      expect(get(m, i)).toBe(ONES);
      expect(set(m, i, 0x0123456789abcdefn)).toBe(true);
      expect(get(m, i)).toBe(0x0123456789abcdefn);
    }
    for (const i of [0xc0000082, 0xc0000083, 0xc0000100, 0xc0000101, 0xc0000102]) {
      expect(set(m, i, 0x0100000000000000n), `0x${i.toString(16)}`).toBe(false);
      expect(set(m, i, 0x00ff800000000000n)).toBe(true); // canonical with 57-bit addresses
      expect(get(m, i)).toBe(0x00ff800000000000n);
      expect(set(m, i, 0xff00000000001000n)).toBe(true);
      expect(get(m, i)).toBe(0xff00000000001000n);
    }
  });
  test('svm_set_msr: TSC_AUX after __kvm_set_msr: high bits fail while Intel compatible, are truncated after SET_CPUID2 (AuthenticAMD)', () => {
    const m = svm();
    expect(set(m, 0xc0000103, 0xffffffffn)).toBe(true);
    expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(false);
    expect(get(m, 0xc0000103)).toBe(0xffffffffn);
    setCpuid(m);
    expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(true);
    expect(get(m, 0xc0000103)).toBe(0xffffffffn);
    expect(guestRd(m, 0xc0000103)).toEqual({ kind: 'ok', value: 0xffffffffn });
  });
  test('svm_set_msr: SPEC_CTRL takes what the host accepts (IBRS, STIBP, SSBD, PSFD); the guest needs guest_has_spec_ctrl_msr', () => {
    const m = svm();
    expect(set(m, 0x48, 0x87n)).toBe(true);
    expect(get(m, 0x48)).toBe(0x87n);
    expect(set(m, 0x48, 0x8n)).toBe(false);
    expect(set(m, 0x48, 1n << 32n)).toBe(false);
    expect(guestRd(m, 0x48).kind).toBe('gp');
    setCpuid(m, (e) => withBit(7, 'edx', 26, false)(withBit(0x80000008, 'ebx', 14, false)(e)));
    expect(guestRd(m, 0x48)).toEqual({ kind: 'ok', value: 0x87n }); // AMD_STIBP / AMD_SSBD still count
    setCpuid(m, (e) => {
      leaf(e, 0x80000008).ebx = 0;
      leaf(e, 7).edx = 0;
      return e;
    });
    expect(guestRd(m, 0x48).kind).toBe('gp');
  });
  test('svm_set_msr: DEBUGCTL with lbrv=1 keeps LBR, drops BTF, and (6.18) refuses bits 5:2 and the rest', () => {
    const m = svm();
    expect(set(m, 0x1d9, 3n)).toBe(true);
    expect(get(m, 0x1d9)).toBe(1n);
    expect(set(m, 0x1d9, 2n)).toBe(true);
    expect(get(m, 0x1d9)).toBe(0n);
    for (const b of [2n, 3n, 4n, 5n, 6n, 11n, 32n]) expect(set(m, 0x1d9, 1n << b), `bit ${b}`).toBe(false);
  });
  test('svm_set_msr: DEBUGCTL with lbrv=0 ignores any value and reads 0', () => {
    const m = svm({ profile: profileWith({ 'kvm_amd.lbrv': '0' }) });
    expect(set(m, 0x1d9, ONES)).toBe(true);
    expect(get(m, 0x1d9)).toBe(0n);
  });
  test('svm_set_msr: LASTBRANCH/LASTINT 0x1db-0x1de are stored for the host, #GP for the guest, UNSUPPORTED with lbrv=0', () => {
    const m = svm();
    for (const i of [0x1db, 0x1dc, 0x1dd, 0x1de]) {
      expect(set(m, i, 0x1234n + BigInt(i))).toBe(true);
      expect(get(m, i)).toBe(0x1234n + BigInt(i));
      expect(guestWr(m, i, 1n).kind).toBe('gp');
      expect(guestRd(m, i)).toEqual({ kind: 'ok', value: 0x1234n + BigInt(i) });
    }
    const n = svm({ profile: profileWith({ 'kvm_amd.lbrv': '0' }) });
    expect(set(n, 0x1db, 0n)).toBe(true); // advertised: 0 passes kvm_do_msr_access
    expect(set(n, 0x1db, 1n)).toBe(false);
    expect(get(n, 0x1db)).toBe(0n);
  });
  test('set_efer + svm_hardware_setup: SCE, LME, NX, SVME (nested), FFXSR, AUTOIBRS; no LMSLE in 6.18', () => {
    const m = svm();
    const ok = 0x1n | 0x100n | 0x800n | 0x1000n | 0x4000n | 0x200000n;
    expect(set(m, 0xc0000080, ok)).toBe(true);
    expect(get(m, 0xc0000080)).toBe(ok);
    expect(set(m, 0xc0000080, 0x2000n)).toBe(false); // LMSLE: 6.12 allowed it with nested
    expect(set(m, 0xc0000080, 0x2n)).toBe(false);
    const n = svm({ profile: profileWith({ 'kvm_amd.nested': '0' }) });
    expect(set(n, 0xc0000080, 0x1000n)).toBe(false);
  });
  test('__svm_vcpu_reset: UCODE_REV is stuffed to 0x01000065; the host may write it', () => {
    const m = svm();
    expect(get(m, 0x8b)).toBe(0x01000065n);
    expect(set(m, 0x8b, 0x0a101148n << 32n)).toBe(true);
    expect(get(m, 0x8b)).toBe(0x0a101148n << 32n);
  });
  test('svm_has_emulated_msr and probing: FEAT_CTL, MCG_EXT_CTL, BNDCFGS, TSX_CTRL, 0x480 fail on a plain vCPU', () => {
    const m = svm();
    for (const i of [0x3a, 0x4d0, 0xd90, 0x122, 0x480, 0x491]) {
      expect(get(m, i), `0x${i.toString(16)}`).toBeNull();
      expect(set(m, i, 0n)).toBe(false);
    }
    setCpuid(m);
    expect(get(m, 0x480)).toBeNull();
  });
});

describe('the AMD vPMU (§6.4, amd_pmu_refresh and friends)', () => {
  test('amd_pmu_refresh needs no CPUID: K7 event selects silently drop reserved bits', () => {
    const m = svm();
    for (let i = 0; i < 4; i++) {
      expect(set(m, 0xc0010000 + i, ONES)).toBe(true);
      expect(get(m, 0xc0010000 + i)).toBe(0x0000000fffd7ffffn);
    }
    expect(guestWr(m, 0xc0010001, 0x12345678n).kind).toBe('ok');
    expect(guestRd(m, 0xc0010001)).toEqual({ kind: 'ok', value: 0x12145678n });
  });
  test('pmc_write_counter: K7 counters are masked to 48 bits', () => {
    const m = svm();
    for (let i = 0; i < 4; i++) {
      expect(set(m, 0xc0010004 + i, ONES)).toBe(true);
      expect(get(m, 0xc0010004 + i)).toBe(0xffffffffffffn);
    }
  });
  test('amd_is_valid_msr: F15H_PERF_CTL/CTR without PERFCTR_CORE are not the PMU\'s: advertised, read 0, only 0 written', () => {
    const m = svm();
    for (let i = 0xc0010200; i <= 0xc001020b; i++) {
      expect(get(m, i)).toBe(0n);
      expect(set(m, i, 0n)).toBe(true);
      expect(set(m, i, 1n)).toBe(false);
    }
  });
  test('kvm_pmu_set_msr: AMD global MSRs with a version 1 PMU are unsupported: read 0, only 0 written', () => {
    const m = svm();
    for (let i = 0xc0000300; i <= 0xc0000303; i++) {
      expect(get(m, i)).toBe(0n);
      expect(set(m, i, 0n)).toBe(true);
      expect(set(m, i, 1n)).toBe(false);
    }
  });
  test('get_gp_pmc_amd: with PERFCTR_CORE, F15H CTLn/CTRn alias K7 EVNTSELn/PERFCTRn and counters 4-5 appear', () => {
    const m = svm();
    setCpuid(m, withBit(0x80000022, 'eax', 0, false)); // PERFCTR_CORE without PERFMON_V2
    expect(set(m, 0xc0010204, 0x4300c0n)).toBe(true); // CTL2
    expect(get(m, 0xc0010002)).toBe(0x4300c0n);
    expect(set(m, 0xc0010007, 0x1234n)).toBe(true); // K7 PERFCTR3
    expect(get(m, 0xc0010207)).toBe(0x1234n); // CTR3
    expect(set(m, 0xc001020a, ONES)).toBe(true); // CTL5
    expect(get(m, 0xc001020a)).toBe(0x0000000fffd7ffffn);
    expect(set(m, 0xc001020b, ONES)).toBe(true); // CTR5
    expect(get(m, 0xc001020b)).toBe(0xffffffffffffn);
    // Version 1: the global MSRs still are not the PMU's.
    expect(set(m, 0xc0000301, 1n)).toBe(false);
  });
  test('kvm_pmu_refresh: PERFMON_V2 gives version 2, GLOBAL_CTL = one bit per counter, reserved bits cleared silently', () => {
    const m = svm();
    setCpuid(m);
    expect(get(m, 0xc0000301)).toBe(0x3fn);
    expect(set(m, 0xc0000301, ONES)).toBe(true);
    expect(get(m, 0xc0000301)).toBe(0x3fn);
    expect(set(m, 0xc0000301, 0x5n)).toBe(true);
    expect(get(m, 0xc0000301)).toBe(0x5n);
  });
  test('kvm_pmu_set_msr: AMD GLOBAL_STATUS host writes fail on reserved bits; guest writes are ignored', () => {
    const m = svm();
    setCpuid(m);
    expect(set(m, 0xc0000300, 0x40n)).toBe(false);
    expect(set(m, 0xc0000300, 0x21n)).toBe(true);
    expect(get(m, 0xc0000300)).toBe(0x21n);
    expect(guestWr(m, 0xc0000300, 0n).kind).toBe('ok');
    expect(get(m, 0xc0000300)).toBe(0x21n);
  });
  test('kvm_pmu_set_msr: STATUS_CLR/STATUS_SET read 0, change nothing for the host, clear/set status for the guest', () => {
    const m = svm();
    setCpuid(m);
    expect(set(m, 0xc0000300, 0x3n)).toBe(true);
    expect(set(m, 0xc0000302, ONES)).toBe(true);
    expect(set(m, 0xc0000303, ONES)).toBe(true);
    expect(get(m, 0xc0000300)).toBe(0x3n);
    expect(get(m, 0xc0000302)).toBe(0n);
    expect(get(m, 0xc0000303)).toBe(0n);
    expect(guestWr(m, 0xc0000302, 1n).kind).toBe('ok');
    expect(get(m, 0xc0000300)).toBe(0x2n);
    expect(guestWr(m, 0xc0000303, ONES).kind).toBe('ok');
    expect(get(m, 0xc0000300)).toBe(0x3fn);
  });
  test('amd_pmu_get_msr: a counter index beyond nr_arch_gp_counters is valid but has no pmc: ERR', () => {
    const m = svm();
    setCpuid(m, (e) => {
      leaf(e, 0x80000022).ebx = 2; // PERFMON_V2 with 2 core counters
      return e;
    });
    expect(get(m, 0xc0000301)).toBe(0x3n);
    expect(set(m, 0xc0010001, 1n)).toBe(true);
    expect(get(m, 0xc0010002)).toBeNull();
    expect(set(m, 0xc0010002, 0n)).toBe(false); // ERR, not rescued by kvm_do_msr_access
    expect(get(m, 0xc0010204)).toBeNull();
    expect(guestRd(m, 0xc0010006).kind).toBe('gp');
  });
  test('kvm_pmu_refresh at KVM_SET_CPUID2 zeroes counters and event selects', () => {
    const m = svm();
    expect(set(m, 0xc0010000, 0x76n)).toBe(true);
    expect(set(m, 0xc0010004, 0x99n)).toBe(true);
    setCpuid(m);
    expect(get(m, 0xc0010000)).toBe(0n);
    expect(get(m, 0xc0010004)).toBe(0n);
  });
  test('P6 legacy MSRs are never the AMD PMU\'s: reads 0, writes dropped', () => {
    const m = svm();
    for (const i of [0xc1, 0xc2, 0x186, 0x187]) {
      expect(set(m, i, ONES)).toBe(true);
      expect(get(m, i)).toBe(0n);
    }
  });
  test('kvm.enable_pmu=N: K7 falls back to the legacy path (read 0, writes dropped); F15H fails', () => {
    const m = svm({ profile: profileWith({ 'kvm.enable_pmu': 'N' }) });
    expect(set(m, 0xc0010000, ONES)).toBe(true);
    expect(get(m, 0xc0010000)).toBe(0n);
    setCpuid(m);
    expect(set(m, 0xc0010200, 1n)).toBe(false);
  });
});

// §8.2: each row of the plain-vCPU table (host-initiated, no KVM_SET_CPUID2).
interface Row {
  row: string;
  indices: number[];
  get: bigint | null;
  sets: [bigint, boolean, bigint?][];
}
const ROWS: Row[] = [
  { row: 'FS/GS/KERNEL_GS_BASE, LSTAR, CSTAR: 0; canonical only', indices: [0xc0000100, 0xc0000101, 0xc0000102, 0xc0000082, 0xc0000083], get: 0n, sets: [[0xff00000000000000n, true, 0xff00000000000000n], [0x0100000000000000n, false]] },
  { row: 'STAR, SYSCALL_MASK: 0; any 64-bit value', indices: [0xc0000081, 0xc0000084], get: 0n, sets: [[ONES, true, ONES]] },
  { row: 'EFER: 0; SCE, LME, NX, SVME, FFXSR, AUTOIBRS', indices: [0xc0000080], get: 0n, sets: [[0x205901n, true, 0x205901n], [0x2000n, false], [0x10000n, false]] },
  { row: 'TSC_AUX: 0; < 2^32, high bits fail', indices: [0xc0000103], get: 0n, sets: [[0xffffffffn, true, 0xffffffffn], [0x100000000n, false]] },
  { row: 'SYSENTER_CS: 0; all 64 bits kept', indices: [0x174], get: 0n, sets: [[ONES, true, ONES]] },
  { row: 'SYSENTER_EIP/ESP: 0; all 64 bits read back (canonicalized)', indices: [0x175, 0x176], get: 0n, sets: [[0xfedcba9876543210n, true, 0x00dcba9876543210n], [0x0100000000000000n, true, 0xff00000000000000n]] },
  { row: 'SPEC_CTRL: 0; values the host accepts', indices: [0x48], get: 0n, sets: [[0x4n, true, 0x4n], [0x400n, false]] },
  { row: 'VIRT_SPEC_CTRL: 0; 0 or 4', indices: [0xc001011f], get: 0n, sets: [[0x4n, true, 0x4n], [0x0n, true, 0n], [0x2n, false]] },
  { row: 'TSC_RATIO: 0x100000000; 0 (ignored) or 0x100000000', indices: [0xc0000104], get: 0x100000000n, sets: [[0n, true, 0x100000000n], [0x100000000n, true, 0x100000000n], [0x80000000n, false]] },
  { row: 'VM_CR: 0; bits within 0x1f', indices: [0xc0010114], get: 0n, sets: [[0x1fn, true, 0x1fn], [0x20n, false]] },
  { row: 'VM_HSAVE_PA: 0; any, bits 11:0 cleared', indices: [0xc0010117], get: 0n, sets: [[ONES, true, 0xfffffffffffff000n]] },
  { row: 'VM_IGNNE: read fails; any value accepted', indices: [0xc0010115], get: null, sets: [[ONES, true]] },
  { row: 'DE_CFG: 0; 0 or 2', indices: [0xc0011029], get: 0n, sets: [[2n, true, 2n], [4n, false]] },
  { row: 'LS_CFG: fails', indices: [0xc0011020], get: null, sets: [[0n, false]] },
  { row: 'F15H_IC_CFG: fails without CPUID leaf 1', indices: [0xc0011021], get: null, sets: [[0n, false]] },
  { row: 'DEBUGCTL: 0; bit 0 only (bit 1 dropped); bits 2-5 fail', indices: [0x1d9], get: 0n, sets: [[3n, true, 1n], [0x3cn, false]] },
  { row: 'LASTBRANCH/LASTINT: 0; host writes stored', indices: [0x1db, 0x1dc, 0x1dd, 0x1de], get: 0n, sets: [[ONES, true, ONES]] },
  { row: 'FEAT_CTL, MCG_EXT_CTL, BNDCFGS, TSX_CTRL, UMWAIT, SGX hash, RTIT, VMX MSRs: fail', indices: [0x3a, 0x4d0, 0xd90, 0x122, 0xe1, 0x8c, 0x570, 0x480, 0x48d], get: null, sets: [[0n, false]] },
  { row: 'PERF_CAPABILITIES: 0; 0 only', indices: [0x345], get: 0n, sets: [[0n, true, 0n], [1n, false]] },
  { row: 'ARCH_CAPABILITIES: 0; 0 only (6.18)', indices: [0x10a], get: 0n, sets: [[0n, true, 0n], [1n, false]] },
  { row: 'UCODE_REV: 0x01000065; any', indices: [0x8b], get: 0x01000065n, sets: [[ONES, true, ONES]] },
  { row: 'AMD PMU K7 event selects: 0; reserved bits silently cleared', indices: [0xc0010000, 0xc0010001, 0xc0010002, 0xc0010003], get: 0n, sets: [[ONES, true, 0x0000000fffd7ffffn]] },
  { row: 'AMD PMU K7 counters: 0; masked to 48 bits', indices: [0xc0010004, 0xc0010005, 0xc0010006, 0xc0010007], get: 0n, sets: [[ONES, true, 0xffffffffffffn]] },
  { row: 'AMD PMU F15H: 0; 0 only', indices: Array.from({ length: 12 }, (_, i) => 0xc0010200 + i), get: 0n, sets: [[0n, true, 0n], [1n, false]] },
  { row: 'AMD global 0xc0000300-303: 0; 0 only (version 1)', indices: [0xc0000300, 0xc0000301, 0xc0000302, 0xc0000303], get: 0n, sets: [[0n, true, 0n], [1n, false]] },
  { row: 'Intel legacy 0xc1, 0xc2, 0x186, 0x187: 0; any, dropped', indices: [0xc1, 0xc2, 0x186, 0x187], get: 0n, sets: [[ONES, true, 0n]] },
];
describe('§8.2 the plain SVM vCPU, row by row', () => {
  test.each(ROWS.map((r) => [r.row, r] as const))('%s', (_name, r) => {
    for (const index of r.indices) {
      const m = svm();
      const at = `0x${index.toString(16)}`;
      expect(get(m, index), `GET ${at}`).toBe(r.get);
      for (const [v, ok, back] of r.sets) {
        expect(set(m, index, v), `SET ${at} = 0x${v.toString(16)}`).toBe(ok);
        if (back !== undefined) expect(get(m, index), `GET ${at} after 0x${v.toString(16)}`).toBe(back);
      }
    }
  });
});

describe('Appendix A: what kvm_amd does where the measured kvm_pvm host differs', () => {
  test('VM_CR: kvm_pvm fails the read; kvm_amd reads 0, refuses ~0, takes 0', () => {
    expect(get(pvm(), 0xc0010114)).toBeNull();
    const m = svm();
    expect(get(m, 0xc0010114)).toBe(0n);
    expect(set(m, 0xc0010114, ONES)).toBe(false);
    expect(set(m, 0xc0010114, 0n)).toBe(true);
  });
  test('VM_HSAVE_PA: kvm_pvm drops ~0 (reads 0); kvm_amd reads 0xfffffffffffff000', () => {
    const p = pvm();
    expect(set(p, 0xc0010117, ONES)).toBe(true);
    expect(get(p, 0xc0010117)).toBe(0n);
    const m = svm();
    expect(set(m, 0xc0010117, ONES)).toBe(true);
    expect(get(m, 0xc0010117)).toBe(0xfffffffffffff000n);
  });
  test('VIRT_SPEC_CTRL: kvm_pvm accepts ~0; kvm_amd refuses it (only bit 2)', () => {
    expect(set(pvm(), 0xc001011f, ONES)).toBe(true);
    expect(set(svm(), 0xc001011f, ONES)).toBe(false);
  });
  test('TSC_RATIO: both read 0x100000000, take 0, refuse ~0', () => {
    for (const m of [pvm(), svm()]) {
      expect(get(m, 0xc0000104)).toBe(0x100000000n);
      expect(set(m, 0xc0000104, 0n)).toBe(true);
      expect(set(m, 0xc0000104, ONES)).toBe(false);
    }
  });
  test('DE_CFG: kvm_pvm fails the read; kvm_amd reads 0 and takes 0; /dev/kvm lists it', () => {
    expect(get(pvm(), 0xc0011029)).toBeNull();
    expect(sysGet(pvm(), 0xc0011029)).toBeNull();
    const m = svm();
    expect(get(m, 0xc0011029)).toBe(0n);
    expect(set(m, 0xc0011029, 0n)).toBe(true);
    expect(sysGet(m, 0xc0011029)).toBe(2n);
  });
  test('SYSENTER_CS: both keep ~0 (VMX would read 0xffffffff)', () => {
    for (const m of [pvm(), svm()]) {
      expect(set(m, 0x174, ONES)).toBe(true);
      expect(get(m, 0x174)).toBe(ONES);
    }
  });
  test('UCODE_REV: kvm_pvm reads 0; kvm_amd 0x01000065', () => {
    expect(get(pvm(), 0x8b)).toBe(0n);
    expect(get(svm(), 0x8b)).toBe(0x01000065n);
  });
  test('ARCH_CAPABILITIES: kvm_amd reads 0 and refuses non-zero before SET_CPUID2, accepts any value after', () => {
    const m = svm();
    expect(get(m, 0x10a)).toBe(0n);
    expect(set(m, 0x10a, 1n)).toBe(false);
    setCpuid(m); // KVM always reports ARCH_CAPABILITIES in CPUID.7.0:EDX[29]
    expect(set(m, 0x10a, 1n)).toBe(true);
    expect(get(m, 0x10a)).toBe(1n);
    const p = pvm();
    const n = p.kvm.profile.supportedCpuid.length;
    const b = encodeCpuid2([], n, n);
    p.kvm.ioctlOrThrow(p.sys, I.KVM_GET_SUPPORTED_CPUID, b);
    p.kvm.ioctlOrThrow(p.vcpu, I.KVM_SET_CPUID2, b);
    expect(set(p, 0x10a, 1n)).toBe(false);
  });
  test('kvm_arch_vcpu_create: the stuffed ARCH_CAPABILITIES becomes readable after SET_CPUID2', () => {
    const m = svm();
    setCpuid(m);
    expect(get(m, 0x10a)).toBe(0x400000000c000069n);
  });
  test('TSC_AUX: both refuse high bits before SET_CPUID2 and truncate them after', () => {
    for (const m of [pvm(), svm()]) {
      expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(false);
      const n = m.kvm.profile.supportedCpuid.length;
      const b = encodeCpuid2([], n, n);
      m.kvm.ioctlOrThrow(m.sys, I.KVM_GET_SUPPORTED_CPUID, b);
      m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_CPUID2, b);
      expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(true);
      expect(get(m, 0xc0000103)).toBe(0xffffffffn);
    }
  });
  test('XSS: kvm_pvm does not advertise it (SET 0 fails); this kvm_amd host supports CET XSS bits, so it is listed and SET 0 succeeds', () => {
    const p = pvm();
    expect(get(p, 0xda0)).toBe(0n);
    expect(set(p, 0xda0, 0n)).toBe(false);
    const m = svm();
    expect(get(m, 0xda0)).toBe(0n);
    expect(set(m, 0xda0, 0n)).toBe(true);
    expect(set(m, 0xda0, 0x800n)).toBe(false);
  });
  test('legacy PMU MSRs: 0xc1/0x186 drop writes on both; the K7 MSRs are real counters on kvm_amd with enable_pmu=Y', () => {
    const p = pvm();
    const m = svm();
    for (const i of [0xc1, 0x186, 0xc0010000, 0xc0010004]) {
      expect(set(p, i, ONES)).toBe(true);
      expect(get(p, i)).toBe(0n);
    }
    for (const i of [0xc1, 0x186]) {
      expect(set(m, i, ONES)).toBe(true);
      expect(get(m, i)).toBe(0n);
    }
    expect(set(m, 0xc0010000, ONES)).toBe(true);
    expect(get(m, 0xc0010000)).toBe(0x0000000fffd7ffffn);
    expect(set(m, 0xc0010004, ONES)).toBe(true);
    expect(get(m, 0xc0010004)).toBe(0xffffffffffffn);
  });
});

// The approach of test/fast-path.test.ts, for the SVM profile and vendor.
type Setup = (kvm: Kvm, sys: number, vm: number, vcpu: number) => void;
const withSupported: Setup = (kvm, sys, _vm, vcpu) => {
  const n = kvm.profile.supportedCpuid.length;
  const b = encodeCpuid2([], n, n);
  kvm.ioctlOrThrow(sys, I.KVM_GET_SUPPORTED_CPUID, b);
  kvm.ioctlOrThrow(vcpu, I.KVM_SET_CPUID2, b);
};
const STATES: [string, boolean, Setup, HostProfile][] = [
  ['fresh vCPU', false, () => undefined, PROFILE],
  ['after KVM_SET_CPUID2 (supported CPUID)', false, withSupported, PROFILE],
  ['PV CPUID enforced with no PV features', false, (kvm, _sys, _vm, vcpu) => {
    kvm.ioctlOrThrow(vcpu, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.ENFORCE_PV_FEATURE_CPUID, [1n]));
  }, PROFILE],
  ['with an irqchip, after KVM_RUN', true, (kvm, _sys, _vm, vcpu) => {
    kvm.markRan(vcpu);
  }, PROFILE],
  ['ignore_msrs', false, () => undefined, PROFILE],
  ['lbrv=0, enable_pmu=N, nested=0', false, withSupported, profileWith({ 'kvm_amd.lbrv': '0', 'kvm.enable_pmu': 'N', 'kvm_amd.nested': '0' })],
];
const VALUES = [0n, 1n, 0xffffffffffffffffn, 0x0006060606060606n, 0xffff800000001000n, 0x0000800000000000n, 0x80000000n, 0x100000000n, 0x87n];

function build(profile: HostProfile, fastPath: boolean, irqchip: boolean, ignoreMsrs: boolean, setup: Setup) {
  const kvm = new Kvm({ profile, vendor: svmOps, fastPath, ignoreMsrs, now: () => 1000 });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  if (irqchip) kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  setup(kvm, sys, vm, vcpu);
  return { kvm, vcpu, state: kvm.vcpuOf(vcpu)! };
}

describe('fast path equals the full path (kvm_amd profile)', () => {
  test.each(STATES)('every slot, %s', (name, irqchip, setup, profile) => {
    const checked = expectFastPathEqualsFullPath({ profile, vendor: svmOps, ignoreMsrs: name === 'ignore_msrs' }, irqchip, setup, VALUES);
    expect(checked).toBeGreaterThan(30);
  });
  test('the fast classes cover the plain load/store SVM MSRs', () => {
    const { kvm } = build(PROFILE, true, false, false, () => undefined);
    for (const i of [0x174, 0xc0000081, 0xc0000084, 0xc0010117, 0xc0010114, 0x1d9, 0x1db]) expect(kvm.x86.fastGet[slotOf(i)], `0x${i.toString(16)}`).not.toBe(0);
    for (const i of [0x174, 0xc0000081, 0xc0000082, 0x1db, 0xc0010115]) expect(kvm.x86.fastSet[slotOf(i)], `0x${i.toString(16)}`).not.toBe(0);
    // SYSENTER_EIP/ESP depend on the vendor string, the PMU on the CPUID: always the full path.
    for (const i of [0x175, 0x176, 0xc0010000, 0xc0010004, 0xc0010200, 0xc0000301]) {
      expect(kvm.x86.fastGet[slotOf(i)]).toBe(0);
      expect(kvm.x86.fastSet[slotOf(i)]).toBe(0);
    }
  });
});
