// Every capability a profile reports is served (issue 23, item 3): test/c/caps-walk.c makes, for
// each capability KVM_CHECK_EXTENSION reports, the calls it advertises, and prints what each
// answered. Under `kvmsr run` it must print what the real kernel printed: the fixture was
// recorded on kvm_pvm 6.18.44 v1272 (`cc -o caps-walk test/c/caps-walk.c && ./caps-walk`), and
// where /dev/kvm exists the walk runs live against a profile captured first. The one call kvmsr
// does not model, KVM_GET_STATS_FD (binary stats: an fd of kvmsr's own would be needed), is left
// out of the comparison, and the test says so; every other line must match. Every built-in profile
// is walked too: no capability unwalked, none answered ENOSYS.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import type { HostProfile } from '../src/kvm/profile.js';
import { captureProfile } from '../src/profile/capture.js';
import { builtinProfile } from '../src/profiles.js';
import { runUnderKvmsr } from '../src/run/run-command.js';

const here = dirname(fileURLToPath(import.meta.url));
const cc = spawnSync('cc', ['--version']).status === 0;
const haveKvm = existsSync('/dev/kvm');
const why = cc ? '' : 'no C compiler (cc)';
if (!cc) console.warn('caps walk: skipped: no C compiler (cc)');
if (!haveKvm) console.warn('caps walk on the real kernel: skipped: this machine has no /dev/kvm (the recorded fixture is compared instead)');

const dir = mkdtempSync(join(tmpdir(), 'kvmsr-caps-walk-'));
const bin = join(dir, 'caps-walk');
if (cc) execFileSync('cc', ['-O1', '-Wall', '-Werror', '-o', bin, join(here, 'c', 'caps-walk.c')]);

/** The capability whose calls kvmsr does not model, and why. */
const NOT_MODELLED = new Map([[203, 'KVM_GET_STATS_FD: kvmsr has no binary-stats file to hand out (ENOSYS)']]);

/** The walk's lines, each capability's block without the ones NOT_MODELLED names. */
function comparable(out: string): string[] {
  const lines: string[] = [];
  let skip = false;
  for (const l of out.trimEnd().split('\n')) {
    const m = /^cap (\d+):/.exec(l);
    if (m) skip = NOT_MODELLED.has(Number(m[1]));
    if (!skip || m) lines.push(l);
  }
  return lines;
}

async function walkOnKvmsr(profile: HostProfile): Promise<string> {
  const r = await runUnderKvmsr([bin], { profile, stdio: 'pipe', log: () => undefined });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

describe.skipIf(!cc)(`every capability a profile reports is served${why ? ` (skipped: ${why})` : ''}`, () => {
  test('kvm_pvm 6.18.44 v1272: kvmsr prints what the real kernel printed (the recorded walk)', async () => {
    for (const [cap, reason] of NOT_MODELLED) console.warn(`caps walk: capability ${cap} is left out of the comparison: ${reason}`);
    const real = readFileSync(join(here, 'fixtures', 'caps-walk', 'pvm-intel-6.18.44-v1272.txt'), 'utf8');
    const mine = await walkOnKvmsr(builtinProfile('pvm-intel-6.18.44-v1272'));
    expect(comparable(mine)).toEqual(comparable(real));
  }, 60_000);

  test('the comparison still catches a changed answer', () => {
    const real = readFileSync(join(here, 'fixtures', 'caps-walk', 'pvm-intel-6.18.44-v1272.txt'), 'utf8');
    const changed = real.replace('enable(vm, KVM_CAP_SPLIT_IRQCHIP, 24) = 0', 'enable(vm, KVM_CAP_SPLIT_IRQCHIP, 24) = -1 errno ENOSYS');
    expect(changed).not.toBe(real);
    expect(comparable(changed)).not.toEqual(comparable(real));
  });

  test.skipIf(!haveKvm)(`live: the same walk on /dev/kvm and on kvmsr with the profile captured from it${haveKvm ? '' : ' (skipped: no /dev/kvm)'}`, async () => {
    const real = execFileSync(bin, { encoding: 'utf8', timeout: 60_000 });
    const mine = await walkOnKvmsr(captureProfile());
    expect(comparable(mine)).toEqual(comparable(real));
  }, 120_000);

  const profiles = readdirSync(join(here, '..', 'src', 'profiles')).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5));
  test.each(profiles)('built-in profile %s: every reported capability is walked, and none is answered ENOSYS', async (name) => {
    const out = await walkOnKvmsr(builtinProfile(name));
    const blocks = out.split(/^(?=cap \d+:)/m).filter((b) => b.startsWith('cap '));
    expect(blocks.length).toBeGreaterThan(40);
    const bad = blocks.filter((b) => /NOT WALKED|errno ENOSYS/.test(b) && !NOT_MODELLED.has(Number(/^cap (\d+)/.exec(b)![1])));
    expect(bad).toEqual([]);
  }, 60_000);
});
