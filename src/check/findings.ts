// What `kvmsr check` reports: findings, each at a level, on one vCPU (or the VM, or the system
// fd), about one MSR where there is one, with the kernel rule or function that decides it.
export type Severity = 'error' | 'warning' | 'info';

export type FindingKind =
  // A KVM_GET/SET_MSRS that stopped at an entry, and what the VMM did next.
  | 'partial'
  // A KVM_GET_MSRS that failed whole (E2BIG, EFAULT, a wrong fd) or stopped early, whose values were lost.
  | 'failed-save'
  // MSRs off the host's lists.
  | 'unlisted'
  // State the VMM or the guest set on the vCPU that the save never read.
  | 'not-saved'
  // The round trip, MSR by MSR.
  | 'not-restored'
  | 'restored-different'
  | 'restored-not-saved'
  | 'read-back-different'
  // An MSR whose outcome the restore's order changes.
  | 'restore-order'
  // Time.
  | 'tsc-unsynchronized'
  | 'tsc-restored-twice'
  | 'kvmclock-not-restored'
  | 'deadline-lost'
  // The restore on another host (`--on`).
  | 'destination-refused'
  | 'destination-changed'
  | 'destination-unlisted';

export interface Finding {
  severity: Severity;
  kind: FindingKind;
  /** "vm3/vcpu0", "vm3" or "system". */
  vcpu: string;
  msr?: string;
  message: string;
  /** The kernel function (or kvmsr's versioned rule) that decides it, where there is one. */
  rule?: string;
}

export const hex = (v: bigint | number): string => '0x' + v.toString(16);

const RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 };
export const bySeverity = (x: Finding, y: Finding): number => RANK[x.severity] - RANK[y.severity];

/** "0x200-0x20f, 0x250, 0x400-0x427": sorted indices as runs. */
export function indexRanges(indices: Iterable<number>): string {
  const s = [...new Set(indices)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    out.push(j > i ? `${hex(s[i]!)}-${hex(s[j]!)}` : hex(s[i]!));
    i = j + 1;
  }
  return out.join(', ');
}
