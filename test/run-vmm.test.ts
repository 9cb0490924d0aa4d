// `kvmsr run` with real VMM save/restore code: Debian's QEMU 7.2 migrating two vCPUs to a file and
// back, and test/c/run-saverestore.c (with and without its planted mistake), each under
// `kvmsr run --record`, judged by `kvmsr check`. None of it needs /dev/kvm. Where /dev/kvm exists,
// the same programs run on the real kernel too, and the answers must agree.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { decodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { parseCapture, type ParsedCapture } from '../src/capture/format.js';
import { recordCommand } from '../src/capture/recorder-lib.js';
import { checkCaptures } from '../src/check/check.js';
import { movingAgree } from '../src/kvm/x86/moving-msrs.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { captureProfile } from '../src/profile/capture.js';
import { builtinProfile, defaultProfile } from '../src/profiles.js';
import { runUnderKvmsr } from '../src/run/run-command.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const haveQemu = existsSync(QEMU);
const haveCc = spawnSync('cc', ['--version']).status === 0;
const haveKvm = existsSync('/dev/kvm');
if (!haveQemu) console.warn(`kvmsr run with QEMU: skipped: ${QEMU} is not installed (apt-get install qemu-system-x86; .ci/run installs it)`);
if (!haveCc) console.warn('kvmsr run with a C save/restore: skipped: no C compiler');
if (!haveKvm) console.warn('kvmsr run against the real kernel: skipped: this machine has no /dev/kvm');

afterEach(() => new Promise<void>((resolve) => setTimeout(resolve, 0)));

const dir = mkdtempSync(join(tmpdir(), 'kvmsr-run-vmm-'));
const QEMU_ARGS = `${QEMU} -accel kvm -S -nodefaults -nographic -machine pc -m 128 -smp 2 -monitor stdio`;
// The migration's `cat` may still be writing when QEMU quits: it renames the file when done, and
// waitFor() waits for that name before the restore reads it.
const save = (state: string): string[] => ['sh', '-c', `printf 'info registers\\nmigrate "exec:cat > ${state}.part && mv ${state}.part ${state}"\\ninfo migrate\\nquit\\n' | ${QEMU_ARGS}`];
async function waitFor(file: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
}
// The restore asks `info status` until the incoming migration is over, then for the registers:
// a `quit` while QEMU still loads the stream makes QEMU 7.2 itself abort (object_ref's assertion,
// seen under load), whatever answers its ioctls. Its exit status is QEMU's, not the loop's.
const load = (state: string): string[] => [
  'sh',
  '-c',
  `mon=${state}.monitor; : > $mon; { i=0; while [ $i -lt 600 ]; do echo 'info status'; sleep 0.1; ` +
    `last=$(grep 'VM status' $mon | tail -n 1); case "$last" in ''|*inmigrate*) ;; *) break ;; esac; i=$((i+1)); done; ` +
    `printf 'info registers\\nquit\\n'; } | ${QEMU_ARGS} -incoming "exec:cat ${state}" > $mon; s=$?; cat $mon; exit $s`,
];

async function underKvmsr(command: string[], record: string, profile: HostProfile = defaultProfile()): Promise<{ status: number; stdout: string; log: string[] }> {
  const log: string[] = [];
  const r = await runUnderKvmsr(command, { profile, record, stdio: 'pipe', log: (l) => log.push(l) });
  if (r.stderr) log.push(r.stderr);
  return { status: r.status, stdout: r.stdout ?? '', log };
}

const capture = (file: string): ParsedCapture => parseCapture(readFileSync(file, 'utf8'), file);

describe.skipIf(!haveQemu)('QEMU 7.2 saves and restores its vCPUs under kvmsr run', () => {
  let saveCap: ParsedCapture;
  let loadCap: ParsedCapture;
  let saveOut = '';
  let loadOut = '';
  beforeAll(async () => {
    const state = join(dir, 'qemu.state');
    const s = await underKvmsr(save(state), join(dir, 'qemu-save.jsonl'));
    expect(s.status, s.log.join('\n')).toBe(0);
    saveOut = s.stdout;
    await waitFor(state);
    const l = await underKvmsr(load(state), join(dir, 'qemu-load.jsonl'));
    expect(l.status, l.log.join('\n')).toBe(0);
    loadOut = l.stdout;
    saveCap = capture(join(dir, 'qemu-save.jsonl'));
    loadCap = capture(join(dir, 'qemu-load.jsonl'));
  }, 120_000);

  test('it starts, answers info registers with the reset state, and migrates to a file', () => {
    expect(saveOut).toMatch(/EIP=0000fff0 EFL=00000002/);
    expect(saveOut).toMatch(/CS =f000 ffff0000 0000ffff 00009b00/);
    expect(saveOut).toMatch(/EFER=0000000000000000/);
    expect(saveOut).toContain('Migration status: completed');
    // The restore finished loading the stream (prelaunch, as the paused source was) before it answered.
    expect(loadOut).toContain('VM status: paused (prelaunch)');
    expect(loadOut).toMatch(/EIP=0000fff0 EFL=00000002/);
  });

  test('kvmsr check judges the two captures as on real KVM: no error, the guest-writable MSRs QEMU 7.2 does not save warned', () => {
    const r = checkCaptures(saveCap, loadCap);
    expect(r.findings.filter((f) => f.severity === 'error')).toEqual([]);
    const warned = new Set(r.findings.filter((f) => f.severity === 'warning').map((f) => `${f.kind} ${f.msr}`));
    // QEMU saves KVM_SYSTEM_TIME (0x12), the same state as KVM_SYSTEM_TIME_NEW: not warned.
    expect(warned).toContain('not-saved 0x4b564d05 KVM_POLL_CONTROL');
    expect(warned).not.toContain('not-saved 0x4b564d01 KVM_SYSTEM_TIME_NEW');
    // Both vCPUs saved (GET_MSRS) and restored (SET_MSRS) theirs.
    const vcpus = (c: ParsedCapture, req: number): Set<number> => new Set(c.records.filter((x) => x.fdKind === 'vcpu' && x.request === req && x.ret > 0).map((x) => x.vcpuId ?? -1));
    expect(vcpus(saveCap, I.KVM_GET_MSRS)).toEqual(new Set([0, 1]));
    expect(vcpus(loadCap, I.KVM_SET_MSRS)).toEqual(new Set([0, 1]));
  });
});

