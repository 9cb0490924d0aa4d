// Rules that changed between kernel releases, chosen by the profile's kernel release (X86.rules,
// from the versioned rules beside each MSR family), plus the profile fields that carry what only a
// measurement can tell.
// The 6.12 behaviour was measured live on kvm_amd 6.12.117 (Debian linux-source-6.12) under QEMU TCG
// with scripts/kvm-amd-oracle.sh; the 6.18 behaviour is the derived profiles' (vendor-msr-spec.md §9).
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { parseProfile, profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { parseRelease, ruleHolds, versionedRules } from '../src/kvm/x86/release.js';
import { rulesFor } from '../src/kvm/x86/rules.js';
import { profileForRelease } from '../src/profile/for-release.js';
import { encodeEnableCap } from '../src/abi/codecs.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import '../src/kvm/x86/index-list.js';
import { builtinProfile } from '../src/profiles.js';
import { datas, getFeatureMsr, getMsr, machine, msrs, setMsr, type Machine } from './helpers.js';

const ARCH_CAP = 0x10a;
const PERF_CAP = 0x345;
const XSS = 0xda0;
const SPEC_CTRL = 0x48;
const ASYNC_PF_EN = 0x4b564d02;

function variant(name: string, change: (j: Record<string, unknown>) => void): HostProfile {
  const j = JSON.parse(JSON.stringify(profileToJson(builtinProfile(name)))) as Record<string, unknown>;
  change(j);
  return parseProfile(j, `${name} (modified)`);
}
const onKernel = (name: string, kernel: string): HostProfile =>
  variant(name, (j) => {
    (j['host'] as Record<string, unknown>)['kernel'] = kernel;
  });

const get = getMsr;
const set = setMsr;
const sysGet = getFeatureMsr;
/** KVM_SET_CPUID2 with the supported CPUID minus the given (leaf, register, bit)s. */
function setCpuidWithout(m: Machine, p: HostProfile, drop: [number, 'eax' | 'ebx' | 'ecx' | 'edx', number][]): void {
  const entries = p.supportedCpuid.map((e) => ({ ...e }));
  for (const [leaf, reg, bit] of drop) {
    for (const e of entries) if (e.function === leaf) e[reg] = (e[reg] & ~(1 << bit)) >>> 0;
  }
  expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_CPUID2, encodeCpuid2(entries))).toBe(0);
}

describe('kernel releases', () => {
  test('a release reads as major.minor.sublevel; a local suffix does not count', () => {
    expect(parseRelease('6.12.117')).toEqual({ major: 6, minor: 12, sublevel: 117 });
    expect(parseRelease('6.18.44-fc-v1300')).toEqual({ major: 6, minor: 18, sublevel: 44 });
    expect(parseRelease('6.1')).toEqual({ major: 6, minor: 1, sublevel: 0 });
    expect(parseRelease('unknown')).toBeUndefined();
  });
  test('a rule holds from its mainline release, and in a stable series from its backport sublevel', () => {
    const where = { since: '6.14', backports: ['6.1.167', '6.12.75'] };
    const holds = (r: string): boolean => ruleHolds(where, parseRelease(r)!);
    expect(holds('6.1.166')).toBe(false);
    expect(holds('6.1.167')).toBe(true);
    expect(holds('6.1.192')).toBe(true);
    expect(holds('6.6.100')).toBe(false); // a series with no backport
    expect(holds('6.12.74')).toBe(false);
    expect(holds('6.12.75')).toBe(true);
    expect(holds('6.13.0')).toBe(false);
    expect(holds('6.14.0')).toBe(true);
    expect(holds('7.0.1')).toBe(true);
    expect(ruleHolds({ until: '6.18' }, parseRelease('6.12.118')!)).toBe(true);
    expect(ruleHolds({ until: '6.18' }, parseRelease('6.18.44')!)).toBe(false);
  });
  test('every versioned rule has an id of its family, says where it holds, and is read for each release', () => {
    const rules = versionedRules();
    expect(new Set(rules.map((r) => r.id)).size).toBe(rules.length);
    for (const r of rules) {
      expect(r.id.startsWith(`${r.family}.`), r.id).toBe(true);
      expect(r.holds.length).toBeGreaterThan(10);
      expect(r.otherwise.length).toBeGreaterThan(5);
    }
    const on61 = rulesFor(parseRelease('6.1.192')!);
    const on612 = rulesFor(parseRelease('6.12.118')!);
    const on618 = rulesFor(parseRelease('6.18.44')!);
    expect(on61.hostExemptionAnywhere).toBe(false);
    expect(on612.hostExemptionAnywhere).toBe(true);
    expect(on61.pvUnsupported && on612.pvUnsupported && on618.pvUnsupported).toBe(true);
    expect(rulesFor(parseRelease('6.12.74')!).pvUnsupported).toBe(false);
    expect(on61.immutableFeatureMsrs).toBe(false);
    expect(on612.immutableFeatureMsrs && !on612.platformInfoImmutable).toBe(true);
    expect(on618.platformInfoImmutable && on618.cetMsrs && on618.xssSupported).toBe(true);
    expect(on61.canonicalByHostLa57).toBe(false);
    expect(rulesFor(parseRelease('6.12.40')!).canonicalByHostLa57).toBe(false);
    expect(rulesFor(parseRelease('6.12.41')!).canonicalByHostLa57).toBe(true);
  });
});

