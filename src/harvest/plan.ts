// `kvmsr harvest plan`: the cases a host is measured with, written before anything is known about
// it. Four parts, told apart by the case id's prefix:
// - `profile.*`: what `profile capture` records (lists, CPUID, capabilities, feature values, what
//   every candidate MSR reads on a fresh vCPU, the TSC facts);
// - `rule.*`: each candidate MSR read and written (0, 1, all-ones) by the host and by a real-mode
//   guest, on a fresh vCPU and after KVM_SET_CPUID2, from which the profile's measured rules come;
// - `pair.*`: the MSR pairs KVM couples, written one after the other, which tell whether a measured
//   rule's stored value takes part in KVM's cross-MSR checks;
// - `sys.*`: conform's systematic part over every candidate MSR, listed or not;
// - `rnd.*`: conform's seeded random batches; `guest.*`: guest RDMSR/WRMSR of every candidate.
import { encodeEnableCap, encodeMsrList, encodeMsrs, encodeXenHvmConfig, type MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_CPUID2_LAYOUT, KVM_CPUID_ENTRY2_LAYOUT, KVM_MAX_CPUID_ENTRIES } from '../abi/layout.js';
import { prng } from '../util/prng.js';
import { HV_MSRS } from '../kvm/x86/hyperv.js';
import { MOVING_MSRS } from '../kvm/x86/moving-msrs.js';
import { DEFAULT_FRESH_STATE, STATE_SIZES } from '../kvm/state/fresh-state.js';
import { CANDIDATE_MSRS, NOT_RULE_MEASURED, UNKNOWN_MSRS } from './candidates.js';
import type { CaseSetup, PlanCase, PlanStep } from './format.js';

/** KVM_CHECK_EXTENSION is asked for capabilities 0..MAX_CAP. */
export const MAX_CAP = 300;
/** The list ioctls get room for this many indices. */
export const LIST_ROOM = 1024;
const ONES = 0xffffffffffffffffn;
/** KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN: rule cases tell the two apart. */
export const RULE_USERMSR = 0x3;
/** The values a rule case writes, host and guest. */
export const RULE_VALUES: readonly bigint[] = [0n, 1n, ONES];

const hexId = (i: number): string => i.toString(16);
const get1 = (on: 'sys' | number, index: number, data = 0n): PlanStep => ({ op: 'io', on, request: I.KVM_GET_MSRS, arg: encodeMsrs([{ index, data }]) });
const set1 = (on: number, index: number, data: bigint): PlanStep => ({ op: 'io', on, request: I.KVM_SET_MSRS, arg: encodeMsrs([{ index, data }]) });
const plain = (vcpus: number, extra: Partial<CaseSetup> = {}): CaseSetup => ({ vcpus, irqchip: false, cpuid: false, usermsr: 0, guest: false, ...extra });

