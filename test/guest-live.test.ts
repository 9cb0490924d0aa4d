// The guest path against a live kernel: a tiny real-mode guest (test/c/guest-msr.c) executes RDMSR
// and WRMSR on /dev/kvm, and kvm.rdmsr/kvm.wrmsr on kvmsr (with a profile captured on the spot)
// must see the same: the value, a #GP, or the same userspace exit. Skips, visibly, without
// /dev/kvm or a C compiler. Measured on kvm_amd 6.12 with scripts/kvm-amd-oracle.sh.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { realKvmStatus } from '../src/native/real-kvm.js';
import { captureProfile } from '../src/profile/capture.js';
import { datas, guestOnKvmsr, msrs, type GuestSeen } from './helpers.js';

const status = realKvmStatus();
const cc = spawnSync('cc', ['--version']).status === 0;
const why = !status.ok ? status.reason : !cc ? 'no C compiler (cc)' : '';
if (why) console.warn(`guest path live: skipped: ${why}`);

interface Mode {
  irqchip: boolean;
  cpuid: boolean;
  userMsr: number;
}
type Step = ['r', number] | ['w', number, bigint];
/** Steps with host ioctls between guest ones: a one-entry KVM_GET_MSRS (h) or KVM_SET_MSRS (H), or a pause in ms (s). */
type MixedStep = Step | ['h', number] | ['H', number, bigint] | ['s', number];
type Seen = GuestSeen;

const hex = (v: bigint): string => '0x' + v.toString(16);
const ONES = 0xffffffffffffffffn;

/** What each step saw on kvmsr, and whether its IA32_TSC value rests on kvmsr's estimate of the host TSC. */
function onKvmsr(profile: HostProfile, mode: Mode, steps: Step[]): { seen: Seen[]; tscEstimated: boolean[] } {
  const { kvm, vcpu, step } = guestOnKvmsr(profile, mode);
  const tscEstimated: boolean[] = [];
  const seen = steps.map((s) => {
    const r = s[0] === 'r' ? step(s[1]) : step(s[1], s[2]);
    tscEstimated.push(kvm.tscEstimated(vcpu));
    return r;
  });
  return { seen, tscEstimated };
}

