// Shared helpers for tests: a fresh system/VM/vCPU on kvmsr, and buffer builders.
import { encodeCpuid2, encodeEnableCap, encodeMsrs, decodeMsrs, type MsrEntry } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { KVM_RUN_LAYOUT } from '../src/abi/layout.js';
import { Kvm, type KvmOptions } from '../src/kvm/kvm.js';
import { profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { builtinProfile } from '../src/profiles.js';
import { MOVING_MSRS } from '../src/kvm/x86/moving-msrs.js';
import { parseAnswers, parsePlan, type Answers, type PlanCase } from '../src/harvest/format.js';
import { judgeAnswers, judgeDir, readHarvestFile, type JudgeDisagreement } from '../src/harvest/judge.js';
import { measureFromAnswers } from '../src/profile/from-answers.js';
import { expect } from 'vitest';
import { statsFileWithId } from '../src/kvm/state/binary-stats.js';
const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export interface Machine {
  kvm: Kvm;
  sys: number;
  vm: number;
  vcpu: number;
}
/**
 * The profile unit tests of the source-derived rules run on: kvm_pvm's hooks with no measured rule
 * in front, so x86.c's common rules answer (the built-in default is a capture whose measured rules
 * override some of them, as its host does).
 */
export const sourceProfile = (): HostProfile => builtinProfile('pvm-amd-epyc-6.18.44-v782-derived');

export function machine(opts: KvmOptions = {}): Machine {
  const kvm = new Kvm({ profile: sourceProfile(), ...opts });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  return { kvm, sys, vm, vcpu };
}
export const msrs = (entries: (number | [number, bigint])[]): Uint8Array =>
  encodeMsrs(entries.map((e): MsrEntry => (Array.isArray(e) ? { index: e[0], data: e[1] } : { index: e, data: 0n })));
export const datas = (buf: Uint8Array): bigint[] => decodeMsrs(buf).entries.map((e) => e.data);
export const hexdump = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** One MSR by KVM_GET_MSRS on the machine's vCPU: its value, or null when refused. */
export const getMsr = (m: Machine, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
/** One MSR by KVM_SET_MSRS on the machine's vCPU: whether it was accepted. */
export const setMsr = (m: Machine, index: number, v: bigint): boolean => m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[index, v]])) === 1;
/** One feature MSR by KVM_GET_MSRS on /dev/kvm: its value, or null when refused. */
export const getFeatureMsr = (m: Machine, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.sys, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};

/** A profile's JSON without what differs between two captures of one host: when, and the moving TSC. */
export function comparable(p: HostProfile): Record<string, unknown> {
  const j = profileToJson(p) as Record<string, unknown> & { host: Record<string, unknown>; vcpuReset: { index: string; value: string | null }[] };
  // The binary stats files name the thread that made the VM ("kvm-<tid>"): not compared.
  const stats = p.binaryStats ? { binaryStats: { vm: hexOf(statsFileWithId(p.binaryStats.vm, '')), vcpu: hexOf(statsFileWithId(p.binaryStats.vcpu, '')) } } : {};
  return { ...j, ...stats, notes: '', host: { ...j.host, capturedAt: '' }, vcpuReset: j.vcpuReset.map((m) => (MOVING_MSRS.has(Number(m.index)) ? { ...m, value: 'moves' } : m)) };
}


/**
 * A built-in profile's comparable form without what was measured after its stored harvest was
 * taken: binaryStats and cr4Accepted came from the profile.stats and profile.cr4 cases, added on
 * 2026-12-07 and run on the same hosts and oracles since (caps-walk and vm-vcpu-calls test them).
 */
export function withoutLaterMeasurements(c: Record<string, unknown>): Record<string, unknown> {
  const { binaryStats: _stats, cr4Accepted: _cr4, ...rest } = c;
  return rest;
}

/** What the real-mode guest saw for one RDMSR/WRMSR: the value, a #GP, or a userspace exit. */
export type GuestSeen = { kind: 'ok'; value: string } | { kind: 'gp' } | { kind: 'exit'; exitReason: number; reason: number; index: string; data: string };
export interface GuestSetup {
  irqchip: boolean;
  cpuid: boolean;
  userMsr: number;
}

/**
 * A vCPU set up on kvmsr as test/c/guest-msr.c sets one up on /dev/kvm (user-space MSR exits,
 * irqchip, 64 KiB at GPA 0, CPUID), marked as having run; `step` performs one guest RDMSR
 * (value undefined) or WRMSR and reports it as the C guest reports it, completing an exit with
 * msr.error = 1, so the guest takes #GP.
 */