/** The cases `profile capture` needs. */
export function profileCases(): PlanCase[] {
  const sys: PlanStep[] = [
    { op: 'io', on: 'sys', request: I.KVM_GET_API_VERSION, arg: 0 },
    { op: 'io', on: 'sys', request: I.KVM_GET_VCPU_MMAP_SIZE, arg: 0 },
    { op: 'io', on: 'sys', request: I.KVM_GET_MSR_INDEX_LIST, arg: encodeMsrList(LIST_ROOM, LIST_ROOM) },
    { op: 'io', on: 'sys', request: I.KVM_GET_MSR_FEATURE_INDEX_LIST, arg: encodeMsrList(LIST_ROOM, LIST_ROOM) },
  ];
  const cpuid = new Uint8Array(KVM_CPUID2_LAYOUT.size + KVM_MAX_CPUID_ENTRIES * KVM_CPUID_ENTRY2_LAYOUT.size);
  new DataView(cpuid.buffer).setUint32(0, KVM_MAX_CPUID_ENTRIES, true);
  sys.push({ op: 'io', on: 'sys', request: I.KVM_GET_SUPPORTED_CPUID, arg: cpuid });
  sys.push({ op: 'io', on: 'sys', request: I.KVM_X86_GET_MCE_CAP_SUPPORTED, arg: new Uint8Array(8) });
  for (let c = 0; c <= MAX_CAP; c++) sys.push({ op: 'io', on: 'sys', request: I.KVM_CHECK_EXTENSION, arg: c });
  for (const i of [...CANDIDATE_MSRS, ...UNKNOWN_MSRS]) sys.push(get1('sys', i));
  // hvCpuid: what KVM offers for Hyper-V (EINVAL without CONFIG_KVM_HYPERV).
  const hvCpuid = new Uint8Array(KVM_CPUID2_LAYOUT.size + 32 * KVM_CPUID_ENTRY2_LAYOUT.size);
  new DataView(hvCpuid.buffer).setUint32(0, 32, true);
  sys.push({ op: 'io', on: 'sys', request: I.KVM_GET_SUPPORTED_HV_CPUID, arg: hvCpuid });

  const vm: PlanStep[] = [];
  for (let c = 0; c <= MAX_CAP; c++) vm.push({ op: 'io', on: 'vm', request: I.KVM_CHECK_EXTENSION, arg: c });
  vm.push({ op: 'io', on: 0, request: I.KVM_GET_TSC_KHZ, arg: 0 });
  for (const i of [...CANDIDATE_MSRS, ...UNKNOWN_MSRS]) vm.push(get1(0, i));
  // tscUnstable (profile/build.ts): a write of 2^40, 20 ms, a write of 0 that joins its generation.
  vm.push(set1(0, 0x10, 1n << 40n), { op: 'sleep', ms: 20 }, set1(0, 0x10, 0n), get1(0, 0x10));
  // specCtrlAccepted: each bit of IA32_SPEC_CTRL written alone, then 0.
  for (let b = 0n; b < 64n; b++) vm.push(set1(0, 0x48, 1n << b));
  vm.push(set1(0, 0x48, 0n));
  // eferAccepted: each bit of EFER written alone (set_efer checks efer_reserved_bits for the host), then 0.
  for (let b = 0n; b < 64n; b++) vm.push(set1(0, 0xc0000080, 1n << b), set1(0, 0xc0000080, 0n));

  return [
    { id: 'profile.sys', setup: plain(0), steps: sys },
    { id: 'profile.vcpu', setup: plain(1), steps: vm },
    // hostTscKhz: the lowest rate KVM_SET_TSC_KHZ takes without TSC scaling (kvm_set_tsc_khz).
    { id: 'profile.tsckhz', setup: plain(1), steps: [{ op: 'tsckhz-floor', on: 0, lo: 1, hi: 0x7fffffff }] },
    stateCase(),
    // binaryStats: the binary stats files of a fresh VM and vCPU (their layout is the build's).
    { id: 'profile.stats', setup: plain(1), steps: [{ op: 'stats', on: 'vm' }, { op: 'stats', on: 0 }] },
    cr4Case(),
  ];
}

/**
 * cr4Accepted (x86/cr4.ts): KVM_SET_SREGS of a fresh vCPU's registers (real mode, the reset state
 * every x86 host gives) with one CR4 bit set, for each of the 32; no CPUID set, so only the host's
 * own reserved bits refuse one (kvm_is_valid_cr4's cr4_reserved_bits and the vendor's check).
 */
export function cr4Case(): PlanCase {
  const steps: PlanStep[] = [];
  for (let bit = 0; bit < 32; bit++) {
    const s = new Uint8Array(STATE_SIZES.sregs);
    s.set(DEFAULT_FRESH_STATE.sregs2.subarray(0, 280));
    new DataView(s.buffer).setUint32(248, (1 << bit) >>> 0, true); // struct kvm_sregs.cr4
    steps.push({ op: 'io', on: 0, request: I.KVM_SET_SREGS, arg: s });
  }
  return { id: 'profile.cr4', setup: plain(1), steps };
}

/**
 * freshState (fresh-state.ts): what a fresh VM with the in-kernel irqchip and a PIT, and its BSP and
 * an AP, answer to the state ioctls `kvmsr run` serves. The BSP's answers go into the profile; the
 * AP's check what kvmsr derives from them (APIC ID, LINT0, MP state).
 */
export function stateCase(): PlanCase {
  const steps: PlanStep[] = [{ op: 'io', on: 'vm', request: I.KVM_CREATE_PIT2, arg: new Uint8Array(64) }];
  for (const chip of [0, 1, 2]) {
    const b = new Uint8Array(520);
    b[0] = chip;
    steps.push({ op: 'io', on: 'vm', request: I.KVM_GET_IRQCHIP, arg: b });
  }
  steps.push({ op: 'io', on: 'vm', request: I.KVM_GET_PIT2, arg: new Uint8Array(STATE_SIZES.pit2) });
  steps.push({ op: 'io', on: 'vm', request: I.KVM_GET_CLOCK, arg: new Uint8Array(48) });
  for (const v of [0, 1]) {
    for (const [req, size] of STATE_GETS) steps.push({ op: 'io', on: v, request: req, arg: new Uint8Array(size) });
  }
  return { id: 'profile.state', setup: plain(2, { irqchip: true }), steps };
}

