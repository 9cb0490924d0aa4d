// `kvmsr conform`: the same ioctl sequences on the real kernel and on kvmsr, compared by return
// value, errno and every byte. A systematic part walks every listed MSR (reads alone and in
// batches, write-back, 0, all-ones, each single bit, a typical value), before and after
// KVM_SET_CPUID2 and with and without an in-kernel irqchip (where KVM has Hyper-V, also with
// Hyper-V's CPUID for the MSRs it can change), plus the list ioctls at every boundary; a seeded random part mixes batches of 0-260 entries over several vCPUs. A
// disagreement is shrunk to the fewest ioctls and entries that still show it.
import { MOVING_MSRS, movingAgree } from '../kvm/x86/moving-msrs.js';
import { decodeCpuid2, decodeMsrList, decodeMsrs, encodeCpuid2, encodeMsrList, encodeMsrs, type MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel } from '../abi/msr-names.js';
import type { HostProfile } from '../kvm/profile.js';
import { Pair, type FdPair, type KvmLike } from '../native/pair.js';
import { prng } from '../util/prng.js';
import { CANDIDATE_MSRS } from '../harvest/candidates.js';
import type { Answers, CaseAnswer, PlanCase, PlanStep, StepAnswer } from '../harvest/format.js';
import { runOnKvmsr, withHypervLeaves } from '../harvest/on-kvmsr.js';
import { guestCases } from '../harvest/plan.js';
import { sameAnswer } from '../profile/classify-rules.js';

/** One ioctl of a case, replayable on a fresh VM and vCPUs. */
export interface Step {
  /** 'system', 'vm', or the vCPU number (0..) it runs on. */
  on: 'system' | 'vm' | number;
  request: number;
  arg: number | Uint8Array;
  /** Write back what the previous step read (its real-kernel output) instead of `arg`. */
  writeBack?: true;
}

export interface CaseSetup {
  irqchip: boolean;
  cpuid: boolean;
  /**
   * With `cpuid`: Hyper-V's leaves too, as QEMU's hv-* flags lay them out (KVM_GET_SUPPORTED_HV_CPUID
   * at 0x40000000, KVM's own moved to 0x40000100; harvest's cpuid=2). Only where KVM_CAP_HYPERV is.
   */
  hv?: true;
  vcpus: number;
}

export interface Disagreement {
  group: string;
  setup: CaseSetup;
  /** The shrunk steps: the last one disagrees. */
  steps: Step[];
  differences: string[];
  realBytes: string;
  emuBytes: string;
  /** A guest-path disagreement: the shrunk plan case and the host's answers to it (steps is then empty). */
  guest?: { case: PlanCase; host: CaseAnswer };
  /** The return values of the last step: the kernel's, and kvmsr's (-errno on failure). */
  realRet: number;
  emuRet: number;
  decoded: string[];
  /**
   * Whether the shrunk reproducer still disagreed when run once more to describe it. A difference
   * that does not recur hangs on host timing (for example a TSC write at the edge of
   * kvm_synchronize_tsc's one-second window); it still counts as a disagreement.
   */
  recurred: boolean;
}

export interface GroupStats {
  group: string;
  cases: number;
  agreed: number;
}

export interface ConformReport {
  seed: number;
  /** Disagreements whose signature (group, request, MSR, what differs) an earlier one had: counted, not shrunk again. */
  alike: number;
  /** Why the guest path was not compared, when it was not. */
  guestSkipped?: string;
  systematic: GroupStats[];
  random: { batches: number; agreed: number };
  disagreements: Disagreement[];
  rules: string[];
  /** The longest time one paired call took, in ms: the IA32_TSC rule's window grows by it. */
  longestCallMs: number;
  agreementRate: number;
  systematicRate: number;
}

export interface ConformOptions {
  /** Random batches (default 1000). */
  cases?: number;
  seed?: number;
  onProgress?: (done: number, total: number, phase: string) => void;
  /** Stop shrinking after this many re-runs per disagreement (default 200). */
  shrinkBudget?: number;
  /**
   * Runs guest-path cases (harvest/plan.ts guestCases) on the host: kvmsr-probe on a live /dev/kvm.
   * Absent, the guest path is not compared (and the report says so).
   */
  guestRunner?: (cases: PlanCase[]) => Answers;
}

