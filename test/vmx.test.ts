// The Intel (kvm_intel) vendor model: vmx_get_msr/vmx_set_msr, the VMX capability MSRs
// (nested.c), the Intel vPMU (pmu_intel.c) and the derived Intel profile, each test named after
// the kernel rule it pins. Rules follow ../shared/reference/vendor-msr-spec.md (6.18 column).
import { expectFastPathEqualsFullPath } from './fast-path-check.js';
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap, type CpuidEntry2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { Kvm, type KvmOptions } from '../src/kvm/kvm.js';
import { findCpuid, parseProfile, profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { builtinProfile } from '../src/profiles.js';
import vmxJson from '../src/profiles/vmx-intel-derived.json' with { type: 'json' };
import { derivedNested, NESTED_WORDS, vmxGetVmxMsr } from '../src/vmx/nested-msrs.js';
import { vmxOps } from '../src/vmx/vmx-ops.js';
import { datas, msrs } from './helpers.js';

const PROFILE = parseProfile(vmxJson, 'vmx-intel-derived.json');
const ONES = 0xffffffffffffffffn;
const EINVAL = -22;
const bit = (n: number): bigint => 1n << BigInt(n);

interface Vmx {
  kvm: Kvm;
  sys: number;
  vm: number;
  vcpu: number;
}
function machine(opts: KvmOptions = {}, profile: HostProfile = PROFILE): Vmx {
  const kvm = new Kvm({ profile, vendor: vmxOps, ...opts });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  return { kvm, sys, vm, vcpu };
}
const get = (m: Vmx, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
const set = (m: Vmx, index: number, v: bigint): boolean => m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[index, v]])) === 1;
/** do_set_msr's own return (0, 1, 2 or -errno), which KVM_SET_MSRS folds into a count. */
const doSet = (m: Vmx, index: number, v: bigint): number =>
  m.kvm.x86.doSetMsr(m.kvm.vcpuOf(m.vcpu)!, index, Number(v & 0xffffffffn) | 0, Number(v >> 32n) | 0);
const featureGet = (m: Vmx, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.sys, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};

/** KVM_GET_SUPPORTED_CPUID, optionally edited, then KVM_SET_CPUID2 (what vm_create_with_one_vcpu does). */
type Edit = (entries: CpuidEntry2[]) => void;
function setCpuid(m: Vmx, edit: Edit = () => undefined): void {
  const entries = structuredClone(m.kvm.profile.supportedCpuid);
  edit(entries);
  m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_CPUID2, encodeCpuid2(entries));
}
type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';
const clearBit = (leaf: number, sub: number, reg: Reg, n: number): Edit => (e) => {
  const x = findCpuid(e, leaf, sub)!;
  x[reg] = (x[reg] & ~(1 << n)) >>> 0;
};
const setBit = (leaf: number, sub: number, reg: Reg, n: number): Edit => (e) => {
  const x = findCpuid(e, leaf, sub)!;
  x[reg] = (x[reg] | (1 << n)) >>> 0;
};
const both = (...edits: Edit[]): Edit => (e) => edits.forEach((f) => f(e));
const NO_VMX = clearBit(1, 0, 'ecx', 5);
const NO_RTM = clearBit(7, 0, 'ebx', 11);
const NO_PDCM = clearBit(1, 0, 'ecx', 15);

/** The feature MSR value the profile lists for `index`. */
const feature = (index: number): bigint => PROFILE.featureMsrs.find((f) => f.index === index)!.value!;

describe('the derived Intel profile', () => {
  test('parseProfile accepts it; kvm_intel, GenuineIntel, source "derived"', () => {
    expect(PROFILE.source).toBe('derived');
    expect(PROFILE.host.vendorModule).toBe('kvm_intel');
    expect(PROFILE.host.cpuVendor).toBe('GenuineIntel');
    expect(PROFILE.host.moduleParams).toMatchObject({ 'kvm.ignore_msrs': 'N', 'kvm_intel.nested': 'Y', 'kvm.enable_pmu': 'Y' });
  });

  test('kvm_init_msr_lists: no AMD-only or unprobed MSRs, VMX MSRs listed with nested=1, 8+3 PMU counters', () => {
    const list = new Set(PROFILE.msrIndexList);
    expect(list.size).toBe(PROFILE.msrIndexList.length);
    for (const amd of [0xc0010117, 0xc001011f, 0xc0000104, 0xc0010000, 0xc0010200, 0xc0000300]) expect(list.has(amd)).toBe(false);
    for (const i of [0x480, 0x48d, 0x48e, 0x48f, 0x490, 0x485, 0x486, 0x488, 0x48a, 0x48b, 0x48c, 0x491]) expect(list.has(i)).toBe(true);
    for (const i of [0x481, 0x482, 0x483, 0x484, 0x487, 0x489]) expect(list.has(i)).toBe(false);
    for (let i = 0; i < 8; i++) expect(list.has(0xc1 + i) && list.has(0x186 + i)).toBe(true);
    expect([0x309, 0x30a, 0x30b].every((i) => list.has(i))).toBe(true);
    expect(list.has(0x570) || list.has(0xd90)).toBe(false); // pt_mode=0, no MPX
    // msrs_to_save_base first (SYSENTER_CS leads), emulated_msrs last (POLL_CONTROL ends).
    expect(PROFILE.msrIndexList[0]).toBe(0x174);
    expect(PROFILE.msrIndexList.at(-1)).toBe(0x4b564d05);
  });

  test('feature MSRs: the VMX MSRs (vmcs_config.nested) then UCODE_REV, ARCH_CAPABILITIES, PERF_CAPABILITIES, PLATFORM_INFO', () => {
    const idx = PROFILE.featureMsrs.map((f) => f.index);
    expect(idx).toEqual([...Array.from({ length: 18 }, (_, i) => 0x480 + i), 0x8b, 0x10a, 0x345, 0xce]);
    // The listed values are nested-msrs.ts DERIVED_NESTED as vmx_get_vmx_msr reports them.
    const kvm = derivedNested();
    expect(kvm).toHaveLength(NESTED_WORDS);
    const out = { lo: 0, hi: 0 };
    for (let i = 0x480; i <= 0x491; i++) {
      vmxGetVmxMsr(kvm, 0, i, out);
      expect((BigInt(out.hi) << 32n) | BigInt(out.lo), `0x${i.toString(16)}`).toBe(feature(i));
    }
  });

  test('every fresh-vCPU value in the profile is what kvmsr reads (IA32_TSC by rule)', () => {
    const m = machine();
    for (const { index, value } of PROFILE.vcpuReset) {
      if (index === 0x10) {
        expect(get(m, index)).not.toBeNull();
        continue;
      }
      expect(get(m, index), `0x${index.toString(16)}`).toBe(value);
    }
  });


  test('KVM_GET_MSR_INDEX_LIST and KVM_GET_MSR_FEATURE_INDEX_LIST return the profile lists', () => {
    const m = machine();
    for (const [req, want] of [
      [I.KVM_GET_MSR_INDEX_LIST, PROFILE.msrIndexList],
      [I.KVM_GET_MSR_FEATURE_INDEX_LIST, PROFILE.featureMsrs.map((f) => f.index)],
    ] as const) {
      const b = new Uint8Array(4 + 4 * 200);
      new DataView(b.buffer).setUint32(0, 200, true);
      expect(m.kvm.ioctl(m.sys, req, b)).toBe(0);
      const dv = new DataView(b.buffer);
      const n = dv.getUint32(0, true);
      expect(Array.from({ length: n }, (_, i) => dv.getUint32(4 + 4 * i, true))).toEqual(want);
    }
  });
});

