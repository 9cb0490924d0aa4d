// The round trip, MSR by MSR: what the save read, what the restore wrote, what the restore read
// back. A difference in an MSR the guest can neither read nor write on this vCPU model (Hyper-V's
// without Hyper-V's CPUID: kvm_hv_get_msr_common refuses the guest) is one it cannot see.
import { msrLabel } from '../abi/msr-names.js';
import { M } from '../kvm/x86/msr-index.js';
import { MOVING_MSRS } from '../kvm/x86/moving-msrs.js';
import { isVmWide } from './msr-families.js';
import { hex, type Finding } from './findings.js';
import type { GuestReach } from './guest-reach.js';
import type { VcpuTraffic } from './msr-traffic.js';

export interface RoundTrip {
  vcpu: string;
  msr: string;
  saved: string | null;
  restored: string | null;
  readBack: string | null;
}

const TIME_VARYING = new Set<number>([M.MSR_IA32_TSC]);
/** MSRs a VMM saves through KVM_GET_SREGS (apic_base, efer). */
const IN_SREGS = new Set<number>([M.MSR_IA32_APICBASE, M.MSR_EFER]);

export function roundTrip(save: Map<string, VcpuTraffic>, restore: Map<string, VcpuTraffic>, reach: GuestReach, sregsRecorded: boolean): { findings: Finding[]; rows: RoundTrip[] } {
  const findings: Finding[] = [];
  const rows: RoundTrip[] = [];
  const keys = new Set([...save.keys(), ...restore.keys()]);
  for (const key of keys) {
    const s = save.get(key)?.saved ?? new Map<number, { data: bigint }>();
    const rs = new Map(restore.get(key)?.written ?? []);
    // A VM-wide MSR written on another vCPU of the same VM is restored for this one too.
    const vm = key.split('/')[0]!;
    for (const [other, t] of restore) {
      if (other === key || other.split('/')[0] !== vm) continue;
      for (const [i, w] of t.written) if (isVmWide(i) && !rs.has(i)) rs.set(i, w);
    }
    // The restore's reads after its first write are its read-back.
    const rb = restore.get(key)?.readBack ?? new Map<number, { data: bigint }>();
    for (const i of new Set([...s.keys(), ...rs.keys()])) {
      const sv = s.get(i)?.data;
      const rv = rs.get(i)?.data;
      const bv = rv === undefined ? undefined : rb.get(i)?.data;
      rows.push({ vcpu: key, msr: msrLabel(i), saved: sv === undefined ? null : hex(sv), restored: rv === undefined ? null : hex(rv), readBack: bv === undefined ? null : hex(bv) });
      const lost = (f: Finding): Finding => (reach.hidden(key, i) ? { ...f, severity: 'info', message: `${f.message}; the guest can neither read nor write it on this vCPU model, so it cannot tell` } : f);
      const base = { vcpu: key, msr: msrLabel(i) };
      if (sv !== undefined && rv === undefined) findings.push(lost({ ...base, severity: 'error', kind: 'not-restored', message: `${msrLabel(i)} was saved as ${hex(sv)} but never restored` }));
      else if (sv === undefined && rv !== undefined) findings.push(restoredNotSaved(key, i, rv, reach, sregsRecorded));
      else if (sv !== undefined && rv !== undefined && sv !== rv && !TIME_VARYING.has(i)) findings.push(lost({ ...base, severity: 'error', kind: 'restored-different', message: `${msrLabel(i)} was saved as ${hex(sv)} but restored as ${hex(rv)}` }));
      // MSRs that move with time read back moved (VP_RUNTIME counts the task's CPU time).
      if (rv !== undefined && bv !== undefined && rv !== bv && !MOVING_MSRS.has(i)) findings.push(lost({ ...base, severity: 'error', kind: 'read-back-different', message: `${msrLabel(i)} was restored as ${hex(rv)} but reads back ${hex(bv)}` }));
    }
  }
  return { findings, rows };
}

function restoredNotSaved(key: string, i: number, rv: bigint, reach: GuestReach, sregsRecorded: boolean): Finding {
  const base = { kind: 'restored-not-saved' as const, vcpu: key, msr: msrLabel(i) };
  if (IN_SREGS.has(i)) return { ...base, severity: 'info', message: `${msrLabel(i)} was restored (${hex(rv)}) by KVM_SET_MSRS but not read by KVM_GET_MSRS: VMMs save it in KVM_GET_SREGS${sregsRecorded ? '' : ', which this capture does not record'}` };
  if (!reach.canChange(key, i)) return { ...base, severity: 'info', message: `${msrLabel(i)} was restored (${hex(rv)}) but not saved; the guest cannot change it, so the VMM sets it from its CPU model` };
  return { ...base, severity: 'warning', message: `${msrLabel(i)} was restored (${hex(rv)}) but not saved` };
}
