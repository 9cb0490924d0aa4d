// Time across a save and restore: the vCPUs' TSCs, kvmclock, and the TSC-deadline timer.
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel } from '../abi/msr-names.js';
import type { HostProfile } from '../kvm/profile.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { recordsStateGetters } from '../capture/extents.js';
import { hex, type Finding } from './findings.js';
import { tscOffsetHonored, vcpuKey, vmKey } from './machine.js';
import { batchEntries, isMsrBatch, type VcpuTraffic } from './msr-traffic.js';

const TSC = 0x10;
const TSC_DEADLINE = 0x6e0;
const WINDOW_RULE = "kvm_synchronize_tsc: a host write of IA32_TSC joins the VM's TSC generation only when it lands within one second of where the VM's last write would be by then; otherwise it starts a new generation at that value";

export interface TimeResult {
  findings: Finding[];
  notes: string[];
}

export function timeChecks(save: ParsedCapture, saveTraffic: Map<string, VcpuTraffic>, restore: ParsedCapture | undefined, profile: HostProfile): TimeResult {
  const findings: Finding[] = [];
  const notes: string[] = [];
  if (restore) tscWrites(restore, profile, findings, notes);
  if (restore?.records.some((r) => r.request === I.KVM_SET_DEVICE_ATTR && r.fdKind === 'vcpu' && r.ret >= 0)) {
    notes.push('IA32_TSC: the restore sets vCPU attributes (KVM_SET_DEVICE_ATTR, e.g. KVM_VCPU_TSC_OFFSET), which kvmsr does not model: TSC offsets set that way are not judged, only host writes of IA32_TSC');
  }
  if (restore) kvmclock(save, restore, findings, notes);
  deadlines(save, saveTraffic, findings, notes);
  return { findings, notes };
}

/**
 * Each accepted host write of IA32_TSC in the restore, per VM, judged as kvm_synchronize_tsc
 * judges it: against the VM's last write moved on by the time between them at the vCPU's rate.
 */
function tscWrites(restore: ParsedCapture, profile: HostProfile, findings: Finding[], notes: string[]): void {
  const writes = new Map<string, { key: string; data: bigint; at?: number; seq: number }[]>();
  for (const r of restore.records) {
    if (r.request !== I.KVM_SET_MSRS || r.fdKind !== 'vcpu' || !isMsrBatch(r) || r.ret <= 0) continue;
    batchEntries(r)
      .slice(0, r.ret)
      .filter((e) => e.index === TSC)
      .forEach((e) => {
        const list = writes.get(vmKey(r)) ?? [];
        writes.set(vmKey(r), list);
        list.push({ key: vcpuKey(r), data: e.data, seq: r.seq, ...(r.monoUs !== undefined ? { at: r.monoUs } : {}) });
      });
  }
  if (writes.size === 0) return;
  const honored = tscOffsetHonored(profile);
  const khz = profile.tscKhz > 0 ? profile.tscKhz : 1_000_000;
  let untimed = false;
  const hz = BigInt(khz) * 1000n;
  for (const [vm, list] of writes) {
    // Writes of less than a second of TSC are a VMM's reset values, not a restore.
    const perVcpu = new Map<string, number>();
    for (const w of list) if (w.data > hz) perVcpu.set(w.key, (perVcpu.get(w.key) ?? 0) + 1);
    for (const [key, n] of perVcpu) {
      if (n < 2) continue;
      findings.push({
        severity: 'warning',
        kind: 'tsc-restored-twice',
        vcpu: key,
        msr: msrLabel(TSC),
        rule: WINDOW_RULE,
        message: `IA32_TSC was restored ${n} times on ${key}: every host write is judged against the VM's last one, so a repeated write that lands outside the window of the one before moves this vCPU into a TSC generation of its own; restore it once per vCPU, all vCPUs back to back`,
      });
    }
    // The generations, as kvm_synchronize_tsc forms them: each write joins the current one or starts a new one.
    let gen = 0;
    const genOf = new Map<string, { gen: number; seq: number }>();
    let started: { key: string; seq: number; elapsedMs: number; apartMs: number; prev: string } | undefined;
    for (let i = 0; i < list.length; i++) {
      const b = list[i]!;
      const a = list[i - 1];
      if (a === undefined) {
        genOf.set(b.key, { gen, seq: b.seq });
        continue;
      }
      if (a.at === undefined || b.at === undefined) {
        untimed = true;
        genOf.set(b.key, { gen, seq: b.seq });
        continue;
      }
      const elapsedMs = (b.at - a.at) / 1000;
      const expected = a.data + BigInt(Math.floor(elapsedMs * khz));
      const synchronizing = b.data === 0n || (b.data < expected + hz && b.data + hz > expected);
      if (!synchronizing) {
        gen++;
        const apartMs = Number((expected > b.data ? expected - b.data : b.data - expected) / BigInt(khz));
        started = { key: b.key, seq: b.seq, elapsedMs, apartMs, prev: a.key };
      }
      genOf.set(b.key, { gen, seq: b.seq });
    }
    const behind = [...genOf].filter(([, g]) => g.gen !== gen).map(([k]) => k);
    if (behind.length === 0 || !started) continue;
    findings.push({
      severity: honored ? 'error' : 'warning',
      kind: 'tsc-unsynchronized',
      vcpu: started.key,
      msr: msrLabel(TSC),
      rule: WINDOW_RULE,
      message:
        `IA32_TSC of ${started.key} was restored ${started.elapsedMs.toFixed(0)} ms after ${started.prev}'s (seq ${started.seq}), ${started.apartMs} ms of TSC away from where ${vm}'s last write would be by then: ` +
        `KVM started a new TSC generation, and ${behind.join(', ')} stayed in the old one, so the vCPUs' TSCs differ by about ${started.apartMs} ms and the guest sees its TSC as unstable (restore every vCPU's TSC within a second of the others, or set the offsets with KVM_VCPU_TSC_OFFSET)` +
        (honored ? '' : `; ${profile.host.vendorModule} ignores host writes of IA32_TSC, so it is harmless on this host, but not on kvm_intel or kvm_amd`),
    });
  }
  if (untimed) notes.push('IA32_TSC restores: the restore capture has no timestamps (recorded before kvmsr wrote them), so whether they fell within KVM\'s one-second synchronization window cannot be known');
}

