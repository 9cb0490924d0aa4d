// The QEMU fixtures: qemu-system-x86_64 7.2 (Debian) with -accel kvm, recorded with `kvmsr record` on
// a live kvm_amd 6.12.117 (scripts/kvm-amd-oracle.sh: the kernel under QEMU TCG, since these machines
// have no /dev/kvm of their own). Each capture embeds the profile captured on that host, and replays
// on kvmsr with no QEMU and no /dev/kvm. Counts are pinned so a fixture cannot silently shrink.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { parseCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';

const DIR = join(import.meta.dirname, 'fixtures', 'qemu');
const text = (name: string): string => gunzipSync(readFileSync(join(DIR, `${name}.jsonl.gz`))).toString('utf8');

const FIXTURES = [
  // name, what QEMU did, ioctls, MSR ioctls, entries, vCPUs that went through KVM_RUN, values read
  // after it that kvmsr could not know and adopted from the capture
  { name: 'qemu-start-quit', what: '-S, then quit at the monitor', ioctls: 40, msrIoctls: 14, entries: 287, ran: 0, adopted: 0 },
  { name: 'qemu-seabios-2vcpu', what: 'SeaBIOS for 10 s with -smp 2', ioctls: 129, msrIoctls: 28, entries: 730, ran: 2, adopted: 16 },
  { name: 'qemu-migrate-save', what: '-smp 2, migrate "exec:cat > FILE" after 10 s (saves every MSR)', ioctls: 147, msrIoctls: 30, entries: 916, ran: 2, adopted: 29 },
  { name: 'qemu-migrate-load', what: '-incoming "exec:cat FILE" (restores them), info registers -a', ioctls: 98, msrIoctls: 37, entries: 1074, ran: 2, adopted: 0 },
  // The same with -cpu max (TSC_AUX, SPEC_CTRL and more MSRs in QEMU's list), from another boot.
  { name: 'qemu-cpu-max-migrate-save', what: '-cpu max -smp 2, migrate to a file', ioctls: 155, msrIoctls: 38, entries: 952, ran: 2, adopted: 29 },
  { name: 'qemu-cpu-max-migrate-load', what: '-cpu max -smp 2, -incoming from that file', ioctls: 106, msrIoctls: 45, entries: 1114, ran: 2, adopted: 0 },
  // A host booted with tsc=unstable (profile.tscUnstable): IA32_TSC is adopted, by a stated rule.
  { name: 'qemu-unstable-tsc-migrate-save', what: 'unstable host TSC, -smp 2, migrate to a file', ioctls: 147, msrIoctls: 30, entries: 916, ran: 2, adopted: 29 },
  { name: 'qemu-unstable-tsc-migrate-load', what: 'unstable host TSC, -incoming from that file', ioctls: 98, msrIoctls: 37, entries: 1074, ran: 2, adopted: 0 },
] as const;

