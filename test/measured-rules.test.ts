// Measured MSR rules (src/kvm/measured-rules.ts): what each read and write kind answers, host and
// guest, that they stand in front of the vendor hooks (so __kvm_set_msr's checks and the advertised-
// MSR rule still apply), that the fast path agrees, and that a malformed rule names its field.
import { describe, expect, test } from 'vitest';
import { KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN } from '../src/abi/layout.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { encodeEnableCap } from '../src/abi/codecs.js';
import { parseProfile, profileToJson, type HostProfile } from '../src/kvm/profile.js';
import type { MsrRule } from '../src/kvm/x86/measured-rules.js';
import { builtinProfile } from '../src/profiles.js';
import { getMsr, machine, setMsr, sourceProfile } from './helpers.js';

const ONES = 0xffffffffffffffffn;
const withRules = (rules: Record<string, MsrRule>, base: HostProfile = sourceProfile()): HostProfile =>
  parseProfile({ ...profileToJson(base), msrRules: rules }, 'rules.json');

describe('measured rules', () => {
  test('load/store: any value, from the host and the guest, reads back as written (PAT past kvm_pat_valid)', () => {
    const src = machine();
    expect(setMsr(src, 0x277, 0x8n)).toBe(false); // the source rule: type 8 is invalid
    const m = machine({ profile: withRules({ '0x277': { hostRead: 'load', hostWrite: 'store', guestRead: 'load', guestWrite: 'store' } }) });
    expect(setMsr(m, 0x277, 0x8n)).toBe(true);
    expect(getMsr(m, 0x277)).toBe(0x8n);
    m.kvm.markRan(m.vcpu);
    expect(m.kvm.wrmsr(m.vcpu, 0x277, ONES)).toEqual({ kind: 'ok', value: ONES });
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toEqual({ kind: 'ok', value: ONES });
  });

  test('zero/drop: accepted and dropped; a guest-only rule leaves the host to the model', () => {
    const m = machine({ profile: withRules({ '0x48': { hostRead: 'zero', hostWrite: 'drop' }, '0x1a0': { guestWrite: 'store' } }) });
    expect(setMsr(m, 0x48, ONES)).toBe(true);
    expect(getMsr(m, 0x48)).toBe(0n);
    // MISC_ENABLE: the host path is x86.c's (stores), the guest's write is stored as written.
    m.kvm.markRan(m.vcpu);
    expect(m.kvm.wrmsr(m.vcpu, 0x1a0, 0n).kind).toBe('ok');
    expect(getMsr(m, 0x1a0)).toBe(0n);
    const src = machine();
    src.kvm.markRan(src.vcpu);
    expect(src.kvm.wrmsr(src.vcpu, 0x1a0, 0n).kind).toBe('gp'); // the source rule: BTS/PEBS_UNAVAIL are read-only to the guest
  });

  test('unsupported: the host reads 0 from a listed MSR and writes only 0; the guest exits with UNKNOWN, an error rule with INVAL', () => {
    const p = withRules({ '0x277': { hostRead: 'unsupported', hostWrite: 'unsupported', guestRead: 'unsupported', guestWrite: 'unsupported' }, '0xc0000104': { guestRead: 'error', guestWrite: 'error' } });
    const m = machine({ profile: p });
    expect(p.msrIndexList).toContain(0x277);
    expect(getMsr(m, 0x277)).toBe(0n);
    expect(setMsr(m, 0x277, 0n)).toBe(true);
    expect(setMsr(m, 0x277, 1n)).toBe(false);
    m.kvm.ioctlOrThrow(m.vm, I.KVM_ENABLE_CAP, encodeEnableCap(I.KVM_CAP.X86_USER_SPACE_MSR, [3n]));
    m.kvm.markRan(m.vcpu);
    expect(m.kvm.rdmsr(m.vcpu, 0x277)).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_UNKNOWN });
    m.kvm.completeMsrExit(m.vcpu);
    expect(m.kvm.wrmsr(m.vcpu, 0xc0000104, 0n)).toMatchObject({ kind: 'exit', reason: KVM_MSR_EXIT_REASON_INVAL });
  });

  test("__kvm_set_msr's own checks still run first: a non-canonical LSTAR is refused under a store rule", () => {
    const m = machine({ profile: withRules({ '0xc0000082': { hostRead: 'load', hostWrite: 'store' } }) });
    expect(setMsr(m, 0xc0000082, 0x0000800000000000n)).toBe(false);
    expect(setMsr(m, 0xc0000082, 0xffff800000001000n)).toBe(true);
  });

  test('the bulk fast path answers as the full path under every captured profile', () => {
    for (const name of ['pvm-amd-epyc-6.18.44-v669', 'pvm-intel-6.18.44-v669'] as const) {
      const p = builtinProfile(name);
      const fast = machine({ profile: p });
      const slow = machine({ profile: p, fastPath: false });
      for (const index of [...p.msrIndexList, ...Object.keys(p.msrRules ?? {}).map(Number), 0x48, 0x49, 0x10b]) {
        for (const v of [0n, 1n, ONES, 0x0606060606060606n]) {
          expect(setMsr(fast, index, v), `${name} set 0x${index.toString(16)}=${v}`).toBe(setMsr(slow, index, v));
          if (index !== 0x10) expect(getMsr(fast, index), `${name} get 0x${index.toString(16)}`).toBe(getMsr(slow, index));
        }
      }
    }
  });

  test('a malformed rule is refused with the file and the field', () => {
    expect(() => withRules({ '0x277': { hostRead: 'store' } as unknown as MsrRule })).toThrow('rules.json: msrRules.0x277.hostRead: expected one of load, zero, unsupported, error');
    expect(() => withRules({ '0x277': { host: 'store' } as unknown as MsrRule })).toThrow('rules.json: msrRules.0x277.host: expected only hostRead, hostWrite, hostKeep, guestRead, guestWrite, guestKeep');
    expect(() => withRules({ '0x99999999': {} })).toThrow('rules.json: msrRules.0x99999999: MSR 0x99999999 is outside the ranges kvmsr models');
  });
});

describe('a keep mask on a measured store', () => {
  test('only the kept bits of a write stick, and the mask round-trips through the profile JSON', async () => {
    const { parseProfile, profileToJson } = await import('../src/kvm/profile.js');
    const { builtinProfile } = await import('../src/profiles.js');
    const p = builtinProfile('kvm-amd-6.12-distro-qemu-tcg');
    expect(p.msrRules?.[0x174]).toEqual({ guestRead: 'load', guestWrite: 'store', guestKeep: 0xffffn });
    expect(parseProfile(JSON.parse(JSON.stringify(profileToJson(p))), 'x').msrRules?.[0x174]?.guestKeep).toBe(0xffffn);
    const { Kvm } = await import('../src/kvm/kvm.js');
    const I = await import('../src/abi/kvm-ioctls.js');
    const kvm = new Kvm({ profile: p });
    const vm = kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const v = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
    kvm.markRan(v);
    kvm.wrmsr(v, 0x174, 0xffffffffffffffffn);
    expect(kvm.rdmsr(v, 0x174)).toEqual({ kind: 'ok', value: 0xffffn });
  });
});
