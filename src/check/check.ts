// `kvmsr check`: the MSR save/restore mistakes a VMM's own traffic shows. From a save capture (and
// optionally a restore capture) it reports, per vCPU: partial KVM_GET/SET_MSRS results and what the
// VMM did next, MSRs outside the host's lists and listed MSRs never saved, the round trip MSR by
// MSR, and order hazards (restore batches whose outcome on kvmsr changes when reordered).
import { decodeMsrList, decodeMsrs, encodeMsrs, type MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel } from '../abi/msr-names.js';
import { Kvm } from '../kvm/kvm.js';
import { M } from '../kvm/x86/msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED } from '../kvm/x86/msr-ret.js';
import { parseProfile, type HostProfile } from '../kvm/profile.js';
import { defaultProfile } from '../profiles.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { GuestReach } from './guest-reach.js';

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  severity: Severity;
  kind: 'partial' | 'unlisted' | 'not-saved' | 'not-restored' | 'restored-different' | 'restored-not-saved' | 'read-back-different' | 'order-hazard';
  vcpu: string;
  msr?: string;
  message: string;
}

export interface RoundTrip {
  vcpu: string;
  msr: string;
  saved: string | null;
  restored: string | null;
  readBack: string | null;
}

export interface CheckReport {
  findings: Finding[];
  coverage: { vcpu: string; listed: number; saved: number; missing: string[] }[];
  roundTrip: RoundTrip[];
  notes: string[];
}

const TIME_VARYING = new Set<number>([M.MSR_IA32_TSC]);
const hex = (v: bigint): string => '0x' + v.toString(16);
const vcpuKey = (r: CaptureRecord): string => `vm${r.vm ?? 0}/vcpu${r.vcpuId ?? r.fd}`;
const isMsrs = (r: CaptureRecord): boolean => (r.request === I.KVM_GET_MSRS || r.request === I.KVM_SET_MSRS) && r.in !== undefined && r.in.length >= 8 && r.op !== 'close';

/** Why kvmsr's rules refuse an entry, in the kernel's terms. */
function explain(kvm: Kvm, vcpuFd: number, e: MsrEntry, set: boolean, hasRun: boolean): string {
  const x86 = kvm.x86;
  const v = kvm.vcpuOf(vcpuFd)!;
  if (set && hasRun && isImmutable(e.index)) return 'an immutable feature MSR after KVM_RUN takes only its current value (do_set_msr: -EINVAL)';
  const out = { lo: 0, hi: 0 };
  const lo = Number(e.data & 0xffffffffn) | 0;
  const hi = Number(e.data >> 32n) | 0;
  const r = set ? x86.setMsr(v, e.index, true, lo, hi) : x86.getMsr(v, e.index, true, out);
  const listed = x86.advertised.has(e.index);
  if (r === MSR_UNSUPPORTED) {
    if (!listed) return 'KVM has no handler for this MSR and does not list it (kvm_do_msr_access: KVM_MSR_RET_UNSUPPORTED)';
    return 'KVM lists this MSR but does not support it for this vCPU model: only reads and writes of 0 pass (kvm_do_msr_access)';
  }
  if (r === MSR_ERR) return set ? 'the value is invalid for this MSR on this vCPU (the vendor or kvm_set_msr_common refused it)' : 'the read is refused for this vCPU model (the vendor or kvm_get_msr_common refused it)';
  if (r < 0) return `the handler returned errno ${-r}`;
  return r === MSR_OK ? 'kvmsr accepts it now; the vCPU state at the time (CPUID, irqchip, memory slots) decided' : `return code ${r}`;
}
function isImmutable(index: number): boolean {
  return (index >= 0x480 && index <= 0x491) || index === 0x10a || index === 0x345 || index === 0xce || index === 0xc0011029;
}

