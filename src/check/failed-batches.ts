// Failed and partial KVM_GET/SET_MSRS taken as success. msr_io (kvm_vcpu_ioctl) fails a batch
// whole with E2BIG at KVM_MAX_MSR_ENTRIES (256) or EFAULT, a VM fd answers ENOTTY, and __msr_io
// stops at the first entry KVM refuses and returns how many it processed: the rest of the buffer is
// what the VMM put there. A VMM that does not check the count saves, or restores, garbage
// (firecracker 602a2108e, crosvm 9dec40e24 and 5441c064e, kvm-ioctls 0da21c1, firecracker 3c9fb47b7).
import { errnoName } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel } from '../abi/msr-names.js';
import type { MsrEntry } from '../abi/codecs.js';
import type { Kvm } from '../kvm/kvm.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED } from '../kvm/x86/msr-ret.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { hex, indexRanges, type Finding } from './findings.js';
import type { GuestReach } from './guest-reach.js';
import { vcpuKey } from './machine.js';
import { batchEntries, isMsrBatch, type VcpuTraffic } from './msr-traffic.js';

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

const WHOLE: Record<string, string> = {
  E2BIG: 'msr_io refuses a batch of KVM_MAX_MSR_ENTRIES (256) or more whole',
  EFAULT: "msr_io could not copy the batch (copy_from_user of the VMM's buffer)",
  ENOTTY: 'KVM_GET/SET_MSRS is a vCPU ioctl: kvm_arch_vm_ioctl does not know it on a VM fd',
  EBADF: 'the fd is not open',
  EINVAL: 'the fd does not take this ioctl',
};

export interface FailedBatchInput {
  which: 'save' | 'restore';
  capture: ParsedCapture;
  /** The save's traffic: what was read successfully, per vCPU. */
  traffic: Map<string, VcpuTraffic>;
  /** The restore's traffic, when there is one. */
  restoreTraffic?: Map<string, VcpuTraffic>;
  kvm: Kvm;
  scratchVcpu: number;
  reach: GuestReach;
}

