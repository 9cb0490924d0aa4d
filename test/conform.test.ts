// kvmsr conform's machinery, with a second kvmsr standing in for the real kernel (the live run
// needs /dev/kvm and is exercised where there is one): identical models agree everywhere; a
// model that differs in one rule is caught, in the right group, and shrunk to one ioctl with one
// entry.
import { describe, expect, test } from 'vitest';
import { decodeCpuid2, decodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { replayConformCase } from '../src/conform/case-replay.js';
import { caseFile, Conformance, ruleText } from '../src/conform/conform.js';
import { builtinProfile } from '../src/profiles.js';
import { Kvm } from '../src/kvm/kvm.js';
import { M } from '../src/kvm/x86/msr-index.js';
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

describe('kvmsr conform with Hyper-V (a distribution kernel: KVM_CAP_HYPERV)', () => {
  const distro = () => builtinProfile('kvm-amd-6.12-distro-qemu-tcg');
  test('the MSRs a Hyper-V CPUID can change are compared with and without it, and agree', () => {
    const p = distro();
    const r = new Conformance(new Kvm({ profile: p }), new Kvm({ profile: p }), p, { cases: 120, seed: 5 }).run();
    expect(r.disagreements).toEqual([]);
    const group = (g: string) => r.systematic.find((x) => x.group === g);
    expect(group('Hyper-V')!.cases).toBeGreaterThan(100);
    expect(group('Hyper-V (Hyper-V CPUID)')!.cases).toBe(group('Hyper-V')!.cases / 4); // one setup of the four
    expect(group('KVM paravirt (Hyper-V CPUID)')!.cases).toBeGreaterThan(10);
    expect(group('batch (Hyper-V CPUID)')!.cases).toBe(1);
    // A host without Hyper-V gets no such setup.
    const plain = new Conformance(new Kvm({ profile: sourceProfile() }), new Kvm({ profile: sourceProfile() }), sourceProfile(), { cases: 0 }).run();
    expect(plain.systematic.some((g) => g.group.includes('(Hyper-V CPUID)'))).toBe(false);
    expect(plain.systematic.some((g) => g.group === 'unlisted Hyper-V')).toBe(true); // refused there, and compared
  });

  test('a difference that shows only with the Hyper-V CPUID is caught in that group, and its case file replays it', () => {
    const p = distro();
    // A stand-in kernel that reads HV_X64_MSR_VP_INDEX one higher on a vCPU given Hyper-V's CPUID.
    const HV_SIGNATURE = 0x31237648; // "Hv#1", leaf 0x40000001 EAX
    const inner = new Kvm({ profile: p });
    const hvFds = new Set<number>();
    const real = {
      open: (path: string) => inner.open(path),
      close: (fd: number) => (hvFds.delete(fd), inner.close(fd)),
      ioctl(fd: number, req: number, arg?: number | Uint8Array): number {
        if (req === I.KVM_SET_CPUID2 && arg instanceof Uint8Array) {
          const e = decodeCpuid2(arg).entries.find((x) => x.function === 0x40000001);
          if (e?.eax === HV_SIGNATURE) hvFds.add(fd);
          else hvFds.delete(fd);
        }
        const r = inner.ioctl(fd, req, arg);
        if (req === I.KVM_GET_MSRS && hvFds.has(fd) && arg instanceof Uint8Array && r > 0) {
          const dv = new DataView(arg.buffer, arg.byteOffset);
          for (let k = 0; k < r; k++) if (dv.getUint32(8 + k * 16, true) === 0x40000002) dv.setUint32(16 + k * 16, dv.getUint32(16 + k * 16, true) + 1, true);
        }
        return r;
      },
    };
    const r = new Conformance(real, new Kvm({ profile: p }), p, { cases: 0, seed: 1 }).run();
    expect(r.disagreements.length).toBeGreaterThan(0);
    for (const d of r.disagreements) expect(d.setup.hv).toBe(true);
    const d = r.disagreements.find((x) => x.group === 'Hyper-V (Hyper-V CPUID)')!;
    expect(d.steps.map((s) => I.ioctlName(s.request))).toEqual(['KVM_GET_MSRS']);
    expect(decodeMsrs(d.steps[0]!.arg as Uint8Array).entries.map((e) => e.index)).toEqual([0x40000002]);
    // The saved case keeps the setup; replayed on kvmsr it still shows the kernel's answer differs.
    const file = JSON.parse(JSON.stringify(caseFile(d, p))) as Record<string, unknown>;
    expect(file['setup']).toEqual({ irqchip: true, cpuid: true, hv: true, vcpus: 1 });
    const replayed = replayConformCase(file, p);
    expect(replayed.actualRet).toBe(replayed.expectedRet);
    expect(replayed.actual).not.toBe(replayed.expected);
    expect(replayed.actual).toBe(d.emuBytes);
  });
});

describe('conform states each rule once', () => {
  test('the entry, values and times of one use are dropped', () => {
    const moving = 'HV_X64_MSR_TIME_REF_COUNT (the VM clock in 100 ns) compared by rule: equal, or both non-zero';
    expect(ruleText(`${moving} (entry 25: real 0x6896b, kvmsr 0x6ad48)`)).toBe(moving);
    expect(ruleText(`${moving} (entry 0: real 0x2881a, kvmsr 0x2292b)`)).toBe(moving);
    expect(ruleText('IA32_TSC (entry 3) compared by rule, since x: within 50 ms, plus the longest time one paired call took (34 ms so far), modulo 2^64 (real 0x1, kvmsr 0x2)')).toBe(
      'IA32_TSC compared by rule, since x: within 50 ms, plus the longest time one paired call took, modulo 2^64',
    );
  });
});