/** The MSR group a report line counts an index under. */
export function msrGroup(index: number): string {
  if (index === 0x10 || index === 0x3b || index === 0x6e0 || index === 0xc0000103 || index === 0xc0000104) return 'TSC';
  if ((index >= 0x11 && index <= 0x12) || (index >= 0x4b564d00 && index <= 0x4b564dff)) return 'KVM paravirt';
  if (index >= 0x174 && index <= 0x176) return 'SYSENTER';
  if (index >= 0xc0000080 && index <= 0xc0000102) return 'syscall/segment';
  if (index >= 0x480 && index <= 0x492) return 'VMX capability';
  if ((index >= 0xc1 && index <= 0xc8) || (index >= 0x186 && index <= 0x18d) || (index >= 0x309 && index <= 0x3f2) || (index >= 0xc0010000 && index <= 0xc0010007) || (index >= 0xc0010200 && index <= 0xc001020b) || (index >= 0xc0000300 && index <= 0xc0000303) || index === 0x345) return 'PMU';
  if (index >= 0x179 && index <= 0x17b) return 'MCE';
  if (index >= 0x400 && index < 0x480) return 'MCE';
  if (index === 0x1d9 || (index >= 0x1db && index <= 0x1de)) return 'debug/LBR';
  if (index === 0x8b || index === 0x10a || index === 0xce || index === 0xc0011029) return 'feature';
  if (isHypervRange(index)) return 'Hyper-V';
  if (index >= 0xc0010000) return 'AMD';
  return 'other';
}

const msrs = (entries: MsrEntry[]): Uint8Array => encodeMsrs(entries);
/** The MSRs a Hyper-V CPUID can change the answers of: Hyper-V's own (hyperv-tlfs.h) and KVM's PV ones. */
const isHypervRange = (i: number): boolean => i >= 0x40000000 && i <= 0x400001ff;
const hvDependent = (i: number): boolean => isHypervRange(i) || (i >= 0x4b564d00 && i <= 0x4b564dff) || i === 0x11 || i === 0x12;
/** The report's group of an MSR case: its MSR group, and the Hyper-V CPUID when the setup has it. */
const caseGroup = (index: number, listed: boolean, setup: CaseSetup): string =>
  `${listed ? '' : 'unlisted '}${msrGroup(index)}${setup.hv ? ' (Hyper-V CPUID)' : ''}`;
const ONES = 0xffffffffffffffffn;

/** A rule as the report states it once: without the entry, values and times of one use. */
export function ruleText(rule: string): string {
  return rule.replace(/ \(entry \d+(?::[^)]*)?\)/, '').replace(/ \(real 0x.*\)$/, '').replace(/ \(\d+ ms so far\)/, '');
}

export class Conformance {
  private readonly pair: Pair;
  private readonly rules = new Set<string>();
  private readonly signatures = new Set<string>();
  private alike = 0;
  private lastDifferences: ReturnType<Pair['run']> | null = null;
  private sys: FdPair;
  private cpuidBytes: Uint8Array | null = null;
  private hvCpuidBytes: Uint8Array | null = null;

  constructor(
    real: KvmLike,
    emu: KvmLike,
    readonly profile: HostProfile,
    private readonly opts: ConformOptions = {},
  ) {
    this.pair = new Pair(real, emu);
    this.sys = this.pair.open();
  }

  close(): void {
    this.pair.close(this.sys);
  }

