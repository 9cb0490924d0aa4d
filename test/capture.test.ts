// The capture format, kvmsr's own recorder, and replay: a recorded session replays clean; an
// altered capture is caught at exactly the altered entry; what kvmsr cannot know is counted apart;
// malformed files get an error naming the file, line and field.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap, encodeMsrFilter, encodeMsrList, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { KvmRecorder } from '../src/capture/kvm-recorder.js';
import { RECORDED_IOCTL_NAMES, recordedIoctlNames, recordsStateGetters } from '../src/capture/extents.js';
import { CaptureFormatError, parseCapture, recordLine, parseRecord, type CaptureRecord } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { Kvm } from '../src/kvm/kvm.js';
import { sourceProfile } from './helpers.js';

/** A session like a VMM's save: lists, CPUID, filter, reads, write-back, a run, reads again. */
function session(): KvmRecorder {
  const kvm = new Kvm({ profile: sourceProfile() });
  const rec = new KvmRecorder(kvm);
  const sys = kvm.open('/dev/kvm');
  const l0 = encodeMsrList(0);
  rec.ioctl(sys, I.KVM_GET_MSR_INDEX_LIST, l0);
  const list = encodeMsrList(64);
  rec.ioctl(sys, I.KVM_GET_MSR_INDEX_LIST, list);
  rec.ioctl(sys, I.KVM_GET_MSR_FEATURE_INDEX_LIST, encodeMsrList(8));
  rec.ioctl(sys, I.KVM_GET_MSRS, encodeMsrs([0x8b, 0x10a, 0x345, 0xce].map((index) => ({ index, data: 0n }))));
  const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
  rec.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  rec.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [7n]));
  const bitmap = new Uint8Array(8).fill(0xff);
  kvm.memory.map(0x50000, bitmap);
  rec.ioctl(vm, I.KVM_X86_SET_MSR_FILTER, encodeMsrFilter({ flags: 0, ranges: [{ flags: 1, nmsrs: 64, base: 0x270, bitmap: 0x50000n }] }));
  const vcpus = [0, 1].map((id) => rec.ioctl(vm, I.KVM_CREATE_VCPU, id));
  const n = kvm.profile.supportedCpuid.length;
  const cpuid = encodeCpuid2([], n, n);
  kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, cpuid);
  const indices = kvm.profile.msrIndexList;
  for (const v of vcpus) {
    rec.ioctl(v, I.KVM_SET_CPUID2, cpuid);
    const b = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    rec.ioctl(v, I.KVM_GET_MSRS, b);
    rec.ioctl(v, I.KVM_SET_MSRS, b);
    rec.ioctl(v, I.KVM_SET_MSRS, encodeMsrs([{ index: 0x277, data: 0x0606060606060606n }, { index: 0x12345678, data: 1n }]));
    rec.ioctl(v, I.KVM_GET_MSRS, encodeMsrs([0x277, 0x12345678, 0x1a0].map((index) => ({ index, data: 7n }))));
  }
  rec.ioctl(vcpus[0]!, I.KVM_RUN, 0);
  // The guest "wrote" PAT while it ran: the real kernel would now read something kvmsr cannot know.
  kvm.vcpuOf(vcpus[0]!)!.set(0x277, 0x0000000000000007n);
  rec.ioctl(vcpus[0]!, I.KVM_GET_MSRS, encodeMsrs([0x277, 0x1a0].map((index) => ({ index, data: 0n }))));
  rec.close(vcpus[1]!);
  return rec;
}

describe('capture format', () => {
  test('records round-trip through their JSON line', () => {
    const c = parseCapture(session().text(), 's.jsonl');
    expect(c.error).toBeUndefined();
    for (const r of c.records) expect(parseRecord(recordLine(r), 'x', 2)).toEqual(r);
    expect(c.header.vendorModule).toBe('kvm_pvm');
    expect(c.records.some((r) => r.name === 'KVM_X86_SET_MSR_FILTER' && r.extra?.[0]?.length === 8)).toBe(true);
  });
});

