// Saved against set: every MSR the VMM wrote on a vCPU, or the guest can change on that vCPU
// model, that the save never read. Listed or not: KVM_GET_MSR_INDEX_LIST never lists the MTRRs
// (kvm_mtrr_get_msr) or the MCE banks (KVM_X86_SETUP_MCE), and a save built from the list alone
// loses them (cloud-hypervisor #7944, firecracker #3150).
import { msrLabel, msrName } from '../abi/msr-names.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { hex, indexRanges, type Finding } from './findings.js';
import type { GuestReach } from './guest-reach.js';
import { vcpuModel } from './cpuid-model.js';
import { ALIASES, familyIndices, familyOf, isVmWide } from './msr-families.js';
import { vcpuKey } from './machine.js';
import type { VcpuTraffic } from './msr-traffic.js';

export interface Coverage {
  vcpu: string;
  listed: number;
  saved: number;
  missing: string[];
}

export interface SavedVsSetInput {
  save: ParsedCapture;
  traffic: Map<string, VcpuTraffic>;
  /** What the restore wrote, per vCPU key (to see a VMM that sets an unsaved MSR again itself). */
  restoreWrites?: Map<string, VcpuTraffic>;
  listed: ReadonlySet<number>;
  features: ReadonlySet<number>;
  reach: GuestReach;
}

export function savedVsSet(x: SavedVsSetInput): { findings: Finding[]; coverage: Coverage[] } {
  const findings: Finding[] = [];
  const coverage: Coverage[] = [];
  for (const [key, t] of x.traffic) {
    // Only vCPUs the VMM saved: a capture of a restore alone has nothing to judge here.
    if (t.saved.size === 0) continue;
    const model = vcpuModel(x.save.records, key, (r: CaptureRecord) => vcpuKey(r));
    const vm = key.split('/')[0]!;
    const savedHere = (i: number): boolean =>
      t.saved.has(i) || (isVmWide(i) && [...x.traffic].some(([k, o]) => k.split('/')[0] === vm && o.saved.has(i)));
    const isSaved = (i: number): boolean => savedHere(i) || (ALIASES.has(i) && savedHere(ALIASES.get(i)!));
    const candidates = new Set<number>([...x.listed, ...familyIndices(model.banks), ...t.written.keys()]);
    const missing = [...x.listed].filter((i) => !isSaved(i));
    coverage.push({ vcpu: key, listed: x.listed.size, saved: x.listed.size - missing.length, missing: missing.map(msrLabel) });
    const fixed: number[] = [];
    for (const i of [...candidates].sort((a, b) => a - b)) {
      if (isSaved(i) || (x.features.has(i) && !x.listed.has(i))) continue;
      const fam = familyOf(i, model.banks);
      const wrote = t.written.get(i);
      const reset = x.reach.resetValue(key, i);
      const vmmSet = wrote !== undefined && reset !== null && wrote.data !== reset;
      if (wrote === undefined && !x.listed.has(i) && reset === null) continue; // not there on this vCPU model
      const told = fam !== undefined && fam.advertised(model.cpuid, i);
      // The unlisted families count where the vCPU model has them (its CPUID tells the guest).
      if (!vmmSet && !x.listed.has(i) && !told) continue;
      const guest = x.reach.canChange(key, i);
      const rule = fam?.kernel ?? 'kvm_set_msr_common';
      const where = x.listed.has(i) ? "is on the host's list" : fam ? `is not on the host's list (${fam.name}: KVM keeps them, KVM_GET_MSR_INDEX_LIST never lists them)` : "is not on the host's list";
      if (vmmSet) {
        const again = x.restoreWrites?.get(key)?.written.get(i);
        if (again !== undefined && again.data === wrote.data) continue; // the restore sets it from the VMM's model
        findings.push({
          // The guest cannot change it: the VMM may set it again from its CPU model, as QEMU does
          // ARCH_CAPABILITIES; only a restore capture that does not shows it lost.
          severity: guest || x.restoreWrites !== undefined ? 'error' : 'warning',
          kind: 'not-saved',
          vcpu: key,
          msr: msrLabel(i),
          rule,
          message: `${msrLabel(i)} ${where}; the capture shows it set to ${hex(wrote.data)} (seq ${wrote.seq}, reset value ${hex(reset)}) but the save never read it, so ${x.restoreWrites ? (again === undefined ? 'the restore, which never writes it, loses it' : `the restore writes ${hex(again.data)} instead`) : 'a restore loses it unless the VMM sets it again itself'}`,
        });
      } else if (guest) {
        findings.push({
          severity: told ? fam!.level : 'warning',
          kind: 'not-saved',
          vcpu: key,
          msr: msrLabel(i),
          rule,
          message: told
            ? `${msrLabel(i)} ${where}; this vCPU model offers ${fam!.name === msrName(i) ? 'it' : fam!.name} to the guest and its WRMSR changes it, but the save never read it`
            : `${msrLabel(i)} ${where} and the guest can change it on this vCPU model, but the save never read it`,
        });
      } else if (x.listed.has(i)) fixed.push(i);
    }
    if (fixed.length > 0) {
      findings.push({
        severity: 'info',
        kind: 'not-saved',
        vcpu: key,
        msr: fixed.map(msrLabel).join(', '),
        message: `${fixed.length} listed MSRs were not saved, but the guest cannot change them on this vCPU model (its WRMSR is refused or changes nothing), so nothing is lost: ${fixed.map(msrLabel).join(', ')}`,
      });
    }
    // MSRs off the lists: accepted ones are fine (MTRRs, MCE banks); never accepted ones are suspect.
    const handled: number[] = [];
    for (const i of t.touched) {
      if (x.listed.has(i) || x.features.has(i)) continue;
      if (t.accepted.has(i)) handled.push(i);
      else findings.push({ severity: 'warning', kind: 'unlisted', vcpu: key, msr: msrLabel(i), message: `${msrLabel(i)} is read or written but the host lists it neither in KVM_GET_MSR_INDEX_LIST nor in the feature list, and never accepted it` });
    }
    if (handled.length > 0) {
      findings.push({ severity: 'info', kind: 'unlisted', vcpu: key, msr: indexRanges(handled), message: `${handled.length} MSRs are not on the host's lists but KVM accepted every access to them (${indexRanges(handled)})` });
    }
  }
  return { findings, coverage };
}