  run(): ConformReport {
    const seed = this.opts.seed ?? 1;
    const groups = new Map<string, GroupStats>();
    const disagreements: Disagreement[] = [];
    const count = (g: string, ok: boolean): void => {
      const s = groups.get(g) ?? { group: g, cases: 0, agreed: 0 };
      s.cases++;
      if (ok) s.agreed++;
      groups.set(g, s);
    };
    const list = this.profile.msrIndexList;
    const features = this.profile.featureMsrs.map((m) => m.index);
    // What the host handles without listing it is exercised too: every candidate MSR a harvest
    // reads (harvest/candidates.ts), counted under "unlisted".
    const unlisted = CANDIDATE_MSRS.filter((i) => !list.includes(i) && !MOVING_MSRS.has(i));
    const cases = this.systematicCases(list, features, unlisted);
    const guest = this.opts.guestRunner ? guestCases() : [];
    const total = cases.length + guest.length + (this.opts.cases ?? 1000);
    let done = 0;
    for (const c of cases) {
      const d = this.check(c.group, c.setup, c.steps);
      count(c.group, d === null);
      if (d) disagreements.push(d);
      this.opts.onProgress?.(++done, total, 'systematic');
    }
    for (const g of guest) {
      const d = this.checkGuest(g);
      count(`guest path (${g.id.split('.')[1]})`, d === null);
      if (d) disagreements.push(d);
      this.opts.onProgress?.(++done, total, 'guest path');
    }
    // Random batches.
    const rnd = prng(seed);
    const n = this.opts.cases ?? 1000;
    let agreed = 0;
    const setups: CaseSetup[] = [
      { irqchip: false, cpuid: false, vcpus: 3 },
      { irqchip: true, cpuid: true, vcpus: 3 },
    ];
    if (this.hasHyperv()) setups.push({ irqchip: true, cpuid: true, hv: true, vcpus: 3 });
    for (let b = 0; b < n; b += 20) {
      // Sequences of 20 batches on a fresh VM with 3 vCPUs.
      const setup = setups[(b / 20) % setups.length]!;
      const steps: Step[] = [];
      const m = Math.min(20, n - b);
      for (let k = 0; k < m; k++) steps.push(this.randomBatch(rnd, list, setup.vcpus));
      // Then read every listed MSR on every vCPU, so every state the batches left different shows.
      for (let v = 0; v < setup.vcpus; v++) steps.push({ on: v, request: I.KVM_GET_MSRS, arg: msrs(list.map((index) => ({ index, data: 0n }))) });
      const r = this.checkAll('random', setup, steps);
      agreed += Math.min(m, r.agreed);
      for (const d of r.disagreements) disagreements.push(d);
      done += Math.min(20, n - b);
      this.opts.onProgress?.(done, total, 'random');
    }
    const systematic = [...groups.values()].sort((x, y) => x.group.localeCompare(y.group));
    const sysCases = systematic.reduce((a, g) => a + g.cases, 0);
    const sysAgreed = systematic.reduce((a, g) => a + g.agreed, 0);
    return {
      seed,
      alike: this.alike,
      ...(this.opts.guestRunner ? {} : { guestSkipped: 'no guest runner (kvmsr-probe on a live /dev/kvm)' }),
      systematic,
      random: { batches: n, agreed },
      disagreements,
      rules: [...this.rules],
      longestCallMs: Math.ceil(this.pair.longestCallMs),
      systematicRate: sysCases ? sysAgreed / sysCases : 1,
      agreementRate: (sysAgreed + agreed) / Math.max(1, sysCases + n),
    };
  }

  private systematicCases(list: number[], features: number[], unlisted: number[] = []): { group: string; setup: CaseSetup; steps: Step[] }[] {
    const out: { group: string; setup: CaseSetup; steps: Step[] }[] = [];
    // The list ioctls at every boundary size.
    for (const [req, n] of [[I.KVM_GET_MSR_INDEX_LIST, list.length], [I.KVM_GET_MSR_FEATURE_INDEX_LIST, features.length]] as const) {
      for (const [cap, nm] of [[0, 0], [n, n - 1], [n, n], [n + 4, n + 4]] as const) {
        out.push({ group: 'list ioctls', setup: { irqchip: false, cpuid: false, vcpus: 0 }, steps: [{ on: 'system', request: req, arg: encodeMsrList(cap, Math.max(0, nm)) }] });
      }
    }
    for (const i of features) out.push({ group: 'feature', setup: { irqchip: false, cpuid: false, vcpus: 0 }, steps: [{ on: 'system', request: I.KVM_GET_MSRS, arg: msrs([{ index: i, data: 0n }]) }] });
    const setups: CaseSetup[] = [
      { irqchip: false, cpuid: false, vcpus: 1 },
      { irqchip: false, cpuid: true, vcpus: 1 },
      { irqchip: true, cpuid: false, vcpus: 1 },
      { irqchip: true, cpuid: true, vcpus: 1 },
    ];
    // With Hyper-V's CPUID (where KVM has Hyper-V): the MSRs it can change, and the whole list once.
    const hv: CaseSetup | null = this.hasHyperv() ? { irqchip: true, cpuid: true, hv: true, vcpus: 1 } : null;
    if (hv) setups.push(hv);
    for (const setup of setups) {
      out.push({ group: setup.hv ? 'batch (Hyper-V CPUID)' : 'batch', setup, steps: [{ on: 0, request: I.KVM_GET_MSRS, arg: msrs(list.map((index) => ({ index, data: 0n }))) }] });
      for (const index of [...list, ...unlisted]) {
        if (setup.hv && !hvDependent(index)) continue;
        const g = caseGroup(index, list.includes(index), setup);
        const get: Step = { on: 0, request: I.KVM_GET_MSRS, arg: msrs([{ index, data: 0x5a5a5a5a5a5a5a5an }]) };
        out.push({ group: g, setup, steps: [get, { on: 0, request: I.KVM_SET_MSRS, arg: new Uint8Array(0), writeBack: true }, get] });
        // Write-back of the value read is added at check time (it needs the read); here the writes.
        const values = [0n, ONES, 0x0000000012345678n, ...Array.from({ length: 64 }, (_, b) => 1n << BigInt(b))];
        const steps: Step[] = [];
        for (const v of values) {
          steps.push({ on: 0, request: I.KVM_SET_MSRS, arg: msrs([{ index, data: v }]) });
          steps.push({ on: 0, request: I.KVM_GET_MSRS, arg: msrs([{ index, data: 0n }]) });
        }
        out.push({ group: g, setup, steps });
      }
    }
    return out;
  }

