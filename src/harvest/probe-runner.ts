// Finds (or builds) kvmsr-probe and runs a plan with it on this machine's /dev/kvm: what
// `profile capture` does, and what `kvmsr-probe DIR` does on a host without Node.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAnswers, writePlan, type Answers, type PlanCase } from './format.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = [resolve(HERE, '..', '..'), resolve(HERE, '..', '..', '..')].find((d) => existsSync(join(d, 'probe', 'kvmsr-probe.c')));

/** The probe binary's path (dist/probe/kvmsr-probe), building it with cc when missing; throws with the reason. */
export function probeBinary(): string {
  if (!ROOT) throw new Error('the probe source (probe/kvmsr-probe.c) is not installed with this kvmsr');
  const exe = join(ROOT, 'dist', 'probe', 'kvmsr-probe');
  if (existsSync(exe)) return exe;
  mkdirSync(dirname(exe), { recursive: true });
  const cc = process.env['CC'] ?? 'cc';
  const r = spawnSync(cc, ['-O2', '-pthread', '-o', exe, join(ROOT, 'probe', 'kvmsr-probe.c')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot build kvmsr-probe with ${cc}: ${r.error?.message ?? r.stderr.trim()}`);
  return exe;
}

/** Runs kvmsr-probe on DIR (which holds plan.txt); returns its exit status. */
export function runProbe(dir: string, jobs = 2, quiet = true): number {
  const r = spawnSync(probeBinary(), ['--jobs', String(jobs), dir], { stdio: ['ignore', 'inherit', quiet ? 'pipe' : 'inherit'], encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run kvmsr-probe: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`kvmsr-probe failed (status ${r.status}): ${(r.stderr ?? '').trim()}`);
  return r.status;
}

/** Runs cases on this machine's /dev/kvm through the probe, in a scratch directory, and returns the answers. */
export function probeCases(cases: readonly PlanCase[], jobs = 2): Answers {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-probe-'));
  try {
    writeFileSync(join(dir, 'plan.txt'), writePlan(cases));
    runProbe(dir, jobs);
    return parseAnswers(readFileSync(join(dir, 'answers.txt'), 'utf8'), join(dir, 'answers.txt'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