describe('ARCH_CAPABILITIES and PERF_CAPABILITIES without the CPUID bit', () => {
  for (const name of ['svm-amd-derived', 'vmx-intel-derived']) {
    test(`${name} on 6.12: the host reads the feature value and writes any value; on 6.18 it may not`, () => {
      const old = machine({ profile: onKernel(name, '6.12.117') });
      const feature = sysGet(old, ARCH_CAP);
      expect(feature).not.toBeNull();
      expect(get(old, ARCH_CAP)).toBe(feature);
      expect(set(old, ARCH_CAP, 0x1234n)).toBe(true);
      expect(get(old, ARCH_CAP)).toBe(0x1234n);
      // The guest still needs the bit (#GP), on both generations.
      expect(old.kvm.rdmsr(old.vcpu, ARCH_CAP).kind).toBe('gp');

      const now = machine({ profile: builtinProfile(name) });
      setCpuidWithout(now, builtinProfile(name), [[7, 'edx', 29]]);
      expect(get(now, ARCH_CAP)).toBe(0n); // advertised but unsupported: reads 0
      expect(set(now, ARCH_CAP, 0x1234n)).toBe(false);
    });
  }

  test('6.12 PERF_CAPABILITIES: a host write is still checked against what KVM supports', () => {
    // SVM's kvm_caps.supported_perf_cap is 0: 0 passes, any bit fails (kvm_set_msr_common).
    const old = machine({ profile: onKernel('svm-amd-derived', '6.12.117') });
    expect(sysGet(old, PERF_CAP)).toBe(0n);
    expect(set(old, PERF_CAP, 0n)).toBe(true);
    expect(set(old, PERF_CAP, 1n << 13n)).toBe(false);
  });
});

describe('IA32_XSS on 6.12: kvm_caps.supported_xss is 0', () => {
  test('the host writes 0 and nothing else; 6.18 with CET supported takes CET bits', () => {
    const p = onKernel('svm-amd-derived', '6.12.117');
    const old = machine({ profile: p });
    expect(set(old, XSS, 0n)).toBe(true);
    expect(set(old, XSS, 1n << 11n)).toBe(false);
    const now = machine({ profile: builtinProfile('svm-amd-derived') });
    now.kvm.ioctl(now.vcpu, I.KVM_SET_CPUID2, encodeCpuid2(builtinProfile('svm-amd-derived').supportedCpuid));
    expect(set(now, XSS, 1n << 11n)).toBe(true);
  });

  test('the guest needs XSAVES for even a write of 0', () => {
    const p = onKernel('svm-amd-derived', '6.12.117');
    const m = machine({ profile: p });
    setCpuidWithout(m, p, [[0xd, 'eax', 3]]);
    expect(m.kvm.wrmsr(m.vcpu, XSS, 0n).kind).toBe('gp');
  });
});

describe('KVM_ASYNC_PF_EN (kvm_pv_enable_async_pf)', () => {
  function withIrqchip(): Machine {
    const kvm = new Kvm();
    const sys = kvm.open('/dev/kvm');
    const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
    expect(kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0)).toBe(0);
    return { kvm, sys, vm, vcpu: kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0) };
  }
  test('ENABLED alone needs no guest memory: only with DELIVERY_AS_INT is the GPA looked up', () => {
    // Seen live on kvm_amd 6.12: ASYNC_PF_EN=1 with an irqchip and no memory slot succeeds.
    const m = withIrqchip();
    expect(set(m, ASYNC_PF_EN, 1n)).toBe(true);
    expect(get(m, ASYNC_PF_EN)).toBe(1n);
    expect(set(m, ASYNC_PF_EN, 0x9n)).toBe(false); // no slot holds GPA 0
  });
});

describe('SPEC_CTRL bits the host accepted (profile.specCtrlAccepted)', () => {
  test('a measured mask replaces the one derived from CPUID, on SVM and VMX', () => {
    for (const name of ['svm-amd-derived', 'vmx-intel-derived']) {
      const derived = machine({ profile: builtinProfile(name) });
      const only2 = machine({ profile: variant(name, (j) => void (j['specCtrlAccepted'] = '0x4')) });
      expect(set(only2, SPEC_CTRL, 4n)).toBe(true);
      expect(set(only2, SPEC_CTRL, 1n)).toBe(false);
      expect(set(derived, SPEC_CTRL, 1n)).toBe(true);
    }
  });

  test('the field round-trips through the profile JSON and a bad one names the field', () => {
    const p = variant('svm-amd-derived', (j) => void (j['specCtrlAccepted'] = '0x7'));
    expect(parseProfile(JSON.parse(JSON.stringify(profileToJson(p))), 'p.json').specCtrlAccepted).toBe(7n);
    expect(() => variant('svm-amd-derived', (j) => void (j['specCtrlAccepted'] = 'seven'))).toThrow(/specCtrlAccepted/);
  });
});

