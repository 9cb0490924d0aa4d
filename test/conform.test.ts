// kvmsr conform's machinery, with a second kvmsr standing in for the real kernel (the live run
// needs /dev/kvm and is exercised where there is one): identical models agree everywhere; a
// model that differs in one rule is caught, in the right group, and shrunk to one ioctl with one
// entry.
import { describe, expect, test } from 'vitest';
import { decodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { caseFile, Conformance } from '../src/conform/conform.js';
import { Kvm } from '../src/kvm/kvm.js';
import { M } from '../src/kvm/msr-index.js';
import type { VendorOps } from '../src/kvm/vendor.js';
import { pvmOps } from '../src/pvm/pvm-ops.js';
import { sourceProfile } from './helpers.js';

/** The PVM rules, except that IA32_MISC_ENABLE drops bit 22 on writes. */
const mutated: VendorOps = {
  ...pvmOps,
  setMsr(x86, vcpu, index, host, lo, hi) {
    if (index === M.MSR_IA32_MISC_ENABLE) return x86.store(vcpu, index, lo & ~(1 << 22), hi);
    return pvmOps.setMsr(x86, vcpu, index, host, lo, hi);
  },
  fastSetClass(x86, index) {
    return index === M.MSR_IA32_MISC_ENABLE ? 0 : pvmOps.fastSetClass(x86, index);
  },
};

describe('kvmsr conform (kvmsr against kvmsr)', () => {
  test('identical models agree on every systematic and random case', () => {
    const p = sourceProfile();
    const c = new Conformance(new Kvm({ profile: p }), new Kvm({ profile: p }), p, { cases: 200, seed: 7 });
    const r = c.run();
    expect(r.disagreements).toEqual([]);
    expect(r.systematicRate).toBe(1);
    expect(r.agreementRate).toBe(1);
    expect(r.systematic.find((g) => g.group === 'KVM paravirt')!.cases).toBeGreaterThan(20);
    // Reported with the report, since it widens the IA32_TSC window on stable hosts.
    expect(Number.isInteger(r.longestCallMs) && r.longestCallMs >= 0).toBe(true);
    // PVM: the guest reads the host TSC, which kvmsr estimates from the uptime.
    expect(r.rules).toContain("IA32_TSC compared by rule, since kvmsr's value rests on its estimate of the host TSC: equal, or both non-zero");
  });

  test('a one-rule difference is caught and shrunk to a minimal reproducer', () => {
    const p = sourceProfile();
    const real = new Kvm({ profile: p, vendor: mutated });
    const c = new Conformance(real, new Kvm({ profile: p }), p, { cases: 0, seed: 1 });
    const r = c.run();
    expect(r.disagreements.length).toBeGreaterThan(0);
    expect(r.systematicRate).toBeLessThan(1);
    const d = r.disagreements[0]!;
    expect(d.group).toBe('other');
    // Minimal: write bit 22, read it back; one entry each.
    expect(d.steps.map((s) => I.ioctlName(s.request))).toEqual(['KVM_SET_MSRS', 'KVM_GET_MSRS']);
    for (const s of d.steps) expect(decodeMsrs(s.arg as Uint8Array).entries.map((e) => e.index)).toEqual([0x1a0]);
    // The written value is shrunk to the one bit that matters.
    expect(decodeMsrs(d.steps[0]!.arg as Uint8Array).entries[0]!.data).toBe(0x400000n);
    expect(d.decoded[0]).toBe('[0] 0x1a0 IA32_MISC_ENABLE: in 0x0, kernel 0x0, kvmsr 0x400000');
    const file = caseFile(d, p);
    expect(file['format']).toBe('kvmsr-conform-case');
  });

  test('random batches with a difference are shrunk to the entries that matter', () => {
    const p = sourceProfile();
    const c = new Conformance(new Kvm({ profile: p, vendor: mutated }), new Kvm({ profile: p }), p, { cases: 200, seed: 3 });
    const r = c.run();
    const random = r.disagreements.filter((d) => d.group.startsWith('random'));
    expect(random.length).toBeGreaterThan(0);
    const last = random[0]!.steps[random[0]!.steps.length - 1]!;
    expect(decodeMsrs(last.arg as Uint8Array).entries.length).toBeLessThanOrEqual(2);
    expect(r.random.agreed).toBeLessThan(200);
  });
});
