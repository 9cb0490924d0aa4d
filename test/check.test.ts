// kvmsr check: each finding kind triggered by a small hand-made capture, and none by a clean one.
import { describe, expect, test } from 'vitest';
import { encodeMsrs, type MsrEntry } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KvmRecorder } from '../src/capture/kvm-recorder.js';
import { parseCapture } from '../src/capture/format.js';
import { checkCaptures } from '../src/check/check.js';
import { Kvm } from '../src/kvm/kvm.js';
import { sourceProfile } from './helpers.js';

/** A VMM-like session on kvmsr, recorded: `body` gets the recorder and a vCPU fd. */
function capture(body: (rec: KvmRecorder, vcpu: number, kvm: Kvm) => void) {
  const kvm = new Kvm({ profile: sourceProfile() });
  const rec = new KvmRecorder(kvm);
  const sys = kvm.open('/dev/kvm');
  const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
  rec.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  const vcpu = rec.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  body(rec, vcpu, kvm);
  return parseCapture(rec.text(), 'c.jsonl');
}
const list = (): number[] => new Kvm({ profile: sourceProfile() }).profile.msrIndexList;
const get = (rec: KvmRecorder, v: number, idx: number[]): void => void rec.ioctl(v, I.KVM_GET_MSRS, encodeMsrs(idx.map((index) => ({ index, data: 0n }))));
const set = (rec: KvmRecorder, v: number, e: MsrEntry[]): void => void rec.ioctl(v, I.KVM_SET_MSRS, encodeMsrs(e));

/** A save that reads every listed MSR, and a restore that writes back exactly that. */
function cleanPair() {
  let values: MsrEntry[] = [];
  const save = capture((rec, v, kvm) => {
    const b = encodeMsrs(list().map((index) => ({ index, data: 0n })));
    rec.ioctl(v, I.KVM_GET_MSRS, b);
    values = [...new Kvm({ profile: sourceProfile() }).profile.msrIndexList].map((index, i) => ({ index, data: new DataView(b.buffer).getBigUint64(16 + 16 * i, true) }));
    void kvm;
  });
  const restore = capture((rec, v) => {
    set(rec, v, values);
    get(rec, v, list());
  });
  return { save, restore, values };
}

