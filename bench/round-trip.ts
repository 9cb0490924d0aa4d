// The round trip from a native program (bench/c/round_trip.c): one KVM_GET_MSRS of one MSR, the
// median of 20 batches of 1000, under `kvmsr run` and, where /dev/kvm opens, on the real kernel,
// which runs right before and right after kvmsr (this machine's speed drifts; the mean of the two is
// the kernel's figure, as for the C loop).
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runUnderKvmsr } from '../src/run/run-command.js';

export interface RoundTrips {
  /** ns per ioctl, or null where it did not run. */
  run: number | null;
  kernel: number | null;
  /** Why the kvmsr run figure is missing, or the kernel's when only that one is. */
  why: string | null;
  notes: string[];
}

interface Measured {
  medianNs: number;
  minNs: number;
}

const ARGS = ['20', '1000'];

export async function roundTrips(root: string): Promise<RoundTrips> {
  const notes: string[] = [];
  let exe: string;
  try {
    exe = join(mkdtempSync(join(tmpdir(), 'kvmsr-bench-')), 'round_trip');
    execFileSync('gcc', ['-O2', '-o', exe, join(root, 'bench', 'c', 'round_trip.c')]);
  } catch (e) {
    const why = `no round trip: ${(e as Error).message.split('\n')[0]}`;
    return { run: null, kernel: null, why, notes: [why] };
  }
  const kernel = (): Measured | string => {
    try {
      return JSON.parse(execFileSync(exe, ARGS, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as Measured;
    } catch (e) {
      const err = (e as { stderr?: Buffer | string }).stderr?.toString().trim();
      return err || (e as Error).message.split('\n')[0]!;
    }
  };
  const before = kernel();
  const r = await runUnderKvmsr([exe, ...ARGS], { stdio: 'pipe', log: (l) => notes.push(l) });
  const after = kernel();
  if (r.status !== 0) {
    const why = `kvmsr run round trip failed (status ${r.status}): ${r.stderr.trim().split('\n').pop() ?? ''}`;
    return { run: null, kernel: null, why, notes: [...notes, why] };
  }
  const run = JSON.parse(r.stdout) as Measured;
  notes.push(`kvmsr run round trip: median ${(run.medianNs / 1000).toFixed(2)} µs, fastest batch ${(run.minNs / 1000).toFixed(2)} µs (${r.intercept})`);
  if (typeof before === 'string' || typeof after === 'string') {
    const why = `no kernel round trip: ${typeof before === 'string' ? before : String(after)}`;
    notes.push(why);
    return { run: run.medianNs, kernel: null, why, notes };
  }
  const k = (before.medianNs + after.medianNs) / 2;
  notes.push(`kernel round trip: median ${(before.medianNs / 1000).toFixed(2)} µs before kvmsr run, ${(after.medianNs / 1000).toFixed(2)} µs after`);
  return { run: run.medianNs, kernel: k, why: null, notes };
}