/** The vCPU state GETs of the state case, with their struct sizes. */
export const STATE_GETS: readonly (readonly [number, number])[] = [
  [I.KVM_GET_REGS, STATE_SIZES.regs],
  [I.KVM_GET_SREGS, STATE_SIZES.sregs],
  [I.KVM_GET_SREGS2, STATE_SIZES.sregs2],
  [I.KVM_GET_FPU, STATE_SIZES.fpu],
  [I.KVM_GET_XSAVE, STATE_SIZES.xsave],
  [I.KVM_GET_XCRS, STATE_SIZES.xcrs],
  [I.KVM_GET_LAPIC, STATE_SIZES.lapic],
  [I.KVM_GET_VCPU_EVENTS, STATE_SIZES.events],
  [I.KVM_GET_DEBUGREGS, STATE_SIZES.debugregs],
  [I.KVM_GET_MP_STATE, 4],
];

/** Host steps of a rule case, on vCPU 1: read, then each value written and read back. */
export function ruleHostSteps(index: number): PlanStep[] {
  const s: PlanStep[] = [get1(1, index)];
  for (const v of RULE_VALUES) s.push(set1(1, index, v), get1(1, index));
  return s;
}
/** Guest steps of a rule case, on vCPU 0, the same accesses as RDMSR/WRMSR. */
export function ruleGuestSteps(index: number): PlanStep[] {
  const s: PlanStep[] = [{ op: 'rd', vcpu: 0, index }];
  for (const v of RULE_VALUES) s.push({ op: 'wr', vcpu: 0, index, value: v }, { op: 'rd', vcpu: 0, index });
  return s;
}

/** One case per candidate MSR and context (a fresh vCPU, or one with the supported CPUID). */
export function ruleCases(): PlanCase[] {
  const out: PlanCase[] = [];
  for (const cpuid of [false, true]) {
    for (const i of CANDIDATE_MSRS) {
      if (NOT_RULE_MEASURED.has(i)) continue;
      out.push({
        id: `rule.${hexId(i)}.${cpuid ? 'cpuid' : 'fresh'}`,
        setup: { vcpus: 2, irqchip: false, cpuid, usermsr: RULE_USERMSR, guest: true },
        steps: [...ruleHostSteps(i), ...ruleGuestSteps(i)],
      });
    }
  }
  return out;
}

/**
 * The MSR pairs KVM couples: the first one's value decides what a write of the second does (or
 * moves it). A single-MSR rule probe cannot see a coupling; where a host's vendor hook keeps the
 * first MSR's value in a field of its own, KVM's check does not see it (kvm_pvm 6.18.44-fc-v1300
 * and v1272 keep MISC_FEATURES_ENABLES so). Each pair: [first, its value, second, its value, what
 * KVM couples].
 */
export const COUPLED_PAIRS: readonly (readonly [number, bigint, number, bigint, string])[] = [
  // kvm_set_msr_common: CPUID faulting on forbids dropping CPUID_FAULT from PLATFORM_INFO, and back.
  [0x140, 1n, 0xce, 0n, 'MISC_FEATURES_ENABLES.CPUID_FAULTING / PLATFORM_INFO.CPUID_FAULT'],
  [0xce, 0n, 0x140, 1n, 'PLATFORM_INFO.CPUID_FAULT / MISC_FEATURES_ENABLES.CPUID_FAULTING'],
  // set_msr_mce: a guest's non-zero MCi_STATUS needs HWCR.McStatusWrEn (AMD vCPUs).
  [0xc0010015, 1n << 18n, 0x401, 1n, 'HWCR.McStatusWrEn / MC0_STATUS'],
  // The TSC and TSC_ADJUST move together for the guest; for the host, not.
  [0x3b, 1n << 20n, 0x10, 1n << 40n, 'TSC_ADJUST / TSC'],
  [0x10, 1n << 40n, 0x3b, 1n << 20n, 'TSC / TSC_ADJUST'],
  // ARCH_CAPABILITIES does not gate SPEC_CTRL in KVM; measured in case a vendor hook does.
  [0x10a, 0n, 0x48, 1n, 'ARCH_CAPABILITIES / SPEC_CTRL'],
  // EFER.LME/NX after a CPUID-less vCPU's EFER write: __kvm_valid_efer is the guest's check.
  [0xc0000080, 1n << 11n, 0xc0000080, (1n << 11n) | (1n << 8n), 'EFER.NX / EFER.LME'],
  // The APIC base's x2APIC mode, then xAPIC: legal for the host, not for the guest.
  [0x1b, 0xfee00c00n, 0x1b, 0xfee00800n, 'APIC_BASE x2APIC / xAPIC'],
];