describe.skipIf(why !== '')(`guest RDMSR/WRMSR against /dev/kvm${why ? ` (skipped: ${why})` : ''}`, () => {
  let exe = '';
  let profile: HostProfile;
  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmsr-guest-'));
    exe = join(dir, 'guest-msr');
    execFileSync('cc', ['-O1', '-o', exe, join(import.meta.dirname, 'c', 'guest-msr.c')]);
    profile = captureProfile();
  });

  const onKernel = (mode: Mode, steps: MixedStep[]): Seen[] => {
    const args = [...(mode.irqchip ? ['--irqchip'] : []), ...(mode.cpuid ? ['--cpuid'] : []), ...(mode.userMsr ? ['--user-msr', String(mode.userMsr)] : [])];
    const input = steps.map((s) => s.join(' ')).join('\n') + '\n';
    const r = spawnSync(exe, args, { input, encoding: 'utf8', maxBuffer: 1 << 24 });
    const lines = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Seen & { fatal?: string });
    const fatal = lines.find((l) => l.fatal !== undefined);
    if (fatal) throw new Error(`guest-msr: ${JSON.stringify(fatal)}`);
    return lines;
  };

  /** Reads of every listed, feature and a few unknown MSRs; write-back of what was read; 0, 1, all-ones. */
  function stepsFor(mode: Mode): Step[] {
    const list = [...new Set([...profile.msrIndexList, ...profile.featureMsrs.map((m) => m.index), 0x12345678, 0xc0011234, 0x4b564dff])];
    const reads: Step[] = list.map((i) => ['r', i]);
    const first = onKernel(mode, reads);
    const steps: Step[] = [...reads];
    list.forEach((i, k) => {
      const s = first[k]!;
      if (i === 0x10) return; // IA32_TSC moves with time: its reads are compared by rule below
      if (s.kind === 'ok') steps.push(['w', i, BigInt(s.value)], ['r', i]);
      for (const v of [0n, 1n, ONES]) steps.push(['w', i, v], ['r', i]);
    });
    return steps;
  }

  const modes: [string, Mode][] = [
    ['a fresh vCPU', { irqchip: false, cpuid: false, userMsr: 0 }],
    ['the supported CPUID', { irqchip: false, cpuid: true, userMsr: 0 }],
    ['the supported CPUID and an irqchip', { irqchip: true, cpuid: true, userMsr: 0 }],
    ['userspace MSR exits for unknown and invalid accesses', { irqchip: true, cpuid: true, userMsr: 3 }],
  ];
  /** Whether a new kvmsr vCPU on this profile has no TSC multiplier (kvm_arch_vcpu_create's kvm_set_tsc_khz failed). */
  const tscStandsStill = (p: HostProfile): boolean => {
    const kvm = new Kvm({ profile: p });
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    return kvm.vcpuOf(kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0))!.tscKhz === 0;
  };
  test('IA32_TSC across guest entries: host reads and the guest read move as the kernel\'s do', () => {
    // A host write far from the TSC starts a generation. On a stable host the TSC counts from it;
    // on an unstable one it stands still between entries, and each entry catches it up to the
    // generation's time (kvm_arch_vcpu_load sets tsc_catchup there); a vCPU whose multiplier was
    // never written stands still. Compared within 150 ms of cycles: the two sides run the same
    // steps at different times, and the pause (600 ms) is what a missed catch-up would lose.
    const mode: Mode = { irqchip: false, cpuid: true, userMsr: 0 };
    const X = 1n << 44n;
    const steps: MixedStep[] = [['H', 0x10, X], ['h', 0x10], ['s', 600], ['h', 0x10], ['r', 0x10], ['h', 0x10]];
    const real = onKernel(mode, steps);
    const kvm = new Kvm({ profile });
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    kvm.ioctlOrThrow(v, I.KVM_SET_CPUID2, encodeCpuid2(profile.supportedCpuid));
    const step = (s: MixedStep): Seen => {
      switch (s[0]) {
        case 's':
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, s[1]);
          return { kind: 'ok', value: 'slept' };
        case 'h':
        case 'H': {
          const b = msrs([[s[1], s[0] === 'H' ? s[2] : 0n]]);
          const r = kvm.ioctl(v, s[0] === 'h' ? I.KVM_GET_MSRS : I.KVM_SET_MSRS, b);
          return r === 1 ? { kind: 'ok', value: hex(datas(b)[0]!) } : { kind: 'gp' };
        }
        case 'r': {
          kvm.markRan(v); // the step's KVM_RUN
          const g = kvm.rdmsr(v, s[1]);
          return g.kind === 'ok' ? { kind: 'ok', value: hex(g.value) } : { kind: 'gp' };
        }
        default:
          throw new Error(`unexpected step ${s[0]}`);
      }
    };
    // After each step: whether kvmsr's IA32_TSC rests on its estimate of the host TSC.
    const estimated: boolean[] = [];
    const emu = steps.map((s) => {
      const seen = step(s);
      estimated.push(kvm.tscEstimated(v));
      return seen;
    });
    const window = BigInt(Math.ceil(150 * profile.tscKhz));
    const diffs: string[] = [];
    steps.forEach((s, k) => {
      if (s[0] === 's') return;
      const a = real[k]!;
      const b = emu[k]!;
      if (a.kind !== 'ok' || b.kind !== 'ok') {
        if (a.kind !== b.kind) diffs.push(`step ${k} ${s[0]}: kernel ${JSON.stringify(a)}, kvmsr ${JSON.stringify(b)}`);
        return;
      }
      // Where kvmsr's value rests on its estimate of the host TSC (PVM; a catch-up timed by the
      // master clock), both only have to read non-zero, as in the other live tests.
      if (estimated[k]) {
        if (BigInt(a.value) === 0n || BigInt(b.value) === 0n) diffs.push(`step ${k} ${s[0]}: kernel ${a.value}, kvmsr ${b.value} (an estimate: both must be non-zero)`);
        return;
      }
      const d = BigInt(a.value) - BigInt(b.value);
      if ((d < 0n ? -d : d) > window) diffs.push(`step ${k} ${s[0]} 0x${s[1].toString(16)}: kernel ${a.value}, kvmsr ${b.value} (${Number(d) / profile.tscKhz} ms apart)`);
    });
    expect(diffs, `kernel ${JSON.stringify(real)}`).toEqual([]);
  });

  for (const [name, mode] of modes) {
    test(`with ${name}: every step sees what the kernel's guest saw`, () => {
      const steps = stepsFor(mode);
      const real = onKernel(mode, steps);
      const { seen: emu, tscEstimated } = onKvmsr(profile, mode, steps);
      expect(real.length).toBe(steps.length);
      const diffs: string[] = [];
      steps.forEach((s, k) => {
        const a = real[k]!;
        const b = emu[k]!;
        // IA32_TSC: the guest reads a moving counter, and the two sides run these steps at
        // different times, so both must read it, and non-zero (on an unstable host a fresh vCPU's
        // TSC may read 0 until an entry catches it up; the test above compares values there). A
        // vCPU whose TSC multiplier was never written reads its offset on both sides: exactly,
        // unless a catch-up moved it, to a time kvmsr can only estimate (then: both non-zero).
        if (s[0] === 'r' && s[1] === 0x10 && a.kind === 'ok' && b.kind === 'ok' && (tscEstimated[k] || !tscStandsStill(profile))) {
          if (!profile.tscUnstable && (BigInt(a.value) === 0n || BigInt(b.value) === 0n)) diffs.push(`step ${k} IA32_TSC read 0 (kernel ${a.value}, kvmsr ${b.value})`);
          return;
        }
        // SVM does not intercept SYSENTER_CS/ESP/EIP for a guest whose CPUID is not Intel's: the guest
        // reaches the CPU, and what the MSR keeps is the CPU's (an EPYC keeps 32 bits of ESP/EIP, as
        // svm_set_msr emulates; QEMU's TCG keeps 64, and 16 bits of CS). Compared by kind only.
        if (profile.host.vendorModule === 'kvm_amd' && s[1] >= 0x174 && s[1] <= 0x176 && a.kind === b.kind) return;
        if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`step ${k} ${s[0] === 'r' ? 'rdmsr' : `wrmsr ${hex(s[2])} to`} 0x${s[1].toString(16)}: kernel ${JSON.stringify(a)}, kvmsr ${JSON.stringify(b)}`);
      });
      expect(diffs).toEqual([]);
    });
  }
});
