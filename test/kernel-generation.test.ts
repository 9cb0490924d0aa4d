// Rules that changed between the kernel generations kvmsr knows, chosen by the profile's kernel
// release (X86.kernel), plus the profile fields that carry what only a measurement can tell.
// The 6.12 behaviour was measured live on kvm_amd 6.12.117 (Debian linux-source-6.12) under QEMU TCG
// with scripts/kvm-amd-oracle.sh; the 6.18 behaviour is the derived profiles' (vendor-msr-spec.md §9).
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { parseProfile, profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { kernelGeneration } from '../src/kvm/x86.js';
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

test('kernelGeneration reads major and minor, and counts an unreadable release as the newest known', () => {
  expect(kernelGeneration('6.12.117')).toBe(612);
  expect(kernelGeneration('6.18.44-pvm')).toBe(618);
  expect(kernelGeneration('7.3.0')).toBe(703);
  expect(kernelGeneration('unknown')).toBe(618);
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
