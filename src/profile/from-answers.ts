// A host profile from a harvest's answers: what the `profile.*` cases of the plan (harvest/plan.ts)
// read on the host, then the measured MSR rules from its `rule.*` cases (classify-rules.ts).
// `kvmsr profile capture` and `kvmsr harvest judge` both build the profile here.
import { validStatsFile } from '../kvm/state/binary-stats.js';
import { decodeCpuid2, decodeMsrList, decodeMsrs, type CpuidEntry2 } from '../abi/codecs.js';
import { E2BIG } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { parseProfile, profileToJson, VENDOR_MODULES, type HostProfile, type ProfileMsr, type VendorModule } from '../kvm/profile.js';
import { adjustTscKhz, tscTolerancePpm } from '../kvm/x86/tsc.js';
import { KVMSR_VERSION } from '../version.js';
import { STATE_SIZES, type FreshState } from '../kvm/state/fresh-state.js';
import type { Answers, CaseAnswer, PlanCase, PlanStep, StepAnswer } from '../harvest/format.js';
import { LIST_ROOM } from '../harvest/plan.js';
import { classifyCouplings, classifyRules } from './classify-rules.js';

export class ProfileBuildError extends Error {}

const MODULE_PARAMS: Record<string, string[]> = {
  kvm: ['ignore_msrs', 'report_ignored_msrs', 'enable_pmu', 'force_emulation_prefix', 'tsc_tolerance_ppm'],
  vendor: ['nested', 'pt_mode', 'lbrv', 'enable_pmu', 'vnmi'],
};

function needCase(a: Answers, id: string): CaseAnswer {
  const c = a.cases.get(id);
  if (!c) throw new ProfileBuildError(`the answers have no case ${id}: the probe did not finish it`);
  if (c.setupFail) throw new ProfileBuildError(`case ${id}: ${c.setupFail.what} failed on the host with errno ${c.setupFail.errno}`);
  return c;
}

function io(c: CaseAnswer, n: number): { ret: number; errno: number; out: Uint8Array | null } {
  const s: StepAnswer | undefined = c.steps[n];
  if (!s || s.op !== 'io') throw new ProfileBuildError(`case ${c.id}: step ${n} has no ioctl answer`);
  return s;
}

function must(c: CaseAnswer, n: number, what: string): { ret: number; out: Uint8Array | null } {
  const s = io(c, n);
  if (s.ret < 0) throw new ProfileBuildError(`${what} failed on the host with errno ${s.errno}`);
  return s;
}

function list(c: CaseAnswer, n: number, what: string): number[] {
  const s = io(c, n);
  if (s.ret < 0 && s.errno === E2BIG) throw new ProfileBuildError(`${what}: the host lists more than ${LIST_ROOM} MSRs`);
  if (s.ret < 0 || !s.out) throw new ProfileBuildError(`${what} failed on the host with errno ${s.errno}`);
  return decodeMsrList(s.out).indices;
}

/** The value a one-entry KVM_GET_MSRS read, or null when it was refused. */
function read1(c: CaseAnswer, n: number): bigint | null {
  const s = io(c, n);
  return s.ret === 1 && s.out ? decodeMsrs(s.out).entries[0]!.data : null;
}

/**
 * The vendor module, from what KVM answers where more than one is loaded (a kernel may build
 * both kvm_intel and kvm_amd in): VMX capability MSRs on the feature list are kvm_intel's,
 * TSC_RATIO readable on a fresh vCPU with VM_CR is kvm_amd's.
 */
function vendorOf(a: Answers, features: number[], reset: ProfileMsr[]): VendorModule {
  const loaded = VENDOR_MODULES.filter((m) => a.info.modules.includes(m));
  if (loaded.length === 1) return loaded[0]!;
  if (loaded.length === 0) throw new ProfileBuildError('no KVM vendor module (kvm_intel, kvm_amd, kvm_pvm) was loaded on the host');
  if (loaded.includes('kvm_pvm')) return 'kvm_pvm';
  if (features.some((i) => i >= 0x480 && i <= 0x491)) return 'kvm_intel';
  if (reset.some((m) => m.index === 0xc0010114 && m.value !== null)) return 'kvm_amd';
  return a.info.cpuVendor === 'GenuineIntel' ? 'kvm_intel' : 'kvm_amd';
}

/**
 * KVM_GET_SUPPORTED_CPUID leaves the APIC IDs of whichever CPU the ioctl ran on (leaf 1
 * EBX[31:24], the x2APIC ID in EDX of leaves 0xb and 0x1f, leaf 0x8000001e's IDs); a profile keeps
 * CPU 0's (0), so two captures of one host are equal. (native/pair.ts compares them by that rule.)
 */