describe('vmx_get_feature_msr (KVM_GET_MSRS on /dev/kvm)', () => {
  test('the VMX MSRs read vmcs_config.nested, the non-TRUE controls with their always-on bits', () => {
    const m = machine();
    for (let i = 0x480; i <= 0x491; i++) expect(featureGet(m, i)).toBe(feature(i));
    expect(featureGet(m, 0x481)! & 0xffffffffn).toBe(0x16n);
    expect(featureGet(m, 0x482)! & 0x0401e172n).toBe(0x0401e172n);
  });
  test('DE_CFG is not a VMX feature MSR: unsupported and not advertised, the read fails', () => {
    expect(featureGet(machine(), 0xc0011029)).toBeNull();
  });
  test('nested=0: vmx_get_feature_msr returns 1 for 0x480-0x491 and the vCPU never has the VMX cap', () => {
    const json = structuredClone(vmxJson) as unknown as Record<string, unknown> & {
      host: { moduleParams: Record<string, string> };
      featureMsrs: { index: string }[];
      msrIndexList: string[];
      vcpuReset: unknown[];
    };
    json.host.moduleParams['kvm_intel.nested'] = 'N';
    const isVmx = (s: string): boolean => Number(s) >= 0x480 && Number(s) <= 0x491;
    json.featureMsrs = json.featureMsrs.filter((f) => !isVmx(f.index));
    json.msrIndexList = json.msrIndexList.filter((s) => !isVmx(s));
    const m = machine({}, parseProfile(json, 'nested0'));
    expect(featureGet(m, 0x480)).toBeNull();
    setCpuid(m);
    expect(get(m, 0x480)).toBeNull();
  });
});

