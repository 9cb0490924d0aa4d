// Kernel releases and the rules that belong to them. A rule that changed between releases says
// where it holds: from a mainline release on, and in a stable series from the sublevel a backport
// brought it to (the 6.12.y line took some 6.13+ changes at 6.12.85, say). A profile's release
// (`6.1.192`, `6.12.118`, `6.18.44-fc-v1300`) selects the rules; X86 reads each as a boolean.

/** A kernel release: major.minor.sublevel; a local suffix (`-fc-v1300`) does not count. */
export interface Release {
  major: number;
  minor: number;
  sublevel: number;
}

/** "6.12.118" -> {6, 12, 118}; "6.18.44-fc-v1300" -> {6, 18, 44}; "6.1" -> {6, 1, 0}. Undefined if unreadable. */
export function parseRelease(s: string): Release | undefined {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(s.trim());
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), sublevel: Number(m[3] ?? 0) };
}

/** The newest release whose rules kvmsr knows: an unreadable release counts as this one. */
export const NEWEST_KNOWN: Release = { major: 6, minor: 18, sublevel: 44 };

export function releaseOf(s: string): Release {
  return parseRelease(s) ?? NEWEST_KNOWN;
}

export function compareRelease(a: Release, b: Release): number {
  return a.major - b.major || a.minor - b.minor || a.sublevel - b.sublevel;
}

/** The series a release belongs to, "6.12". */
export function seriesOf(r: Release): string {
  return `${r.major}.${r.minor}`;
}

export function formatRelease(r: Release): string {
  return `${r.major}.${r.minor}.${r.sublevel}`;
}

/**
 * Where a rule holds: from `since` (a mainline release, "6.13") on, and in each stable series named
 * in `backports` from that sublevel ("6.12.85"); `until` (exclusive, mainline) ends it.
 */
export interface Holds {
  since?: string;
  backports?: readonly string[];
  until?: string;
}

/** A rule whose answer depends on the kernel release. */
export interface VersionedRule {
  /** A short id, unique across families ("pv-msrs.unsupported-without-cpuid"). */
  id: string;
  /** The MSR family's module ("pv", "tsc", "feature-msrs", ...). */
  family: string;
  /** The kernel function(s) that hold the rule. */
  kernel: string;
  /** What a VMM sees where the rule holds. */
  holds: string;
  /** What a VMM sees where it does not. */
  otherwise: string;
  where: Holds;
  /** What is known about where the change landed beyond `where` (a release not checked, say). */
  note?: string;
  /** Where the rule was confirmed live ("harvest kvm-amd-6.1.192-distro-qemu-tcg"), filled as harvests come in. */
  checkedLive?: readonly string[];
}

/** Whether a rule holds on a release. */
export function ruleHolds(where: Holds, r: Release): boolean {
  if (where.until !== undefined) {
    const u = releaseOf(where.until);
    if (compareRelease({ ...r, sublevel: 0 }, { ...u, sublevel: 0 }) >= 0) return false;
  }
  if (where.since === undefined) return true;
  const since = releaseOf(where.since);
  // A mainline release counts from its .0, whatever its sublevel.
  if (r.major > since.major || (r.major === since.major && r.minor >= since.minor)) return true;
  for (const b of where.backports ?? []) {
    const br = releaseOf(b);
    if (br.major === r.major && br.minor === r.minor && r.sublevel >= br.sublevel) return true;
  }
  return false;
}

/** Every versioned rule, registered by its family's module (for `kvmsr profile list --rules`, docs/profiles.md and tests). */
const REGISTRY = new Map<string, VersionedRule>();

/** Registers a family's rule; returns it so the module can keep a reference. */
export function versioned(rule: VersionedRule): VersionedRule {
  if (REGISTRY.has(rule.id)) throw new Error(`versioned rule ${rule.id} registered twice`);
  REGISTRY.set(rule.id, rule);
  return rule;
}

export function versionedRules(): VersionedRule[] {
  return [...REGISTRY.values()];
}

/** "since 6.13, backported to 6.12.85 and 6.1.170" */
export function describeHolds(where: Holds): string {
  const parts: string[] = [];
  if (where.since !== undefined) parts.push(`from ${where.since}`);
  if (where.backports?.length) parts.push(`backported to ${where.backports.join(', ')}`);
  if (where.until !== undefined) parts.push(`until ${where.until}`);
  return parts.length ? parts.join(', ') : 'always';
}
