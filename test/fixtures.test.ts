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
      // What replay cannot know is said, not hidden: KVM_SET_LAPIC, and the guest's own writes.
      expect(r.unknowable.map((u) => u.name)).toContain('KVM_SET_LAPIC');
      const ran = new Set(c.records.filter((x) => x.name === 'KVM_RUN').map((x) => x.vcpuId)).size;
      expect(ran).toBe(f.ran);
      expect(r.adopted).toBe(f.adopted);
      if (f.adopted > 0) expect(r.rules.join('\n')).toMatch(/the guest ran \(KVM_RUN/);
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