function withoutApicIds(e: CpuidEntry2): CpuidEntry2 {
  if (e.function === 1) return { ...e, ebx: (e.ebx & 0x00ffffff) >>> 0 };
  if (e.function === 0xb || e.function === 0x1f) return { ...e, edx: 0 };
  if (e.function === 0x8000001e) return { ...e, eax: 0, ebx: (e.ebx & ~0xff) >>> 0, ecx: (e.ecx & ~0xff) >>> 0 };
  return e;
}

/** A plan case and its answers, step by step: what each step asked, with what the host said. */
interface Walk {
  steps: PlanStep[];
  answers: CaseAnswer;
}

function walk(plan: readonly PlanCase[], a: Answers, id: string): Walk {
  const c = plan.find((p) => p.id === id);
  if (!c) throw new ProfileBuildError(`the plan has no case ${id}`);
  return { steps: c.steps, answers: needCase(a, id) };
}

/** The one MSR index of a one-entry KVM_GET_MSRS/KVM_SET_MSRS step, and the value it writes. */
function oneEntry(s: PlanStep): { index: number; data: bigint } | null {
  if (s.op !== 'io' || !(s.arg instanceof Uint8Array) || s.arg.length !== 24) return null;
  return decodeMsrs(s.arg).entries[0] ?? null;
}

/**
 * The profile the `profile.*` cases describe, without measured rules. Each answer is read by what
 * its plan step asked (the request, the capability, the MSR), so a harvest judges the same after
 * the plan generator changes.
 */