describe('vmx_get_msr / vmx_set_msr (host-initiated)', () => {
  test('vmx_set_msr: SYSENTER_CS keeps bits 31:0', () => {
    const m = machine();
    expect(set(m, 0x174, ONES)).toBe(true);
    expect(get(m, 0x174)).toBe(0xffffffffn);
    expect(set(m, 0x174, 0x1234567800000010n)).toBe(true);
    expect(get(m, 0x174)).toBe(0x10n);
  });

  test('__kvm_set_msr: SYSENTER_EIP/ESP are made canonical (57 bits on this LA57 host), never refused', () => {
    const m = machine();
    expect(set(m, 0x176, 0x0100000000000000n)).toBe(true);
    expect(get(m, 0x176)).toBe(0xff00000000000000n);
    expect(set(m, 0x175, 0x0000800000000000n)).toBe(true);
    expect(get(m, 0x175)).toBe(0x0000800000000000n); // canonical with 57-bit addresses
  });

  test('FS/GS/KERNEL_GS_BASE, LSTAR, CSTAR: non-canonical values fail (is_noncanonical_msr_address, LA57)', () => {
    const m = machine();
    for (const i of [0xc0000100, 0xc0000101, 0xc0000102, 0xc0000082, 0xc0000083]) {
      expect(set(m, i, 0x00ff800000000000n)).toBe(true);
      expect(get(m, i)).toBe(0x00ff800000000000n);
      expect(set(m, i, 0x0100000000000000n)).toBe(false);
      expect(get(m, i)).toBe(0x00ff800000000000n);
    }
  });

  test('user-return MSRs: STAR and SYSCALL_MASK take any 64-bit value (no check in KVM)', () => {
    const m = machine();
    for (const i of [0xc0000081, 0xc0000084]) {
      expect(set(m, i, ONES)).toBe(true);
      expect(get(m, i)).toBe(ONES);
    }
  });

  test('TSC_AUX (user-return): a vCPU without CPUID is Intel compatible, so bits 63:32 fail', () => {
    const m = machine();
    expect(set(m, 0xc0000103, 0xffffffffn)).toBe(true);
    expect(set(m, 0xc0000103, 0x1ffffffffn)).toBe(false);
    expect(get(m, 0xc0000103)).toBe(0xffffffffn);
  });

  test('set_efer on VMX: SCE, LME, NX accepted, LMA kept from the current value, other bits fail', () => {
    const m = machine();
    expect(set(m, 0xc0000080, 0xd01n)).toBe(true); // SCE | LME | LMA | NX
    expect(get(m, 0xc0000080)).toBe(0x901n);
    expect(set(m, 0xc0000080, bit(12))).toBe(false); // SVME is AMD
    expect(set(m, 0xc0000080, bit(14))).toBe(false); // FFXSR is AMD
  });

  test('vmx_set_msr TSX_CTRL: the host may set RTM_DISABLE and CPUID_CLEAR only', () => {
    const m = machine();
    expect(get(m, 0x122)).toBe(0n);
    expect(set(m, 0x122, 3n)).toBe(true);
    expect(get(m, 0x122)).toBe(3n);
    expect(set(m, 0x122, 4n)).toBe(false);
    expect(set(m, 0x122, bit(32))).toBe(false);
  });

  test('vmx_vcpu_after_set_cpuid: TSX_CTRL becomes RTM_DISABLE when the guest CPUID lacks RTM, 0 when it has it', () => {
    const m = machine();
    setCpuid(m, NO_RTM);
    expect(get(m, 0x122)).toBe(1n);
    set(m, 0x122, 3n);
    setCpuid(m);
    expect(get(m, 0x122)).toBe(0n);
  });

  test('vmx_get_msr TSX_CTRL: the guest needs ARCH_CAPABILITIES.TSX_CTRL_MSR in its vCPU value', () => {
    const m = machine();
    setCpuid(m);
    expect(m.kvm.rdmsr(m.vcpu, 0x122)).toEqual({ kind: 'ok', value: 0n });
    expect(set(m, 0x10a, feature(0x10a) & ~bit(7))).toBe(true);
    expect(m.kvm.rdmsr(m.vcpu, 0x122)).toEqual({ kind: 'gp' });
    expect(get(m, 0x122)).toBe(0n); // the host has no gate
  });

  test('vmx_set_msr UMWAIT_CONTROL: bit 1 and bits 63:32 are reserved', () => {
    const m = machine();
    expect(set(m, 0xe1, 0xfffffffdn)).toBe(true);
    expect(get(m, 0xe1)).toBe(0xfffffffdn);
    expect(set(m, 0xe1, 2n)).toBe(false);
    expect(set(m, 0xe1, bit(32))).toBe(false);
  });

  test('vmx_get_msr UMWAIT_CONTROL: the guest needs WAITPKG (vmx_has_waitpkg)', () => {
    const m = machine();
    setCpuid(m, clearBit(7, 0, 'ecx', 5));
    expect(m.kvm.rdmsr(m.vcpu, 0xe1)).toEqual({ kind: 'gp' });
    setCpuid(m);
    expect(m.kvm.rdmsr(m.vcpu, 0xe1)).toEqual({ kind: 'ok', value: 0n });
  });

  test('vmx_set_msr SPEC_CTRL: kvm_spec_ctrl_test_value accepts the bits the host CPU enumerates (0x4ff here)', () => {
    const m = machine();
    expect(set(m, 0x48, 0x4ffn)).toBe(true);
    expect(get(m, 0x48)).toBe(0x4ffn);
    expect(set(m, 0x48, 0x100n)).toBe(false); // DDPD_U: not enumerated by this host
    expect(set(m, 0x48, bit(32))).toBe(false);
  });

  test('vmx_get_msr SPEC_CTRL: the guest needs guest_has_spec_ctrl_msr, the host does not', () => {
    const m = machine();
    setCpuid(m, both(clearBit(7, 0, 'edx', 26), clearBit(0x80000008, 0, 'ebx', 14), clearBit(0x80000008, 0, 'ebx', 15), clearBit(0x80000008, 0, 'ebx', 24)));
    expect(m.kvm.rdmsr(m.vcpu, 0x48)).toEqual({ kind: 'gp' });
    expect(get(m, 0x48)).toBe(0n);
    setCpuid(m, clearBit(7, 0, 'edx', 26)); // AMD_SSBD and friends still count
    expect(m.kvm.rdmsr(m.vcpu, 0x48)).toEqual({ kind: 'ok', value: 0n });
  });

  test('vmx_is_valid_debugctl (host): BUS_LOCK_DETECT and RTM_DEBUG kept, BTF and LBR tolerated but dropped', () => {
    const m = machine();
    expect(set(m, 0x1d9, bit(2) | bit(15) | bit(0) | bit(1))).toBe(true);
    expect(get(m, 0x1d9)).toBe(bit(2) | bit(15));
  });

  test('vmx_is_valid_debugctl: FREEZE_LBRS_ON_PMI without an LBR format, FREEZE_IN_SMM and bits 63:32 fail', () => {
    const m = machine();
    expect(set(m, 0x1d9, bit(11))).toBe(false);
    expect(set(m, 0x1d9, bit(14))).toBe(false);
    expect(set(m, 0x1d9, bit(32))).toBe(false);
    expect(get(m, 0x1d9)).toBe(0n);
  });

  test('vmx_get_supported_debugctl (guest): BUS_LOCK_DETECT and RTM_DEBUG need the guest features', () => {
    const m = machine();
    setCpuid(m, both(clearBit(7, 0, 'ecx', 24), NO_RTM));
    expect(m.kvm.wrmsr(m.vcpu, 0x1d9, bit(2))).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x1d9, bit(15))).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x1d9, bit(1))).toEqual({ kind: 'ok', value: bit(1) });
    setCpuid(m);
    expect(m.kvm.wrmsr(m.vcpu, 0x1d9, bit(2) | bit(15))).toMatchObject({ kind: 'ok' });
    expect(get(m, 0x1d9)).toBe(bit(2) | bit(15));
  });

  test('vmx_get_msr BNDCFGS: kvm_mpx_supported() is false on this host, so host reads and writes fail', () => {
    const m = machine();
    expect(get(m, 0xd90)).toBeNull();
    expect(set(m, 0xd90, 0n)).toBe(false);
  });

  test('vmx_set_msr MCG_EXT_CTL: only LMCE_EN (bit 0), for the host too; the guest needs FEAT_CTL.LMCE_ENABLED', () => {
    const m = machine();
    expect(set(m, 0x4d0, 1n)).toBe(true);
    expect(get(m, 0x4d0)).toBe(1n);
    expect(set(m, 0x4d0, 2n)).toBe(false);
    setCpuid(m);
    expect(m.kvm.rdmsr(m.vcpu, 0x4d0)).toEqual({ kind: 'gp' });
    expect(set(m, 0x3a, bit(20))).toBe(true);
    expect(m.kvm.rdmsr(m.vcpu, 0x4d0)).toEqual({ kind: 'ok', value: 1n });
  });

  test('is_vmx_feature_control_msr_valid (host): any subset of 0x160007 whatever the lock or CPUID; other bits fail', () => {
    const m = machine();
    expect(set(m, 0x3a, 0x160007n)).toBe(true);
    expect(get(m, 0x3a)).toBe(0x160007n);
    expect(set(m, 0x3a, 0n)).toBe(true); // also vmx_leave_nested; the lock never binds the host
    for (let b = 0; b < 64; b++) {
      if ((0x160007n & bit(b)) !== 0n) continue;
      expect(set(m, 0x3a, bit(b)), `bit ${b}`).toBe(false);
    }
  });

  test('vmx_msrs_test ia32_feature_control_msr_test: host writes ignore the guest CPUID', () => {
    const m = machine();
    setCpuid(m);
    const cases: [bigint, Edit][] = [
      [bit(1), clearBit(1, 0, 'ecx', 6)], // SMX
      [bit(1), NO_VMX],
      [bit(2), NO_VMX],
      [bit(17), clearBit(7, 0, 'ecx', 30)], // SGX_LC
      [bit(17), clearBit(7, 0, 'ebx', 2)], // SGX
      [bit(18), clearBit(7, 0, 'ebx', 2)],
      [bit(20), clearBit(1, 0, 'edx', 7)], // MCE
    ];
    for (const [msrBit, edit] of cases) {
      setCpuid(m, edit);
      const val = get(m, 0x3a)!;
      for (const v of [val | msrBit | 1n, (val & ~msrBit) | 1n, val | msrBit | 1n, (val & ~msrBit) | 1n, val]) {
        expect(set(m, 0x3a, v), `0x${v.toString(16)}`).toBe(true);
      }
      setCpuid(m);
    }
  });

  test('is_vmx_feature_control_msr_valid (guest): a locked MSR refuses writes; VMX bits valid only with VMX in CPUID', () => {
    const m = machine();
    setCpuid(m, NO_VMX);
    expect(m.kvm.wrmsr(m.vcpu, 0x3a, 5n)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x3a, 1n)).toMatchObject({ kind: 'ok' });
    expect(m.kvm.wrmsr(m.vcpu, 0x3a, 1n)).toEqual({ kind: 'gp' }); // locked now
    const n = machine();
    setCpuid(n);
    expect(n.kvm.wrmsr(n.vcpu, 0x3a, 5n)).toMatchObject({ kind: 'ok' });
    expect(get(n, 0x3a)).toBe(5n);
    expect(n.kvm.wrmsr(n.vcpu, 0x3a, bit(20))).toEqual({ kind: 'gp' }); // locked
    const o = machine();
    setCpuid(o);
    expect(o.kvm.wrmsr(o.vcpu, 0x3a, bit(20))).toEqual({ kind: 'gp' }); // LMCE needs KVM_X86_SETUP_MCE
  });

  test('vmx_setup_mce: KVM_X86_SETUP_MCE with MCG_LMCE_P makes FEAT_CTL.LMCE_ENABLED valid for the guest', () => {
    const m = machine();
    setCpuid(m);
    const cap = new Uint8Array(8);
    new DataView(cap.buffer).setBigUint64(0, 0x8000000n | 0x100n | 10n, true); // LMCE_P | CTL_P | 10 banks
    expect(m.kvm.ioctl(m.vcpu, I.KVM_X86_SETUP_MCE, cap)).toBe(0);
    expect(m.kvm.wrmsr(m.vcpu, 0x3a, bit(20) | 1n)).toMatchObject({ kind: 'ok' });
    expect(m.kvm.rdmsr(m.vcpu, 0x4d0)).toEqual({ kind: 'ok', value: 0n });
    expect(m.kvm.wrmsr(m.vcpu, 0x4d0, 1n)).toMatchObject({ kind: 'ok' });
  });

  test('kvm_caps.supported_mce_cap on VMX: MCG_CTL_P | MCG_SER_P | MCG_LMCE_P | MCG_CMCI_P', () => {
    const m = machine();
    const out = new Uint8Array(8);
    expect(m.kvm.ioctl(m.sys, I.KVM_X86_GET_MCE_CAP_SUPPORTED, out)).toBe(0);
    expect(new DataView(out.buffer).getBigUint64(0, true)).toBe(0x9000500n);
  });

  test('SGXLEPUBKEYHASH0-3: the default hash (sgx_pubkey_hash), host writes any value, the guest needs SGX_LC', () => {
    const m = machine();
    expect(get(m, 0x8c)).toBe(0xa6053e051270b7acn);
    expect(get(m, 0x8f)).toBe(0xd4f8c05909f9bb3bn);
    expect(set(m, 0x8d, ONES)).toBe(true);
    expect(get(m, 0x8d)).toBe(ONES);
    setCpuid(m);
    expect(m.kvm.rdmsr(m.vcpu, 0x8c)).toEqual({ kind: 'gp' }); // KVM offers no SGX_LC on this host
    expect(m.kvm.wrmsr(m.vcpu, 0x8c, 0n)).toEqual({ kind: 'gp' });
  });

  test('RTIT_* with pt_mode=0 (vmx_pt_mode_is_host_guest false): every access fails, host too', () => {
    const m = machine();
    for (const i of [0x560, 0x561, 0x570, 0x571, 0x572, 0x580, 0x587]) {
      expect(get(m, i)).toBeNull();
      expect(set(m, i, 0n)).toBe(false);
    }
  });

  test('__vmx_vcpu_reset: UCODE_REV 0x100000000; host writes stored; not an immutable feature MSR', () => {
    const m = machine();
    expect(get(m, 0x8b)).toBe(0x100000000n);
    m.kvm.markRan(m.vcpu);
    expect(set(m, 0x8b, 5n)).toBe(true);
    expect(get(m, 0x8b)).toBe(5n);
  });

  test('kvm_arch_vcpu_create: ARCH_CAPABILITIES and PERF_CAPABILITIES hold the stuffed values, shown with the CPUID bits', () => {
    const m = machine();
    expect(get(m, 0x10a)).toBe(0n);
    expect(get(m, 0x345)).toBe(0n);
    expect(set(m, 0x10a, 1n)).toBe(false);
    setCpuid(m);
    expect(get(m, 0x10a)).toBe(feature(0x10a));
    expect(get(m, 0x345)).toBe(feature(0x345));
  });
});