  /**
   * A random KVM_GET_MSRS or KVM_SET_MSRS of 0-260 entries: mostly listed MSRs, some unlisted and
   * unknown indices. A SET writes 0 to most entries (valid for most MSRs, so the batch gets far)
   * and edge or random values to a few, so the rules on them are reached.
   */
  private randomBatch(rnd: () => number, list: number[], vcpus: number): Step {
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const n = Math.floor(rnd() * 261);
    const isSet = rnd() < 0.5;
    const unlisted = [0x1b, 0x3a, 0x9e, 0xc1, 0x186, 0x179, 0x400, 0x480, 0xda0, 0xc0000080, 0xc0000100, 0xc0000103, 0xc0010114, 0xc0011029];
    const edge = [0n, 1n, ONES, 0x8000000000000000n, 0x0000800000000000n, 0xffff800000000000n, 0x0007040600070406n, 0x80000000n, 0x400000n];
    const entries: MsrEntry[] = [];
    for (let i = 0; i < n; i++) {
      const r = rnd();
      const index = r < 0.96 ? pick(list) : r < 0.99 ? pick(unlisted) : Math.floor(rnd() * 0x100000000);
      const v = rnd();
      const data = isSet && v < 0.8 ? 0n : v < 0.9 ? pick(edge) : (BigInt(Math.floor(rnd() * 0x100000000)) << 32n) | BigInt(Math.floor(rnd() * 0x100000000));
      entries.push({ index, data });
    }
    const buf = n >= 256 ? encodeMsrs({ nmsrs: n, entries }) : msrs(entries);
    return { on: Math.floor(rnd() * vcpus), request: isSet ? I.KVM_SET_MSRS : I.KVM_GET_MSRS, arg: buf };
  }

  /** Runs the steps on fresh fds and returns the first disagreement, shrunk, or null. */
  private check(group: string, setup: CaseSetup, steps: Step[]): Disagreement | null {
    const r = this.checkAll(group, setup, steps, true);
    return r.disagreements[0] ?? null;
  }

  /** Runs the steps; counts agreeing steps; stops at the first disagreement when asked. */
  private checkAll(group: string, setup: CaseSetup, steps: Step[], stopAtFirst = true): { agreed: number; disagreements: Disagreement[] } {
    const found = this.execute(setup, steps);
    if (found === null) return { agreed: steps.length, disagreements: [] };
    // One shrink per distinct disagreement: a host with many disagreements still ends in bounded time.
    const sig = this.signature(group, steps[found]!, this.lastDifferences);
    if (this.signatures.has(sig)) {
      this.alike++;
      return { agreed: found, disagreements: [] };
    }
    this.signatures.add(sig);
    const shrunk = this.shrink(setup, steps.slice(0, found + 1));
    void stopAtFirst;
    return { agreed: found, disagreements: [this.describe(group, setup, shrunk)] };
  }

