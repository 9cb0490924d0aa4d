// The measured MSR rules (kvm/measured-rules.ts) from a harvest's `rule.*` cases: for each
// candidate MSR and each side (host, guest), the first pair of a read kind and a write kind (kvmsr's
// own model first, then load/store, zero/drop, unsupported, error, then the mixed pairs) whose
// answers on kvmsr equal the host's in both contexts (a fresh vCPU, and one with the supported
// CPUID). Where kvmsr's model already agrees no rule is recorded, so the
// source-derived rules stay the model wherever the host agrees with them.
import * as I from '../abi/kvm-ioctls.js';
import { READ_KINDS, WRITE_KINDS, withMeasuredRules, type MsrRule, type ReadKind, type WriteKind } from '../kvm/x86/measured-rules.js';
import { revalidated, type HostProfile } from '../kvm/profile.js';
import { vendorFor } from '../kvm/vendors.js';
import type { Answers, CaseAnswer, PlanCase, StepAnswer } from '../harvest/format.js';
import { runOnKvmsr } from '../harvest/on-kvmsr.js';

export interface RuleMeasurement {
  rules: Record<number, MsrRule>;
  /** MSR sides no rule kind reproduces: kvmsr still answers them otherwise than the host. */
  unmatched: { index: number; side: 'host' | 'guest' }[];
}