/**
 * `pair.*`: each coupled pair written by the host (one MSR per KVM_SET_MSRS, then both in one
 * batch) and read back, and by a real-mode guest, on a fresh vCPU and after KVM_SET_CPUID2.
 * classify-rules.ts reads them to decide whether a measured store feeds KVM's cross-MSR checks.
 */
export function pairCases(): PlanCase[] {
  const out: PlanCase[] = [];
  for (const cpuid of [false, true]) {
    for (const [a, va, b, vb] of COUPLED_PAIRS) {
      const steps: PlanStep[] = [set1(1, a, va), set1(1, b, vb), get1(1, a), get1(1, b)];
      steps.push({ op: 'io', on: 1, request: I.KVM_SET_MSRS, arg: encodeMsrs([{ index: a, data: va }, { index: b, data: vb }]) });
      // A guest's TSC write moves TSC_ADJUST by how far the TSC has run, which the host and kvmsr
      // read at different times: the TSC pairs are measured from the host only. So is EFER: a
      // real-mode guest's write of EFER.LME hung kvm_amd 6.1.192 nested under QEMU TCG (the
      // guest's EFER checks are the rule cases' already).
      if (a !== 0x10 && b !== 0x10 && a !== 0xc0000080) {
        steps.push({ op: 'wr', vcpu: 0, index: a, value: va }, { op: 'wr', vcpu: 0, index: b, value: vb }, { op: 'rd', vcpu: 0, index: a }, { op: 'rd', vcpu: 0, index: b });
      }
      out.push({ id: `pair.${hexId(a)}.${hexId(b)}.${cpuid ? 'cpuid' : 'fresh'}`, setup: { vcpus: 2, irqchip: false, cpuid, usermsr: RULE_USERMSR, guest: true }, steps });
    }
  }
  return out;
}

const SETUPS: [string, CaseSetup][] = [
  ['fresh', plain(1)],
  ['cpuid', plain(1, { cpuid: true })],
  ['irqchip', plain(1, { irqchip: true })],
  ['irqchip-cpuid', plain(1, { irqchip: true, cpuid: true })],
];

/** conform's systematic part over every candidate MSR: read, write-back, then 0, all-ones, a typical value and each single bit. */
export function systematicCases(): PlanCase[] {
  const out: PlanCase[] = [];
  for (const [name, setup] of SETUPS) {
    out.push({ id: `sys.${name}.batch`, setup, steps: [{ op: 'io', on: 0, request: I.KVM_GET_MSRS, arg: encodeMsrs([...CANDIDATE_MSRS].map((index) => ({ index, data: 0n }))) }] });
    for (const i of CANDIDATE_MSRS) {
      if (MOVING_MSRS.has(i)) continue; // these move with time; the rnd.* batches read them by rule
      const steps: PlanStep[] = [get1(0, i, 0x5a5a5a5a5a5a5a5an), { op: 'io', on: 0, request: I.KVM_SET_MSRS, arg: 'wb' }, get1(0, i)];
      for (const v of [0n, ONES, 0x12345678n, ...Array.from({ length: 64 }, (_, b) => 1n << BigInt(b))]) steps.push(set1(0, i, v), get1(0, i));
      out.push({ id: `sys.${name}.${hexId(i)}`, setup, steps });
    }
  }
  return out;
}