describe('PERF_CAPABILITIES (vmx_set_msr then kvm_set_msr_common)', () => {
  test('a PEBS format needs the guest DS and DTES64 and the host family/model (vmx_set_msr), even before PDCM', () => {
    const m = machine();
    const pc = feature(0x345);
    expect(doSet(m, 0x345, pc)).toBe(1); // ERR, not the advertised-unsupported path
    setCpuid(m, clearBit(1, 0, 'ecx', 2)); // no DTES64
    expect(set(m, 0x345, pc)).toBe(false);
    setCpuid(m, clearBit(1, 0, 'eax', 4)); // another model (0x8e)
    expect(set(m, 0x345, pc)).toBe(false);
    setCpuid(m);
    expect(set(m, 0x345, pc)).toBe(true);
  });
  test('an LBR format must equal KVM\'s (none on this arch-LBR host)', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x345, feature(0x345) | 5n)).toBe(false);
  });
  test('kvm_set_msr_common: bits outside kvm_caps.supported_perf_cap fail; without PDCM only 0 is accepted', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x345, bit(13))).toBe(true);
    expect(set(m, 0x345, bit(15))).toBe(false);
    const n = machine();
    setCpuid(n, NO_PDCM);
    expect(set(n, 0x345, bit(13))).toBe(false);
    expect(set(n, 0x345, 0n)).toBe(true);
  });
  test('6.18: no "non-zero while the vPMU has version 0" check (6.12 vmx_set_msr has one)', () => {
    const m = machine();
    setCpuid(m, (e) => (findCpuid(e, 0xa, 0)!.eax = 0));
    expect(set(m, 0x345, bit(13))).toBe(true);
  });
});

