// Finds (or builds) the native parts of `kvmsr run`, as recorder-lib.ts does for the recorder: the
// LD_PRELOAD library and the seccomp launcher and broker.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = [resolve(here, '..', '..'), resolve(here, '..', '..', '..')].find((d) => existsSync(join(d, 'preload', 'kvmsr-run.c')));

/**
 * `out` built from `sources` (under preload/) with cc and `args`, rebuilt when missing or older than
 * a source or a header there; throws with the reason when it cannot be had.
 */
function built(what: string, out: string, sources: string[], args: string[]): string {
  if (!ROOT) throw new Error(`the ${what} source (preload/${sources[0]}) is not installed with this kvmsr`);
  const dir = join(ROOT, 'preload');
  const lib = join(ROOT, 'dist', 'preload', out);
  const inputs = [...sources, ...readdirSync(dir).filter((f) => f.endsWith('.h'))].map((f) => join(dir, f));
  if (existsSync(lib) && inputs.every((f) => statSync(lib).mtimeMs >= statSync(f).mtimeMs)) return lib;
  mkdirSync(dirname(lib), { recursive: true });
  const cc = process.env['CC'] ?? 'cc';
  // Built beside and renamed, so a concurrent run never uses a half-written file.
  const tmp = `${lib}.${process.pid}.tmp`;
  const r = spawnSync(cc, ['-O2', '-Wall', '-o', tmp, ...sources.map((f) => join(dir, f)), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot build the ${what} with ${cc}: ${r.error?.message ?? r.stderr.trim()}`);
  renameSync(tmp, lib);
  return lib;
}

/** The LD_PRELOAD library's path (dist/preload/libkvmsr-run.so). */
export function preloadLibrary(): string {
  return built('run library', 'libkvmsr-run.so', ['kvmsr-run.c'], ['-shared', '-fPIC', '-ldl', '-lpthread']);
}

/** The seccomp launcher and broker (dist/preload/kvmsr-seccomp). */
export const SECCOMP_SOURCES = ['kvmsr-seccomp.c', 'kvmsr-broker.c', 'kvmsr-target.c'];
export function seccompBroker(): string {
  return built('seccomp broker', 'kvmsr-seccomp', SECCOMP_SOURCES, ['-lpthread']);
}
