// The guest path on the Intel PVM host, without /dev/kvm: test/guest-live.test.ts ran there
// (kvm_pvm 6.18.44-fc-v669, 2026-12-01, kvmsr at 678bd93) and kept the steps where the kernel's
// real-mode guest and kvmsr differed. hosts/pvm-intel-6.18.44-v669/guest-steps.json holds, per setup,
// every step and the kernel's answer to it, reconstructed from that run (its "source" says how).
// Each setup replays here on kvmsr with the host's built-in profile, as onKvmsr in guest-live does,
// and every step must see what the kernel's guest saw.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parseProfile, type HostProfile } from '../src/kvm/profile.js';
import { BUILTIN_PROFILES, builtinProfile, type BuiltinProfileName } from '../src/profiles.js';
import { guestOnKvmsr, type GuestSeen } from './helpers.js';

type Seen = GuestSeen;
/** An expected answer; compare "non-zero": an IA32_TSC read, which both sides must read ok and non-zero. */
type Expected = Seen & { compare?: 'non-zero' };
type StepJson = ['r', string] | ['w', string, string];
interface ModeJson {
  name: string;
  irqchip: boolean;
  cpuid: boolean;
  userMsr: number;
  kernelDiffers: number[];
  steps: StepJson[];
  expected: Expected[];
}
interface GuestSteps {
  host: BuiltinProfileName;
  source: string;
  modes: ModeJson[];
}

const HOST = 'pvm-intel-6.18.44-v669';
const FILE = join(import.meta.dirname, 'hosts', HOST, 'guest-steps.json');
const load = (): GuestSteps => JSON.parse(readFileSync(FILE, 'utf8')) as GuestSteps;

/** The steps on kvmsr, as the guest sees them (guestOnKvmsr, as guest-live uses it). */
function onKvmsr(profile: HostProfile, mode: ModeJson): Seen[] {
  const { step } = guestOnKvmsr(profile, mode);
  return mode.steps.map((s) => (s[0] === 'r' ? step(Number(s[1])) : step(Number(s[1]), BigInt(s[2]))));
}

/** Every step where kvmsr's answer is not the kernel's, as guest-live words it. */
function compare(mode: ModeJson, seen: Seen[]): string[] {
  const diffs: string[] = [];
  if (seen.length !== mode.expected.length) diffs.push(`${seen.length} answers for ${mode.expected.length} expected`);
  mode.steps.forEach((s, k) => {
    const { compare: rule, ...want } = mode.expected[k]!;
    const got = seen[k]!;
    const what = s[0] === 'r' ? `rdmsr ${s[1]}` : `wrmsr ${s[2]} to ${s[1]}`;
    if (rule === 'non-zero') {
      if (got.kind !== 'ok' || BigInt(got.value) === 0n) diffs.push(`step ${k} ${what}: kernel ok and non-zero, kvmsr ${JSON.stringify(got)}`);
      return;
    }
    if (JSON.stringify(want) !== JSON.stringify(got)) diffs.push(`step ${k} ${what}: kernel ${JSON.stringify(want)}, kvmsr ${JSON.stringify(got)}`);
  });
  return diffs;
}

describe(`guest RDMSR/WRMSR steps measured on ${HOST} replay on kvmsr with its built-in profile`, () => {
  const doc = load();

  test('the file is whole: four setups, one answer per step, IA32_TSC reads compared by rule', () => {
    expect(doc.host).toBe(HOST);
    expect(doc.modes.map((m) => [m.name, m.irqchip, m.cpuid, m.userMsr, m.steps.length, m.kernelDiffers.length])).toEqual([
      ['a fresh vCPU', false, false, 0, 374, 18],
      ['the supported CPUID', false, true, 0, 376, 18],
      ['the supported CPUID and an irqchip', true, true, 0, 376, 18],
      ['userspace MSR exits for unknown and invalid accesses', true, true, 3, 376, 23],
    ]);
    for (const m of doc.modes) {
      expect(m.expected).toHaveLength(m.steps.length);
      const tsc = m.steps.flatMap((s, k) => (s[0] === 'r' && s[1] === '0x10' ? [k] : []));
      expect(tsc).toEqual([8]); // the first read only: IA32_TSC is never written (stepsFor)
      expect(m.expected.flatMap((e, k) => (e.compare ? [k] : []))).toEqual(tsc);
    }
  });

  for (const mode of doc.modes) {
    test(`with ${mode.name}: every step sees what the kernel's guest saw`, () => {
      const profile = builtinProfile(doc.host);
      expect(compare(mode, onKvmsr(profile, mode))).toEqual([]);
    });
  }

  test('a changed answer is caught, at that step only', () => {
    const profile = builtinProfile(doc.host);
    const mode = structuredClone(doc.modes[0]!);
    const seen = onKvmsr(profile, mode);
    expect(compare(mode, seen)).toEqual([]);
    // Step 114: the guest's write of all-ones to IA32_CR_PAT, which the Intel host accepts.
    expect(mode.steps[114]).toEqual(['w', '0x277', '0xffffffffffffffff']);
    expect(mode.expected[114]).toEqual({ kind: 'ok', value: '0xffffffffffffffff' });
    mode.expected[114] = { kind: 'gp' };
    expect(compare(mode, seen)).toEqual([`step 114 wrmsr 0xffffffffffffffff to 0x277: kernel {"kind":"gp"}, kvmsr {"kind":"ok","value":"0xffffffffffffffff"}`]);
    // An IA32_TSC read that is 0 is caught too, though its value is not compared.
    const zero = seen.map((s, k) => (k === 8 ? { kind: 'ok' as const, value: '0x0' } : s));
    expect(compare(doc.modes[0]!, zero)).toEqual(['step 8 rdmsr 0x10: kernel ok and non-zero, kvmsr {"kind":"ok","value":"0x0"}']);
  });

  test('without its measured MSR rules the profile disagrees at the steps the host answered otherwise', () => {
    // The built-in profile less msrRules is the profile kvmsr captured on the host (profile.json of
    // the live run): on it kvmsr at 678bd93 gave the answers the live run saw differ. Today it still
    // differs at every step the file took from the kernel, but the guest's writes to
    // ARCH_CAPABILITIES (0x10a) under userspace MSR exits, whose exit reason (UNKNOWN from 6.14) the
    // code itself now gives.
    const json = structuredClone(BUILTIN_PROFILES[doc.host]) as Record<string, unknown>;
    expect(json['msrRules']).toBeDefined();
    delete json['msrRules'];
    const bare = parseProfile(json, 'builtin less msrRules');
    for (const mode of doc.modes) {
      const at = compare(mode, onKvmsr(bare, mode)).map((d) => Number(/^step (\d+) /.exec(d)![1]));
      const arch = mode.userMsr ? [258, 260, 262, 264] : [];
      expect(arch.every((k) => mode.steps[k]![0] === 'w' && mode.steps[k]![1] === '0x10a')).toBe(true);
      expect(at, mode.name).toEqual(mode.kernelDiffers.filter((k) => !arch.includes(k)));
    }
  });
});
