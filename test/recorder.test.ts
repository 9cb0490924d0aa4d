// The LD_PRELOAD recorder on a small C program of our own: what it records is what the program
// saw, from several threads, and nothing already written is lost when the program crashes. Where
// /dev/kvm is absent the program talks to /dev/null treated as the KVM device (the ioctls then
// fail with ENOTTY, which the recorder must still record exactly); with /dev/kvm it records real
// KVM and the capture replays on kvmsr with a profile captured on the spot. Both recorders record
// the same set of ioctls (test/c/record-set.c calls every number kvmsr knows, on /dev/null as the
// system fd and /dev/zero as a vCPU), and every record has a CLOCK_MONOTONIC timestamp.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { _IOC_DIR } from '../src/abi/ioc.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { isRecorded, RECORDED_IOCTL_NAMES, recordsStateGetters } from '../src/capture/extents.js';
import { parseCapture, type CaptureRecord, type FdKind, type ParsedCapture } from '../src/capture/format.js';
import { KvmRecorder } from '../src/capture/kvm-recorder.js';
import { Kvm } from '../src/kvm/kvm.js';
import { recorderLibrary } from '../src/capture/recorder-lib.js';
import { replay } from '../src/capture/replay.js';
import { captureProfile } from '../src/profile/capture.js';
import { loadRealKvm, realKvmStatus } from '../src/native/real-kvm.js';

const cc = spawnSync('cc', ['--version']).status === 0;
const why = cc ? '' : 'no C compiler (cc)';
if (why) console.warn(`recorder: skipped: ${why}`);
const kvm = realKvmStatus();

function build(): { client: string; recordSet: string; lib: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-rec-'));
  const client = join(dir, 'msr-client');
  execFileSync('cc', ['-O1', '-o', client, join(__dirname, 'c', 'msr-client.c'), '-lpthread']);
  const recordSet = join(dir, 'record-set');
  execFileSync('cc', ['-O1', '-o', recordSet, join(__dirname, 'c', 'record-set.c')]);
  return { client, recordSet, lib: recorderLibrary(), dir };
}

/** record-set under the recorder, /dev/null standing for /dev/kvm and /dev/zero for a vCPU. */
function runSet(b: ReturnType<typeof build>, args: string[]): { status: number | null; stdout: string; capture: ParsedCapture } {
  const file = join(b.dir, `set-${Math.random().toString(16).slice(2)}.jsonl`);
  const env: NodeJS.ProcessEnv = { ...process.env, LD_PRELOAD: b.lib, KVMSR_RECORD_FILE: file, KVMSR_RECORD_SYSTEM_PATH: '/dev/null', KVMSR_RECORD_VCPU_PATH: '/dev/zero' };
  const r = spawnSync(b.recordSet, args, { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, capture: parseCapture(readFileSync(file, 'utf8'), file) };
}

const ioctlsOn = (records: CaptureRecord[], kind: FdKind): CaptureRecord[] => records.filter((r) => r.op !== 'close' && r.fdKind === kind);

/** Per thread, in seq order, every record has a monoUs and none goes back. */
function expectMonotonicPerThread(records: CaptureRecord[]): void {
  const last = new Map<number, number>();
  for (const r of records) {
    expect(Number.isSafeInteger(r.monoUs), `seq ${r.seq} monoUs`).toBe(true);
    expect(r.monoUs!, `seq ${r.seq}`).toBeGreaterThanOrEqual(last.get(r.tid) ?? 0);
    last.set(r.tid, r.monoUs!);
  }
}

function run(b: ReturnType<typeof build>, device: string, threads: number, abortAfter?: number) {
  const file = join(b.dir, `cap-${Math.random().toString(16).slice(2)}.jsonl`);
  const args = [device, String(threads), ...(abortAfter !== undefined ? [String(abortAfter)] : [])];
  const env: NodeJS.ProcessEnv = { ...process.env, LD_PRELOAD: b.lib, KVMSR_RECORD_FILE: file };
  if (device !== '/dev/kvm') env['KVMSR_RECORD_SYSTEM_PATH'] = device;
  const r = spawnSync(b.client, args, { encoding: 'utf8', env });
  const seen = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { request: string; ret: number; errno: number; out: string });
  return { status: r.status, signal: r.signal, seen, capture: parseCapture(readFileSync(file, 'utf8'), file) };
}