export function failedBatches(x: FailedBatchInput): Finding[] {
  const findings: Finding[] = [];
  const hasRun = new Set<string>();
  const recs = x.capture.records;
  /** On a vCPU key: indices processed by KVM from record n on (a retry after a failure). */
  const processedAfter = (n: number, key: string, req: number): Set<number> => {
    const s = new Set<number>();
    for (const r of recs.slice(n + 1)) {
      if (!isMsrBatch(r) || r.request !== req || r.ret <= 0 || r.fdKind !== 'vcpu' || vcpuKey(r) !== key) continue;
      batchEntries(r).slice(0, r.ret).forEach((e) => s.add(e.index));
    }
    return s;
  };
  /** A vCPU record that is the save's target, for a batch sent to the wrong fd: the VM's vCPU 0. */
  const vcpuFor = (r: CaptureRecord): string => (r.fdKind === 'vcpu' ? vcpuKey(r) : r.fdKind === 'vm' ? `vm${r.vm ?? 0}/vcpu0` : 'system');
  recs.forEach((r, n) => {
    if (r.request === I.KVM_RUN) hasRun.add(vcpuKey(r));
    if (r.op === 'close' || (r.request !== I.KVM_GET_MSRS && r.request !== I.KVM_SET_MSRS)) return;
    const set = r.request === I.KVM_SET_MSRS;
    const where = r.fdKind === 'vcpu' ? vcpuKey(r) : r.fdKind;
    const nmsrs = r.in && r.in.length >= 4 ? new DataView(r.in.buffer, r.in.byteOffset).getUint32(0, true) : 0;
    if (r.ret < 0) {
      // Failed whole: nothing of the batch was read or written.
      if (set && x.which === 'save') return;
      const name = errnoName(r.errno);
      const asked = batchEntries(r).map((e) => e.index);
      const target = vcpuFor(r);
      const retried = processedAfter(n, target, r.request);
      const lost = asked.filter((i) => !retried.has(i));
      const restored = set ? [] : restoredFromNothing(x, target);
      const unknown = asked.length === 0;
      if (!unknown && lost.length === 0) {
        findings.push({ severity: 'info', kind: 'failed-save', vcpu: where, message: `${x.which} ${r.name} (seq ${r.seq}) of ${nmsrs} entries failed with ${name} (${WHOLE[name] ?? 'the ioctl failed'}); every entry was processed by a later batch`, rule: 'msr_io' });
        return;
      }
      if (unknown && retried.size > 0 && restored.length === 0) {
        findings.push({ severity: 'warning', kind: 'failed-save', vcpu: where, message: `${x.which} ${r.name} (seq ${r.seq}) of ${nmsrs} entries failed with ${name} (${WHOLE[name] ?? 'the ioctl failed'}); later batches read ${retried.size} MSRs, but the capture does not hold which ones the failed batch asked for`, rule: 'msr_io' });
        return;
      }
      const lostText = unknown ? `all ${nmsrs} entries` : indexRanges(lost);
      const tail = restored.length > 0 ? `; the restore then wrote back ${restored.length} MSRs the save never read (${indexRanges(restored)}): what the VMM's buffer held, not the guest's values` : set ? '; the VMM went on as if they were restored' : '; the VMM went on as if they were saved';
      findings.push({
        severity: 'error',
        kind: set ? 'partial' : 'failed-save',
        vcpu: where,
        ...(unknown ? (restored.length > 0 ? { msr: msrLabel(restored[0]!) } : {}) : { msr: msrLabel(lost[0]!) }),
        rule: 'msr_io',
        message: `${x.which} ${r.name} (seq ${r.seq}) of ${nmsrs} entries failed whole with ${name} (${WHOLE[name] ?? 'the ioctl failed'}): ${lostText} ${set ? 'not restored' : 'not saved'}${tail}`,
      });
      return;
    }
    if (!isMsrBatch(r)) return;
    const entries = batchEntries(r);
    if (r.ret >= entries.length) return;
    const e = entries[r.ret]!;
    const retried = processedAfter(n, where, r.request);
    const rest = entries.slice(r.ret).map((x2) => x2.index);
    const lostRest = rest.slice(1).filter((i) => !retried.has(i));
    const refusedLost = !retried.has(e.index);
    const next = recs.slice(n + 1).find((y) => y.fd === r.fd && y.request === r.request && isMsrBatch(y));
    let after = 'went on without retrying';
    if (next) {
      const nd = batchEntries(next).map((y) => y.index);
      if (nd.length > 0 && nd[0] === rest[0]) after = 'retried from the same entry';
      else if (nd.length > 0 && nd[0] === rest[1]) after = 'retried without the refused entry';
    }
    const why = explain(x.kvm, x.scratchVcpu, e, set, hasRun.has(vcpuKey(r)));
    // A refused write loses the value unless the guest can neither read nor write the MSR; a refused
    // read loses nothing KVM keeps, but whatever the VMM did not read after it is lost.
    const hidden = r.fdKind === 'vcpu' && x.reach.hidden(vcpuKey(r), e.index);
    const stateLost = set ? refusedLost && !hidden : false;
    const severity = stateLost || lostRest.length > 0 || after === 'went on without retrying' ? 'error' : 'warning';
    findings.push({
      severity,
      kind: 'partial',
      vcpu: r.fdKind === 'system' ? 'system' : where,
      msr: msrLabel(e.index),
      rule: set ? '__msr_io (kvm_set_msr_with_filter)' : '__msr_io (kvm_get_msr_with_filter)',
      message:
        `${x.which} ${r.name} (seq ${r.seq}) processed ${r.ret} of ${entries.length} entries: it stopped at ${msrLabel(e.index)}${set ? ` = ${hex(e.data)}` : ''}: ${why}; the VMM ${after}` +
        (set && refusedLost ? (hidden ? '; the guest can neither read nor write it, so it cannot tell' : `, so ${msrLabel(e.index)} keeps the destination's value`) : ''),
    });
    if (!set && lostRest.length > 0) {
      const restored = (x.restoreTraffic?.get(where)?.written.keys() ?? []) as Iterable<number>;
      const back = [...restored].filter((i) => lostRest.includes(i));
      findings.push({
        severity: 'error',
        kind: 'failed-save',
        vcpu: where,
        msr: msrLabel(lostRest[0]!),
        rule: '__msr_io',
        message:
          `save ${r.name} (seq ${r.seq}) stopped after ${r.ret} of ${entries.length} entries and the VMM never read the ${lostRest.length} after the refused one (${indexRanges(lostRest)})` +
          (back.length > 0 ? `; the restore wrote back ${back.length} of them from the buffer (what the VMM put there, not the guest's values)` : ''),
      });
    }
  });
  return findings;
}

/** MSRs a restore wrote on a vCPU that its save never read successfully. */
function restoredFromNothing(x: FailedBatchInput, key: string): number[] {
  const w = x.restoreTraffic?.get(key);
  if (!w) return [];
  const s = x.traffic.get(key);
  return [...w.written.keys()].filter((i) => !s?.saved.has(i)).sort((a, b) => a - b);
}