/** A save that read kvmclock (KVM_GET_CLOCK) and a restore that resumed the guest without KVM_SET_CLOCK. */
function kvmclock(save: ParsedCapture, restore: ParsedCapture, findings: Finding[], notes: string[]): void {
  const got = save.records.filter((r) => r.request === I.KVM_GET_CLOCK && r.ret >= 0);
  if (got.length === 0) {
    if (!recordsStateGetters(save.header)) notes.push('kvmclock: the save capture predates the recording of KVM_GET_CLOCK, so whether the VMM saved the clock cannot be known');
    return;
  }
  const sets = new Set(restore.records.filter((r) => r.request === I.KVM_SET_CLOCK && r.ret >= 0).map((r) => vmKey(r)));
  const firstRun = new Map<string, CaptureRecord>();
  for (const r of restore.records) if (r.request === I.KVM_RUN && r.fdKind === 'vcpu' && !firstRun.has(vmKey(r))) firstRun.set(vmKey(r), r);
  const vms = new Set([...restore.records.filter((r) => r.request === I.KVM_CREATE_VCPU && r.ret >= 0).map((r) => vmKey(r)), ...firstRun.keys()]);
  for (const vm of vms) {
    const run = firstRun.get(vm);
    const setBefore = restore.records.some((r) => r.request === I.KVM_SET_CLOCK && r.ret >= 0 && vmKey(r) === vm && (!run || r.seq < run.seq));
    if (setBefore) continue;
    if (!run) {
      if (!sets.has(vm)) notes.push(`kvmclock: ${vm} of the restore never ran, so whether the VMM sets the clock (KVM_SET_CLOCK) before it resumes the guest cannot be seen`);
      continue;
    }
    findings.push({
      severity: 'error',
      kind: 'kvmclock-not-restored',
      vcpu: vm,
      rule: 'kvm_vm_ioctl_set_clock: kvmclock restarts from the destination VM\'s creation unless KVM_SET_CLOCK restores the saved value',
      message: `the save read kvmclock (KVM_GET_CLOCK, seq ${got[0]!.seq}) but the restore resumed ${vm} (KVM_RUN, seq ${run.seq}) without KVM_SET_CLOCK: the guest's kvmclock jumps back to the new VM's age, and its wall clock and timers with it`,
    });
  }
}

/**
 * A zero IA32_TSC_DEADLINE saved while the LVT timer is in TSC-deadline mode and unmasked, with the
 * timer's vector neither requested (IRR) nor in service (ISR): the timer fired, KVM cleared the
 * deadline (kvm_inject_apic_timer_irqs, apic_timer_expired) and the interrupt was not delivered
 * yet, so the restored guest waits for a tick that never comes (firecracker #4618).
 */
function deadlines(save: ParsedCapture, traffic: Map<string, VcpuTraffic>, findings: Finding[], notes: string[]): void {
  const lapic = new Map<string, Uint8Array>();
  for (const r of save.records) if (r.request === I.KVM_GET_LAPIC && r.fdKind === 'vcpu' && r.ret >= 0 && r.out && r.out.length >= 0x400) lapic.set(vcpuKey(r), r.out);
  let unknown = false;
  for (const [key, t] of traffic) {
    const d = t.saved.get(TSC_DEADLINE);
    if (d === undefined || d.data !== 0n) continue;
    const regs = lapic.get(key);
    if (!regs) {
      unknown = true;
      continue;
    }
    const dv = new DataView(regs.buffer, regs.byteOffset, regs.byteLength);
    const lvtt = dv.getUint32(0x320, true);
    const mode = (lvtt >>> 17) & 3;
    const masked = ((lvtt >>> 16) & 1) === 1;
    if (mode !== 2 || masked) continue;
    const vec = lvtt & 0xff;
    const pending = (base: number): boolean => ((dv.getUint32(base + 0x10 * (vec >>> 5), true) >>> (vec & 31)) & 1) === 1;
    if (pending(0x200) || pending(0x100)) continue;
    findings.push({
      severity: 'error',
      kind: 'deadline-lost',
      vcpu: key,
      msr: msrLabel(TSC_DEADLINE),
      rule: 'kvm_inject_apic_timer_irqs / apic_timer_expired: KVM clears the deadline when the timer fires',
      message: `${msrLabel(TSC_DEADLINE)} was saved as 0 (seq ${d.seq}) while the LVT timer is in TSC-deadline mode, unmasked, with vector ${hex(vec)} neither requested nor in service: the timer fired and its interrupt was not delivered before the save, so the restored guest never gets another timer interrupt (save a non-zero deadline, e.g. the saved IA32_TSC, as firecracker #4618 does)`,
    });
  }
  if (unknown && !recordsStateGetters(save.header)) notes.push('TSC-deadline timer: a zero IA32_TSC_DEADLINE was saved, but the save capture predates the recording of KVM_GET_LAPIC, so whether the timer was armed cannot be known');
}
