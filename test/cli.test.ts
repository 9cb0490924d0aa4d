// The kvmsr command line, run in-process and (when built) as the installed bin.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { encodeMsrs } from '../src/abi/codecs.js';
import { sourceProfile } from './helpers.js';

function run(args: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  try {
    return { code: main(args), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe('kvmsr CLI', () => {
  test('list names every MSR on both lists', () => {
    const r = run(['list']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('KVM_GET_MSR_INDEX_LIST: 40 MSRs');
    expect(r.out).toContain('0x174 IA32_SYSENTER_CS');
    expect(r.out).toMatch(/0x10a IA32_ARCH_CAPABILITIES\s+0x400000000c000069/);
    const j = JSON.parse(run(['list', '--json']).out) as { msrIndexList: unknown[]; featureMsrs: { value: string }[] };
    expect(j.msrIndexList).toHaveLength(40);
    expect(j.featureMsrs.map((f) => f.value)).toEqual(['0x1000065', '0x400000000c000069', '0x0', '0x80000000']);
  });

  test('get reads names and numbers; a refused MSR sets a non-zero status', () => {
    const r = run(['get', 'IA32_CR_PAT', '0x1a0']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/0x277 IA32_CR_PAT\s+0x7040600070406/);
    expect(r.out).toMatch(/0x1a0 IA32_MISC_ENABLE\s+0x1\n/); // the captured host's fresh vCPU
    const bad = run(['get', '0xc0010114', '--json']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.out)).toEqual([{ index: '0xc0010114', name: 'VM_CR', ok: false, value: null }]);
    expect(JSON.parse(run(['get', '--all', '--json']).out)).toHaveLength(40);
  });

  test('bad arguments get a clear error and status 2', () => {
    const r = run(['get', 'NOT_AN_MSR']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("not an MSR: 'NOT_AN_MSR'");
    expect(run(['get']).err).toContain('name at least one MSR');
    expect(run(['decode', 'zz']).err).toContain('not hex bytes');
    expect(run(['decode', '00', '--as', 'bogus']).code).not.toBe(0);
    const p = join(mkdtempSync(join(tmpdir(), 'kvmsr-cli-')), 'bad.json');
    writeFileSync(p, '{"format":"kvmsr-profile","version":1}');
    const bp = run(['list', '--profile', p]);
    expect(bp.code).toBe(2);
    expect(bp.err).toContain(`${p}: source:`);
  });

  test('builtin:intel is the live-captured kvm_intel profile; an unknown name lists the choices', () => {
    const r = run(['list', '--profile', 'builtin:intel']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('KVM_GET_MSR_INDEX_LIST: 84 MSRs (kvm_intel, 6.12.117)');
    // kvm_intel's IA32_VMX_BASIC feature MSR on Bochs's VMX, as the oracle answered.
    expect(r.out).toMatch(/0x480 IA32_VMX_BASIC\s+0xd8100011e57ed0/);
    expect(run(['list', '--profile', 'builtin:kvm-intel-6.12-distro-bochs-skx']).out).toBe(r.out);
    const bad = run(['list', '--profile', 'builtin:nope']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("no built-in profile 'nope'");
    expect(bad.err).toContain('intel');
  });

  test('decode pretty-prints kvm_msrs and kvm_msr_list from hex or a file', () => {
    const b = encodeMsrs([{ index: 0x277, data: 0x0007040600070406n }, { index: 0x12345678, data: 0n }]);
    const hex = Buffer.from(b).toString('hex');
    const r = run(['decode', hex]);
    expect(r.out).toContain('kvm_msrs nmsrs=2');
    expect(r.out).toMatch(/\[0\] 0x277 IA32_CR_PAT\s+0x7040600070406/);
    const f = join(mkdtempSync(join(tmpdir(), 'kvmsr-cli-')), 'buf.bin');
    writeFileSync(f, b);
    expect(JSON.parse(run(['decode', f, '--json']).out).entries[1]).toEqual({ index: '0x12345678', name: null, reserved: 0, data: '0x0' });
    expect(run(['decode', '0200000010000000a0010000']).out).toContain('kvm_msr_list nmsrs=2');
  });

  test('profile capture refuses, with the reason, where /dev/kvm is absent', () => {
    if (existsSync('/dev/kvm')) return; // exercised by the differential suite there
    const r = run(['profile', 'capture', '-o', '/tmp/x.json']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('cannot capture a profile: /dev/kvm is absent');
  });

  const bin = join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
  test.skipIf(!existsSync(bin))(`the built bin runs${existsSync(bin) ? '' : ' (skipped: dist/ not built; npm ci builds it)'}`, () => {
    const r = spawnSync(process.execPath, [bin, 'get', 'IA32_TSC', '--json'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)[0].ok).toBe(true);
    expect(spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' }).stdout).toContain('Usage: kvmsr');
  });
});

describe('kvmsr replay, decode and record', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-cli-cap-'));
  const make = async (): Promise<string> => {
    const { Kvm } = await import('../src/kvm/kvm.js');
    const { KvmRecorder } = await import('../src/capture/kvm-recorder.js');
    const I = await import('../src/abi/kvm-ioctls.js');
    const kvm = new Kvm({ profile: sourceProfile() });
    const rec = new KvmRecorder(kvm);
    const sys = kvm.open('/dev/kvm');
    const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
    const vcpu = rec.ioctl(vm, I.KVM_CREATE_VCPU, 0);
    const b = encodeMsrs(kvm.profile.msrIndexList.map((index) => ({ index, data: 0n })));
    rec.ioctl(vcpu, I.KVM_GET_MSRS, b);
    rec.ioctl(vcpu, I.KVM_SET_MSRS, b);
    const f = join(dir, `s${Math.random().toString(16).slice(2)}.jsonl`);
    writeFileSync(f, rec.text());
    return f;
  };
  test('replay says OK with the counts and exits 0; --json carries the same', async () => {
    const f = await make();
    const r = run(['replay', f]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^OK: 4 ioctls \(2 MSR ioctls, 82 entries\), 0 divergences/m);
    expect(r.out).toContain('IA32_TSC compared by rule');
    const j = JSON.parse(run(['replay', f, '--json']).out) as { divergences: unknown[]; entries: number };
    expect(j.divergences).toEqual([]);
    expect(j.entries).toBe(82);
  });
  test('replay of an altered capture exits 1 and shows the entry with names and both values', async () => {
    const f = await make();
    const lines = readFileSync(f, 'utf8').split('\n');
    const i = lines.findIndex((l) => l.includes('"name":"KVM_GET_MSRS"'));
    // Entry 9 is IA32_CR_PAT (0x277): make the kernel have read 0x6.
    lines[i] = lines[i]!.replace(/"out":"([0-9a-f]*)"/, (_m, hex: string) => `"out":"${hex.slice(0, 8 * 2 + 9 * 32 + 16)}0600000000000000${hex.slice(8 * 2 + 9 * 32 + 32)}"`);
    writeFileSync(f, lines.join('\n'));
    const r = run(['replay', f]);
    expect(r.code).toBe(1);
    expect(r.out).toContain('DIVERGENCE at seq 2: KVM_GET_MSRS on vcpu (vCPU 0)');
    expect(r.out).toMatch(/> 0x277 IA32_CR_PAT\s+0x6\s+0x7040600070406/);
  });
  test('a malformed capture names file, line and field; a missing one is a clear error', async () => {
    const f = await make();
    writeFileSync(f, readFileSync(f, 'utf8').replace('"fdKind":"vcpu"', '"fdKind":"gpu"'));
    const r = run(['replay', f]);
    expect(r.out).toMatch(new RegExp(`warning: ${f.replace(/[.]/g, '\\.')}:\\d+: fdKind: expected system, vm or vcpu`));
    expect(run(['replay', join(dir, 'none.jsonl')]).err).toContain('cannot read capture');
    writeFileSync(join(dir, 'h.jsonl'), '{"format":"kvmsr-capture","version":7}\n');
    expect(run(['replay', join(dir, 'h.jsonl')]).err).toContain('h.jsonl:1: version: expected 1');
  });
  test('decode shows capture records with decoded entries', async () => {
    const f = await make();
    const r = run(['decode', f, '--seq', '2']);
    expect(r.out).toContain('#2 vcpu vcpu 0');
    expect(r.out).toMatch(/\[9\] 0x277 IA32_CR_PAT\s+0x0 -> 0x7040600070406/);
  });
  test('record refuses without a command', () => {
    expect(run(['record', '-o', join(dir, 'x.jsonl')]).code).not.toBe(0);
  });
});

describe('kvmsr conform', () => {
  test('refuses, with the reason, where /dev/kvm is absent; rejects bad numbers', () => {
    expect(run(['conform', '--cases', 'x']).err).toContain("--cases takes a whole number, not 'x'");
    if (existsSync('/dev/kvm')) return;
    const r = run(['conform']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('needs /dev/kvm: /dev/kvm is absent');
  });
});

describe('kvmsr check', () => {
  test('reports a partial batch the VMM did not retry, exits 1; --json carries the findings', async () => {
    const { Kvm } = await import('../src/kvm/kvm.js');
    const { KvmRecorder } = await import('../src/capture/kvm-recorder.js');
    const I = await import('../src/abi/kvm-ioctls.js');
    const kvm = new Kvm({ profile: sourceProfile() });
    const rec = new KvmRecorder(kvm);
    const sys = kvm.open('/dev/kvm');
    const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
    const vcpu = rec.ioctl(vm, I.KVM_CREATE_VCPU, 0);
    rec.ioctl(vcpu, I.KVM_GET_MSRS, encodeMsrs([0x277, 0x12345678].map((index) => ({ index, data: 0n }))));
    const f = join(mkdtempSync(join(tmpdir(), 'kvmsr-check-')), 'save.jsonl');
    writeFileSync(f, rec.text());
    const r = run(['check', f]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^kvmsr check: 1 errors, \d+ warnings/);
    expect(r.out).toMatch(/ERROR   \[partial\] vm\d+\/vcpu0: save KVM_GET_MSRS \(seq 2\) processed 1 of 2 entries: it stopped at 0x12345678/);
    const j = JSON.parse(run(['check', f, '--json']).out) as { findings: { kind: string }[] };
    expect(j.findings.some((x) => x.kind === 'partial')).toBe(true);
  });
});

describe('usage errors', () => {
  test('an unknown command or a missing required option is status 2; help and version are 0', () => {
    expect(run(['bogus']).code).toBe(2);
    expect(run(['record']).code).toBe(2);
    expect(run(['--help']).code).toBe(0);
    expect(run(['--version']).code).toBe(0);
  });
});

describe('kvmsr profile list and --kernel', () => {
  test('profile list names every built-in with its kernel, vendor module, CPU, and whether it was captured', () => {
    const r = run(['profile', 'list']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\| builtin:kvm-amd-6\.12-distro-qemu-tcg \(builtin:amd\) \| 6\.12\.117 \| kvm_amd \| .* \| captured \| Debian's 6\.12\.117/);
    expect(r.out).toMatch(/\| builtin:svm-amd-derived \| 6\.18\.44 \| kvm_amd \| .* \| derived \|/);
    expect(r.out).toContain('[default]');
    const rows = JSON.parse(run(['profile', 'list', '--json']).out) as { name: string; kernel: string; source: string }[];
    expect(rows.find((x) => x.name === 'pvm-intel-6.18.44-v1272')).toMatchObject({ kernel: '6.18.44-fc-v1272', source: 'capture' });
    const rules = JSON.parse(run(['profile', 'list', '--rules', '--json']).out) as { id: string; releases: string }[];
    expect(rules.find((x) => x.id === 'pv.unsupported-without-cpuid')?.releases).toBe('from 6.14, backported to 6.1.167, 6.12.75');
  });

  test('--kernel answers as that release with the nearest captured profile, and says so on stderr', () => {
    // 6.12.40: no capture of it; the nearest kvm_amd capture is 6.12.117, and 6.12.40 lacks the
    // host-LA57 canonical checks (6.12.41) and the LBR MSRs on the list (6.12.114).
    const r = run(['list', '--kernel', '6.12.40', '--json']);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/kernel 6\.12\.40: no kvm_amd capture of it; answering with the nearest captured profile kvm-amd-6\.12-distro-qemu-tcg \(6\.12\.117/);
    expect(r.err).toContain('index list without 0x1d9, 0x1db, 0x1dc, 0x1dd, 0x1de (index-list.debugctl-lbr)');
    const j = JSON.parse(r.out) as { profile: { kernel: string }; msrIndexList: { index: string }[] };
    expect(j.profile.kernel).toBe('6.12.40');
    expect(j.msrIndexList.map((m) => m.index)).not.toContain('0x1d9');
    // The vendor module follows --profile.
    const intel = run(['get', 'IA32_FEAT_CTL', '--kernel', '6.12.100', '--profile', 'builtin:intel']);
    expect(intel.err).toContain('kvm-intel-6.12-distro-bochs-skx');
    expect(run(['list', '--kernel', 'latest']).code).toBe(2);
  });

  test('replay --kernel: the capture\'s own host answers as that release; 6.1 lists no LBR MSRs, so QEMU\'s first list read differs', () => {
    const fixture = join(import.meta.dirname, 'fixtures', 'qemu', 'qemu-migrate-save.jsonl.gz');
    const same = run(['replay', fixture, '--kernel', '6.12.117']);
    expect(same.code).toBe(0);
    expect(same.err).toContain('kernel 6.12.117: the captured profile the capture header (kvm_amd 6.12.117)');
    const old = run(['replay', fixture, '--kernel', '6.1.192']);
    expect(old.code).toBe(1);
    expect(old.out).toContain('DIVERGENCE at seq 4: KVM_GET_MSR_INDEX_LIST on system');
    expect(old.err).toContain('index list without 0x1d9, 0x1db, 0x1dc, 0x1dd, 0x1de');
    // check takes --kernel too: the destination answers as that release.
    const k = run(['check', fixture, '--kernel', '6.12.117']);
    expect(k.err).toContain('kernel 6.12.117');
    expect(k.out).toContain('restored on kvm_amd 6.12.117');
  });

  test('check --on: a save restored on another host says what that host refuses, with status 1', () => {
    const save = join(import.meta.dirname, 'fixtures', 'qemu', 'qemu-migrate-save.jsonl.gz');
    const load = join(import.meta.dirname, 'fixtures', 'qemu', 'qemu-migrate-load.jsonl.gz');
    // Its own host: nothing refused or changed.
    const same = run(['check', save, load, '--on', 'builtin:kvm-amd-6.12-distro-qemu-tcg', '--json']);
    expect(same.code).toBe(0);
    const sj = JSON.parse(same.out) as { findings: { kind: string; severity: string }[]; destination: { kernel: string } };
    expect(sj.destination.kernel).toContain('6.12');
    expect(sj.findings.filter((f) => f.kind.startsWith('destination') && f.severity === 'error')).toEqual([]);
    // A kvm_amd save restored on kvm_intel: the AMD MSRs it saved are refused there.
    const other = run(['check', save, '--on', 'intel']);
    expect(other.code).toBe(1);
    expect(other.out).toMatch(/restored on kvm_intel 6\.12\.117/);
    expect(other.out).toContain('ERROR   [destination-refused] vm9/vcpu0: 0xc0000104 AMD64_TSC_RATIO = 0x100000000 is refused on kvm_intel 6.12.117');
    expect(other.out).toContain('and the same for 1 more: 0xc001011f AMD64_VIRT_SPEC_CTRL');
    expect(other.out).toContain('note: destination kvm_intel 6.12.117: a restore of exactly what was saved');
    // A destination that is not a profile is a usage error.
    expect(run(['check', save, '--on', 'builtin:nope']).code).toBe(2);
  });
});