/** conform's random part: sequences of 20 batches of 0-260 entries on three vCPUs, then everything read back. */
export function randomCases(n: number, seed: number): PlanCase[] {
  const rnd = prng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const edge = [0n, 1n, ONES, 0x8000000000000000n, 0x0000800000000000n, 0xffff800000000000n, 0x0007040600070406n, 0x80000000n, 0x400000n];
  const out: PlanCase[] = [];
  for (let b = 0, k = 0; b < n; b += 20, k++) {
    const setup = k % 2 === 0 ? plain(3) : plain(3, { irqchip: true, cpuid: true });
    const steps: PlanStep[] = [];
    for (let j = 0; j < Math.min(20, n - b); j++) {
      const count = Math.floor(rnd() * 261);
      const isSet = rnd() < 0.5;
      const entries: MsrEntry[] = [];
      for (let e = 0; e < count; e++) {
        const r = rnd();
        const index = r < 0.97 ? pick(CANDIDATE_MSRS) : r < 0.99 ? pick(UNKNOWN_MSRS) : Math.floor(rnd() * 0x100000000);
        const v = rnd();
        const data = isSet && v < 0.8 ? 0n : v < 0.9 ? pick(edge) : (BigInt(Math.floor(rnd() * 0x100000000)) << 32n) | BigInt(Math.floor(rnd() * 0x100000000));
        entries.push({ index, data });
      }
      const arg = count >= 256 ? encodeMsrs({ nmsrs: count, entries }) : encodeMsrs(entries);
      steps.push({ op: 'io', on: Math.floor(rnd() * 3), request: isSet ? I.KVM_SET_MSRS : I.KVM_GET_MSRS, arg });
    }
    for (let v = 0; v < 3; v++) steps.push({ op: 'io', on: v, request: I.KVM_GET_MSRS, arg: encodeMsrs([...CANDIDATE_MSRS].map((index) => ({ index, data: 0n }))) });
    out.push({ id: `rnd.${seed}.${k}`, setup, steps });
  }
  return out;
}

/** Guest RDMSR/WRMSR of every candidate and a few unknown MSRs, in the four setups of test/guest-live.test.ts. */
export function guestCases(): PlanCase[] {
  const modes: [string, CaseSetup][] = [
    ['fresh', { ...plain(1), guest: true }],
    ['cpuid', { ...plain(1, { cpuid: true }), guest: true }],
    ['irqchip-cpuid', { ...plain(1, { irqchip: true, cpuid: true }), guest: true }],
    ['exits', { ...plain(1, { irqchip: true, cpuid: true }), guest: true, usermsr: RULE_USERMSR }],
  ];
  return modes.map(([name, setup]) => {
    const all = [...CANDIDATE_MSRS, ...UNKNOWN_MSRS];
    const steps: PlanStep[] = all.map((index) => ({ op: 'rd', vcpu: 0, index }));
    for (const index of all) {
      if (index === 0x10) continue; // a guest write of IA32_TSC would move every later TSC read
      for (const value of RULE_VALUES) steps.push({ op: 'wr', vcpu: 0, index, value }, { op: 'rd', vcpu: 0, index });
    }
    return { id: `guest.${name}`, setup, steps };
  });
}

/** KVM_ENABLE_CAP on a vCPU: SynIC (SYNIC2, needs the irqchip) or ENFORCE_CPUID. */
const vcpuCap = (vcpu: number, cap: number, arg = 0n): PlanStep => ({ op: 'io', on: vcpu, request: I.KVM_ENABLE_CAP, arg: encodeEnableCap(cap, [arg]) });
const HV_SETUP: CaseSetup = plain(1, { irqchip: true, cpuid: true, hv: true });
/** The KVM PV MSRs, which a Hyper-V CPUID finds at base 0x40000100. */
const KVM_PV_MSRS = Array.from({ length: 8 }, (_, i) => 0x4b564d00 + i);

/**
 * The Hyper-V MSRs with Hyper-V's CPUID set (cpuid=2): host reads, writes and single bits with
 * and without the SynIC enabled; then the guest: each HV MSR read, one value written and read back,
 * a case each (a write that asks for an exit ends the probe's case), plain and with
 * KVM_CAP_HYPERV_ENFORCE_CPUID; then KVM_GET_SUPPORTED_HV_CPUID on the vCPU fd.
 */