describe('replay', () => {
  test('a kvmsr session replays with no divergence; what kvmsr cannot know is counted apart', () => {
    const r = replay(parseCapture(session().text(), 's.jsonl'));
    expect(r.divergences).toEqual([]);
    expect(r.msrIoctls).toBeGreaterThan(10);
    expect(r.entries).toBeGreaterThan(80);
    // The post-run PAT was adopted, not compared, and the output says so.
    expect(r.adopted).toBe(1);
    expect(r.rules.some((s) => s.includes('cannot know') && s.includes('the guest ran'))).toBe(true);
  });

  test('fd numbers are the recorded process\'s own: a VMM whose fds start higher replays clean, a failed create does not', () => {
    // Seen on a real kvm_amd: the recorded program had other files open, so its VM was fd 6 where kvmsr gives 4.
    const shift = (r: CaptureRecord): CaptureRecord => {
      const creates = r.name === 'KVM_CREATE_VM' || r.name === 'KVM_CREATE_VCPU';
      return { ...r, fd: r.fd + 10, ...(r.vm !== undefined ? { vm: r.vm + 10 } : {}), ...(creates && r.ret >= 0 ? { ret: r.ret + 10 } : {}) };
    };
    const c = parseCapture(session().text(), 's.jsonl');
    const shifted = { ...c, records: c.records.map(shift) };
    expect(replay(shifted).divergences).toEqual([]);
    const i = shifted.records.findIndex((r) => r.name === 'KVM_CREATE_VCPU');
    const failed = { ...shifted, records: shifted.records.map((r, k) => (k === i ? { ...r, ret: -1, errno: 17 } : r)) };
    const d = replay(failed, { continueOnDivergence: true }).divergences;
    expect(d[0]).toMatchObject({ name: 'KVM_CREATE_VCPU', what: [expect.stringContaining('where the kernel returned -EEXIST')] });
  });

  test('an altered value on a vCPU that never ran is caught at exactly that entry', () => {
    const lines = session().text().split('\n');
    // Change the PAT value the kernel "returned" in vCPU 1's last GET (0x277 is entry 0).
    const i = lines.findLastIndex((l) => l.includes('"name":"KVM_GET_MSRS"') && l.includes('"vcpuId":1'));
    const rec = JSON.parse(lines[i]!) as { out: string };
    rec.out = rec.out.slice(0, 32) + '0700000000000000' + rec.out.slice(48);
    lines[i] = JSON.stringify(rec);
    const r = replay(parseCapture(lines.join('\n'), 'altered.jsonl'));
    expect(r.divergences).toHaveLength(1);
    const d = r.divergences[0]!;
    expect(d.what).toEqual(['entry 0 differs']);
    expect(d.entries[0]).toMatchObject({ name: '0x277 IA32_CR_PAT', expected: '0x7', actual: '0x606060606060606', differs: true });
    expect(d.entries.filter((e) => e.differs)).toHaveLength(1);
  });

  test('an altered return value is caught even on a vCPU that ran', () => {
    const lines = session().text().split('\n');
    const i = lines.findLastIndex((l) => l.includes('"name":"KVM_GET_MSRS"') && l.includes('"vcpuId":0'));
    lines[i] = lines[i]!.replace('"ret":2', '"ret":1');
    const r = replay(parseCapture(lines.join('\n'), 'altered.jsonl'), { continueOnDivergence: true });
    expect(r.divergences.map((d) => d.what[0])).toEqual(['returned 2 where the kernel returned 1']);
  });

  test('a replay stops at the first divergence unless asked to go on', () => {
    const lines = session().text().split('\n');
    const idx = lines.map((l, i) => (l.includes('"name":"KVM_SET_MSRS"') ? i : -1)).filter((i) => i >= 0);
    for (const i of idx.slice(0, 2)) lines[i] = lines[i]!.replace(/"ret":(\d+)/, (_m, d: string) => `"ret":${Number(d) + 1}`);
    const text = lines.join('\n');
    expect(replay(parseCapture(text, 'a')).divergences).toHaveLength(1);
    expect(replay(parseCapture(text, 'a'), { continueOnDivergence: true }).divergences).toHaveLength(2);
  });
});