describe('QEMU fixtures recorded on kvm_amd 6.12 replay on kvmsr with every byte equal', () => {
  for (const f of FIXTURES) {
    test(`${f.name}: ${f.what}`, () => {
      const c = parseCapture(text(f.name), f.name);
      expect(c.error).toBeUndefined();
      expect(c.header).toMatchObject({ kernel: '6.12.117', vendorModule: 'kvm_amd' });
      expect(c.header.profile).toBeDefined();
      const r = replay(c, { continueOnDivergence: true });
      expect(r.divergences).toEqual([]);
      expect({ ioctls: r.ioctls, msrIoctls: r.msrIoctls, entries: r.entries }).toEqual({ ioctls: f.ioctls, msrIoctls: f.msrIoctls, entries: f.entries });
      // What replay cannot know is said, not hidden: the guest's own writes. KVM_SET_LAPIC is modelled.
      expect(r.unknowable.map((u) => u.name)).not.toContain('KVM_SET_LAPIC'); // modelled (vcpu-state.ts)
      const ran = new Set(c.records.filter((x) => x.name === 'KVM_RUN').map((x) => x.vcpuId)).size;
      expect(ran).toBe(f.ran);
      expect(r.adopted).toBe(f.adopted);
      if (f.adopted > 0) expect(r.rules.join('\n')).toMatch(/the guest ran \(KVM_RUN/);
      const unstable = (c.header.profile as { tscUnstable?: boolean }).tscUnstable === true;
      expect(unstable).toBe(f.name.includes('unstable-tsc'));
      if (unstable) expect(r.rules.join('\n')).toMatch(/IA32_TSC not compared: the host TSC is unstable/);
    });
  }

  test('before the first KVM_RUN every value is compared: one altered value is caught there', () => {
    const lines = text('qemu-migrate-load').split('\n');
    // vCPU 0's first KVM_GET_MSRS (seq 44) reads the state QEMU put before the incoming one.
    const i = lines.findIndex((l) => l.includes('"fdKind":"vcpu"') && l.includes('"vcpuId":0') && l.includes('"request":"0xc008ae88"'));
    expect(i).toBeGreaterThan(0);
    const rec = JSON.parse(lines[i]!) as { out: string };
    // Entry 3 (IA32_CR_PAT in QEMU's list) gets another value in the kernel's answer.
    const at = (8 + 3 * 16 + 8) * 2;
    rec.out = rec.out.slice(0, at) + '0600000000000000' + rec.out.slice(at + 16);
    lines[i] = JSON.stringify(rec);
    const r = replay(parseCapture(lines.join('\n'), 'altered'), { continueOnDivergence: true });
    expect(r.divergences).toHaveLength(1);
    expect(r.divergences[0]!.entries.find((e) => e.differs)).toMatchObject({ name: '0x277 IA32_CR_PAT', expected: '0x6' });
  });
});

describe('kvmsr check on QEMU\'s own save and restore (docs/check.md pins the same report)', () => {
  test('no errors; the warnings are the guest-writable listed MSRs QEMU 7.2 does not migrate for qemu64', async () => {
    const { checkCaptures } = await import('../src/check/check.js');
    const r = checkCaptures(parseCapture(text('qemu-migrate-save'), 'save'), parseCapture(text('qemu-migrate-load'), 'load'));
    expect(r.findings.filter((f) => f.severity === 'error')).toEqual([]);
    const warned = (vcpu: string) => r.findings.filter((f) => f.severity === 'warning' && f.vcpu === vcpu).map((f) => `${f.kind} ${f.msr}`);
    // KVM_SYSTEM_TIME_NEW and KVM_WALL_CLOCK_NEW are not warned: QEMU saves KVM_SYSTEM_TIME and
    // KVM_WALL_CLOCK, which KVM keeps in the same state (vcpu->arch.time, kvm->arch.wall_clock).
    const expected = [
      'not-saved 0x140 MISC_FEATURES_ENABLES',
      'not-saved 0x1fc IA32_POWER_CTL',
      'not-saved 0x4b564d05 KVM_POLL_CONTROL',
      'not-saved 0x4b564d06 KVM_ASYNC_PF_INT',
    ];
    expect(warned('vm9/vcpu0')).toEqual(expected);
    expect(warned('vm9/vcpu1')).toEqual(expected);
    // These captures predate timestamps and the state getters: what that hides is said, not judged.
    expect(r.notes.join('\n')).toContain('the restore capture has no timestamps');
    expect(r.notes.join('\n')).toContain('predates the recording of KVM_GET_CLOCK');
    // Every MSR QEMU saved came back with the same value (IA32_TSC aside, which moves).
    const saved = r.roundTrip.filter((t) => t.saved !== null);
    expect(saved.length).toBe(2 * 94);
    expect(saved.filter((t) => t.restored === null)).toEqual([]);
    expect(saved.filter((t) => t.msr !== '0x10 IA32_TSC' && t.restored !== t.saved)).toEqual([]);
  });

  test('with -cpu max QEMU also saves TSC_AUX, KVM_ASYNC_PF_INT and KVM_POLL_CONTROL, leaving two warnings per vCPU', async () => {
    const { checkCaptures } = await import('../src/check/check.js');
    const r = checkCaptures(parseCapture(text('qemu-cpu-max-migrate-save'), 'save'), parseCapture(text('qemu-cpu-max-migrate-load'), 'load'));
    expect(r.findings.filter((f) => f.severity === 'error')).toEqual([]);
    const warned = r.findings.filter((f) => f.severity === 'warning' && f.vcpu === 'vm9/vcpu0').map((f) => f.msr);
    expect(warned).toEqual(['0x140 MISC_FEATURES_ENABLES', '0x1fc IA32_POWER_CTL']);
    // 29 read by index, and the two KVM clock MSRs saved under their legacy numbers.
    expect(r.coverage.find((c) => c.vcpu === 'vm9/vcpu0')!.saved).toBe(31);
  });

  test('a restore that drops one MSR and changes another is caught as errors', async () => {
    const { checkCaptures } = await import('../src/check/check.js');
    const hexIndex = (e: string) => parseInt(e.slice(6, 8) + e.slice(4, 6) + e.slice(2, 4) + e.slice(0, 2), 16);
    // Every KVM_SET_MSRS of vCPU 0 in the restore: STAR left out, LSTAR written as another value.
    const lines = text('qemu-migrate-load')
      .split('\n')
      .map((l) => {
        if (!l.includes('"vcpuId":0,') || !l.includes('"request":"0x4008ae89"')) return l;
        const rec = JSON.parse(l) as { in: string; ret: number };
        const all = Array.from({ length: (rec.in.length - 16) / 32 }, (_, k) => rec.in.slice(16 + 32 * k, 48 + 32 * k));
        const keep = all.filter((e) => hexIndex(e) !== 0xc0000081).map((e) => (hexIndex(e) === 0xc0000082 ? e.slice(0, 16) + '00f0ffffffffffff' : e));
        const n = keep.length.toString(16).padStart(8, '0').match(/../g)!.reverse().join('');
        const bytes = `${n}${rec.in.slice(8, 16)}${keep.join('')}`;
        return JSON.stringify({ ...rec, in: bytes, out: bytes, ret: Math.min(rec.ret, keep.length) });
      });
    const broken = parseCapture(lines.join('\n'), 'broken-load');
    expect(broken.error).toBeUndefined();
    const r = checkCaptures(parseCapture(text('qemu-migrate-save'), 'save'), broken);
    const errors = r.findings.filter((f) => f.severity === 'error').map((f) => `${f.kind} ${f.vcpu} ${f.msr}`);
    expect(errors).toEqual(['not-restored vm9/vcpu0 0xc0000081 STAR', 'restored-different vm9/vcpu0 0xc0000082 LSTAR', 'read-back-different vm9/vcpu0 0xc0000082 LSTAR']);
  });
});
