// A host profile from a harvest's answers: what the `profile.*` cases of the plan (harvest/plan.ts)
// read on the host, then the measured MSR rules from its `rule.*` cases (classify-rules.ts).
// `kvmsr profile capture` and `kvmsr harvest judge` both build the profile here.
import { decodeCpuid2, decodeMsrList, decodeMsrs } from '../abi/codecs.js';
import { E2BIG } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { parseProfile, profileToJson, VENDOR_MODULES, type HostProfile, type ProfileMsr, type VendorModule } from '../kvm/profile.js';
import { adjustTscKhz, tscTolerancePpm } from '../kvm/x86.js';
import { KVMSR_VERSION } from '../version.js';
import { CANDIDATE_MSRS, UNKNOWN_MSRS } from '../harvest/candidates.js';
import type { Answers, CaseAnswer, StepAnswer } from '../harvest/format.js';
import { LIST_ROOM, MAX_CAP } from '../harvest/plan.js';
import { classifyRules } from './classify-rules.js';

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

/** The profile the `profile.*` cases describe, without measured rules. */
export function baseProfileFromAnswers(a: Answers): HostProfile {
  const sys = needCase(a, 'profile.sys');
  const apiVersion = must(sys, 0, 'KVM_GET_API_VERSION').ret;
  const vcpuMmapSize = must(sys, 1, 'KVM_GET_VCPU_MMAP_SIZE').ret;
  const msrIndexList = list(sys, 2, 'KVM_GET_MSR_INDEX_LIST');
  const featureIndices = list(sys, 3, 'KVM_GET_MSR_FEATURE_INDEX_LIST');
  const cpuid = must(sys, 4, 'KVM_GET_SUPPORTED_CPUID');
  const supportedCpuid = decodeCpuid2(cpuid.out!).entries;
  const mce = io(sys, 5);
  const system: Record<number, number> = {};
  for (let c = 0; c <= MAX_CAP; c++) {
    const r = io(sys, 6 + c).ret;
    if (r > 0) system[c] = r;
  }
  const probed = [...CANDIDATE_MSRS, ...UNKNOWN_MSRS];
  const sysRead = new Map<number, bigint | null>();
  probed.forEach((i, k) => sysRead.set(i, read1(sys, 7 + MAX_CAP + k)));
  const featureMsrs: ProfileMsr[] = featureIndices.map((index) => {
    if (!sysRead.has(index)) throw new ProfileBuildError(`feature MSR 0x${index.toString(16)} is not among the MSRs a plan reads (harvest/candidates.ts)`);
    return { index, value: sysRead.get(index)! };
  });

  const vc = needCase(a, 'profile.vcpu');
  const vm: Record<number, number> = {};
  for (let c = 0; c <= MAX_CAP; c++) {
    const r = io(vc, c).ret;
    if (r > 0) vm[c] = r;
  }
  const tscKhz = must(vc, MAX_CAP + 1, 'KVM_GET_TSC_KHZ').ret;
  const base = MAX_CAP + 2;
  const vcRead = new Map<number, bigint | null>();
  probed.forEach((i, k) => vcRead.set(i, read1(vc, base + k)));
  const order = [...new Set([...msrIndexList, ...featureIndices, ...probed])];
  const vcpuReset: ProfileMsr[] = order.map((index) => {
    if (!vcRead.has(index)) throw new ProfileBuildError(`listed MSR 0x${index.toString(16)} is not among the MSRs a plan reads (harvest/candidates.ts)`);
    return { index, value: vcRead.get(index)! };
  });
  const t = base + probed.length;
  const tsc = read1(vc, t + 3);
  const tscUnstable = tsc !== null && tsc < 1n << 39n;
  let spec = 0n;
  for (let b = 0; b < 64; b++) if (io(vc, t + 4 + b).ret === 1) spec |= 1n << BigInt(b);
  let efer = 0n;
  for (let b = 0; b < 64; b++) if (io(vc, t + 4 + 65 + 2 * b).ret === 1) efer |= 1n << BigInt(b);

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
  const floor = needCase(a, 'profile.tsckhz').steps[0];
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
    vcpuReset,
    tscUnstable,
    ...(msrIndexList.includes(0x48) ? { specCtrlAccepted: spec } : {}),
    eferAccepted: efer,
    ...(hostTscKhz !== undefined ? { hostTscKhz } : {}),
    ...(mce.ret === 0 && mce.out ? { mceCapSupported: new DataView(mce.out.buffer, mce.out.byteOffset).getBigUint64(0, true) } : {}),
  };
  // Round-trip through the JSON form so a build is exactly what a saved file loads as.
  return parseProfile(JSON.parse(JSON.stringify(profileToJson(profile))), 'capture');
}

/** The host's profile, and the measured MSR sides no rule kind reproduces ('0x3a host'). */
export function measureFromAnswers(a: Answers): { profile: HostProfile; unmatched: string[] } {
  const base = baseProfileFromAnswers(a);
  const rules = classifyRules(base, a);
  const unmatched = rules.unmatched.map((u) => `0x${u.index.toString(16)} ${u.side}`);
  if (Object.keys(rules.rules).length === 0) return { profile: base, unmatched };
  return { profile: parseProfile(JSON.parse(JSON.stringify(profileToJson({ ...base, msrRules: rules.rules }))), 'capture'), unmatched };
}

/** The host's profile: the `profile.*` answers, then the rules the `rule.*` answers measure. */
export function profileFromAnswers(a: Answers): HostProfile {
  return measureFromAnswers(a).profile;
}
