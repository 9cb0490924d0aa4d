// Builds kvmsr-probe, the small C program that runs a plan on a real /dev/kvm, with the system's C
// compiler. Hypervisor hosts often have no Node, so the binary should be static and copied there.
// Without a C compiler, kvmsr still works; only the probe binary is missing, and this says so.
// KVMSR_PROBE_STATIC=0 skips the static attempt.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
const cc = process.env.CC || 'cc';
const out = 'dist/probe/kvmsr-probe';
const src = 'probe/kvmsr-probe.c';
mkdirSync('dist/probe', { recursive: true });
const build = (extra) => spawnSync(cc, [...extra, '-O2', '-Wall', '-pthread', '-o', out, src], { stdio: 'inherit' }).status === 0;
if (process.env.KVMSR_PROBE_STATIC !== '0' && build(['-static'])) process.exit(0);
if (build([])) {
  console.warn(
    `kvmsr: built ${out} as a dynamic binary; copy it only to a host with the same C library. ` +
      `For a static one, install the C library's static archive (e.g. Debian \`libc6-dev\`) or build with \`CC=musl-gcc\`.`,
  );
} else {
  console.warn(`kvmsr: could not build ${out} with ${cc}; kvmsr still works, but \`kvmsr-probe\` will not be available`);
}
