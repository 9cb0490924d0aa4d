// Plays a list of recorded calls on a fresh kvmsr (CaptureMachine) and tells, per vCPU and MSR
// written, whether the last write was taken and what the MSR reads back after all of them: the
// outcome `check` compares between orders and between hosts.
import type { MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import type { HostProfile } from '../kvm/profile.js';
import type { CaptureRecord } from '../capture/format.js';
import { CaptureMachine, vcpuKey } from './machine.js';
import { batchEntries } from './msr-traffic.js';

export interface Op {
  rec: CaptureRecord;
  /** Rewritten input (a batch with entries moved out), or a synthetic batch. */
  input?: Uint8Array;
}

export interface Outcome {
  /** The last write of it was processed. */
  taken: boolean;
  /** Why not: "refused" (the entry the batch stopped at) or "not processed" (after it). */
  lost?: string;
  /** What a host read gives after the whole restore. */
  value: bigint | null;
}
export type Outcomes = Map<string, Map<number, Outcome>>;

export interface Played {
  outcomes: Outcomes;
  lastWritten: Map<string, Map<number, bigint>>;
  /** Seqs of KVM_SET_MSRS kvmsr answered differently from the recorded kernel. */
  diverged: number[];
  unmodeled: Set<string>;
  /** The kvmsr VM as the calls left it. */
  machine: CaptureMachine;
}

/** Plays ops on a fresh kvmsr and says, per vCPU and MSR written, whether the last write was taken and what it reads back. */
export function play(profile: HostProfile, ops: Op[]): Played {
  const m = new CaptureMachine(profile);
  const outcomes: Outcomes = new Map();
  const lastWritten = new Map<string, Map<number, bigint>>();
  const diverged: number[] = [];
  for (const { rec, input } of ops) {
    const r = m.apply(rec, input);
    if (rec.request !== I.KVM_SET_MSRS || rec.fdKind !== 'vcpu' || r === undefined) continue;
    const key = vcpuKey(rec);
    const entries: MsrEntry[] = batchEntries(rec, input ?? rec.in);
    if (input === undefined && rec.seq >= 0 && r !== rec.ret && !(r < 0 && rec.ret < 0)) diverged.push(rec.seq);
    const o = outcomes.get(key) ?? new Map<number, Outcome>();
    outcomes.set(key, o);
    const w = lastWritten.get(key) ?? new Map<number, bigint>();
    lastWritten.set(key, w);
    entries.forEach((e, i) => {
      w.set(e.index, e.data);
      const taken = r >= 0 && i < r;
      o.set(e.index, taken ? { taken, value: null } : { taken, value: null, lost: r < 0 ? `refused with the whole batch` : i === r ? 'refused' : 'not processed (the batch stopped before it)' });
    });
  }
  for (const [key, o] of outcomes) for (const [index, out] of o) out.value = m.read(key, index);
  return { outcomes, lastWritten, diverged, unmodeled: m.unmodeled, machine: m };
}
