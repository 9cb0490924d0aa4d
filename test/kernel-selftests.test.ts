// The kernel's own KVM selftests (Linux 6.12, tools/testing/selftests/kvm), built from Debian's
// linux-source-6.12 by scripts/build-kvm-selftests.sh, under `kvmsr run` as this project's PVM host
// answers. These are the ones that need no guest code: every other x86 selftest waits for its guest
// to run (a kvmsr vCPU is halted and never wakes) or skips on this host. kvm_binary_stats_test reads
// the binary stats files this host's profile captured. The selftest library
// reads /sys/module/kvm/parameters/force_emulation_prefix first of all: `kvmsr run` serves the
// profile's module parameters there. Where /dev/kvm exists each also runs on the real kernel.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, test } from 'vitest';
import { builtinProfile } from '../src/profiles.js';
import { runUnderKvmsr } from '../src/run/run-command.js';

const here = dirname(fileURLToPath(import.meta.url));
const SOURCE = process.env['LINUX_SOURCE_TAR'] ?? '/usr/src/linux-source-6.12.tar.xz';
const has = (cmd: string): boolean => spawnSync(cmd, ['--version']).status === 0;
const why = !existsSync(SOURCE)
  ? `${SOURCE} is absent (apt-get install linux-source-6.12; .ci/run installs it)`
  : !has('make') || !has('gcc')
    ? 'make or gcc is missing'
    : '';
if (why) console.warn(`kernel KVM selftests: skipped: ${why}`);
const haveKvm = existsSync('/dev/kvm');
const OUT = join(tmpdir(), 'kvmsr-kvm-selftests');

const SELFTESTS = ['get_msr_index_features', 'hwcr_msr_test', 'kvm_binary_stats_test', 'kvm_create_max_vcpus', 'max_vcpuid_cap_test', 'recalc_apic_map_test'];
/** x86 tests are built in build/x86_64, the generic ones (kvm_create_max_vcpus) in build. */
const bin = (name: string): string => (existsSync(join(OUT, 'build', 'x86_64', name)) ? join(OUT, 'build', 'x86_64', name) : join(OUT, 'build', name));

describe.skipIf(why !== '')(`the kernel's KVM selftests that need no guest code${why ? ` (skipped: ${why})` : ''}`, () => {
  beforeAll(async () => {
    if (existsSync(join(OUT, 'build', '.done'))) return;
    // Asynchronously: the build takes about a minute and the worker must keep answering vitest.
    await new Promise<void>((resolve, reject) => {
      const p = spawn('bash', [join(here, '..', 'scripts', 'build-kvm-selftests.sh'), OUT], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`build-kvm-selftests.sh: status ${code}: ${err.slice(-2000)}`))));
    });
  }, 600_000);

  test.each(SELFTESTS)('%s passes under kvmsr run (kvm_pvm 6.18.44 v1272)', async (name) => {
    const r = await runUnderKvmsr([bin(name)], { profile: builtinProfile('pvm-intel-6.18.44-v1272'), stdio: 'pipe', log: () => undefined });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).not.toMatch(/^not ok/m);
  }, 120_000);

  test.skipIf(!haveKvm).each(SELFTESTS)(`%s passes on the real kernel${haveKvm ? '' : ' (skipped: no /dev/kvm)'}`, async (name) => {
    const status = await new Promise<number | null>((resolve) => {
      const p = spawn(bin(name), { stdio: 'ignore' });
      p.on('error', () => resolve(null));
      p.on('exit', (code) => resolve(code));
    });
    expect(status).toBe(0);
  }, 120_000);
});
