// The LD_PRELOAD recorder on a small C program of our own: what it records is what the program
// saw, from several threads, and nothing already written is lost when the program crashes. Where
// /dev/kvm is absent the program talks to /dev/null treated as the KVM device (the ioctls then
// fail with ENOTTY, which the recorder must still record exactly); with /dev/kvm it records real
// KVM and the capture replays on kvmsr with a profile captured on the spot.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parseCapture } from '../src/capture/format.js';
import { recorderLibrary } from '../src/capture/recorder-lib.js';
import { replay } from '../src/capture/replay.js';
import { captureProfile } from '../src/profile/capture.js';
import { loadRealKvm, realKvmStatus } from '../src/native/real-kvm.js';

const cc = spawnSync('cc', ['--version']).status === 0;
const why = cc ? '' : 'no C compiler (cc)';
if (why) console.warn(`recorder: skipped: ${why}`);
const kvm = realKvmStatus();

function build(): { client: string; lib: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-rec-'));
  const client = join(dir, 'msr-client');
  execFileSync('cc', ['-O1', '-o', client, join(__dirname, 'c', 'msr-client.c'), '-lpthread']);
  return { client, lib: recorderLibrary(), dir };
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
});
