// `kvmsr check`: the MSR save/restore mistakes a VMM's own traffic shows, by class, each finding
// with the kernel rule behind it. From a save capture (and optionally a restore capture):
//   - saved against set (saved-vs-set.ts): state the VMM or the guest set that the save never read;
//   - failed and partial batches (failed-batches.ts) and what the VMM did next;
//   - the round trip, MSR by MSR (round-trip.ts);
//   - the restore's order, replayed with the state ioctls that order it (restore-order.ts);
//   - time: TSC synchronization, kvmclock, the TSC-deadline timer (time.ts);
//   - with a destination, the restore on another host or kernel (destination.ts).
import { decodeMsrList } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { Kvm } from '../kvm/kvm.js';
import { parseProfile, type HostProfile } from '../kvm/profile.js';
import { defaultProfile } from '../profiles.js';
import type { ParsedCapture } from '../capture/format.js';
import { recordsStateGetters } from '../capture/extents.js';
import { onDestination } from './destination.js';
import { failedBatches } from './failed-batches.js';
import { bySeverity, type Finding } from './findings.js';
import { GuestReach } from './guest-reach.js';
import { msrTraffic } from './msr-traffic.js';
import { restoreOrder } from './restore-order.js';
import { roundTrip, type RoundTrip } from './round-trip.js';
import { savedVsSet, type Coverage } from './saved-vs-set.js';
import { timeChecks } from './time.js';

export type { Finding, FindingKind, Severity } from './findings.js';
export type { RoundTrip } from './round-trip.js';

export interface CheckReport {
  findings: Finding[];
  coverage: Coverage[];
  roundTrip: RoundTrip[];
  notes: string[];
  /** The host the restore was played on with --on, when one was given. */
  destination?: { vendorModule: string; kernel: string; cpuModel: string };
}

export interface CheckOptions {
  /** The source host (default: the save capture's embedded profile, else kvmsr's default). */
  profile?: HostProfile;
  /** Play the restore on this host too, and report what it would refuse, change or not list. */
  destination?: HostProfile;
}

export function checkCaptures(save: ParsedCapture, restore?: ParsedCapture, opts: CheckOptions | HostProfile = {}): CheckReport {
  const o: CheckOptions = 'host' in opts ? { profile: opts } : opts;
  const profile = o.profile ?? (save.header.profile !== undefined ? parseProfile(save.header.profile, 'save capture profile') : defaultProfile());
  const restoreProfile = restore?.header.profile !== undefined && o.profile === undefined ? parseProfile(restore.header.profile, 'restore capture profile') : profile;
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
  const vm = kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
  const scratchVcpu = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  const reach = new GuestReach(profile, save);
  const traffic = msrTraffic(save);
  const restoreTraffic = restore ? msrTraffic(restore) : undefined;

  findings.push(...failedBatches({ which: 'save', capture: save, traffic, ...(restoreTraffic ? { restoreTraffic } : {}), kvm, scratchVcpu, reach }));
  if (restore) findings.push(...failedBatches({ which: 'restore', capture: restore, traffic, ...(restoreTraffic ? { restoreTraffic } : {}), kvm, scratchVcpu, reach }));

  const sv = savedVsSet({ save, traffic, ...(restoreTraffic ? { restoreWrites: restoreTraffic } : {}), listed, features, reach });
  findings.push(...sv.findings);

  let rows: RoundTrip[] = [];
  if (restore && restoreTraffic) {
    const rt = roundTrip(traffic, restoreTraffic, reach, recordsStateGetters(save.header));
    findings.push(...rt.findings);
    rows = rt.rows;
    notes.push('IA32_TSC moves with time: its saved and restored values are not compared');
    const order = restoreOrder(restore, restoreProfile);
    findings.push(...order.findings);
    notes.push(...order.notes);
  }
  const time = timeChecks(save, traffic, restore, restoreProfile);
  findings.push(...time.findings);
  notes.push(...time.notes);

  const report: CheckReport = { findings, coverage: sv.coverage, roundTrip: rows, notes };
  if (o.destination) {
    const d = onDestination(save, traffic, restore, o.destination);
    findings.push(...d.findings);
    notes.push(...d.notes);
    report.destination = { vendorModule: o.destination.host.vendorModule, kernel: o.destination.host.kernel, cpuModel: o.destination.host.cpuModel };
  }
  findings.sort(bySeverity);
  return report;
}
