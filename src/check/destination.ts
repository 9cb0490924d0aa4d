// "Will this restore there?": the restore (or, with a save alone, the restore of exactly what was
// saved) played on another host's profile, and every saved MSR that host would refuse, change on
// read-back, or not list. What differs between kernels and hosts is the destination's rules and
// lists (firecracker 791e2290c: 5.10 to 4.15; crosvm f159f4615; TSX_CTRL, kernel 7131636e7ea5).
import { encodeMsrs, type MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel } from '../abi/msr-names.js';
import type { HostProfile } from '../kvm/profile.js';
import { MOVING_MSRS } from '../kvm/x86/moving-msrs.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { hex, type Finding } from './findings.js';
import { familyOf } from './msr-families.js';
import type { VcpuTraffic } from './msr-traffic.js';
import { play, type Op } from './playback.js';

/** Reads a restore makes from what the save read: the state getters' output written back. */
const WRITE_BACK: ReadonlyMap<number, number> = new Map([
  [I.KVM_GET_LAPIC, I.KVM_SET_LAPIC],
  [I.KVM_GET_SREGS, I.KVM_SET_SREGS],
  [I.KVM_GET_SREGS2, I.KVM_SET_SREGS2],
]);

const TSC = 0x10;
const TSC_DEADLINE = 0x6e0;

export interface DestinationResult {
  findings: Finding[];
  notes: string[];
}

export function onDestination(save: ParsedCapture, saveTraffic: Map<string, VcpuTraffic>, restore: ParsedCapture | undefined, dest: HostProfile): DestinationResult {
  const name = `${dest.host.vendorModule} ${dest.host.kernel}`;
  const ops: Op[] = restore ? restore.records.filter((r) => r.op !== 'close').map((rec) => ({ rec })) : restoreOfSave(save, saveTraffic);
  const played = play(dest, ops);
  const listed = new Set<number>([...dest.msrIndexList, ...dest.featureMsrs.map((f) => f.index)]);
  const findings: Finding[] = [];
  for (const [key, t] of saveTraffic) {
    const outcomes = played.outcomes.get(key);
    for (const [index, s] of t.saved) {
      const o = outcomes?.get(index);
      const label = msrLabel(index);
      const base = { vcpu: key, msr: label };
      if (!o) continue; // never restored: the round trip says so
      if (!o.taken) {
        findings.push({ ...base, severity: 'error', kind: 'destination-refused', rule: 'kvm_set_msr_common / the vendor set_msr on the destination', message: `${label} = ${hex(s.data)} is ${o.lost} on ${name}: a restore that checks KVM_SET_MSRS's count stops there, and one that does not loses the value` });
        continue;
      }
      const intended = played.lastWritten.get(key)?.get(index);
      if (!MOVING_MSRS.has(index) && o.value !== null && intended !== undefined && o.value !== intended) {
        findings.push({ ...base, severity: 'error', kind: 'destination-changed', rule: 'the destination\'s get_msr', message: `${label} was restored as ${hex(intended)} but reads back ${hex(o.value)} on ${name}` });
      }
      if (!listed.has(index) && familyOf(index, 32) === undefined) {
        findings.push({ ...base, severity: 'warning', kind: 'destination-unlisted', rule: 'kvm_init_msr_lists', message: `${label} is taken on ${name} but not on its KVM_GET_MSR_INDEX_LIST or feature list: a VMM that restores only what the destination lists drops it` });
      }
    }
  }
  const notes = [
    `destination ${name}: ${restore ? 'the restore capture was' : 'a restore of exactly what was saved (the save\'s CPUID, caps, MCE setup, LAPIC and sregs, then every saved MSR, IA32_TSC first and IA32_TSC_DEADLINE last, one per KVM_SET_MSRS) was'} played on its profile`,
  ];
  if (played.unmodeled.size > 0) notes.push(`destination: replayed without the effects of ${[...played.unmodeled].join(', ')}, which kvmsr does not model`);
  return { findings, notes };
}

/** The restore a VMM would make of exactly this save: the same vCPU model, then every saved MSR. */
function restoreOfSave(save: ParsedCapture, traffic: Map<string, VcpuTraffic>): Op[] {
  const ops: Op[] = [];
  const STATE = new Set<number>([I.KVM_CREATE_VM, I.KVM_CREATE_VCPU, I.KVM_CREATE_IRQCHIP, I.KVM_SET_CPUID2, I.KVM_ENABLE_CAP, I.KVM_X86_SETUP_MCE, I.KVM_SET_TSC_KHZ]);
  const getters: CaptureRecord[] = [];
  for (const r of save.records) {
    if (r.op === 'close' || r.ret < 0) continue;
    if (STATE.has(r.request)) ops.push({ rec: r });
    const back = WRITE_BACK.get(r.request);
    if (back !== undefined && r.out && r.fdKind === 'vcpu') getters.push({ ...r, request: back, in: r.out });
  }
  // The last of each getter per vCPU: the state the save ended with.
  const last = new Map<string, CaptureRecord>();
  for (const g of getters) last.set(`${g.vm}/${g.vcpuId}/${g.request}`, g);
  ops.push(...[...last.values()].map((rec) => ({ rec })));
  const template = save.records.find((r) => r.fdKind === 'vcpu');
  for (const [key, t] of traffic) {
    const rec = save.records.find((r) => r.fdKind === 'vcpu' && `vm${r.vm ?? 0}/vcpu${r.vcpuId ?? r.fd}` === key) ?? template;
    if (!rec) continue;
    const entries: MsrEntry[] = [...t.saved].map(([index, s]) => ({ index, data: s.data }));
    const rank = (i: number): number => (i === TSC ? 0 : i === TSC_DEADLINE ? 2 : 1);
    entries.sort((a, b) => rank(a.index) - rank(b.index));
    for (const e of entries) ops.push({ rec: { ...rec, request: I.KVM_SET_MSRS, seq: -1, ret: 1 }, input: encodeMsrs([e]) });
  }
  return ops;
}