export function checkCaptures(save: ParsedCapture, restore?: ParsedCapture, profileOverride?: HostProfile): CheckReport {
  const profile = profileOverride ?? (save.header.profile !== undefined ? parseProfile(save.header.profile, 'save capture profile') : defaultProfile());
  const findings: Finding[] = [];
  const notes: string[] = [];
  // The host's lists: what the VMM itself read, else the profile's.
  const listed = new Set<number>(profile.msrIndexList);
  const features = new Set<number>(profile.featureMsrs.map((m) => m.index));
  for (const r of save.records) {
    if ((r.request === I.KVM_GET_MSR_INDEX_LIST || r.request === I.KVM_GET_MSR_FEATURE_INDEX_LIST) && r.ret === 0 && r.out) {
      for (const i of decodeMsrList(r.out).indices) (r.request === I.KVM_GET_MSR_INDEX_LIST ? listed : features).add(i);
    }
  }
  const kvm = new Kvm({ profile });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  const scratch = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);

  const partials = (cap: ParsedCapture, which: string): void => {
    const hasRun = new Set<string>();
    const recs = cap.records;
    recs.forEach((r, n) => {
      if (r.request === I.KVM_RUN) hasRun.add(vcpuKey(r));
      if (!isMsrs(r) || r.ret < 0) return;
      const d = decodeMsrs(r.in!);
      if (r.ret >= d.nmsrs || r.ret >= d.entries.length) return;
      const e = d.entries[r.ret]!;
      const set = r.request === I.KVM_SET_MSRS;
      // What the VMM did next on the same fd with the same request.
      const next = recs.slice(n + 1).find((x) => x.fd === r.fd && x.request === r.request && isMsrs(x));
      let after = 'went on without retrying';
      if (next) {
        const nd = decodeMsrs(next.in!).entries.map((x) => x.index);
        const rest = d.entries.slice(r.ret).map((x) => x.index);
        if (nd.length > 0 && nd[0] === rest[0]) after = 'retried from the same entry';
        else if (nd.length > 0 && nd[0] === rest[1]) after = 'retried without the refused entry';
      }
      const why = explain(kvm, scratch, e, set, hasRun.has(vcpuKey(r)));
      findings.push({
        severity: after === 'went on without retrying' ? 'error' : 'warning',
        kind: 'partial',
        vcpu: r.fdKind === 'system' ? 'system' : vcpuKey(r),
        msr: msrLabel(e.index),
        message: `${which} ${r.name} (seq ${r.seq}) processed ${r.ret} of ${d.nmsrs} entries: it stopped at ${msrLabel(e.index)}${set ? ` = ${hex(e.data)}` : ''}: ${why}; the VMM ${after}`,
      });
    });
  };
  partials(save, 'save');
  if (restore) partials(restore, 'restore');

  // Saved values: the last successful read of each MSR per vCPU in the save capture.
  const saved = new Map<string, Map<number, bigint>>();
  const touched = new Map<string, Set<number>>();
  /** MSRs the host processed (the entry lay before the batch's return value). */
  const accepted = new Map<string, Set<number>>();
  for (const r of save.records) {
    if (!isMsrs(r) || r.fdKind !== 'vcpu' || r.ret < 0) continue;
    const key = vcpuKey(r);
    const ins = decodeMsrs(r.in!).entries;
    const outs = r.out ? decodeMsrs(r.out).entries : ins;
    const t = touched.get(key) ?? new Set<number>();
    touched.set(key, t);
    ins.forEach((e) => t.add(e.index));
    const acc = accepted.get(key) ?? new Set<number>();
    accepted.set(key, acc);
    for (let i = 0; i < Math.min(r.ret, ins.length); i++) acc.add(ins[i]!.index);
    if (r.request === I.KVM_GET_MSRS) {
      const m = saved.get(key) ?? new Map<number, bigint>();
      saved.set(key, m);
      for (let i = 0; i < Math.min(r.ret, outs.length); i++) m.set(outs[i]!.index, outs[i]!.data);
    }
  }
  // Unlisted MSRs and coverage.
  const reach = new GuestReach(profile, save, vcpuKey);
  const coverage: CheckReport['coverage'] = [];
  for (const [key, t] of touched) {
    const handled: number[] = [];
    for (const i of t) {
      if (listed.has(i) || features.has(i)) continue;
      if (accepted.get(key)?.has(i)) handled.push(i);
      else findings.push({ severity: 'warning', kind: 'unlisted', vcpu: key, msr: msrLabel(i), message: `${msrLabel(i)} is read or written but the host lists it neither in KVM_GET_MSR_INDEX_LIST nor in the feature list, and never accepted it` });
    }
    if (handled.length > 0) {
      // MTRRs (kvm_mtrr_get_msr) and MCi banks (KVM_X86_SETUP_MCE) are handled but never listed.
      findings.push({ severity: 'info', kind: 'unlisted', vcpu: key, msr: indexRanges(handled), message: `${handled.length} MSRs are not on the host's lists but KVM accepted every access to them (${indexRanges(handled)})` });
    }
    const s = saved.get(key) ?? new Map<number, bigint>();
    const missing = [...listed].filter((i) => !s.has(i));
    coverage.push({ vcpu: key, listed: listed.size, saved: [...listed].filter((i) => s.has(i)).length, missing: missing.map(msrLabel) });
    const fixed: number[] = [];
    for (const i of missing) {
      if (!reach.canChange(key, i)) fixed.push(i);
      else findings.push({ severity: 'warning', kind: 'not-saved', vcpu: key, msr: msrLabel(i), message: `${msrLabel(i)} is on the host's list and the guest can change it on this vCPU model, but the save never read it` });
    }
    if (fixed.length > 0) {
      findings.push({ severity: 'info', kind: 'not-saved', vcpu: key, msr: fixed.map(msrLabel).join(', '), message: `${fixed.length} listed MSRs were not saved, but the guest cannot change them on this vCPU model (its WRMSR is refused or changes nothing), so nothing is lost: ${fixed.map(msrLabel).join(', ')}` });
    }
  }

  const roundTrip: RoundTrip[] = [];
  if (restore) {
    const restored = new Map<string, Map<number, bigint>>();
    const readBack = new Map<string, Map<number, bigint>>();
    const setBatches: { key: string; rec: CaptureRecord }[] = [];
    for (const r of restore.records) {
      if (!isMsrs(r) || r.fdKind !== 'vcpu' || r.ret < 0) continue;
      const key = vcpuKey(r);
      const ins = decodeMsrs(r.in!).entries;
      if (r.request === I.KVM_SET_MSRS) {
        setBatches.push({ key, rec: r });
        const m = restored.get(key) ?? new Map<number, bigint>();
        restored.set(key, m);
        for (let i = 0; i < Math.min(r.ret, ins.length); i++) m.set(ins[i]!.index, ins[i]!.data);
      } else if (restored.has(key) && r.out) {
        const m = readBack.get(key) ?? new Map<number, bigint>();
        readBack.set(key, m);
        const outs = decodeMsrs(r.out).entries;
        for (let i = 0; i < Math.min(r.ret, outs.length); i++) m.set(outs[i]!.index, outs[i]!.data);
      }
    }
    const keys = new Set([...saved.keys(), ...restored.keys()]);
    for (const key of keys) {
      const s = saved.get(key) ?? new Map<number, bigint>();
      const rs = restored.get(key) ?? new Map<number, bigint>();
      const rb = readBack.get(key) ?? new Map<number, bigint>();
      for (const i of new Set([...s.keys(), ...rs.keys()])) {
        const sv = s.get(i);
        const rv = rs.get(i);
        const bv = rb.get(i);
        roundTrip.push({ vcpu: key, msr: msrLabel(i), saved: sv === undefined ? null : hex(sv), restored: rv === undefined ? null : hex(rv), readBack: bv === undefined ? null : hex(bv) });
        // A difference in an MSR the guest can neither read nor write on this vCPU model (Hyper-V's
        // without Hyper-V's CPUID: kvm_hv_get_msr_common refuses the guest) is one it cannot see.
        const lost = (f: Finding): Finding => (reach.hidden(key, i) ? { ...f, severity: 'info', message: `${f.message}; the guest can neither read nor write it on this vCPU model, so it cannot tell` } : f);
        if (sv !== undefined && rv === undefined) findings.push(lost({ severity: 'error', kind: 'not-restored', vcpu: key, msr: msrLabel(i), message: `${msrLabel(i)} was saved as ${hex(sv)} but never restored` }));
        else if (sv === undefined && rv !== undefined) findings.push(restoredNotSaved(key, i, rv, reach));
        else if (sv !== undefined && rv !== undefined && sv !== rv && !TIME_VARYING.has(i)) findings.push(lost({ severity: 'error', kind: 'restored-different', vcpu: key, msr: msrLabel(i), message: `${msrLabel(i)} was saved as ${hex(sv)} but restored as ${hex(rv)}` }));
        if (rv !== undefined && bv !== undefined && rv !== bv && !TIME_VARYING.has(i)) findings.push(lost({ severity: 'error', kind: 'read-back-different', vcpu: key, msr: msrLabel(i), message: `${msrLabel(i)} was restored as ${hex(rv)} but reads back ${hex(bv)}` }));
      }
    }
    notes.push('IA32_TSC moves with time: its saved and restored values are not compared');
    // Order hazards: each restore batch on a fresh kvmsr vCPU, as captured and sorted by index.
    for (const { key, rec } of setBatches) {
      const entries = decodeMsrs(rec.in!).entries.slice(0, decodeMsrs(rec.in!).nmsrs);
      if (entries.length < 2) continue;
      const sorted = [...entries].sort((a, b) => a.index - b.index);
      const a = outcome(profile, entries);
      const b = outcome(profile, sorted);
      for (const e of entries) {
        const x = a.get(e.index);
        const y = b.get(e.index);
        if (x !== y) {
          findings.push({ severity: 'warning', kind: 'order-hazard', vcpu: key, msr: msrLabel(e.index), message: `restore batch seq ${rec.seq}: ${msrLabel(e.index)} ends as ${x} in the captured order but ${y} sorted by index` });
        }
      }
    }
    notes.push('order hazards are found by replaying each restore batch on a fresh kvmsr vCPU in the captured order and sorted by index');
  }
  const rank: Record<Severity, number> = { error: 0, warning: 1, info: 2 };
  findings.sort((x, y) => rank[x.severity] - rank[y.severity]);
  return { findings, coverage, roundTrip, notes };
}

