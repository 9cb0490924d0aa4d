// The capture format, kvmsr's own recorder, and replay: a recorded session replays clean; an
// altered capture is caught at exactly the altered entry; what kvmsr cannot know is counted apart;
// malformed files get an error naming the file, line and field.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap, encodeMsrFilter, encodeMsrList, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { KvmRecorder } from '../src/capture/kvm-recorder.js';
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
    const i = lines.findLastIndex((l) => l.includes('"KVM_GET_MSRS"') && l.includes('"vcpuId":1'));
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
    const i = lines.findLastIndex((l) => l.includes('"KVM_GET_MSRS"') && l.includes('"vcpuId":0'));
    lines[i] = lines[i]!.replace('"ret":2', '"ret":1');
    const r = replay(parseCapture(lines.join('\n'), 'altered.jsonl'), { continueOnDivergence: true });
    expect(r.divergences.map((d) => d.what[0])).toEqual(['returned 2 where the kernel returned 1']);
  });

  test('a replay stops at the first divergence unless asked to go on', () => {
    const lines = session().text().split('\n');
    const idx = lines.map((l, i) => (l.includes('"KVM_SET_MSRS"') ? i : -1)).filter((i) => i >= 0);
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
      const j = lines.findLastIndex((l) => l.includes('"KVM_GET_MSRS"'));
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
    const i = lines.findIndex((l) => l.includes('"KVM_GET_MSRS"'));
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
