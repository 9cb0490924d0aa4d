// Disagreements `kvmsr conform` found on a live host, kept as regression cases: each replays on
// kvmsr alone with that host's profile and must now write back the kernel's bytes.
// kvm-amd-6.12-qemu-tcg: `kvmsr conform --cases 500 --seed 2` on kvm_amd 6.12.117 under QEMU TCG
// (scripts/kvm-amd-oracle.sh), 2026-11-30; all were KVM_SYSTEM_TIME and KVM_SYSTEM_TIME_NEW
// sharing one value (kvm_write_system_time), which kvmsr kept apart.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { replayConformCase } from '../src/conform/case-replay.js';
import { HARVEST_CASE_FORMAT, replayHarvestCase } from '../src/harvest/case-file.js';
import { builtinProfile, type BuiltinProfileName } from '../src/profiles.js';

const ROOT = join(import.meta.dirname, 'conform-cases');

for (const host of readdirSync(ROOT)) {
  describe(`conform cases from ${host}`, () => {
    const profile = builtinProfile(host as BuiltinProfileName);
    for (const f of readdirSync(join(ROOT, host)).sort()) {
      test(f, () => {
        const json = JSON.parse(readFileSync(join(ROOT, host, f), 'utf8')) as { format?: string };
        if (json.format === HARVEST_CASE_FORMAT) {
          // A guest-path (or judge) case: every step's answer must be the host's.
          expect(replayHarvestCase(json, profile, f).disagreements).toEqual([]);
          return;
        }
        const r = replayConformCase(json, profile, f);
        expect(r.actual).toBe(r.expected);
        if (r.expectedRet !== null) expect(r.actualRet).toBe(r.expectedRet);
      });
    }
  });
}

test('a malformed case file is refused with its file and field', () => {
  const p = builtinProfile('kvm-amd-6.12-qemu-tcg');
  expect(() => replayConformCase({ format: 'x' }, p, 'c.json')).toThrow('c.json: format: expected "kvmsr-conform-case"');
  const ok = { format: 'kvmsr-conform-case', setup: { vcpus: 1 }, steps: [{ on: 0, request: '0xc008ae88', arg: 'zz' }], expected: { bytes: '' } };
  expect(() => replayConformCase(ok, p, 'c.json')).toThrow('c.json: steps[0].arg: expected hex bytes or a number');
  expect(() => replayConformCase({ ...ok, setup: { vcpus: -1 } }, p, 'c.json')).toThrow('c.json: setup.vcpus');
});