describe.skipIf(!haveQemu).each([
  ['builtin:intel', 'kvm-intel-6.12-distro-bochs-skx'],
  ['builtin:amd', 'kvm-amd-6.12-distro-qemu-tcg'],
] as const)('QEMU on a distribution host profile (%s: SMM memslots, Hyper-V listed)', (_alias, name) => {
  test('saves and restores; kvmsr check finds no error, and says which differences the guest cannot see', async () => {
    const profile = builtinProfile(name);
    const state = join(dir, `${name}.state`);
    // With KVM_SMM QEMU puts SMRAM in memslot address space 1 and reads its dirty log.
    const s = await underKvmsr(save(state), join(dir, `${name}-save.jsonl`), profile);
    expect(s.status, s.log.join('\n')).toBe(0);
    expect(s.stdout).toContain('Migration status: completed');
    await waitFor(state);
    const l = await underKvmsr(load(state), join(dir, `${name}-load.jsonl`), profile);
    expect(l.status, l.log.join('\n')).toBe(0);
    const sv = capture(join(dir, `${name}-save.jsonl`));
    expect(sv.records.some((r) => r.request === I.KVM_SET_USER_MEMORY_REGION && r.ret === 0 && r.in !== undefined && new DataView(r.in.buffer, r.in.byteOffset).getUint32(0, true) >>> 16 === 1)).toBe(true);
    const r = checkCaptures(sv, capture(join(dir, `${name}-load.jsonl`)));
    expect(r.findings.filter((f) => f.severity === 'error')).toEqual([]);
    // Without hv-runtime QEMU migrates no VP_RUNTIME and restores 0, as on a real host; the guest,
    // given no Hyper-V CPUID, cannot read it, so check says so as info.
    const runtime = r.findings.find((f) => f.kind === 'restored-different' && f.msr === '0x40000010 HV_X64_MSR_VP_RUNTIME');
    expect(runtime?.severity).toBe('info');
    expect(runtime?.message).toContain('the guest can neither read nor write it on this vCPU model');
  }, 120_000);
});

describe.skipIf(!haveCc)('a C save/restore with a planted mistake, under kvmsr run', () => {
  const bin = join(dir, 'run-saverestore');
  beforeAll(() => {
    execFileSync('cc', ['-O1', '-Wall', '-o', bin, join(import.meta.dirname, 'c', 'run-saverestore.c')]);
  });
  test('kvmsr check finds the mistake, and passes the fixed restore', async () => {
    const state = join(dir, 'c.state');
    expect((await underKvmsr([bin, 'save', state], join(dir, 'c-save.jsonl'))).status).toBe(0);
    expect((await underKvmsr([bin, 'restore', state, 'bug'], join(dir, 'c-bug.jsonl'))).status).toBe(0);
    expect((await underKvmsr([bin, 'restore', state], join(dir, 'c-ok.jsonl'))).status).toBe(0);
    const sv = capture(join(dir, 'c-save.jsonl'));
    const bug = checkCaptures(sv, capture(join(dir, 'c-bug.jsonl')));
    const errors = bug.findings.filter((f) => f.severity === 'error');
    expect(errors.map((f) => f.kind)).toContain('restored-different');
    expect(errors.find((f) => f.msr === '0xc0000081 STAR')?.message).toBe('0xc0000081 STAR was saved as 0x23001000000000 but restored as 0xffffffff81a00080');
    const ok = checkCaptures(sv, capture(join(dir, 'c-ok.jsonl')));
    // The program saves nine MSRs on purpose; what it leaves unsaved (the MTRRs and KVM PV MSRs its
    // CPUID offers the guest) is class 1 (test/check-serializers.test.ts). Its round trip is clean.
    expect(ok.findings.filter((f) => f.severity === 'error' && f.kind !== 'not-saved')).toEqual([]);
    expect(ok.findings.filter((f) => f.severity === 'error').map((f) => f.msr)).toContain('0x2ff MTRRdefType');
  }, 60_000);
});