describe('VMX capability MSRs (vmx_get_vmx_msr, vmx_set_vmx_msr)', () => {
  const fresh = (): Vmx => {
    const m = machine();
    setCpuid(m);
    return m;
  };

  test('vmx_get_msr: 0x480-0x491 fail before KVM_SET_CPUID2, host too (ERR, not rescued by the index list)', () => {
    const m = machine();
    for (let i = 0x480; i <= 0x491; i++) {
      expect(get(m, i)).toBeNull();
      expect(set(m, i, 0n)).toBe(false);
    }
  });

  test('vmx_get_msr: with VMX in the guest CPUID the vCPU reads KVM\'s values (STUFF_FEATURE_MSRS)', () => {
    const m = fresh();
    for (let i = 0x480; i <= 0x491; i++) {
      if (i === 0x487 || i === 0x489 || i === 0x48b) continue; // rewritten from CPUID, below
      expect(get(m, i), `0x${i.toString(16)}`).toBe(feature(i));
    }
  });

  test('KVM_SET_CPUID2 without VMX: the VMX MSRs fail again', () => {
    const m = fresh();
    setCpuid(m, NO_VMX);
    expect(get(m, 0x480)).toBeNull();
    expect(set(m, 0x48a, 0n)).toBe(false);
  });

  test('vmx_set_msr: the guest cannot write the VMX MSRs (read-only)', () => {
    const m = fresh();
    expect(m.kvm.rdmsr(m.vcpu, 0x480)).toEqual({ kind: 'ok', value: feature(0x480) });
    expect(m.kvm.wrmsr(m.vcpu, 0x480, feature(0x480))).toEqual({ kind: 'gp' });
  });

  test('vmx_get_vmx_msr: the non-TRUE controls are the TRUE ones with the always-on bits ORed in', () => {
    const m = fresh();
    const pairs: [number, number, bigint][] = [
      [0x481, 0x48d, 0x16n],
      [0x482, 0x48e, 0x0401e172n],
      [0x483, 0x48f, 0x36dffn],
      [0x484, 0x490, 0x11ffn],
    ];
    for (const [plain, truev, always] of pairs) {
      expect(get(m, plain)).toBe(get(m, truev)! | always);
      // Restoring the TRUE MSR changes the view.
      const t = get(m, truev)!;
      const high = BigInt.asUintN(32, t >> 32n);
      const drop = high & -high; // lowest may-be-1 bit
      expect(set(m, truev, t & ~(drop << 32n))).toBe(true);
      expect(get(m, plain)).toBe((t & ~(drop << 32n)) | always);
    }
  });

  test('vmx_set_vmx_msr: the non-TRUE controls and CR0/CR4_FIXED1 are never restorable (-EINVAL)', () => {
    const m = fresh();
    for (const i of [0x481, 0x482, 0x483, 0x484, 0x487, 0x489]) {
      expect(doSet(m, i, get(m, i)!), `0x${i.toString(16)}`).toBe(EINVAL);
    }
  });

  // tools/testing/selftests/kvm/x86_64/vmx_msrs_test.c, vmx_save_restore_msrs_test.
  const fixed1 = (m: Vmx, index: number, mask: bigint): void => {
    const val = get(m, index)!;
    for (let b = 0; b < 64; b++) {
      if ((mask & val & bit(b)) === 0n) continue;
      expect(set(m, index, val & ~bit(b)), `0x${index.toString(16)} clear bit ${b}`).toBe(true);
      expect(set(m, index, val), `0x${index.toString(16)} restore`).toBe(true);
    }
  };
  const fixed0 = (m: Vmx, index: number, mask: bigint): void => {
    const val = get(m, index)!;
    const keep = BigInt.asUintN(64, ~mask) | val;
    for (let b = 0; b < 64; b++) {
      if ((keep & bit(b)) !== 0n) continue;
      expect(set(m, index, val | bit(b)), `0x${index.toString(16)} set bit ${b}`).toBe(true);
      expect(set(m, index, val)).toBe(true);
    }
  };
  const fixed0and1 = (m: Vmx, index: number): void => {
    fixed0(m, index, 0xffffffffn);
    fixed1(m, index, 0xffffffff00000000n);
  };

  test('vmx_msrs_test.c vmx_save_restore_msrs_test: clearing may-be-1 bits and setting must-be-1 bits is allowed', () => {
    const m = fresh();
    expect(set(m, 0x48a, 0n)).toBe(true);
    expect(set(m, 0x48a, ONES)).toBe(true);
    fixed1(m, 0x480, bit(49) | bit(54) | bit(55) | bit(56)); // 6.18: bit 56 is a feature bit
    fixed1(m, 0x485, bit(5) | bit(6) | bit(7) | bit(8) | bit(14) | bit(15) | bit(28) | bit(29) | bit(30));
    fixed0and1(m, 0x48b);
    fixed1(m, 0x48c, ONES);
    fixed0and1(m, 0x48d);
    fixed0and1(m, 0x48e);
    fixed0and1(m, 0x48f);
    fixed0and1(m, 0x490);
    fixed1(m, 0x491, ONES);
  });

  test('vmx_restore_control_msr: setting an unsupported may-be-1 bit or clearing a must-be-1 bit is -EINVAL', () => {
    const m = fresh();
    for (const i of [0x48d, 0x48e, 0x48f, 0x490]) {
      const val = get(m, i)!;
      const high = BigInt.asUintN(32, val >> 32n);
      const low = BigInt.asUintN(32, val);
      const unsupported = BigInt.asUintN(32, ~high);
      if (unsupported !== 0n) {
        const b = unsupported & -unsupported;
        expect(doSet(m, i, val | (b << 32n)), `0x${i.toString(16)} may-be-1`).toBe(EINVAL);
      }
      const b = low & -low;
      expect(doSet(m, i, val & ~b), `0x${i.toString(16)} must-be-1`).toBe(EINVAL);
      expect(get(m, i)).toBe(val);
    }
  });

  test('vmx_restore_control_msr compares with KVM\'s values: a cleared may-be-1 bit can be set again', () => {
    const m = fresh();
    const val = get(m, 0x48d)!;
    expect(set(m, 0x48d, val & ~bit(32))).toBe(true);
    expect(get(m, 0x48d)).toBe(val & ~bit(32));
    expect(set(m, 0x48d, val)).toBe(true);
  });

  test('vmx_restore_vmx_basic: revision id must match, size may only grow, bit 48 and reserved/unsupported bits fail', () => {
    const m = fresh();
    const basic = get(m, 0x480)!;
    expect(doSet(m, 0x480, basic + 1n)).toBe(EINVAL); // revision id
    expect(doSet(m, 0x480, (basic & ~(0x1fffn << 32n)) | (0x800n << 32n))).toBe(EINVAL); // smaller VMCS
    expect(doSet(m, 0x480, (basic & ~(0x1fffn << 32n)) | (0x1fffn << 32n))).toBe(0); // larger is fine
    expect(doSet(m, 0x480, basic | bit(48))).toBe(EINVAL); // 32-bit physical addresses only
    expect(doSet(m, 0x480, basic | bit(49))).toBe(EINVAL); // dual-monitor: KVM lacks it
    for (const b of [31, 45, 46, 47, 57, 63]) expect(doSet(m, 0x480, basic | bit(b)), `bit ${b}`).toBe(EINVAL);
    expect(doSet(m, 0x480, basic & ~(0xfn << 50n))).toBe(0); // memory type is taken as written
  });

  test('vmx_restore_vmx_misc: timer rate fixed while the preemption timer is offered; counts may only shrink; MSEG id fixed', () => {
    const m = fresh();
    const misc = get(m, 0x485)!;
    expect(doSet(m, 0x485, misc ^ 1n)).toBe(EINVAL); // preemption-timer rate
    expect(doSet(m, 0x485, misc | (1n << 16n))).toBe(EINVAL); // CR3-target count above KVM's (0)
    expect(doSet(m, 0x485, misc | (1n << 25n))).toBe(EINVAL); // max MSR list above KVM's (0)
    expect(doSet(m, 0x485, misc | bit(32))).toBe(EINVAL); // MSEG revision
    expect(doSet(m, 0x485, misc | bit(10))).toBe(EINVAL); // reserved 13:9
    // Without the preemption timer in TRUE_PINBASED, the rate is free.
    expect(set(m, 0x48d, get(m, 0x48d)! & ~bit(38))).toBe(true);
    expect(doSet(m, 0x485, misc ^ 1n)).toBe(0);
  });

  test('vmx_restore_fixed0_msr: KVM\'s must-be-1 CR bits must stay set; more may be added', () => {
    const m = fresh();
    expect(doSet(m, 0x486, 0x80000021n | bit(1))).toBe(0);
    expect(doSet(m, 0x486, 0x80000001n)).toBe(EINVAL);
    expect(doSet(m, 0x488, 0n)).toBe(EINVAL);
    expect(doSet(m, 0x488, 0x2020n)).toBe(0);
  });

  test('vmx_restore_vmx_ept_vpid_cap and VMFUNC: only subsets of KVM\'s values', () => {
    const m = fresh();
    const ept = get(m, 0x48c)!;
    const missing = BigInt.asUintN(64, ~ept);
    expect(doSet(m, 0x48c, ept | (missing & -missing))).toBe(EINVAL);
    expect(doSet(m, 0x491, 2n)).toBe(EINVAL);
    expect(doSet(m, 0x491, 0n)).toBe(0);
  });

  test('kvm_is_immutable_feature_msr: after KVM_RUN a VMX MSR write must equal the current value, else -EINVAL', () => {
    const m = fresh();
    m.kvm.markRan(m.vcpu);
    const basic = get(m, 0x480)!;
    expect(doSet(m, 0x480, basic)).toBe(0);
    expect(doSet(m, 0x480, basic & ~bit(54))).toBe(EINVAL);
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0x48a, 0n]]))).toBe(0);
    // Without the VMX cap do_get_msr fails, so even the same value is refused.
    const n = machine();
    n.kvm.markRan(n.vcpu);
    expect(doSet(n, 0x480, 0n)).toBe(EINVAL);
  });

  test('vmx_adjust_secondary_exec_control: KVM_SET_CPUID2 rewrites PROCBASED_CTLS2 from the guest CPUID', () => {
    const m = fresh();
    const full = feature(0x48b);
    expect(get(m, 0x48b)).toBe(full); // the supported CPUID has every adjusted feature
    const hi = (b: number): bigint => bit(32 + b);
    const cases: [Edit, bigint][] = [
      [clearBit(0xd, 1, 'eax', 3), hi(20)], // XSAVES
      [clearBit(1, 0, 'ecx', 26), hi(20)], // XSAVES needs XSAVE too
      [clearBit(7, 0, 'ebx', 10), hi(12)], // INVPCID
      [clearBit(1, 0, 'ecx', 30), hi(11)], // RDRAND exiting
      [clearBit(7, 0, 'ebx', 18), hi(16)], // RDSEED exiting
      [clearBit(7, 0, 'ecx', 5), hi(26)], // WAITPKG
      [both(clearBit(0x80000001, 0, 'edx', 27), clearBit(7, 0, 'ecx', 22)), hi(3)], // RDTSCP and RDPID
    ];
    for (const [edit, lost] of cases) {
      setCpuid(m, edit);
      expect(get(m, 0x48b), `lost 0x${lost.toString(16)}`).toBe(full & ~lost);
      setCpuid(m);
      expect(get(m, 0x48b)).toBe(full);
    }
    // RDPID alone keeps ENABLE_RDTSCP.
    setCpuid(m, clearBit(0x80000001, 0, 'edx', 27));
    expect(get(m, 0x48b)).toBe(full);
  });

  test('KVM_SET_CPUID2 overwrites a restored PROCBASED_CTLS2 (restore order: CPUID first)', () => {
    const m = fresh();
    const full = feature(0x48b);
    expect(set(m, 0x48b, full & ~bit(32 + 20))).toBe(true);
    setCpuid(m);
    expect(get(m, 0x48b)).toBe(full);
  });

  test('nested_vmx_cr_fixed1_bits_update: CR0_FIXED1 = 0xffffffff, CR4_FIXED1 = PCE + bits of the guest CPUID', () => {
    const m = fresh();
    expect(get(m, 0x487)).toBe(0xffffffffn);
    // VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT UMIP LA57 VMXE FSGSBASE PCIDE OSXSAVE SMEP SMAP PKE CET.
    const full = 0x00f73fffn;
    expect(get(m, 0x489)).toBe(full);
    setCpuid(m, clearBit(7, 0, 'ecx', 16));
    expect(get(m, 0x489)).toBe(full & ~bit(12)); // LA57
    setCpuid(m, clearBit(7, 0, 'ecx', 7));
    expect(get(m, 0x489)).toBe(full); // IBT still allows CET
    setCpuid(m, both(clearBit(7, 0, 'ecx', 7), clearBit(7, 0, 'edx', 20)));
    expect(get(m, 0x489)).toBe(full & ~bit(23));
    setCpuid(m, setBit(1, 0, 'ecx', 6)); // SMX: not supported by KVM, but the raw CPUID counts
    expect(get(m, 0x489)).toBe(full | bit(14));
  });
});

