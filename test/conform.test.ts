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
import type { Answers, PlanCase } from '../src/harvest/format.js';
import { runOnKvmsr } from '../src/harvest/on-kvmsr.js';
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

describe('kvmsr conform: what the host handles unlisted, the guest path, one shrink per distinct disagreement', () => {
  test('unlisted MSRs the host handles are compared too, under their own groups', () => {
    const p = sourceProfile();
    // The stand-in kernel refuses IA32_PLATFORM_ID, which x86.c reads as 0 and this profile does not list.
    const refuses: VendorOps = { ...pvmOps, getMsr: (x86, v, i, h, out) => (i === 0x17 ? 1 : pvmOps.getMsr(x86, v, i, h, out)), fastGetClass: (x86, i) => (i === 0x17 ? 0 : pvmOps.fastGetClass(x86, i)) };
    expect(p.msrIndexList).not.toContain(0x17);
    const c = new Conformance(new Kvm({ profile: p, vendor: refuses }), new Kvm({ profile: p }), p, { cases: 0, seed: 1 });
    const r = c.run();
    expect(r.systematic.some((g) => g.group.startsWith('unlisted'))).toBe(true);
    expect(r.disagreements.map((d) => d.group)).toContain('unlisted other');
    expect(r.disagreements.some((d) => d.decoded.some((x) => x.startsWith('[0] 0x17')))).toBe(true);
  });

  test('many disagreements of one kind are shrunk once and counted', () => {
    const p = sourceProfile();
    const c = new Conformance(new Kvm({ profile: p, vendor: mutated }), new Kvm({ profile: p }), p, { cases: 200, seed: 3 });
    const r = c.run();
    // Every setup and batch that touches MISC_ENABLE bit 22 disagrees the same way.
    expect(r.alike).toBeGreaterThan(0);
    const sigs = r.disagreements.filter((d) => !d.group.startsWith('random')).map((d) => d.decoded[0]?.split(':')[0]);
    expect(new Set(sigs).size).toBe(sigs.length);
  });

  test('the guest path: a guest runner stands in for kvmsr-probe; a difference is shrunk to the step and what it needs', () => {
    const p = sourceProfile();
    // The stand-in host's guest may not write MISC_ENABLE at all (#GP).
    const noGuestMiscEnable: VendorOps = { ...pvmOps, setMsr: (x86, v, i, h, lo, hi) => (i === M.MSR_IA32_MISC_ENABLE && !h ? 1 : pvmOps.setMsr(x86, v, i, h, lo, hi)) };
    const runner = (cases: PlanCase[]): Answers => {
      const m = new Map(cases.map((c) => [c.id, runOnKvmsr(p, c, { vendor: noGuestMiscEnable })] as const));
      return { info: { kernel: '', machine: '', cpuVendor: '', cpuModel: '', modules: [], params: {}, jobs: 1 }, cases: m };
    };
    const c = new Conformance(new Kvm({ profile: p }), new Kvm({ profile: p }), p, { cases: 0, seed: 1, guestRunner: runner });
    const r = c.run();
    expect(r.guestSkipped).toBeUndefined();
    const g = r.disagreements.filter((d) => d.group.startsWith('guest path'));
    expect(g.length).toBeGreaterThan(0);
    const last = g[0]!.guest!.case.steps.at(-1)!;
    expect(last).toMatchObject({ op: 'wr', index: 0x1a0 });
    expect(g[0]!.guest!.case.steps.length).toBeLessThan(5);
    expect(g[0]!.differences[0]).toContain('guest WRMSR');
    // Without a runner (no /dev/kvm), the report says the guest path was not compared.
    expect(new Conformance(new Kvm({ profile: p }), new Kvm({ profile: p }), p, { cases: 0 }).run().guestSkipped).toContain('no guest runner');
  });
});