const canHide = spawnSync('unshare', ['-m', 'true']).status === 0;
if (!canHide) console.warn('kvmsr run with /dev/kvm hidden: skipped: unshare -m is not permitted here (it needs root)');

describe.skipIf(!haveQemu || !canHide)('with /dev/kvm hidden (a mount namespace whose /dev has no kvm node)', () => {
  test('QEMU still saves and restores under kvmsr run, and kvmsr check judges it', () => {
    const hide = join(import.meta.dirname, 'hide-dev-kvm.sh');
    const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'main.js');
    const state = join(dir, 'hidden.state');
    const run = (cmd: string[], record: string): ReturnType<typeof spawnSync> =>
      spawnSync('unshare', ['-m', 'sh', hide, 'sh', '-c', 'test ! -e /dev/kvm && exec "$@"', 'sh', process.execPath, cli, 'run', '--record', record, '--', ...cmd], { encoding: 'utf8', timeout: 120_000 });
    const s = run(save(state), join(dir, 'hidden-save.jsonl'));
    expect(s.status, String(s.stderr)).toBe(0);
    expect(String(s.stdout)).toContain('Migration status: completed');
    const l = run(load(state), join(dir, 'hidden-load.jsonl'));
    expect(l.status, String(l.stderr)).toBe(0);
    const r = checkCaptures(capture(join(dir, 'hidden-save.jsonl')), capture(join(dir, 'hidden-load.jsonl')));
    expect(r.findings.filter((f) => f.severity === 'error')).toEqual([]);
    expect(r.findings.some((f) => f.kind === 'not-saved')).toBe(true);
  }, 240_000);
});

/** The MSR ioctls of a capture per vCPU: [request, ret, entries out] in order. */
function msrTraffic(c: ParsedCapture): Map<string, { request: number; ret: number; out: { index: number; data: bigint }[] }[]> {
  const m = new Map<string, { request: number; ret: number; out: { index: number; data: bigint }[] }[]>();
  for (const r of c.records) {
    if (r.fdKind !== 'vcpu' || (r.request !== I.KVM_GET_MSRS && r.request !== I.KVM_SET_MSRS)) continue;
    const key = `vcpu${r.vcpuId}`;
    const bytes = r.out ?? r.in;
    const out = bytes ? decodeMsrs(bytes).entries.map((e) => ({ index: e.index, data: e.data })) : [];
    if (!m.has(key)) m.set(key, []);
    m.get(key)!.push({ request: r.request, ret: r.ret, out });
  }
  return m;
}

describe.skipIf(!haveKvm || !haveCc)('the same programs on the real kernel and under kvmsr run agree', () => {
  let profile: HostProfile;
  beforeAll(() => {
    profile = captureProfile();
  }, 180_000);

  test('run-saverestore: the saved state file is byte for byte the real kernel\'s', async () => {
    const bin = join(dir, 'run-saverestore-live');
    execFileSync('cc', ['-O1', '-Wall', '-o', bin, join(import.meta.dirname, 'c', 'run-saverestore.c')]);
    execFileSync(bin, ['save', join(dir, 'real.state')]);
    expect((await underKvmsr([bin, 'save', join(dir, 'emu.state')], join(dir, 'emu.jsonl'), profile)).status).toBe(0);
    expect(readFileSync(join(dir, 'emu.state'))).toEqual(readFileSync(join(dir, 'real.state')));
  }, 60_000);

  test.skipIf(!haveQemu)('QEMU save: every MSR ioctl of each vCPU agrees (moving MSRs by rule)', async () => {
    const real = join(dir, 'qemu-real.jsonl');
    expect(recordCommand(real, save(join(dir, 'real-qemu.state')), { ...process.env })).toBe(0);
    const emu = join(dir, 'qemu-emu.jsonl');
    expect((await underKvmsr(save(join(dir, 'emu-qemu.state')), emu, profile)).status).toBe(0);
    const a = msrTraffic(capture(real));
    const b = msrTraffic(capture(emu));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, calls] of a) {
      const mine = b.get(k)!;
      expect(mine.map((c) => [c.request, c.ret]), k).toEqual(calls.map((c) => [c.request, c.ret]));
      calls.forEach((c, n) => {
        c.out.forEach((e, j) => {
          const o = mine[n]!.out[j]!;
          expect(o.index, `${k} call ${n} entry ${j}`).toBe(e.index);
          expect(movingAgree(e.index, e.data, o.data), `${k} call ${n} 0x${e.index.toString(16)}: real 0x${e.data.toString(16)}, kvmsr 0x${o.data.toString(16)}`).toBe(true);
        });
      });
    }
  }, 180_000);
});
