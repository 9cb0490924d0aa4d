// Builds the native parts of `kvmsr run` with the system's C compiler: the LD_PRELOAD library and
// the seccomp launcher and broker. Without a compiler kvmsr still works; only `kvmsr run` is
// unavailable, and it says so.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
const cc = process.env.CC || 'cc';
mkdirSync('dist/preload', { recursive: true });
const builds = [
  ['run library', ['-shared', '-fPIC', '-O2', '-Wall', '-o', 'dist/preload/libkvmsr-run.so', 'preload/kvmsr-run.c', '-ldl', '-lpthread']],
  ['seccomp broker', ['-O2', '-Wall', '-o', 'dist/preload/kvmsr-seccomp', 'preload/kvmsr-seccomp.c', 'preload/kvmsr-broker.c', 'preload/kvmsr-target.c', '-lpthread']],
];
for (const [what, args] of builds) {
  const r = spawnSync(cc, args, { stdio: 'inherit' });
  if (r.status !== 0) console.warn(`kvmsr: could not build the ${what} with ${cc}; \`kvmsr run\` will not be available`);
}
