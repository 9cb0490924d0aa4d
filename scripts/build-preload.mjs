// Builds the LD_PRELOAD library of `kvmsr run` with the system's C compiler. Without one, kvmsr
// still works; only `kvmsr run` is unavailable, and it says so.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
const cc = process.env.CC || 'cc';
mkdirSync('dist/preload', { recursive: true });
const r = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-o', 'dist/preload/libkvmsr-run.so', 'preload/kvmsr-run.c', '-ldl', '-lpthread'], { stdio: 'inherit' });
if (r.status !== 0) {
  console.warn(`kvmsr: could not build the run library with ${cc}; \`kvmsr run\` will not be available`);
}