export function baseProfileFromAnswers(plan: readonly PlanCase[], a: Answers): HostProfile {
  const sys = walk(plan, a, 'profile.sys');
  const byRequest = (w: Walk, req: number): number => {
    const n = w.steps.findIndex((s) => s.op === 'io' && s.request === req);
    if (n < 0) throw new ProfileBuildError(`case ${w.answers.id} has no ${I.ioctlName(req)}`);
    return n;
  };
  const apiVersion = must(sys.answers, byRequest(sys, I.KVM_GET_API_VERSION), 'KVM_GET_API_VERSION').ret;
  const vcpuMmapSize = must(sys.answers, byRequest(sys, I.KVM_GET_VCPU_MMAP_SIZE), 'KVM_GET_VCPU_MMAP_SIZE').ret;
  const msrIndexList = list(sys.answers, byRequest(sys, I.KVM_GET_MSR_INDEX_LIST), 'KVM_GET_MSR_INDEX_LIST');
  const featureIndices = list(sys.answers, byRequest(sys, I.KVM_GET_MSR_FEATURE_INDEX_LIST), 'KVM_GET_MSR_FEATURE_INDEX_LIST');
  const cpuid = must(sys.answers, byRequest(sys, I.KVM_GET_SUPPORTED_CPUID), 'KVM_GET_SUPPORTED_CPUID');
  const supportedCpuid = decodeCpuid2(cpuid.out!).entries.map(withoutApicIds);
  // KVM_GET_SUPPORTED_HV_CPUID (plans from before it was asked have no such step).
  const hvAt = sys.steps.findIndex((s) => s.op === 'io' && s.request === I.KVM_GET_SUPPORTED_HV_CPUID);
  const hvAnswer = hvAt >= 0 ? io(sys.answers, hvAt) : null;
  const hvCpuid = hvAnswer !== null && hvAnswer.ret === 0 && hvAnswer.out ? decodeCpuid2(hvAnswer.out).entries : undefined;
  const mce = io(sys.answers, byRequest(sys, I.KVM_X86_GET_MCE_CAP_SUPPORTED));
  const caps = (w: Walk, on: 'sys' | 'vm'): Record<number, number> => {
    const out: Record<number, number> = {};
    w.steps.forEach((s, n) => {
      if (s.op === 'io' && s.on === on && s.request === I.KVM_CHECK_EXTENSION && typeof s.arg === 'number') {
        const r = io(w.answers, n).ret;
        if (r > 0) out[s.arg] = r;
      }
    });
    return out;
  };
  const system = caps(sys, 'sys');
  /** What each one-entry KVM_GET_MSRS read first, by index. */
  const firstReads = (w: Walk): Map<number, bigint | null> => {
    const out = new Map<number, bigint | null>();
    w.steps.forEach((s, n) => {
      const e = s.op === 'io' && s.request === I.KVM_GET_MSRS ? oneEntry(s) : null;
      if (e && !out.has(e.index)) out.set(e.index, read1(w.answers, n));
    });
    return out;
  };
  const sysRead = firstReads(sys);
  const featureMsrs: ProfileMsr[] = featureIndices.map((index) => {
    if (!sysRead.has(index)) throw new ProfileBuildError(`feature MSR 0x${index.toString(16)} is not among the MSRs the plan reads (harvest/candidates.ts)`);
    return { index, value: sysRead.get(index)! };
  });

  const vc = walk(plan, a, 'profile.vcpu');
  const vm = caps(vc, 'vm');
  const tscKhz = must(vc.answers, byRequest(vc, I.KVM_GET_TSC_KHZ), 'KVM_GET_TSC_KHZ').ret;
  const vcRead = firstReads(vc);
  const order = [...new Set([...msrIndexList, ...featureIndices, ...vcRead.keys()])];
  const vcpuReset: ProfileMsr[] = order.map((index) => {
    if (!vcRead.has(index)) throw new ProfileBuildError(`listed MSR 0x${index.toString(16)} is not among the MSRs the plan reads (harvest/candidates.ts)`);
    return { index, value: vcRead.get(index)! };
  });
  // tscUnstable: the IA32_TSC read after the sleep that follows a write of 2^40 (plan.ts).
  const pause = vc.steps.findIndex((s) => s.op === 'sleep');
  const after = vc.steps.findIndex((s, n) => n > pause && s.op === 'io' && s.request === I.KVM_GET_MSRS && oneEntry(s)?.index === 0x10);
  const tsc = pause >= 0 && after >= 0 ? read1(vc.answers, after) : null;
  const tscUnstable = tsc !== null && tsc < 1n << 39n;
  /** The single bits whose one-bit write of `index` the host accepted. */
  const acceptedBits = (index: number): bigint => {
    let bits = 0n;
    vc.steps.forEach((s, n) => {
      const e = s.op === 'io' && s.request === I.KVM_SET_MSRS ? oneEntry(s) : null;
      if (e && e.index === index && e.data !== 0n && (e.data & (e.data - 1n)) === 0n && io(vc.answers, n).ret === 1) bits |= e.data;
    });
    return bits;
  };
  const spec = acceptedBits(0x48);
  const efer = acceptedBits(0xc0000080);
  const eferMeasured = vc.steps.some((s) => s.op === 'io' && s.request === I.KVM_SET_MSRS && oneEntry(s)?.index === 0xc0000080);

  const vendorModule = vendorOf(a, featureIndices, vcpuReset);
  const moduleParams: Record<string, string> = {};
  for (const [mod, params] of Object.entries(MODULE_PARAMS)) {
    const m = mod === 'vendor' ? vendorModule : mod;
    for (const p of params) {
      const v = a.info.params[`${m}.${p}`];
      if (v !== undefined) moduleParams[`${m}.${p}`] = v;
    }
  }
  let hostTscKhz: number | undefined;
  const scaling = (vm[I.KVM_CAP.TSC_CONTROL] ?? system[I.KVM_CAP.TSC_CONTROL] ?? 0) > 0;
  const floor = walk(plan, a, 'profile.tsckhz').answers.steps[0];
  if (!scaling && floor?.op === 'tsckhz' && floor.value > 0) {
    // The smallest tsc_khz whose lower threshold (u64 arithmetic, rounded down) is the floor.
    const ppm = tscTolerancePpm(moduleParams);
    let khz = Math.floor((floor.value * 1e6) / (1e6 - ppm));
    while (adjustTscKhz(khz, -ppm) < floor.value) khz++;
    if (khz !== tscKhz) hostTscKhz = khz;
  }
  const profile: HostProfile = {
    source: 'capture',
    notes: '',
    host: {
      kernel: a.info.kernel,
      vendorModule,
      cpuVendor: a.info.cpuVendor || 'unknown',
      cpuModel: a.info.cpuModel || 'unknown',
      capturedAt: new Date().toISOString(),
      kvmsrVersion: KVMSR_VERSION,
      moduleParams,
    },
    apiVersion,
    vcpuMmapSize,
    tscKhz,
    extensions: { system, vm },
    msrIndexList,
    featureMsrs,
    supportedCpuid,
    ...(hvCpuid !== undefined ? { hvCpuid } : {}),
    vcpuReset,
    tscUnstable,
    ...(msrIndexList.includes(0x48) ? { specCtrlAccepted: spec } : {}),
    ...(eferMeasured ? { eferAccepted: efer } : {}),
    ...(hostTscKhz !== undefined ? { hostTscKhz } : {}),
    ...(mce.ret === 0 && mce.out ? { mceCapSupported: new DataView(mce.out.buffer, mce.out.byteOffset).getBigUint64(0, true) } : {}),
  };
  const fresh = freshStateFromAnswers(plan, a);
  if (fresh) profile.freshState = fresh;
  const cr4 = a.cases.get('profile.cr4');
  if (cr4 && !cr4.setupFail && cr4.steps.length === 32) {
    let accepted = 0;
    cr4.steps.forEach((st, bit) => {
      if (st.op === 'io' && st.ret === 0) accepted |= 1 << bit;
    });
    profile.cr4Accepted = accepted >>> 0;
  }
  const stats = a.cases.get('profile.stats');
  const [vmStats, vcpuStats] = [stats?.steps[0], stats?.steps[1]];
  if (vmStats?.op === 'stats' && vcpuStats?.op === 'stats' && vmStats.bytes && vcpuStats.bytes && validStatsFile(vmStats.bytes) && validStatsFile(vcpuStats.bytes)) {
    profile.binaryStats = { vm: vmStats.bytes, vcpu: vcpuStats.bytes };
  }
  // Round-trip through the JSON form so a build is exactly what a saved file loads as.
  return parseProfile(JSON.parse(JSON.stringify(profileToJson(profile))), 'capture');
}