export function hypervCases(): PlanCase[] {
  const out: PlanCase[] = [];
  for (const synic of [false, true]) {
    for (const i of [...HV_MSRS, ...KVM_PV_MSRS]) {
      if (MOVING_MSRS.has(i)) continue;
      const steps: PlanStep[] = synic ? [vcpuCap(0, I.KVM_CAP.HYPERV_SYNIC2)] : [];
      steps.push(get1(0, i), { op: 'io', on: 0, request: I.KVM_SET_MSRS, arg: 'wb' }, get1(0, i));
      for (const v of [0n, ONES, 0x12345678n, 0x10010n, ...Array.from({ length: 64 }, (_, b) => 1n << BigInt(b))]) steps.push(set1(0, i, v), get1(0, i));
      out.push({ id: `hv.${synic ? 'synic' : 'plain'}.${hexId(i)}`, setup: HV_SETUP, steps });
    }
  }
  const hvCpuid = new Uint8Array(KVM_CPUID2_LAYOUT.size + 32 * KVM_CPUID_ENTRY2_LAYOUT.size);
  new DataView(hvCpuid.buffer).setUint32(0, 32, true);
  const small = new Uint8Array(KVM_CPUID2_LAYOUT.size + 4 * KVM_CPUID_ENTRY2_LAYOUT.size);
  new DataView(small.buffer).setUint32(0, 4, true);
  for (const irqchip of [false, true]) {
    out.push({
      id: `hv.cpuid.${irqchip ? 'irqchip' : 'plain'}`,
      setup: plain(1, { irqchip }),
      steps: [
        { op: 'io', on: 'sys', request: I.KVM_GET_SUPPORTED_HV_CPUID, arg: hvCpuid },
        { op: 'io', on: 'sys', request: I.KVM_GET_SUPPORTED_HV_CPUID, arg: small },
        { op: 'io', on: 0, request: I.KVM_GET_SUPPORTED_HV_CPUID, arg: hvCpuid },
        { op: 'io', on: 0, request: I.KVM_GET_SUPPORTED_HV_CPUID, arg: small },
      ],
    });
  }
  for (const [mode, pre] of [
    ['guest', [vcpuCap(0, I.KVM_CAP.HYPERV_SYNIC2)]],
    ['guest-enforce', [vcpuCap(0, I.KVM_CAP.HYPERV_SYNIC2), vcpuCap(0, I.KVM_CAP.HYPERV_ENFORCE_CPUID, 1n)]],
  ] as const) {
    for (const i of [...HV_MSRS, 0x40000004]) {
      for (const [k, v] of [0n, 1n, ONES, 0x10010n].entries()) {
        if (MOVING_MSRS.has(i) && k > 0) continue;
        out.push({
          id: `hv.${mode}.${hexId(i)}.${k}`,
          setup: { ...HV_SETUP, guest: true, usermsr: RULE_USERMSR },
          steps: [...pre, { op: 'rd', vcpu: 0, index: i }, { op: 'wr', vcpu: 0, index: i, value: v }, { op: 'rd', vcpu: 0, index: i }],
        });
      }
    }
  }
  return out;
}

/**
 * KVM_XEN_HVM_CONFIG and the MSR it names (CONFIG_KVM_XEN): configurations refused and taken,
 * then host writes of the MSR (page 0 of the guest's slot, page 1, a page outside any slot) and a
 * read of it; with interception, and with a blob of no pages.
 */
export function xenCases(): PlanCase[] {
  const cfg = (flags: number, msr: number, blobAddr32 = 0n, blobSize32 = 0): Uint8Array => encodeXenHvmConfig({ flags, msr, blobAddr32, blobSize32 });
  const out: PlanCase[] = [];
  for (const msr of [0x40000200, 0x40000000, 0xc0001234]) {
    for (const [name, flags] of [['intercept', 2], ['blob', 0]] as const) {
      const steps: PlanStep[] = [
        { op: 'io', on: 'vm', request: I.KVM_XEN_HVM_CONFIG, arg: cfg(0x100, msr) },
        { op: 'io', on: 'vm', request: I.KVM_XEN_HVM_CONFIG, arg: cfg(2, msr, 0x1000n, 1) },
        { op: 'io', on: 'vm', request: I.KVM_XEN_HVM_CONFIG, arg: cfg(flags, msr) },
      ];
      for (const v of [0n, 1n, 0x1000n, 0x100000n, ONES]) steps.push(set1(0, msr, v), get1(0, msr));
      out.push({ id: `xen.${name}.${hexId(msr)}`, setup: { ...plain(1), guest: true }, steps });
    }
  }
  return out;
}

export interface PlanOptions {
  /** Random batches (default 300). */
  cases?: number;
  seed?: number;
}

/** The whole harvest plan. */
export function harvestPlan(opts: PlanOptions = {}): PlanCase[] {
  return [...profileCases(), ...ruleCases(), ...pairCases(), ...systematicCases(), ...hypervCases(), ...xenCases(), ...randomCases(opts.cases ?? 300, opts.seed ?? 1), ...guestCases()];
}
