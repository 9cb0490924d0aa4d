// QEMU 7.2 with Hyper-V enlightenments (hv-relaxed, hv-vapic, hv-time, hv-vpindex, hv-runtime,
// hv-crash, hv-reset, hv-synic, hv-stimer, hv-frequencies, hv-reenlightenment, hv-tlbflush, hv-ipi)
// saving a 2-vCPU VM to a file and restoring it, recorded with `kvmsr record` on the
// distribution-config kvm_amd 6.12 oracle (scripts/record-qemu-hv.sh inside scripts/kvm-amd-oracle.sh,
// 2026-12-07; the restore waits until QEMU has loaded the whole stream). Each replays on kvmsr with
// every byte equal; Hyper-V's VP runtime and reference counter are compared by their stated rules.
// Counts are pinned so a fixture cannot shrink.
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
  { name: 'qemu-hv-migrate-save', ioctls: 147, msrIoctls: 30, entries: 1281, adopted: 28 },
  { name: 'qemu-hv-migrate-load', ioctls: 125, msrIoctls: 37, entries: 1478, adopted: 0 },
] as const;

describe('QEMU with hv-* flags on the distribution-config kvm_amd replays on kvmsr', () => {
  for (const f of FIXTURES) {
    test(f.name, () => {
      const c = parseCapture(text(f.name), f.name);
      expect(c.error).toBeUndefined();
      expect(c.header).toMatchObject({ kernel: '6.12.118', vendorModule: 'kvm_amd' });
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
    expect(findings.filter((x) => x.severity === 'error')).toEqual([]);
    const warned = (v: string) => findings.filter((f) => f.severity === 'warning' && f.vcpu === v).map((f) => `${f.kind} ${f.msr}`);
    const qemuLeaves = ['0x140 MISC_FEATURES_ENABLES', '0x1fc IA32_POWER_CTL', '0x40000118 HV_X64_MSR_TSC_INVARIANT_CONTROL', '0x4b564d05 KVM_POLL_CONTROL', '0x4b564d06 KVM_ASYNC_PF_INT'];
    expect(warned('vm9/vcpu0')).toEqual(qemuLeaves.map((m) => `not-saved ${m}`));
    expect(warned('vm9/vcpu1')).toEqual(qemuLeaves.map((m) => `not-saved ${m}`));
  });
  test('a partition-wide Hyper-V MSR restored on no vCPU at all is still an error on each', () => {
    const save = parseCapture(text('qemu-hv-migrate-save'), 'save');
    // Every KVM_SET_MSRS of the restore without HV_X64_MSR_HYPERCALL (KVM keeps one per VM).
    const lines = text('qemu-hv-migrate-load')
      .split('\n')
      .map((l) => {
        if (!l.includes('"request":"0x4008ae89"')) return l; // KVM_SET_MSRS
        const rec = JSON.parse(l) as { in: string; out: string; ret: number };
        const bytes = Buffer.from(rec.in, 'hex');
        const n = bytes.readUInt32LE(0);
        const keep: Buffer[] = [];
        for (let i = 0; i < n; i++) {
          const e = bytes.subarray(8 + 16 * i, 24 + 16 * i);
          if (e.readUInt32LE(0) !== 0x40000001) keep.push(e);
        }
        const head = Buffer.alloc(8);
        head.writeUInt32LE(keep.length, 0);
        const hex = Buffer.concat([head, ...keep]).toString('hex');
        return JSON.stringify({ ...rec, in: hex, out: hex, ret: Math.min(rec.ret, keep.length) });
      });
    const load = parseCapture(lines.join('\n'), 'load-without-hypercall');
    const errors = checkCaptures(save, load).findings.filter((f) => f.severity === 'error').map((f) => `${f.kind} ${f.vcpu} ${f.msr}`);
    expect(errors).toEqual(['not-restored vm9/vcpu0 0x40000001 HV_X64_MSR_HYPERCALL', 'not-restored vm9/vcpu1 0x40000001 HV_X64_MSR_HYPERCALL']);
  });
});
