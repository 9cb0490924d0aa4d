// Builds the LD_PRELOAD recorder with the system's C compiler. Without one, kvmsr still works;
// only `kvmsr record` is unavailable, and it says so.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
const cc = process.env.CC || 'cc';
mkdirSync('dist/recorder', { recursive: true });
const r = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-o', 'dist/recorder/libkvmsr-record.so', 'recorder/kvmsr-record.c', '-ldl', '-lpthread'], { stdio: 'inherit' });
if (r.status !== 0) {
  console.warn(`kvmsr: could not build the recorder with ${cc}; \`kvmsr record\` will not be available`);
}