  /** The index of the first step that disagrees, or null. */
  private execute(setup: CaseSetup, steps: Step[]): number | null {
    const env = this.makeEnv(setup);
    try {
      let previous: Uint8Array | null = null;
      for (let i = 0; i < steps.length; i++) {
        const s = steps[i]!;
        const fd = s.on === 'system' ? this.sys : s.on === 'vm' ? env.vm : env.vcpus[s.on % Math.max(1, env.vcpus.length)]!;
        if (fd === undefined) continue;
        const arg = s.writeBack && previous ? previous : s.arg;
        const r = this.pair.run(fd, s.request, arg);
        previous = r.realBytes;
        this.lastDifferences = r;
        for (const rule of r.rules) this.rules.add(ruleText(rule));
        if (r.differences.length > 0) return i;
      }
      return null;
    } finally {
      env.close();
    }
  }

  private makeEnv(setup: CaseSetup): { vm: FdPair; vcpus: FdPair[]; close: () => void } {
    const vm = this.pair.create(this.sys, I.KVM_CREATE_VM, 0);
    if (setup.irqchip) this.pair.run(vm, I.KVM_CREATE_IRQCHIP, 0);
    const vcpus: FdPair[] = [];
    for (let i = 0; i < setup.vcpus; i++) {
      const v = this.pair.create(vm, I.KVM_CREATE_VCPU, i);
      if (setup.cpuid) this.pair.run(v, I.KVM_SET_CPUID2, setup.hv ? this.hypervCpuid() : this.supportedCpuid());
      vcpus.push(v);
    }
    return {
      vm,
      vcpus,
      close: () => {
        for (const v of vcpus) this.pair.close(v);
        this.pair.close(vm);
      },
    };
  }

  private hasHyperv(): boolean {
    return (this.profile.extensions.system[I.KVM_CAP.HYPERV] ?? 0) > 0;
  }

  /** The supported CPUID with Hyper-V's leaves, both as the real kernel answers them (withHypervLeaves). */
  private hypervCpuid(): Uint8Array {
    if (!this.hvCpuidBytes) {
      const hv = encodeCpuid2([], 64, 64);
      const r = this.pair.real.ioctl(this.sys.real, I.KVM_GET_SUPPORTED_HV_CPUID, hv);
      const leaves = r < 0 ? [] : decodeCpuid2(hv).entries;
      this.hvCpuidBytes = encodeCpuid2(withHypervLeaves(decodeCpuid2(this.supportedCpuid()).entries, leaves));
    }
    return this.hvCpuidBytes.slice();
  }

  private supportedCpuid(): Uint8Array {
    if (!this.cpuidBytes) {
      const n = 256;
      const b = encodeCpuid2([], n, n);
      this.pair.real.ioctl(this.sys.real, I.KVM_GET_SUPPORTED_CPUID, b);
      this.cpuidBytes = b;
    }
    return this.cpuidBytes.slice();
  }

  /**
   * Delta debugging: drop steps, then entries of the remaining KVM_GET/SET_MSRS buffers, while the
   * last step still disagrees.
   */
  private shrink(setup: CaseSetup, steps: Step[]): Step[] {
    let budget = this.opts.shrinkBudget ?? 400;
    const fails = (s: Step[]): boolean => budget-- > 0 && this.execute(setup, s) === s.length - 1;
    let cur = steps;
    // Drop earlier steps one at a time (the last one is the disagreement).
    for (let i = cur.length - 2; i >= 0 && budget > 0; i--) {
      const cand = [...cur.slice(0, i), ...cur.slice(i + 1)];
      if (fails(cand)) cur = cand;
    }
    // Drop entries from each MSR buffer.
    for (let si = 0; si < cur.length && budget > 0; si++) {
      const s = cur[si]!;
      if (!(s.arg instanceof Uint8Array) || (s.request !== I.KVM_GET_MSRS && s.request !== I.KVM_SET_MSRS) || s.arg.length < 8) continue;
      let entries = decodeMsrs(s.arg).entries;
      if (decodeMsrs(s.arg).nmsrs >= 256) continue;
      for (let e = entries.length - 1; e >= 0 && budget > 0; e--) {
        const fewer = [...entries.slice(0, e), ...entries.slice(e + 1)];
        const cand = cur.slice();
        cand[si] = { ...s, arg: msrs(fewer) };
        if (fails(cand)) {
          entries = fewer;
          cur = cand;
        }
      }
    }
    // Clear data bits of SET entries that do not matter.
    for (let si = 0; si < cur.length && budget > 0; si++) {
      const s = cur[si]!;
      if (!(s.arg instanceof Uint8Array) || s.request !== I.KVM_SET_MSRS || s.arg.length < 8 || decodeMsrs(s.arg).nmsrs >= 256) continue;
      const entries = decodeMsrs(s.arg).entries.map((e) => ({ index: e.index, data: e.data }));
      for (const e of entries) {
        for (let bit = 63n; bit >= 0n && budget > 0; bit--) {
          if ((e.data & (1n << bit)) === 0n) continue;
          const old = e.data;
          e.data &= ~(1n << bit);
          const cand = cur.slice();
          cand[si] = { ...s, arg: msrs(entries) };
          if (fails(cand)) cur = cand;
          else e.data = old;
        }
      }
    }
    return cur;
  }