describe('Intel vPMU (pmu.c, pmu_intel.c)', () => {
  const GP = Array.from({ length: 8 }, (_, i) => 0xc1 + i);
  const SEL = Array.from({ length: 8 }, (_, i) => 0x186 + i);
  const FIXED = [0x309, 0x30a, 0x30b];
  const GLOBAL = [0x38d, 0x38e, 0x38f];

  test('intel_pmu_refresh without CPUID leaf 0xA: no counters; advertised PMU MSRs read 0 and take only 0', () => {
    const m = machine();
    for (const i of [...GP.slice(2), ...SEL.slice(2), ...FIXED, ...GLOBAL, 0x3f1, 0x600, 0x3f2]) {
      expect(get(m, i), `0x${i.toString(16)}`).toBe(0n);
      expect(set(m, i, 0n)).toBe(true);
      expect(set(m, i, 1n), `0x${i.toString(16)}`).toBe(false);
    }
  });

  test('kvm_set_msr_common legacy fallback: P6 PERFCTR0/1 and EVNTSEL0/1 take any value and drop it without a vPMU', () => {
    const m = machine();
    for (const i of [0xc1, 0xc2, 0x186, 0x187]) {
      expect(set(m, i, ONES)).toBe(true);
      expect(get(m, i)).toBe(0n);
    }
  });

  test('GLOBAL_OVF_CTRL and the full-width PMCs are not advertised: without a vPMU they fail', () => {
    const m = machine();
    expect(get(m, 0x390)).toBeNull();
    expect(get(m, 0x4c1)).toBeNull();
  });

  test('kvm_pmu_refresh with leaf 0xA v2 (8 GP, 3 fixed): PERF_GLOBAL_CTRL starts with every GP counter enabled', () => {
    const m = machine();
    setCpuid(m);
    expect(get(m, 0x38f)).toBe(0xffn);
    expect(get(m, 0x38e)).toBe(0n);
    expect(get(m, 0x38d)).toBe(0n);
    expect(get(m, 0x390)).toBe(0n);
  });

  test('pmc_write_counter: GP and fixed counters are masked to 48 bits; the host write is not sign-extended', () => {
    const m = machine();
    setCpuid(m);
    for (const i of [...GP, ...FIXED]) {
      expect(set(m, i, ONES), `0x${i.toString(16)}`).toBe(true);
      expect(get(m, i)).toBe(0xffffffffffffn);
    }
    expect(set(m, 0xc1, 0x80000000n)).toBe(true);
    expect(get(m, 0xc1)).toBe(0x80000000n);
  });

  test('intel_pmu_set_msr: a guest write to PERFCTRn is sign-extended from bit 31', () => {
    const m = machine();
    setCpuid(m);
    expect(m.kvm.wrmsr(m.vcpu, 0xc1, 0x80000000n)).toMatchObject({ kind: 'ok' });
    expect(get(m, 0xc1)).toBe(0xffff80000000n);
  });

  test('full-width PMCs (0x4c1+): need FW_WRITES in PERF_CAPABILITIES with PDCM; bits above the width fail', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x4c1, 0xffffffffffffn)).toBe(true);
    expect(get(m, 0xc1)).toBe(0xffffffffffffn); // the same counter
    expect(set(m, 0x4c1, bit(48))).toBe(false);
    expect(get(m, 0x4c8)).toBe(0n);
    expect(get(m, 0x4c9)).toBeNull();
    const n = machine();
    setCpuid(n, NO_PDCM);
    expect(get(n, 0x4c1)).toBeNull();
  });

  test('event selectors: bits 63:32 and 21 reserved; IN_TX (32) allowed, IN_TX_CHECKPOINTED (33) only on counter 2', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x186, 0xffdfffffn)).toBe(true);
    expect(set(m, 0x186, bit(21))).toBe(false);
    expect(set(m, 0x186, bit(32))).toBe(true);
    expect(set(m, 0x186, bit(33))).toBe(false);
    expect(set(m, 0x188, bit(33))).toBe(true);
    expect(set(m, 0x186, bit(34))).toBe(false); // ADAPTIVE needs PEBS baseline
  });

  test('intel_pmu_refresh tests CPUID.7.0:EBX against X86_FEATURE_HLE|X86_FEATURE_RTM (0x12f), not the HLE/RTM bits', () => {
    const m = machine();
    setCpuid(m, NO_RTM); // FSGSBASE, BMI1, AVX2, ... still match 0x12f
    expect(set(m, 0x186, bit(32))).toBe(true);
    const n = machine();
    setCpuid(n, (e) => (findCpuid(e, 7, 0)!.ebx &= ~0x12f));
    expect(set(n, 0x186, bit(32))).toBe(false);
    expect(set(n, 0x188, bit(33))).toBe(false);
    const o = machine();
    setCpuid(o, (e) => {
      const l7 = findCpuid(e, 7, 0)!;
      l7.ebx = ((l7.ebx & ~0x12f) | (1 << 11)) >>> 0; // RTM set, the tested bits clear
    });
    expect(set(o, 0x186, bit(32))).toBe(false); // RTM itself (bit 11) is not among the tested bits
  });

  test('reserved bits of FIXED_CTR_CTRL, GLOBAL_CTRL, GLOBAL_STATUS and GLOBAL_OVF_CTRL', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x38d, 0xbbbn)).toBe(true);
    expect(set(m, 0x38d, 0x4n)).toBe(false); // ADAPTIVE needs PEBS baseline
    expect(set(m, 0x38d, 0xb000n)).toBe(false); // no fourth fixed counter
    expect(set(m, 0x38f, 0x7000000ffn)).toBe(true);
    expect(set(m, 0x38f, 0x100n)).toBe(false);
    expect(set(m, 0x38f, bit(35))).toBe(false);
    expect(set(m, 0x38e, 0xc0000007000000ffn)).toBe(true); // host may write GLOBAL_STATUS
    expect(get(m, 0x38e)).toBe(0xc0000007000000ffn);
    expect(set(m, 0x38e, bit(8))).toBe(false);
    expect(set(m, 0x390, 0xffn)).toBe(true); // host write: validated, no effect
    expect(get(m, 0x38e)).toBe(0xc0000007000000ffn);
    expect(set(m, 0x390, bit(8))).toBe(false);
  });

  test('guest accesses: GLOBAL_STATUS is read-only, GLOBAL_OVF_CTRL clears its bits', () => {
    const m = machine();
    setCpuid(m);
    set(m, 0x38e, 0x3n);
    expect(m.kvm.wrmsr(m.vcpu, 0x38e, 0n)).toEqual({ kind: 'gp' });
    expect(m.kvm.wrmsr(m.vcpu, 0x390, 1n)).toMatchObject({ kind: 'ok' });
    expect(get(m, 0x38e)).toBe(2n);
  });

  test('PEBS_ENABLE (PEBS format, no baseline): reserved = ~GP bits; PEBS_DATA_CFG needs the baseline', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x3f1, 0xffn)).toBe(true);
    expect(set(m, 0x3f1, 0x100n)).toBe(false);
    expect(get(m, 0x3f2)).toBe(0n); // unsupported, advertised
    expect(set(m, 0x3f2, 1n)).toBe(false);
  });

  test('DS_AREA: owned with the guest DS feature; non-canonical values fail', () => {
    const m = machine();
    setCpuid(m);
    expect(set(m, 0x600, 0xff00000000001000n)).toBe(true);
    expect(get(m, 0x600)).toBe(0xff00000000001000n);
    expect(set(m, 0x600, 0x0100000000000000n)).toBe(false);
    const n = machine();
    setCpuid(n, clearBit(1, 0, 'edx', 21));
    expect(set(n, 0x600, 0x1000n)).toBe(false); // not owned: advertised, 0 only
  });

  test('kvm_pmu_refresh on a PERF_CAPABILITIES change: counters reset, FW_WRITES decides the full-width aliases', () => {
    const m = machine();
    setCpuid(m);
    set(m, 0xc1, 5n);
    set(m, 0x38f, 1n);
    expect(set(m, 0x345, feature(0x345))).toBe(true); // same value: no refresh
    expect(get(m, 0xc1)).toBe(5n);
    expect(set(m, 0x345, 0n)).toBe(true);
    expect(get(m, 0xc1)).toBe(0n);
    expect(get(m, 0x38f)).toBe(0xffn);
    expect(get(m, 0x4c1)).toBeNull();
    expect(get(m, 0x3f1)).toBe(0n); // PEBS_ENABLE: now unowned, advertised
    expect(set(m, 0x3f1, 1n)).toBe(false);
  });

  test('version 1 (leaf 0xA eax=1): GP counters only, no fixed counters or global MSRs', () => {
    const m = machine();
    setCpuid(m, (e) => {
      const a = findCpuid(e, 0xa, 0)!;
      a.eax = (a.eax & ~0xff) | 1;
    });
    expect(set(m, 0xc1, 7n)).toBe(true);
    expect(get(m, 0xc1)).toBe(7n);
    expect(get(m, 0x38f)).toBe(0n);
    expect(set(m, 0x38f, 1n)).toBe(false);
    expect(set(m, 0x309, 1n)).toBe(false);
  });

  test('intel_pmu_refresh: the guest asks for fewer counters and a narrower width', () => {
    const m = machine();
    setCpuid(m, (e) => {
      const a = findCpuid(e, 0xa, 0)!;
      a.eax = 0x08200402; // v2, 4 GP, 32 bits
      a.edx = 0x0401; // 1 fixed, 32 bits
    });
    expect(get(m, 0x38f)).toBe(0xfn);
    expect(set(m, 0xc4, ONES)).toBe(true);
    expect(get(m, 0xc4)).toBe(0xffffffffn);
    expect(set(m, 0xc5, 1n)).toBe(false);
    expect(set(m, 0x309, ONES)).toBe(true);
    expect(get(m, 0x309)).toBe(0xffffffffn);
    expect(set(m, 0x30a, 1n)).toBe(false);
  });

  test('kvm.enable_pmu=N: kvm_pmu_refresh stops before the vendor part, so nothing is owned', () => {
    const json = structuredClone(vmxJson) as unknown as { host: { moduleParams: Record<string, string> } };
    json.host.moduleParams['kvm.enable_pmu'] = 'N';
    const m = machine({}, parseProfile(json, 'nopmu'));
    setCpuid(m);
    expect(set(m, 0xc3, 1n)).toBe(false);
    expect(set(m, 0xc1, 1n)).toBe(true); // legacy fallback drops it
    expect(get(m, 0xc1)).toBe(0n);
  });
});