describe('malformed captures', () => {
  const good = (): string[] => session().text().split('\n');
  test.each([
    ['an empty file', () => '', 1, '(header)'],
    ['a header that is not JSON', () => '{"format":', 1, '(line)'],
    ['another format', () => '{"format":"pcap","version":1}', 1, 'format'],
    ['a future version', () => good()[0]!.replace('"version":1', '"version":9'), 1, 'version'],
  ])('%s: the header error names file, line and field', (_what, make, line, field) => {
    try {
      parseCapture(make(), 'bad.jsonl');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CaptureFormatError);
      expect(e).toMatchObject({ file: 'bad.jsonl', line, field });
    }
  });
  test.each([
    ['a truncated last line', (l: string[]) => { l[l.length - 2] = l[l.length - 2]!.slice(0, 20); }, '(line)'],
    ['a bad hex field', (l: string[]) => { const i = l.findIndex((x) => x.includes('"out":"')); l[i] = l[i]!.replace(/"out":"[0-9a-f]{2}/, '"out":"zz'); }, 'out'],
    ['an unknown fd kind', (l: string[]) => { l[3] = l[3]!.replace('"fdKind":"system"', '"fdKind":"disk"'); }, 'fdKind'],
    ['a request that is not hex', (l: string[]) => { l[3] = l[3]!.replace(/"request":"0x[0-9a-f]+"/, '"request":"KVM_GET_MSRS"'); }, 'request'],
    ['seq going backwards', (l: string[]) => { l[4] = l[4]!.replace(/"seq":\d+/, '"seq":0'); }, 'seq'],
    ['in and out of different lengths', (l: string[]) => { l[3] = l[3]!.replace(/"out":"([0-9a-f]*)"/, '"out":"$100"'); }, 'out'],
  ])('%s: parsing stops there, keeps what came before, and names line and field', (_what, mutate, field) => {
    const l = good();
    mutate(l);
    const c = parseCapture(l.join('\n'), 'bad.jsonl');
    expect(c.error).toBeInstanceOf(CaptureFormatError);
    expect(c.error!.field).toBe(field);
    expect(c.records.length).toBe(c.error!.line - 2);
    expect(c.error!.message).toMatch(new RegExp(`^bad\\.jsonl:${c.error!.line}: ${field.replace(/[()]/g, '\\$&')}: `));
    // Replay of what was kept still runs.
    expect(() => replay(c)).not.toThrow();
  });
});

describe('KVM_SET_SREGS in a capture', () => {
  function sregsCapture(profileName: 'svm-amd-derived' | 'pvm-amd-epyc-6.18.44-v782-derived', efer: bigint) {
    return import('../src/profiles.js').then(({ builtinProfile }) => {
      const kvm = new Kvm({ profile: builtinProfile(profileName) });
      const rec = new KvmRecorder(kvm);
      const sys = kvm.open('/dev/kvm');
      const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
      const v = rec.ioctl(vm, I.KVM_CREATE_VCPU, 0);
      // The host's CPUID (LM and NX), then long mode: CR0.PE|PG, CR4.PAE, EFER as given.
      const cpuid = new Uint8Array(8 + 256 * 40);
      new DataView(cpuid.buffer).setUint32(0, 256, true);
      kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, cpuid);
      rec.ioctl(v, I.KVM_SET_CPUID2, cpuid);
      const sregs = new Uint8Array(312);
      const dv = new DataView(sregs.buffer);
      dv.setBigUint64(224, 0x80000011n, true);
      dv.setBigUint64(248, 0x20n, true);
      dv.setBigUint64(264, efer, true);
      dv.setBigUint64(272, 0xfee00900n, true);
      dv.setBigUint64(72, 0x7f0000001000n, true);
      rec.ioctl(v, I.KVM_SET_SREGS, sregs); // on PVM, record what a kernel says (replay does not model it there)
      rec.ioctl(v, I.KVM_GET_MSRS, encodeMsrs([0xc0000080, 0xc0000100].map((index) => ({ index, data: 0n }))));
      const lines = rec.text().split('\n');
      const i = lines.findIndex((l) => l.includes('"request":"0x4138ae84"'));
      lines[i] = lines[i]!.replace('"ret":-1', '"ret":0').replace(/"errno":\d+/, '"errno":0');
      // What the kernel read back after the SET_SREGS: its EFER and FS base.
      const j = lines.findLastIndex((l) => l.includes('"name":"KVM_GET_MSRS"'));
      const r = JSON.parse(lines[j]!) as { out: string };
      const out = Buffer.from(r.out, 'hex');
      out.writeBigUInt64LE(efer, 16);
      out.writeBigUInt64LE(0x7f0000001000n, 32);
      r.out = out.toString('hex');
      lines[j] = JSON.stringify(r);
      return lines.join('\n');
    });
  }
  test('on kvm_amd kvmsr models it: EFER and the FS base follow, are compared, and a change is still caught', async () => {
    const text = await sregsCapture('svm-amd-derived', 0xd01n);
    const r = replay(parseCapture(text, 's.jsonl'));
    expect(r.divergences).toEqual([]);
    expect({ adopted: r.adopted, unknowable: r.unknowable, rules: r.rules }).toEqual({ adopted: 0, unknowable: [], rules: [] });
    const altered = text.replace(/("KVM_GET_MSRS".*"out":")([0-9a-f]{32})010d/, '$1$20109');
    expect(replay(parseCapture(altered, 'a.jsonl')).divergences).toHaveLength(1);
  });
  test('on PVM it stays unknowable and the later values are adopted and counted', async () => {
    const text = await sregsCapture('pvm-amd-epyc-6.18.44-v782-derived', 0xd01n);
    const r = replay(parseCapture(text, 's.jsonl'));
    expect(r.divergences).toEqual([]);
    expect(r.unknowable.map((u) => u.name)).toEqual(['KVM_SET_SREGS']);
    expect(r.adopted).toBe(2);
  });
});

describe('kvmsr record embeds the host profile when the command ends (embedProfile)', () => {
  test('the header gains the profile, the records stay byte for byte, and replay then uses it', async () => {
    const { mkdtempSync, writeFileSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { embedProfile } = await import('../src/capture/embed-profile.js');
    const { builtinProfile } = await import('../src/profiles.js');
    const dir = mkdtempSync(join(tmpdir(), 'kvmsr-embed-'));
    const file = join(dir, 'c.jsonl');
    const text = session().text();
    writeFileSync(file, text);
    const svm = builtinProfile('svm-amd-derived');
    expect(embedProfile(file, svm)).toBe(true);
    const after = readFileSync(file, 'utf8');
    expect(after.slice(after.indexOf('\n'))).toBe(text.slice(text.indexOf('\n')));
    const c = parseCapture(after, file);
    expect((c.header.profile as { host: { vendorModule: string } }).host.vendorModule).toBe('kvm_amd');
    // The session was made on the default PVM profile: on the embedded SVM one it no longer matches.
    const r = replay(c);
    expect(r.divergences.length).toBeGreaterThan(0);
    expect(r.rules.some((n) => /recorded on kvm_pvm 6\.18\S* but is replayed on a kvm_amd/.test(n))).toBe(true);
    expect(replay(parseCapture(text, file)).rules.some((n) => /recorded on/.test(n))).toBe(false);
    expect(embedProfile(join(dir, 'absent.jsonl'), svm)).toBe(false);
  });
});

describe('IA32_TSC on a host whose TSC is unstable (profile.tscUnstable)', () => {
  test('the kernel\'s TSC is adopted and said so; an altered PAT in the same batch is still caught', async () => {
    const { builtinProfile } = await import('../src/profiles.js');
    const { parseProfile, profileToJson } = await import('../src/kvm/profile.js');
    const unstable = parseProfile({ ...(profileToJson(builtinProfile('svm-amd-derived')) as object), tscUnstable: true }, 'u');
    const kvm = new Kvm({ profile: unstable });
    const rec = new KvmRecorder(kvm);
    const vm = rec.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const v = rec.ioctl(vm, I.KVM_CREATE_VCPU, 0);
    rec.ioctl(v, I.KVM_GET_MSRS, encodeMsrs([0x10, 0x277].map((index) => ({ index, data: 0n }))));
    const lines = rec.text().split('\n');
    const i = lines.findIndex((l) => l.includes('"name":"KVM_GET_MSRS"'));
    const r0 = JSON.parse(lines[i]!) as { out: string };
    // Entry 0 (IA32_TSC) read 5 on "the kernel": time between calls that the capture cannot hold.
    const tsc5 = r0.out.slice(0, 32) + '0500000000000000' + r0.out.slice(48);
    lines[i] = JSON.stringify({ ...r0, out: tsc5 });
    const ok = replay(parseCapture(lines.join('\n'), 'u.jsonl'), { profile: unstable });
    expect(ok.divergences).toEqual([]);
    expect(ok.byRule).toBe(1);
    expect(ok.rules.join('\n')).toMatch(/IA32_TSC not compared: the host TSC is unstable/);
    // PAT is entry 1: data at hex offset (8 + 16 + 8) * 2.
    lines[i] = JSON.stringify({ ...r0, out: tsc5.slice(0, 64) + '0700000000000000' + tsc5.slice(80) });
    const bad = replay(parseCapture(lines.join('\n'), 'u.jsonl'), { profile: unstable });
    expect(bad.divergences.map((d) => d.what[0])).toEqual(['entry 1 differs']);
  });
});

describe('kvmsr record on a kernel with both vendor modules built in', () => {
  test('the header names the vendor module of the profile captured on the spot', async () => {
    const { mkdtempSync, writeFileSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { embedProfile } = await import('../src/capture/embed-profile.js');
    const { builtinProfile } = await import('../src/profiles.js');
    const file = join(mkdtempSync(join(tmpdir(), 'kvmsr-embed-')), 'c.jsonl');
    // The recorder took the first module under /sys/module: kvm_intel, on an AMD host.
    const text = session().text();
    const nl = text.indexOf('\n');
    writeFileSync(file, JSON.stringify({ ...JSON.parse(text.slice(0, nl)), vendorModule: 'kvm_intel' }) + text.slice(nl));
    expect(embedProfile(file, builtinProfile('kvm-amd-6.12-distro-qemu-tcg'), { capturedHere: true })).toBe(true);
    expect(parseCapture(readFileSync(file, 'utf8'), file).header.vendorModule).toBe('kvm_amd');
  });
});

describe('timestamps, the recorded list, and the state ioctls', () => {
  /** A vCPU on a VM with an in-kernel irqchip, recorded from the start. */
  function lapicMachine(clock?: () => number) {
    const kvm = new Kvm({ profile: sourceProfile() });
    const rec = new KvmRecorder(kvm, undefined, clock ? { clock } : {});
    const sys = kvm.open('/dev/kvm');
    const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
    rec.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
    const vcpu = rec.ioctl(vm, I.KVM_CREATE_VCPU, 0);
    return { kvm, rec, sys, vm, vcpu };
  }
  const sleepMs = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

  test('every record has monoUs, non-decreasing; the header lists what is recorded', () => {
    const c = parseCapture(session().text(), 's.jsonl');
    expect(c.header.recorded).toEqual([...RECORDED_IOCTL_NAMES]);
    expect(recordedIoctlNames()).toEqual([...RECORDED_IOCTL_NAMES]);
    expect(RECORDED_IOCTL_NAMES).toContain('KVM_GET_CLOCK');
    expect(recordsStateGetters(c.header)).toBe(true);
    let last = 0;
    for (const r of c.records) {
      expect(Number.isSafeInteger(r.monoUs) && r.monoUs! >= last).toBe(true);
      last = r.monoUs!;
    }
    // monoUs comes right after tid, so `kvmsr run` can still put the thread in (session.ts).
    expect(session().text().split('\n')[1]).toMatch(/^\{"seq":0,"tid":0,"monoUs":\d+,"fd":/);
  });

  test('the default clock counts microseconds (two calls around a 200 ms sleep); a given clock is used', () => {
    const m = lapicMachine();
    const b = encodeMsrs([{ index: 0x277, data: 0n }]);
    m.rec.ioctl(m.vcpu, I.KVM_GET_MSRS, b);
    sleepMs(200);
    m.rec.ioctl(m.vcpu, I.KVM_GET_MSRS, b);
    const [a, z] = parseCapture(m.rec.text(), 't.jsonl').records.filter((r) => r.name === 'KVM_GET_MSRS');
    expect(z!.monoUs! - a!.monoUs!).toBeGreaterThanOrEqual(150_000);
    expect(z!.monoUs! - a!.monoUs!).toBeLessThanOrEqual(5_000_000);
    let t = 1000;
    const f = lapicMachine(() => (t += 7));
    f.rec.close(f.vcpu);
    expect(parseCapture(f.rec.text(), 'f.jsonl').records.map((r) => r.monoUs)).toEqual([1007, 1014, 1021, 1028]);
  });

  test('an older capture without monoUs or recorded still reads and replays', () => {
    const lines = session().text().split('\n');
    const h = JSON.parse(lines[0]!) as Record<string, unknown>;
    delete h['recorded'];
    const old = [JSON.stringify(h), ...lines.slice(1).map((l) => l.replace(/"monoUs":\d+,/, ''))].join('\n');
    expect(old).not.toContain('monoUs');
    const c = parseCapture(old, 'old.jsonl');
    expect(c.error).toBeUndefined();
    expect(c.header.recorded).toBeUndefined();
    expect(recordsStateGetters(c.header)).toBe(false);
    expect(c.records.every((r) => r.monoUs === undefined)).toBe(true);
    expect(replay(c).divergences).toEqual([]);
  });

  test.each([
    ['"x"', '"monoUs":"x"'],
    ['-1', '"monoUs":-1'],
    ['1.5', '"monoUs":1.5'],
  ])('monoUs %s: the error names file, line and field', (_what, bad) => {
    const l = session().text().split('\n');
    l[4] = l[4]!.replace(/"monoUs":\d+/, bad);
    const c = parseCapture(l.join('\n'), 'bad.jsonl');
    expect(c.error).toBeInstanceOf(CaptureFormatError);
    expect(c.error).toMatchObject({ file: 'bad.jsonl', line: 5, field: 'monoUs' });
    expect(c.error!.message).toMatch(/^bad\.jsonl:5: monoUs: /);
    expect(c.records).toHaveLength(3);
  });

  test.each([['a string', '"KVM_RUN"'], ['numbers', '[1,2]']])('a header whose recorded is %s: the error names field "recorded"', (_what, bad) => {
    const l = session().text().split('\n');
    l[0] = l[0]!.replace(/"recorded":\[[^\]]*\]/, `"recorded":${bad}`);
    expect(() => parseCapture(l.join('\n'), 'bad.jsonl')).toThrow(expect.objectContaining({ file: 'bad.jsonl', line: 1, field: 'recorded' }));
  });

  test('a vCPU\'s second KVM_RUN is not recorded (the "has run" marker); a new fd records its own', () => {
    const m = lapicMachine();
    m.rec.ioctl(m.vcpu, I.KVM_RUN, 0);
    m.rec.ioctl(m.vcpu, I.KVM_RUN, 0);
    const c = parseCapture(m.rec.text(), 'r.jsonl');
    expect(c.records.filter((r) => r.name === 'KVM_RUN')).toHaveLength(1);
    m.rec.close(m.vcpu);
    const v1 = m.rec.ioctl(m.vm, I.KVM_CREATE_VCPU, 1);
    // An AP waiting for INIT (KVM_MP_STATE_UNINITIALIZED) is never entered: no marker for it...
    m.rec.ioctl(v1, I.KVM_RUN, 0);
    expect(m.kvm.vcpuOf(v1)!.hasRun).toBe(false);
    // ...until it is runnable: its first KVM_RUN then enters the guest, and only that one is recorded.
    m.rec.ioctl(v1, I.KVM_SET_MP_STATE, new Uint8Array(4));
    m.rec.ioctl(v1, I.KVM_RUN, 0);
    m.rec.ioctl(v1, I.KVM_RUN, 0);
    expect(parseCapture(m.rec.text(), 'r.jsonl').records.filter((r) => r.name === 'KVM_RUN').map((r) => r.vcpuId)).toEqual([0, 1]);
  });

  test('state getters carry their output bytes; replay runs them, compares their return values and not their bytes', () => {
    const m = lapicMachine();
    const lapic = new Uint8Array(1024);
    const clock = new Uint8Array(48);
    const sregs = new Uint8Array(312);
    expect(m.rec.ioctl(m.vcpu, I.KVM_GET_LAPIC, lapic)).toBe(0);
    expect(m.rec.ioctl(m.vm, I.KVM_GET_CLOCK, clock)).toBe(0);
    expect(m.rec.ioctl(m.vcpu, I.KVM_GET_SREGS, sregs)).toBe(0);
    m.rec.ioctl(m.vcpu, I.KVM_GET_SREGS2, new Uint8Array(320));
    const c = parseCapture(m.rec.text(), 'g.jsonl');
    const rec = (n: string): CaptureRecord => c.records.find((r) => r.name === n)!;
    expect(rec('KVM_GET_LAPIC').out).toEqual(lapic);
    expect(lapic.some((x) => x !== 0)).toBe(true); // the APIC version register at least
    expect(rec('KVM_GET_CLOCK').out).toEqual(clock);
    expect(rec('KVM_GET_CLOCK').in).toEqual(new Uint8Array(48)); // what the buffer held before
    expect(rec('KVM_GET_SREGS').out).toEqual(sregs);
    const r = replay(c);
    expect(r.divergences).toEqual([]);
    expect(r.stateReads).toBe(4);
    expect(r.rules.some((s) => s.startsWith('4 state reads not compared'))).toBe(true);
    // Other bytes (kvmclock a second later, another LAPIC) are no divergence; another return value is.
    const lines = m.rec.text().split('\n');
    const at = (n: string): number => lines.findIndex((l) => l.includes(`"name":"${n}"`));
    lines[at('KVM_GET_CLOCK')] = lines[at('KVM_GET_CLOCK')]!.replace(/"out":"[0-9a-f]{2}/, '"out":"ff');
    lines[at('KVM_GET_LAPIC')] = lines[at('KVM_GET_LAPIC')]!.replace(/"out":"[0-9a-f]{2}/, '"out":"ee');
    expect(replay(parseCapture(lines.join('\n'), 'g.jsonl')).divergences).toEqual([]);
    lines[at('KVM_GET_SREGS')] = lines[at('KVM_GET_SREGS')]!.replace('"ret":0,"errno":0', '"ret":-1,"errno":22');
    expect(replay(parseCapture(lines.join('\n'), 'g.jsonl')).divergences.map((d) => d.name)).toEqual(['KVM_GET_SREGS']);
  });

  test('KVM_SET_NESTED_STATE and a vCPU\'s KVM_SET_DEVICE_ATTR are unknowable: the vCPU\'s later values are adopted', () => {
    const m = lapicMachine();
    // kvm_nested_state: the 128-byte header, `size` at 4 covering the data (clamped to two vmcs12s).
    const nested = (size: number): Uint8Array => {
      const b = new Uint8Array(128 + 8192 + 64);
      new DataView(b.buffer).setUint32(4, size, true);
      return b;
    };
    m.rec.ioctl(m.vcpu, I.KVM_SET_NESTED_STATE, nested(0));
    m.rec.ioctl(m.vcpu, I.KVM_SET_NESTED_STATE, nested(128 + 4096));
    m.rec.ioctl(m.vcpu, I.KVM_SET_NESTED_STATE, nested(0xffffffff));
    // KVM_VCPU_TSC_CTRL / KVM_VCPU_TSC_OFFSET, the offset at attr.addr.
    const value = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    m.kvm.memory.map(0x70000, value);
    const attr = new Uint8Array(24);
    new DataView(attr.buffer).setBigUint64(16, 0x70000n, true);
    m.rec.ioctl(m.vcpu, I.KVM_SET_DEVICE_ATTR, attr);
    m.rec.ioctl(m.vcpu, I.KVM_SET_DEVICE_ATTR, new Uint8Array(24)); // addr 0: no extra
    m.rec.ioctl(m.vcpu, I.KVM_GET_MSRS, encodeMsrs([{ index: 0x277, data: 0n }]));
    const lines = m.rec.text().split('\n');
    const c = parseCapture(lines.join('\n'), 'n.jsonl');
    expect(c.records.filter((r) => r.name === 'KVM_SET_NESTED_STATE').map((r) => r.in!.length)).toEqual([128, 128 + 4096, 128 + 8192]);
    const attrs = c.records.filter((r) => r.name === 'KVM_SET_DEVICE_ATTR');
    expect(attrs.map((r) => r.extra?.map((e) => Buffer.from(e).toString('hex')))).toEqual([['0102030405060708'], undefined]);
    // Say the kernel took them all and the guest's PAT then read 7: adopted, not a divergence.
    const i = lines.findIndex((l) => l.includes('"name":"KVM_GET_MSRS"'));
    const g = JSON.parse(lines[i]!) as { out: string };
    lines[i] = JSON.stringify({ ...g, out: g.out.slice(0, 32) + '0700000000000000' });
    const taken = lines.map((l) => (/"name":"KVM_SET_(NESTED_STATE|DEVICE_ATTR)"/.test(l) ? l.replace(/"ret":-1,"errno":\d+/, '"ret":0,"errno":0') : l));
    const r = replay(parseCapture(taken.join('\n'), 'n.jsonl'));
    expect(r.divergences).toEqual([]);
    expect(r.unknowable.map((u) => u.name)).toEqual([...Array(3).fill('KVM_SET_NESTED_STATE'), 'KVM_SET_DEVICE_ATTR', 'KVM_SET_DEVICE_ATTR']);
    expect(r.unknowable[0]!.why).toMatch(/does not model KVM_SET_NESTED_STATE/);
    expect(r.adopted).toBe(1);
    // Without them the same PAT is a divergence.
    const none = taken.filter((l) => !/"name":"KVM_SET_(NESTED_STATE|DEVICE_ATTR)"/.test(l));
    expect(replay(parseCapture(none.join('\n'), 'n.jsonl')).divergences.map((d) => d.name)).toEqual(['KVM_GET_MSRS']);
  });

  test('KVM_SET_VCPU_EVENTS, KVM_SET_MP_STATE and KVM_XEN_HVM_CONFIG are replayed on kvmsr and compared', () => {
    const m = lapicMachine();
    const mp = new Uint8Array(4);
    new DataView(mp.buffer).setUint32(0, 3, true); // KVM_MP_STATE_HALTED
    expect(m.rec.ioctl(m.vcpu, I.KVM_SET_MP_STATE, mp)).toBe(0);
    const events = new Uint8Array(64);
    m.kvm.ioctl(m.vcpu, I.KVM_GET_VCPU_EVENTS, events);
    expect(m.rec.ioctl(m.vcpu, I.KVM_SET_VCPU_EVENTS, events)).toBe(0);
    m.rec.ioctl(m.vm, I.KVM_XEN_HVM_CONFIG, new Uint8Array(56));
    const text = m.rec.text();
    const c = parseCapture(text, 'e.jsonl');
    expect(c.records.filter((r) => /VCPU_EVENTS|MP_STATE|XEN_HVM/.test(r.name)).map((r) => [r.name, r.in!.length])).toEqual([
      ['KVM_SET_MP_STATE', 4],
      ['KVM_SET_VCPU_EVENTS', 64],
      ['KVM_XEN_HVM_CONFIG', 56],
    ]);
    const r = replay(c);
    expect(r.divergences).toEqual([]);
    expect(r.unknowable).toEqual([]);
    const bad = text.replace(/("name":"KVM_SET_MP_STATE".*)"ret":0,"errno":0/, '$1"ret":-1,"errno":22');
    expect(replay(parseCapture(bad, 'e.jsonl')).divergences.map((d) => d.name)).toEqual(['KVM_SET_MP_STATE']);
  });
});
