// QEMU 7.2 with Hyper-V enlightenments (hv-relaxed, hv-vapic, hv-time, hv-vpindex, hv-runtime,
// hv-crash, hv-reset, hv-synic, hv-stimer, hv-frequencies, hv-reenlightenment, hv-tlbflush, hv-ipi)
// saving a 2-vCPU VM to a file and restoring it, recorded with `kvmsr record` on the
// distribution-config kvm_amd 6.12 oracle (scripts/record-qemu-hv.sh inside scripts/kvm-amd-oracle.sh,
// 2026-12-01). Each replays on kvmsr with every byte equal; Hyper-V's VP runtime and reference
// counter are compared by their stated rules. Counts are pinned so a fixture cannot shrink.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { decodeMsrs } from '../src/abi/codecs.js';
import { parseCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { checkCaptures } from '../src/check/check.js';

const DIR = join(import.meta.dirname, 'fixtures', 'qemu-hv');
const text = (name: string): string => gunzipSync(readFileSync(join(DIR, `${name}.jsonl.gz`))).toString('utf8');

const FIXTURES = [
  { name: 'qemu-hv-migrate-save', ioctls: 119, msrIoctls: 30, entries: 1281, adopted: 28 },
  { name: 'qemu-hv-migrate-load', ioctls: 56, msrIoctls: 25, entries: 1084, adopted: 0 },
] as const;

describe('QEMU with hv-* flags on the distribution-config kvm_amd replays on kvmsr', () => {
  for (const f of FIXTURES) {
    test(f.name, () => {
      const c = parseCapture(text(f.name), f.name);
      expect(c.error).toBeUndefined();
      expect(c.header).toMatchObject({ kernel: '6.12.117', vendorModule: 'kvm_amd' });
      const r = replay(c, { continueOnDivergence: true });
      expect(r.divergences).toEqual([]);
      expect({ ioctls: r.ioctls, msrIoctls: r.msrIoctls, entries: r.entries, adopted: r.adopted }).toEqual({
        ioctls: f.ioctls, msrIoctls: f.msrIoctls, entries: f.entries, adopted: f.adopted,
      });
      // QEMU reads or writes the Hyper-V MSRs (GUEST_OS_ID among them) in its MSR batches.
      const hv = c.records.some((x) => (x.name === 'KVM_GET_MSRS' || x.name === 'KVM_SET_MSRS') && x.in !== undefined && decodeMsrs(x.in).entries.some((e) => e.index === 0x40000000));
      expect(hv).toBe(true);
    });
  }
  test('kvmsr check on the pair reports no error', () => {
    const save = parseCapture(text('qemu-hv-migrate-save'), 'save');
    const load = parseCapture(text('qemu-hv-migrate-load'), 'load');
    const findings = checkCaptures(save, load).findings;
    expect(findings.filter((x) => x.level === 'error')).toEqual([]);
  });
});