// The fast-path classes answer as the full kvm_do_msr_access path on every slot, for this profile
// and vendor (the approach of test/fast-path.test.ts).
describe('fast path equals the full path (VMX profile)', () => {
  type Setup = (kvm: Kvm, sys: number, vm: number, vcpu: number) => void;
  const STATES: [string, boolean, Setup][] = [
    ['fresh vCPU', false, () => undefined],
    ['after KVM_SET_CPUID2 (supported CPUID)', false, (kvm, _sys, _vm, vcpu) => {
      kvm.ioctlOrThrow(vcpu, I.KVM_SET_CPUID2, encodeCpuid2(kvm.profile.supportedCpuid));
    }],
    ['PV CPUID enforced with no PV features', false, (kvm, _sys, _vm, vcpu) => {
      kvm.ioctlOrThrow(vcpu, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.ENFORCE_PV_FEATURE_CPUID, [1n]));
    }],
    ['after KVM_SET_CPUID2 without VMX, RTM or PDCM', false, (kvm, _sys, _vm, vcpu) => {
      const e = structuredClone(kvm.profile.supportedCpuid);
      both(NO_VMX, NO_RTM, NO_PDCM)(e);
      kvm.ioctlOrThrow(vcpu, I.KVM_SET_CPUID2, encodeCpuid2(e));
    }],
    ['with an irqchip, after KVM_RUN', true, (kvm, _sys, _vm, vcpu) => {
      kvm.markRan(vcpu);
    }],
    ['ignore_msrs', false, () => undefined],
  ];
  const VALUES = [0n, 1n, 0xffffffffffffffffn, 0x0006060606060606n, 0xffff800000001000n, 0x0000800000000000n, 0x80000000n, 0x0100000000000000n];

  test.each(STATES)('every slot, %s', (name, irqchip, setup) => {
    const checked = expectFastPathEqualsFullPath({ profile: PROFILE, vendor: vmxOps, ignoreMsrs: name === 'ignore_msrs' }, irqchip, setup, VALUES);
    expect(checked).toBeGreaterThan(40);
  });
});

