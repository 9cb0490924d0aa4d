// QEMU on the Intel PVM host: qemu-system-x86_64 7.2 (Debian) with -accel kvm, recorded with
// `kvmsr record` on kvm_pvm 6.18.44 build fc-v669 on an Intel Xeon (2026-12-01, kvmsr at 678bd93;
// /work/shared/live/pvm-intel-6.18.44-v669/README.md). Each capture embeds the profile captured on
// that host; each replays on kvmsr, with no QEMU and no /dev/kvm, both with that embedded profile and
// with the built-in profile of the host, and every byte must equal the kernel's. Counts are pinned so
// a fixture cannot silently shrink.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { parseCapture } from '../src/capture/format.js';
import { replay, type ReplayOptions } from '../src/capture/replay.js';
import { builtinProfile } from '../src/profiles.js';

const HOST = 'pvm-intel-6.18.44-v669';
const DIR = join(import.meta.dirname, 'fixtures', HOST);
const text = (name: string): string => gunzipSync(readFileSync(join(DIR, `${name}.jsonl.gz`))).toString('utf8');

const FIXTURES = [
  // name, what QEMU did, ioctls, MSR ioctls, entries, vCPUs that went through KVM_RUN, values kvmsr
  // could not know (after KVM_RUN or KVM_SET_LAPIC) and adopted from the capture
  { name: 'pvm-intel-qemu-start-quit', what: '-S, then quit at the monitor', ioctls: 35, msrIoctls: 14, entries: 278, ran: 0, adopted: 0 },
  { name: 'pvm-intel-qemu-seabios-2vcpu', what: 'SeaBIOS for 10 s with -smp 2', ioctls: 84, msrIoctls: 28, entries: 706, ran: 2, adopted: 14 },
  { name: 'pvm-intel-qemu-migrate-save', what: '-smp 2, migrate to a file (saves every MSR)', ioctls: 94, msrIoctls: 30, entries: 886, ran: 2, adopted: 27 },
  { name: 'pvm-intel-qemu-migrate-load', what: '-incoming from that file (restores them), info registers -a', ioctls: 134, msrIoctls: 56, entries: 1918, ran: 2, adopted: 27 },
  { name: 'pvm-intel-qemu-cpu-max-migrate-save', what: '-cpu max -smp 2, migrate to a file', ioctls: 102, msrIoctls: 38, entries: 912, ran: 2, adopted: 27 },
  { name: 'pvm-intel-qemu-cpu-max-migrate-load', what: '-cpu max -smp 2, -incoming from that file', ioctls: 142, msrIoctls: 64, entries: 1964, ran: 2, adopted: 27 },
] as const;

const PROFILES: [string, () => ReplayOptions][] = [
  ['the profile embedded in the capture', () => ({})],
  [`the built-in profile ${HOST}`, () => ({ profile: builtinProfile(HOST) })],
];

describe(`QEMU captures recorded on ${HOST} replay on kvmsr with every byte equal`, () => {
  for (const [on, opts] of PROFILES) {
    describe(`with ${on}`, () => {
      for (const f of FIXTURES) {
        test(`${f.name}: ${f.what}`, () => {
          const c = parseCapture(text(f.name), f.name);
          expect(c.error).toBeUndefined();
          expect(c.header).toMatchObject({ kernel: '6.18.44-fc-v669', vendorModule: 'kvm_pvm', cpuVendor: 'GenuineIntel' });
          expect(c.header.profile).toBeDefined();
          const r = replay(c, { continueOnDivergence: true, ...opts() });
          expect(r.divergences).toEqual([]);
          expect({ ioctls: r.ioctls, msrIoctls: r.msrIoctls, entries: r.entries }).toEqual({ ioctls: f.ioctls, msrIoctls: f.msrIoctls, entries: f.entries });
          // Replayed on a profile of the host it was recorded on: no warning about other hosts.
          expect(r.rules.join('\n')).not.toMatch(/was recorded on/);
          expect(r.unknowable.map((u) => u.name)).not.toContain('KVM_SET_LAPIC'); // modelled (vcpu-state.ts)
          const ran = new Set(c.records.filter((x) => x.name === 'KVM_RUN').map((x) => x.vcpuId)).size;
          expect(ran).toBe(f.ran);
          expect(r.adopted).toBe(f.adopted);
        });
      }
    });
  }

  test('before the first KVM_RUN every value is compared: one altered value is caught there', () => {
    const lines = text('pvm-intel-qemu-migrate-load').split('\n');
    // vCPU 0's first KVM_GET_MSRS (seq 39) reads what QEMU's reset put, before any KVM_SET_LAPIC.
    const i = lines.findIndex((l) => l.includes('"fdKind":"vcpu"') && l.includes('"vcpuId":0') && l.includes('"request":"0xc008ae88"'));
    expect(i).toBeGreaterThan(0);
    const rec = JSON.parse(lines[i]!) as { seq: number; out: string };
    expect(rec.seq).toBe(39);
    // Entry 3 (IA32_CR_PAT in QEMU's list, 0x7040600070406) gets another value in the kernel's answer.
    const at = (8 + 3 * 16 + 8) * 2;
    expect(rec.out.slice(at, at + 16)).toBe('0604070006040700');
    rec.out = rec.out.slice(0, at) + '0600000000000000' + rec.out.slice(at + 16);
    lines[i] = JSON.stringify(rec);
    for (const [, opts] of PROFILES) {
      const r = replay(parseCapture(lines.join('\n'), 'altered'), { continueOnDivergence: true, ...opts() });
      expect(r.divergences).toHaveLength(1);
      expect(r.divergences[0]!.seq).toBe(39);
      expect(r.divergences[0]!.entries.find((e) => e.differs)).toMatchObject({ name: '0x277 IA32_CR_PAT', expected: '0x6', actual: '0x7040600070406' });
    }
  });
});