describe('one host, three releases (profileForRelease): what a VMM sees change', () => {
  const on = (release: string, vendor: 'kvm_amd' | 'kvm_intel'): Machine => machine({ profile: profileForRelease(release, vendor).profile });
  const PV_WALL_CLOCK_NEW = 0x4b564d00;

  test('a PV MSR without its CPUID bit: host reads fail on 6.1.192 and 6.12.74, read 0 from 6.12.75', () => {
    const answers = ['6.1.166', '6.1.192', '6.12.74', '6.12.75', '6.12.118'].map((k) => {
      const m = on(k, 'kvm_amd');
      expect(m.kvm.ioctl(m.vcpu, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.ENFORCE_PV_FEATURE_CPUID, [1n]))).toBe(0);
      const b = msrs([[PV_WALL_CLOCK_NEW, 0x77n]]);
      return [m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b), datas(b)[0]];
    });
    // 6.1.166 and 6.12.74 return 1 (the entry keeps the VMM's data on 6.1, is zeroed on 6.12);
    // 6.1.192 says unsupported and has no exemption for emulated MSRs; 6.12.75 on exempt it.
    expect(answers).toEqual([[0, 0x77n], [0, 0n], [0, 0n], [1, 0n], [1, 0n]]);
  });

  test('a refused read keeps the VMM data on 6.1 and is zeroed from 6.12 (a VMX capability MSR without VMX)', () => {
    for (const [k, data] of [['6.1.192', 0x5a5an], ['6.12.118', 0n]] as const) {
      const m = on(k, 'kvm_intel');
      const b = msrs([[0x480, 0x5a5an]]);
      expect(m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b)).toBe(0);
      expect(datas(b)[0], k).toBe(data);
    }
  });

  test('TSC_AUX bits 63:32 on a fresh vCPU: dropped on 6.1, refused from 6.12', () => {
    const a = on('6.1.192', 'kvm_amd');
    expect(set(a, 0xc0000103, 0xffffffff00000001n)).toBe(true);
    expect(get(a, 0xc0000103)).toBe(1n);
    expect(set(on('6.12.118', 'kvm_amd'), 0xc0000103, 0xffffffff00000001n)).toBe(false);
  });

  test('HWCR: 6.1 takes exactly 0 or McStatusWrEn, 6.12 TscFreqSel too', () => {
    expect(set(on('6.1.192', 'kvm_amd'), 0xc0010015, 1n << 24n)).toBe(false);
    expect(set(on('6.1.192', 'kvm_amd'), 0xc0010015, 1n << 18n)).toBe(true);
    expect(set(on('6.12.118', 'kvm_amd'), 0xc0010015, (1n << 24n) | (1n << 18n))).toBe(true);
  });

  test('feature MSRs after KVM_RUN: 6.1 takes a change, 6.12 refuses it, PLATFORM_INFO freezes from 6.13', () => {
    for (const [k, archCap, platformInfo] of [['6.1.192', true, true], ['6.12.118', false, true], ['6.18.44', false, false]] as const) {
      const m = on(k, 'kvm_amd');
      m.kvm.markRan(m.vcpu);
      expect(set(m, ARCH_CAP, 0x1234n), k).toBe(archCap);
      expect(set(m, 0xce, 0n), k).toBe(platformInfo);
    }
  });

  test('FEAT_CTL: a host write of the VMX bits on a vCPU without VMX is refused on 6.1, taken from 6.12', () => {
    expect(set(on('6.1.192', 'kvm_intel'), 0x3a, 0x5n)).toBe(false);
    expect(set(on('6.12.118', 'kvm_intel'), 0x3a, 0x5n)).toBe(true);
  });

});

describe('the TSC sync slop by release (kvm_synchronize_tsc)', () => {
  test('a first host write within a second of the generation joins it on 6.1, sets the value from 6.12', () => {
    // A still clock: vCPU creation starts the generation at 0, and a host write of 1000 cycles is
    // within a second of it. 6.12 syncs only after a user write (user_set_tsc); 6.1 always.
    for (const [k, tsc] of [['6.1.192', 0n], ['6.12.118', 1000n]] as const) {
      const m = machine({ profile: profileForRelease(k, 'kvm_amd').profile, now: () => 0 });
      expect(set(m, 0x10, 1000n), k).toBe(true);
      expect(get(m, 0x10), k).toBe(tsc);
    }
  });
});