describe('kvmsr check', () => {
  test('a clean save and restore has no findings', () => {
    const { save, restore } = cleanPair();
    const r = checkCaptures(save, restore);
    expect(r.findings).toEqual([]);
    expect(r.coverage[0]).toMatchObject({ listed: 41, saved: 41, missing: [] });
    expect(r.roundTrip.length).toBe(41);
  });
  test('partial: a batch stopped by an unknown MSR, and the VMM went on (error)', () => {
    const save = capture((rec, v) => {
      get(rec, v, [0x277, 0x12345678, 0x1a0]);
      get(rec, v, list());
    });
    const r = checkCaptures(save);
    const p = r.findings.filter((f) => f.kind === 'partial');
    expect(p).toHaveLength(1);
    expect(p[0]!.severity).toBe('error');
    expect(p[0]!.message).toContain('processed 1 of 3 entries: it stopped at 0x12345678: KVM has no handler for this MSR and does not list it');
    expect(p[0]!.message).toContain('went on without retrying');
  });
  test('partial: a refused write that the VMM retried without the entry is an error: the value is lost', () => {
    const save = capture((rec, v) => {
      set(rec, v, [{ index: 0x277, data: 2n }, { index: 0x1a0, data: 0x1800n }]);
      set(rec, v, [{ index: 0x1a0, data: 0x1800n }]);
      get(rec, v, list());
    });
    const p = checkCaptures(save).findings.filter((f) => f.kind === 'partial');
    expect(p).toHaveLength(1);
    expect(p[0]!.severity).toBe('error');
    expect(p[0]!.message).toContain('stopped at 0x277 IA32_CR_PAT = 0x2: the value is invalid');
    expect(p[0]!.message).toContain('so 0x277 IA32_CR_PAT keeps the destination\'s value');
    expect(p[0]!.message).toContain('retried without the refused entry');
  });
  test('unlisted and not-saved: MSRs off the host list, and listed MSRs the save skipped', () => {
    // PAT the guest can change; ARCH_CAPABILITIES it cannot (guest WRMSR #GP). MCG_CAP is not
    // listed but KVM reads it; 0x12345678 is neither listed nor accepted.
    const save = capture((rec, v) => {
      get(rec, v, [...list().filter((i) => i !== 0x277 && i !== 0x10a), 0x179]);
      get(rec, v, [0x12345678]);
    });
    const r = checkCaptures(save);
    const of = (k: string) => r.findings.filter((f) => f.kind === k).map((f) => [f.severity, f.msr]);
    expect(of('unlisted')).toEqual([
      ['warning', '0x12345678'],
      ['info', '0x179'],
    ]);
    expect(of('not-saved')).toEqual([
      ['warning', '0x277 IA32_CR_PAT'],
      ['info', '0x10a IA32_ARCH_CAPABILITIES'],
    ]);
    expect(r.coverage[0]!.missing).toEqual(['0x10a IA32_ARCH_CAPABILITIES', '0x277 IA32_CR_PAT'].sort((a, b) => list().indexOf(parseInt(a)) - list().indexOf(parseInt(b))));
  });
  test('round trip: not restored, restored different, restored but not saved, read back different', () => {
    const { save, values } = cleanPair();
    const restore = capture((rec, v) => {
      const changed = values
        .filter((e) => e.index !== 0x1a0) // not restored
        .map((e) => (e.index === 0x277 ? { index: 0x277, data: 0x0606060606060606n } : e)); // different
      set(rec, v, [...changed, { index: 0x250, data: 0x0606060606060606n }]); // restored, never saved (an MTRR)
      set(rec, v, [{ index: 0xc0010117, data: 0x1000n }]); // HSAVE_PA: accepted, reads back 0
      get(rec, v, [...list(), 0xc0010117]);
    });
    const r = checkCaptures(save, restore);
    const kinds = (k: string): (string | undefined)[] => r.findings.filter((f) => f.kind === k).map((f) => f.msr);
    expect(kinds('not-restored')).toEqual(['0x1a0 IA32_MISC_ENABLE']);
    expect(kinds('restored-different')).toEqual(['0x277 IA32_CR_PAT', '0xc0010117 VM_HSAVE_PA']);
    expect(kinds('restored-not-saved')).toEqual(['0x250']);
    expect(kinds('read-back-different')).toEqual(['0xc0010117 VM_HSAVE_PA']);
    expect(r.findings[0]!.severity).toBe('error');
  });
  test('restore order: MISC_FEATURES_ENABLES before PLATFORM_INFO gives CPUID faulting up', () => {
    const { save } = cleanPair();
    const restore = capture((rec, v) => {
      // The destination starts without CPUID faulting; the VMM restores MISC_FEATURES_ENABLES first.
      set(rec, v, [{ index: 0xce, data: 0n }]);
      set(rec, v, [{ index: 0x140, data: 1n }]);
      set(rec, v, [{ index: 0xce, data: 0x80000000n }]);
    });
    const hz = checkCaptures(save, restore).findings.filter((f) => f.kind === 'restore-order');
    expect(hz.map((f) => [f.severity, f.msr])).toEqual([['error', '0x140 MISC_FEATURES_ENABLES']]);
    expect(hz[0]!.rule).toContain('kvm_set_msr_common (MSR_MISC_FEATURES_ENABLES)');
    // Written in the order KVM needs, nothing is reported.
    const good = capture((rec, v) => {
      set(rec, v, [{ index: 0xce, data: 0x80000000n }]);
      set(rec, v, [{ index: 0x140, data: 1n }]);
    });
    expect(checkCaptures(save, good).findings.filter((f) => f.kind === 'restore-order')).toEqual([]);
  });
});