describe('what a build configuration decides comes from the capture', () => {
  // A kvm_intel built without CONFIG_X86_SGX_KVM has no vcpu_setup_sgx_lepubkeyhash: a fresh vCPU's
  // SGXLEPUBKEYHASH0-3 read 0 there, Intel's default hash with it. The profile's vcpuReset decides.
  const SGX_HASH = [0x8c, 0x8d, 0x8e, 0x8f];
  const read = (profile: HostProfile): bigint[] => {
    const kvm = new Kvm({ profile });
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const buf = msrs(SGX_HASH.map((index): [number, bigint] => [index, 0x5a5an]));
    expect(kvm.ioctl(v, I.KVM_GET_MSRS, buf)).toBe(4);
    return datas(buf);
  };
  test('SGXLEPUBKEYHASH0-3: Intel hash where the host read it, 0 where the host read 0', () => {
    const withSgx = builtinProfile('kvm-intel-6.12-distro-bochs-skx');
    expect(read(withSgx)).toEqual([0xa6053e051270b7acn, 0x6cfbe8ba8b3b413dn, 0xc4916d99f2b3735dn, 0xd4f8c05909f9bb3bn]);
    const j = profileToJson(withSgx) as { vcpuReset: { index: string; value: string | null }[] };
    for (const e of j.vcpuReset) if (SGX_HASH.includes(Number(e.index))) e.value = '0x0';
    expect(read(parseProfile(j, 'no-sgx-kvm'))).toEqual([0n, 0n, 0n, 0n]);
  });
});