describe.skipIf(why !== '')(`LD_PRELOAD recorder${why ? ` (skipped: ${why})` : ''}`, () => {
  const b = why ? null : build();

  test('records exactly what the program saw, from 4 threads', () => {
    const { status, seen, capture } = run(b!, '/dev/null', 4);
    expect(status).toBe(0);
    expect(capture.error).toBeUndefined();
    const ioctls = capture.records.filter((r) => r.op !== 'close');
    expect(ioctls).toHaveLength(seen.length);
    // Every call the program made is in the capture with the same result and output bytes.
    const key = (req: string, ret: number, errno: number, out: string): string => `${req} ${ret} ${errno} ${out}`;
    const want = seen.map((s) => key(s.request, s.ret, s.errno, s.out)).sort();
    const got = ioctls.map((r) => key('0x' + r.request.toString(16), r.ret, r.errno, r.out ? Buffer.from(r.out).toString('hex') : '')).sort();
    expect(got).toEqual(want);
    expect(new Set(ioctls.map((r) => r.seq)).size).toBe(ioctls.length);
    expect(new Set(ioctls.map((r) => r.tid)).size).toBe(4);
    expect(capture.header.recorder).toContain('LD_PRELOAD');
    expectMonotonicPerThread(capture.records);
  });

  test('both recorders record the same ioctls, and the header lists them', () => {
    const reqs = Object.values(I.KVM_IOCTLS);
    const c = runSet(b!, ['all', '/dev/null', '/dev/zero', ...reqs.map((r) => '0x' + r.toString(16))]);
    expect(c.status).toBe(0);
    expect(c.capture.error).toBeUndefined();
    expect(c.capture.header.recorded).toEqual([...RECORDED_IOCTL_NAMES]);
    expect(recordsStateGetters(c.capture.header)).toBe(true);
    // The same numbers through KvmRecorder on kvmsr's system fd and a vCPU.
    const kvm = new Kvm();
    const rec = new KvmRecorder(kvm);
    const sys = kvm.open('/dev/kvm');
    const vcpu = kvm.ioctl(kvm.ioctl(sys, I.KVM_CREATE_VM, 0), I.KVM_CREATE_VCPU, 0);
    for (const req of reqs) for (const fd of [sys, vcpu]) rec.ioctl(fd, req, _IOC_DIR(req) === 0 ? 0 : new Uint8Array(16384));
    rec.ioctl(vcpu, I.KVM_RUN, 0);
    rec.ioctl(vcpu, I.KVM_RUN, 0);
    const ts = parseCapture(rec.text(), 'kvmsr.jsonl');
    expect(ts.header.recorded).toEqual([...RECORDED_IOCTL_NAMES]);
    const names = (records: CaptureRecord[], kind: FdKind): string[] => [...new Set(ioctlsOn(records, kind).map((r) => r.name))].sort();
    for (const kind of ['system', 'vcpu'] as const) {
      expect(names(c.capture.records, kind), kind).toEqual(names(ts.records, kind));
      expect(names(ts.records, kind), kind).toEqual([...RECORDED_IOCTL_NAMES].filter((n) => isRecorded(I.KVM_IOCTLS[n]!, kind)).sort());
    }
    expect(names(ts.records, 'vcpu')).toEqual([...RECORDED_IOCTL_NAMES].sort());
    // KVM_RUN once per vCPU fd (the "has run" marker), in both.
    for (const r of [c.capture.records, ts.records]) expect(ioctlsOn(r, 'vcpu').filter((x) => x.name === 'KVM_RUN')).toHaveLength(1);
    // A vCPU's KVM_SET_DEVICE_ATTR keeps the 8 bytes at attr.addr (record-set's 0x1122334455667788).
    const attr = ioctlsOn(c.capture.records, 'vcpu').find((x) => x.name === 'KVM_SET_DEVICE_ATTR')!;
    expect(attr.extra?.map((e) => Buffer.from(e).toString('hex'))).toEqual(['8877665544332211']);
    // Extents: the state getters' whole structs, a nested state's 128-byte header when its size is 0.
    const len = (n: string): number | undefined => ioctlsOn(c.capture.records, 'vcpu').find((x) => x.name === n)?.in?.length;
    expect([len('KVM_GET_LAPIC'), len('KVM_GET_CLOCK'), len('KVM_GET_SREGS'), len('KVM_GET_SREGS2'), len('KVM_SET_NESTED_STATE')]).toEqual([1024, 48, 312, 320, 128]);
    expect([len('KVM_SET_USER_MEMORY_REGION2'), len('KVM_XEN_HVM_CONFIG'), len('KVM_SET_VCPU_EVENTS'), len('KVM_SET_MP_STATE'), len('KVM_SET_DEVICE_ATTR')]).toEqual([160, 56, 64, 4, 24]);
    // And KvmRecorder keeps as many bytes as the C recorder for each of them.
    const lengths = (records: CaptureRecord[]): Map<string, number | undefined> => new Map(ioctlsOn(records, 'vcpu').map((x) => [x.name, x.in?.length]));
    expect(lengths(ts.records)).toEqual(lengths(c.capture.records));
    expectMonotonicPerThread(c.capture.records);
  });

  test('monoUs is in microseconds: two calls around a 200 ms sleep', () => {
    const c = runSet(b!, ['sleep', '/dev/null', '200']);
    expect(c.status).toBe(0);
    const [a, z] = c.capture.records.filter((r) => r.op !== 'close');
    expect(z!.monoUs! - a!.monoUs!).toBeGreaterThanOrEqual(150_000);
    expect(z!.monoUs! - a!.monoUs!).toBeLessThanOrEqual(5_000_000);
  });

  test('a crash loses nothing already written', () => {
    const { signal, seen, capture } = run(b!, '/dev/null', 1, 3);
    expect(signal).toBe('SIGABRT');
    expect(seen).toHaveLength(3);
    expect(capture.error).toBeUndefined();
    expect(capture.records.filter((r) => r.op !== 'close')).toHaveLength(3);
  });

  test.skipIf(!kvm.ok)(`on /dev/kvm: the capture matches the program and replays on kvmsr${kvm.ok ? '' : ` (skipped: ${kvm.reason})`}`, () => {
    const { status, seen, capture } = run(b!, '/dev/kvm', 2);
    expect(status).toBe(0);
    expect(capture.records.filter((r) => r.op !== 'close')).toHaveLength(seen.length);
    const profile = captureProfile();
    const r = replay(capture, { profile, continueOnDivergence: true });
    expect(r.divergences).toEqual([]);
  });

  test.skipIf(!kvm.ok)(`on /dev/kvm: state getters carry the kernel's bytes; replay runs them and compares no output${kvm.ok ? '' : ` (skipped: ${kvm.reason})`}`, () => {
    const file = join(b!.dir, 'live.jsonl');
    const r = spawnSync(b!.recordSet, ['live'], { encoding: 'utf8', env: { ...process.env, LD_PRELOAD: b!.lib, KVMSR_RECORD_FILE: file } });
    expect(r.status, r.stderr).toBe(0);
    const seen = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { name: string; ret: number; out: string });
    const capture = parseCapture(readFileSync(file, 'utf8'), file);
    for (const s of seen) {
      const rec = capture.records.find((x) => x.name === s.name)!;
      expect(rec.ret, s.name).toBe(s.ret);
      expect(Buffer.from(rec.out!).toString('hex'), s.name).toBe(s.out);
    }
    const rep = replay(capture, { profile: captureProfile(), continueOnDivergence: true });
    expect(rep.divergences).toEqual([]);
    expect(rep.stateReads).toBe(3);
  });
});