export function guestOnKvmsr(profile: HostProfile, setup: GuestSetup): { kvm: Kvm; vcpu: number; step: (index: number, value?: bigint) => GuestSeen } {
  const kvm = new Kvm({ profile });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  if (setup.userMsr) kvm.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.X86_USER_SPACE_MSR, [BigInt(setup.userMsr)]));
  if (setup.irqchip) kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  const region = new Uint8Array(32);
  new DataView(region.buffer).setBigUint64(16, 0x10000n, true); // slot 0, GPA 0, 64 KiB
  kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION, region);
  const vcpu = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  if (setup.cpuid) kvm.ioctl(vcpu, I.KVM_SET_CPUID2, encodeCpuid2(profile.supportedCpuid));
  kvm.markRan(vcpu);
  const run = kvm.runPage(vcpu)!;
  const hex = (v: bigint): string => '0x' + v.toString(16);
  const step = (index: number, value?: bigint): GuestSeen => {
    const r = value === undefined ? kvm.rdmsr(vcpu, index) : kvm.wrmsr(vcpu, index, value);
    if (r.kind === 'ok') return { kind: 'ok', value: hex(value ?? r.value) };
    if (r.kind === 'exit') {
      run[KVM_RUN_LAYOUT.msrError] = 1; // as the C program completes it: the guest takes #GP
      kvm.completeMsrExit(vcpu);
      return { kind: 'exit', exitReason: r.exitReason, reason: r.reason, index: hex(BigInt(r.index)), data: hex(r.data) };
    }
    return { kind: 'gp' };
  };
  return { kvm, vcpu, step };
}

/**
 * A harvest's answers with bit 0 of one KVM_GET_MSRS answer's first value flipped: case `caseId`,
 * step `step`, or by default its first one-entry read that succeeded. Returns the answers and the step.
 */
export function withOneBitFlipped(answers: Answers, caseId: string, step?: number): { changed: Answers; step: number } {
  const c = answers.cases.get(caseId);
  if (!c) throw new Error(`no case ${caseId}`);
  const k = step ?? c.steps.findIndex((s) => s.op === 'io' && s.out !== null && s.out.length === 24 && s.ret === 1);
  const s = c.steps[k];
  if (!s || s.op !== 'io' || !s.out) throw new Error(`${caseId} step ${k}: not an ioctl answer`);
  const out = s.out.slice();
  out[16]! ^= 1; // kvm_msrs header (8) + kvm_msr_entry index/reserved (8): the value's low byte
  const changed: Answers = { ...answers, cases: new Map(answers.cases) };
  changed.cases.set(c.id, { ...c, steps: c.steps.map((x, i) => (i === k ? { ...s, out } : x)) });
  return { changed, step: k };
}

/**
 * Judges a checked-in harvest bundle and asserts what every stored host must show: each of its
 * `cases` cases answered and agreeing, and every measured rule explained. (Cases whose setup the
 * host refused, the Hyper-V ones without CONFIG_KVM_HYPERV, are not among `cases`.) Returns judge's result.
 */
export function judgeStoredHarvest(dir: string, cases: number): ReturnType<typeof judgeDir> {
  const r = judgeDir(dir, { casesDir: null, profileFile: null });
  expect(r.report.unanswered).toEqual([]);
  expect(r.report.disagreements).toEqual([]);
  expect(r.report.cases).toBe(cases);
  expect(r.report.agreed).toBe(cases);
  expect(r.report.unmatchedRules).toEqual([]);
  return r;
}

/** A stored harvest's plan, answers and the profile measured from them, judged by nobody yet. */
export function loadHarvest(dir: string): { plan: PlanCase[]; answers: Answers; profile: HostProfile } {
  const p = readHarvestFile(dir, 'plan.txt');
  const plan = parsePlan(p.text, p.file);
  const a = readHarvestFile(dir, 'answers.txt');
  const answers = parseAnswers(a.text, a.file);
  return { plan, answers, profile: measureFromAnswers(plan, answers).profile };
}

/**
 * judgeAnswers in chunks, turning the event loop between them: a whole stored harvest judged in
 * one synchronous call can hold a vitest worker past its 60 s RPC deadline on a loaded machine.
 */
export async function judgeInTurns(plan: PlanCase[], answers: Answers, profile: HostProfile): Promise<JudgeDisagreement[]> {
  const out: JudgeDisagreement[] = [];
  for (let i = 0; i < plan.length; i += 250) {
    out.push(...judgeAnswers(plan.slice(i, i + 250), answers, profile, { casesDir: null }).disagreements);
    await new Promise((r) => setImmediate(r));
  }
  return out;
}