/** MSRs a VMM saves through KVM_GET_SREGS (apic_base, efer), which a capture does not hold. */
const IN_SREGS = new Set<number>([M.MSR_IA32_APICBASE, M.MSR_EFER]);

function restoredNotSaved(key: string, i: number, rv: bigint, reach: GuestReach): Finding {
  const base = { kind: 'restored-not-saved' as const, vcpu: key, msr: msrLabel(i) };
  if (IN_SREGS.has(i)) return { ...base, severity: 'info', message: `${msrLabel(i)} was restored (${hex(rv)}) by KVM_SET_MSRS but not read by KVM_GET_MSRS: VMMs save it in KVM_GET_SREGS, which kvmsr does not record` };
  if (!reach.canChange(key, i)) return { ...base, severity: 'info', message: `${msrLabel(i)} was restored (${hex(rv)}) but not saved; the guest cannot change it, so the VMM sets it from its CPU model` };
  return { ...base, severity: 'warning', message: `${msrLabel(i)} was restored (${hex(rv)}) but not saved` };
}

/** "0x200-0x20f, 0x250, 0x400-0x427": sorted indices as runs. */
function indexRanges(indices: number[]): string {
  const s = [...indices].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    out.push(j > i ? `0x${s[i]!.toString(16)}-0x${s[j]!.toString(16)}` : `0x${s[i]!.toString(16)}`);
    i = j + 1;
  }
  return out.join(', ');
}

/** Per MSR: 'refused' or the value read back, after one KVM_SET_MSRS of `entries` on a fresh vCPU. */
function outcome(profile: HostProfile, entries: MsrEntry[]): Map<number, string> {
  const kvm = new Kvm({ profile, now: () => 0 });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  const v = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  const out = new Map<number, string>();
  // Apply one entry at a time so a refusal does not hide the rest, in the given order.
  for (const e of entries) {
    const ok = kvm.ioctl(v, I.KVM_SET_MSRS, encodeMsrs([e])) === 1;
    if (!ok) out.set(e.index, 'refused');
  }
  for (const e of entries) {
    if (out.get(e.index) === 'refused') continue;
    const b = encodeMsrs([{ index: e.index, data: 0n }]);
    out.set(e.index, kvm.ioctl(v, I.KVM_GET_MSRS, b) === 1 ? hex(decodeMsrs(b).entries[0]!.data) : 'unreadable');
  }
  return out;
}