export function sameAnswer(a: StepAnswer | undefined, b: StepAnswer | undefined): boolean {
  if (a === undefined && b === undefined) return true; // both ended the case before this step
  if (!a || !b || a.op !== b.op) return false;
  if (a.op === 'io' && b.op === 'io') {
    if (a.ret !== b.ret || a.errno !== b.errno) return false;
    if (!a.out || !b.out) return a.out === b.out;
    return Buffer.from(a.out).equals(Buffer.from(b.out));
  }
  if (a.op === 'g' && b.op === 'g') {
    if (a.kind !== b.kind) return false;
    if (a.kind === 'ok' && b.kind === 'ok') return a.value === b.value;
    if (a.kind === 'exit' && b.kind === 'exit') return a.exitReason === b.exitReason && a.reason === b.reason && a.index === b.index && a.data === b.data;
    if (a.kind === 'fail' && b.kind === 'fail') return a.what === b.what && a.errno === b.errno;
    return true;
  }
  if (a.op === 'stats' && b.op === 'stats') {
    if (a.ret !== b.ret || a.errno !== b.errno) return false;
    return !a.bytes || !b.bytes ? a.bytes === b.bytes : Buffer.from(a.bytes).equals(Buffer.from(b.bytes));
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Whether kvmsr answered the host's (io) or the guest's (rd/wr) steps of a rule case as the host did. */
function sideAgrees(c: PlanCase, host: CaseAnswer, emu: CaseAnswer, side: 'host' | 'guest'): boolean {
  if (emu.setupFail || host.setupFail) return !!emu.setupFail === !!host.setupFail;
  return c.steps.every((s, i) => (s.op === 'io') !== (side === 'host') || sameAnswer(host.steps[i], emu.steps[i]));
}

/** The pairs tried, in order: the model, the four plain kinds, then every other pair. */
const PAIRS: [ReadKind | undefined, WriteKind | undefined][] = (() => {
  const plain: [ReadKind, WriteKind][] = [['load', 'store'], ['zero', 'drop'], ['unsupported', 'unsupported'], ['error', 'error']];
  const out: [ReadKind | undefined, WriteKind | undefined][] = [[undefined, undefined], ...plain];
  const have = new Set(out.map((p) => p.join()));
  // A write-only command MSR cannot tell drop from store: prefer drop, and zero before load.
  const reads = [undefined, ...[...READ_KINDS].sort((a) => (a === 'zero' ? -1 : 0))];
  const writes = [undefined, ...[...WRITE_KINDS].sort((a) => (a === 'drop' ? -1 : 0))];
  for (const r of reads) {
    for (const w of writes) {
      if (!have.has([r, w].join())) out.push([r, w]);
    }
  }
  return out;
})();

export function classifyRules(base: HostProfile, plan: readonly PlanCase[], a: Answers): RuleMeasurement {
  const byIndex = new Map<number, { c: PlanCase; host: CaseAnswer }[]>();
  for (const c of plan) {
    if (!c.id.startsWith('rule.')) continue;
    const host = a.cases.get(c.id);
    if (!host) continue;
    const index = Number.parseInt(c.id.split('.')[1]!, 16);
    const l = byIndex.get(index) ?? [];
    l.push({ c, host });
    byIndex.set(index, l);
  }
  const vendor = vendorFor(base.host.vendorModule);
  const rules: Record<number, MsrRule> = {};
  const unmatched: RuleMeasurement['unmatched'] = [];
  for (const [index, cases] of byIndex) {
    const rule: MsrRule = {};
    for (const side of ['host', 'guest'] as const) {
      const trial = (read: ReadKind | undefined, write: WriteKind | undefined, keepMask?: bigint): boolean => {
        const r: MsrRule = {};
        if (read) r[`${side}Read`] = read;
        if (write) r[`${side}Write`] = write;
        if (keepMask !== undefined) r[`${side}Keep`] = keepMask;
        const ops = withMeasuredRules(vendor, read || write ? { [index]: r } : undefined);
        return cases.every(({ c, host }) => sideAgrees(c, host, runOnKvmsr(base, c, { vendor: ops, fastPath: false }), side));
      };
      const found = PAIRS.find(([read, write]) => trial(read, write));
      // A store that keeps only some bits: the mask is what an all-ones write read back as.
      const mask = found ? undefined : keptOfOnes(cases, side);
      if (!found && mask !== undefined && trial('load', 'store', mask)) {
        rule[`${side}Read`] = 'load';
        rule[`${side}Write`] = 'store';
        rule[`${side}Keep`] = mask;
      } else if (!found) unmatched.push({ index, side });
      else {
        if (found[0]) rule[`${side}Read`] = found[0];
        if (found[1]) rule[`${side}Write`] = found[1];
      }
    }
    if (Object.keys(rule).length > 0) rules[index] = rule;
  }
  return { rules, unmatched };
}

/** What the host read back right after an all-ones write on one side of a rule case, if it did. */
function keptOfOnes(cases: readonly { c: PlanCase; host: CaseAnswer }[], side: 'host' | 'guest'): bigint | undefined {
  const ONES = 0xffffffffffffffffn;
  for (const { c, host } of cases) {
    for (let i = 0; i + 1 < c.steps.length; i++) {
      const w = c.steps[i]!;
      const next = host.steps[i + 1];
      if (side === 'guest' && w.op === 'wr' && w.value === ONES && c.steps[i + 1]!.op === 'rd' && next?.op === 'g' && next.kind === 'ok') return next.value;
      if (side === 'host' && w.op === 'io' && w.request === I.KVM_SET_MSRS && w.arg instanceof Uint8Array && w.arg.length >= 24) {
        const dv = new DataView(w.arg.buffer, w.arg.byteOffset, w.arg.byteLength);
        const r = host.steps[i];
        if (dv.getBigUint64(16, true) !== ONES || r?.op !== 'io' || r.ret !== 1 || next?.op !== 'io' || next.ret !== 1 || !next.out) continue;
        return new DataView(next.out.buffer, next.out.byteOffset, next.out.byteLength).getBigUint64(16, true);
      }
    }
  }
  return undefined;
}

/**
 * Whether each measured store feeds KVM's cross-MSR checks, from the harvest's `pair.*` cases
 * whose first MSR has a measured `store`: `coupled: true` where only the coupled model answers
 * as the host did. Where no pair case tells, the store stays apart from the checks (the default,
 * measured on kvm_pvm 6.18.44-fc-v1300 and v1272's MISC_FEATURES_ENABLES).
 */
export function classifyCouplings(base: HostProfile, plan: readonly PlanCase[], a: Answers, rules: Record<number, MsrRule>): void {
  for (const c of plan) {
    if (!c.id.startsWith('pair.')) continue;
    const first = Number.parseInt(c.id.split('.')[1]!, 16);
    const rule = rules[first];
    if (!rule || (rule.hostWrite !== 'store' && rule.guestWrite !== 'store') || rule.coupled === true) continue;
    const host = a.cases.get(c.id);
    if (!host) continue;
    const agrees = (coupled: boolean): boolean => {
      const variant = { ...rules, [first]: coupled ? { ...rule, coupled: true } : rule };
      const emu = runOnKvmsr(revalidated({ ...base, msrRules: variant }), c, { fastPath: false });
      return c.steps.every((_, i) => sameAnswer(host.steps[i], emu.steps[i]));
    };
    if (!agrees(false) && agrees(true)) rules[first] = { ...rule, coupled: true };
  }
}