/**
 * freshState from the `profile.state` case (plans from before it have none): the BSP's answers, the
 * irqchip's chip structs, the PIT with its load times (the host's clock) zeroed, kvmclock's flags.
 * Absent when the host refused any of them (no in-kernel irqchip, an XSAVE larger than 4096 bytes).
 */
function freshStateFromAnswers(plan: readonly PlanCase[], a: Answers): FreshState | undefined {
  const c = plan.find((p) => p.id === 'profile.state');
  const ans = a.cases.get('profile.state');
  if (!c || !ans || ans.setupFail) return undefined;
  const got = (on: 'vm' | number, req: number, chip = -1): Uint8Array | undefined => {
    const n = c.steps.findIndex((s) => s.op === 'io' && s.on === on && s.request === req && (chip < 0 || (s.arg instanceof Uint8Array && s.arg[0] === chip)));
    if (n < 0) return undefined;
    const r = io(ans, n);
    return r.ret === 0 && r.out ? r.out : undefined;
  };
  const pics = [0, 1, 2].map((chip) => got('vm', I.KVM_GET_IRQCHIP, chip));
  const pit = got('vm', I.KVM_GET_PIT2);
  const clock = got('vm', I.KVM_GET_CLOCK);
  const v = (req: number): Uint8Array | undefined => got(0, req);
  const [regs, sregs2, fpu, xsave, xcrs, lapic, events, debugregs] = [I.KVM_GET_REGS, I.KVM_GET_SREGS2, I.KVM_GET_FPU, I.KVM_GET_XSAVE, I.KVM_GET_XCRS, I.KVM_GET_LAPIC, I.KVM_GET_VCPU_EVENTS, I.KVM_GET_DEBUGREGS].map(v);
  if (!regs || !sregs2 || !fpu || !xsave || !xcrs || !lapic || !events || !debugregs || !pit || !clock || pics.some((p) => !p)) return undefined;
  const pit2 = pit.slice();
  for (const ch of [0, 1, 2]) pit2.fill(0, 24 * ch + 16, 24 * ch + 24);
  return {
    regs, sregs2, fpu, xsave, xcrs, lapic, events, debugregs,
    picMaster: pics[0]!.slice(8, 8 + STATE_SIZES.picMaster),
    picSlave: pics[1]!.slice(8, 8 + STATE_SIZES.picSlave),
    ioapic: pics[2]!.slice(8, 8 + STATE_SIZES.ioapic),
    pit2,
    clockFlags: new DataView(clock.buffer, clock.byteOffset).getUint32(8, true),
  };
}

/** The host's profile, and the measured MSR sides no rule kind reproduces ('0x3a host'). */
export function measureFromAnswers(plan: readonly PlanCase[], a: Answers): { profile: HostProfile; unmatched: string[] } {
  const base = baseProfileFromAnswers(plan, a);
  const rules = classifyRules(base, plan, a);
  classifyCouplings(base, plan, a, rules.rules);
  const unmatched = rules.unmatched.map((u) => `0x${u.index.toString(16)} ${u.side}`);
  if (Object.keys(rules.rules).length === 0) return { profile: base, unmatched };
  return { profile: parseProfile(JSON.parse(JSON.stringify(profileToJson({ ...base, msrRules: rules.rules }))), 'capture'), unmatched };
}

/** The host's profile: the `profile.*` answers, then the rules the `rule.*` answers measure. */
export function profileFromAnswers(plan: readonly PlanCase[], a: Answers): HostProfile {
  return measureFromAnswers(plan, a).profile;
}