  /** What makes two disagreements the same: the group, the request, the first MSR that differs and how. */
  private signature(group: string, step: Step, r: ReturnType<Pair['run']> | null): string {
    const base = `${group.replace(/^random.*/, 'random')}|${step.request}`;
    if (!r || !(step.request === I.KVM_GET_MSRS || step.request === I.KVM_SET_MSRS) || r.realBytes.length < 8) return `${base}|${r?.differences[0] ?? ''}`;
    const a = decodeMsrs(r.realBytes).entries;
    const b = decodeMsrs(r.emuBytes).entries;
    if (r.realRet !== r.emuRet) return `${base}|ret|${a[Math.min(r.realRet, r.emuRet)]?.index ?? -1}`;
    const k = a.findIndex((e, i) => e.data !== b[i]?.data);
    return `${base}|data|${a[k]?.index ?? -1}`;
  }

  /**
   * A guest-path case on the host (through the guest runner) and on kvmsr; on a disagreement, the
   * earlier steps are dropped, in halves then one by one, while the same step still disagrees.
   */
  private checkGuest(c: PlanCase): Disagreement | null {
    const run = this.opts.guestRunner!;
    type Bad = { at: number; host: StepAnswer | undefined; emu: StepAnswer | undefined; answers: CaseAnswer };
    const firstBad = (cand: PlanCase): Bad | null => {
      const host = run([cand]).cases.get(cand.id);
      const emu = runOnKvmsr(this.profile, cand);
      if (!host) return { at: 0, host: undefined, emu: undefined, answers: { id: cand.id, steps: [] } };
      for (let i = 0; i < cand.steps.length; i++) {
        const h = host.steps[i];
        const e = emu.steps[i];
        const st = cand.steps[i]!;
        // IA32_TSC and the other moving MSRs: each side reads at its own time (moving-msrs.ts).
        if (st.op === 'rd' && MOVING_MSRS.has(st.index) && h?.op === 'g' && e?.op === 'g' && h.kind === 'ok' && e.kind === 'ok' && movingAgree(st.index, h.value, e.value)) continue;
        if (!sameAnswer(h, e)) return { at: i, host: h, emu: e, answers: host };
      }
      return null;
    };
    const bad = firstBad(c);
    if (!bad) return null;
    const target = c.steps[bad.at]!;
    const sig = `guest|${JSON.stringify(target, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}|${JSON.stringify(bad.host, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`;
    if (this.signatures.has(sig)) {
      this.alike++;
      return null;
    }
    this.signatures.add(sig);
    let steps = c.steps.slice(0, bad.at + 1);
    let budget = this.opts.shrinkBudget ?? 200;
    const stillBad = (cand: PlanStep[]): boolean => {
      if (budget-- <= 0) return false;
      const r = firstBad({ ...c, steps: cand });
      return r !== null && r.at === cand.length - 1;
    };
    for (let chunk = Math.floor(steps.length / 2); chunk >= 1 && budget > 0; chunk = Math.floor(chunk / 2)) {
      for (let from = steps.length - 1 - chunk; from >= 0 && budget > 0; from -= chunk) {
        const cand = [...steps.slice(0, from), ...steps.slice(from + chunk)];
        if (stillBad(cand)) steps = cand;
      }
    }
    const again = firstBad({ ...c, steps });
    const last = again ?? bad;
    const show = (a: StepAnswer | undefined): string => JSON.stringify(a ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v));
    const word = target.op === 'rd' ? `guest RDMSR ${msrLabel(target.index)}` : target.op === 'wr' ? `guest WRMSR 0x${target.value.toString(16)} to ${msrLabel(target.index)}` : target.op;
    return {
      group: `guest path (${c.id.split('.')[1]})`,
      setup: { irqchip: c.setup.irqchip, cpuid: c.setup.cpuid, vcpus: c.setup.vcpus },
      steps: [],
      guest: { case: { ...c, steps }, host: last.answers },
      differences: [`${word}: kernel ${show(last.host)}, kvmsr ${show(last.emu)}`],
      realBytes: '',
      emuBytes: '',
      realRet: 0,
      emuRet: 0,
      decoded: [],
      recurred: again !== null,
    };
  }

  private describe(group: string, setup: CaseSetup, steps: Step[]): Disagreement {
    // Run once more to collect the bytes of the disagreeing step.
    const env = this.makeEnv(setup);
    let last = null as ReturnType<Pair['run']> | null;
    const sent: Uint8Array[] = [];
    try {
      for (const s of steps) {
        const fd = s.on === 'system' ? this.sys : s.on === 'vm' ? env.vm : env.vcpus[s.on % Math.max(1, env.vcpus.length)]!;
        const arg = s.writeBack && last ? last.realBytes : s.arg;
        if (arg instanceof Uint8Array) sent.push(arg.slice());
        last = this.pair.run(fd, s.request, arg);
      }
    } finally {
      env.close();
    }
    const final = steps[steps.length - 1]!;
    const decoded: string[] = [];
    if (last && (final.request === I.KVM_GET_MSRS || final.request === I.KVM_SET_MSRS) && last.realBytes.length >= 8) {
      const a = decodeMsrs(last.realBytes).entries;
      const b = decodeMsrs(last.emuBytes).entries;
      const input = decodeMsrs(sent[sent.length - 1] ?? last.realBytes).entries;
      a.forEach((e, i) => decoded.push(`[${i}] ${msrLabel(e.index)}: in 0x${input[i]?.data.toString(16)}, kernel 0x${e.data.toString(16)}, kvmsr 0x${b[i]!.data.toString(16)}`));
    } else if (last && (final.request === I.KVM_GET_MSR_INDEX_LIST || final.request === I.KVM_GET_MSR_FEATURE_INDEX_LIST)) {
      decoded.push(`kernel nmsrs ${decodeMsrList(last.realBytes).nmsrs}, kvmsr nmsrs ${decodeMsrList(last.emuBytes).nmsrs}`);
    }
    const hex = (b: Uint8Array | undefined): string => (b ? Buffer.from(b).toString('hex') : '');
    return {
      group: group === 'random' && final.arg instanceof Uint8Array && final.arg.length >= 24 ? `random (${msrGroup(decodeMsrs(final.arg).entries[0]?.index ?? 0)})` : group,
      setup,
      steps,
      differences: last?.differences ?? [],
      realBytes: hex(last?.realBytes),
      emuBytes: hex(last?.emuBytes),
      realRet: last?.realRet ?? 0,
      emuRet: last?.emuRet ?? 0,
      decoded,
      recurred: (last?.differences.length ?? 0) > 0,
    };
  }
}

/** A disagreement as a regression case file (JSON), replayable against kvmsr. */
export function caseFile(d: Disagreement, profile: HostProfile): Record<string, unknown> {
  return {
    format: 'kvmsr-conform-case',
    version: 1,
    host: profile.host,
    setup: d.setup,
    steps: d.steps.map((s) => ({
      on: s.on,
      request: '0x' + (s.request >>> 0).toString(16),
      name: I.ioctlName(s.request),
      ...(s.writeBack ? { writeBack: true } : { arg: s.arg instanceof Uint8Array ? Buffer.from(s.arg).toString('hex') : s.arg }),
    })),
    expected: { bytes: d.realBytes, ret: d.realRet },
    kvmsr: { bytes: d.emuBytes, ret: d.emuRet },
    differences: d.differences,
    decoded: d.decoded,
  };
}
