// Finds (or builds) the LD_PRELOAD library of `kvmsr run`, as recorder-lib.ts does for the recorder.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = [resolve(here, '..', '..'), resolve(here, '..', '..', '..')].find((d) => existsSync(join(d, 'preload', 'kvmsr-run.c')));

/**
 * The library's path, building it with cc when it is missing or older than its source; throws with
 * the reason when it cannot be had.
 */
export function preloadLibrary(): string {
  if (!ROOT) throw new Error('the run library source (preload/kvmsr-run.c) is not installed with this kvmsr');
  const src = join(ROOT, 'preload', 'kvmsr-run.c');
  const lib = join(ROOT, 'dist', 'preload', 'libkvmsr-run.so');
  if (existsSync(lib) && statSync(lib).mtimeMs >= statSync(src).mtimeMs) return lib;
  mkdirSync(dirname(lib), { recursive: true });
  const cc = process.env['CC'] ?? 'cc';
  // Built beside and renamed, so a concurrent run never preloads a half-written file.
  const tmp = `${lib}.${process.pid}.tmp`;
  const r = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-o', tmp, src, '-ldl', '-lpthread'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot build the run library with ${cc}: ${r.error?.message ?? r.stderr.trim()}`);
  renameSync(tmp, lib);
  return lib;
}
