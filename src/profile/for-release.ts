// `--kernel RELEASE`: a host profile for a release nobody captured. The nearest captured built-in
// profile of the vendor module stands in for the host (its CPU, capabilities, measured rules), the
// release's rules follow from its number (kvm/x86/rules.ts), and the index list moves by the
// entries of kvm/x86/index-list.ts. What could not be carried over is said in `notes`.
import { compareRelease, formatRelease, parseRelease, ruleHolds, seriesOf, type Release } from '../kvm/x86/release.js';
import { LISTED_BY_RELEASE } from '../kvm/x86/index-list.js';
import { revalidated, type HostProfile, type VendorModule } from '../kvm/profile.js';
import { BUILTIN_PROFILES, builtinProfile, PROFILE_ALIASES, type BuiltinProfileName } from '../profiles.js';

export interface ReleaseProfile {
  profile: HostProfile;
  /** The profile it was made from (a built-in's name, or what the caller called it). */
  from: string;
  /** One line each: what was chosen and what was derived. */
  notes: string[];
}

/** Distance between releases: another series counts more than any sublevel. */
function distance(a: Release, b: Release): number {
  const series = Math.abs(a.major * 100 + a.minor - (b.major * 100 + b.minor));
  return series * 100000 + Math.abs(a.sublevel - b.sublevel);
}

/** The captured built-in profiles of a vendor module, nearest to `release` first. */
export function nearestCaptured(release: Release, vendor: VendorModule): BuiltinProfileName[] {
  const names = (Object.keys(BUILTIN_PROFILES) as BuiltinProfileName[]).filter((n) => {
    const p = builtinProfile(n);
    return p.source === 'capture' && p.host.vendorModule === vendor && parseRelease(p.host.kernel) !== undefined;
  });
  const rel = (n: BuiltinProfileName): Release => parseRelease(builtinProfile(n).host.kernel)!;
  // Nearest first; at equal distance the newer release (a later sublevel carries more backports),
  // then the one a `builtin:` alias recommends, then the later capture.
  const aliased = new Set(Object.values(PROFILE_ALIASES));
  const at = (n: BuiltinProfileName): string => builtinProfile(n).host.capturedAt;
  return names.sort(
    (x, y) =>
      distance(rel(x), release) - distance(rel(y), release) ||
      compareRelease(rel(y), rel(x)) ||
      Number(aliased.has(y)) - Number(aliased.has(x)) ||
      at(y).localeCompare(at(x)),
  );
}

/** The profile for `release` on `vendor`'s nearest captured host. Throws on an unreadable release or no capture. */
export function profileForRelease(releaseText: string, vendor: VendorModule): ReleaseProfile {
  const release = parseRelease(releaseText);
  if (!release) throw new Error(`--kernel ${releaseText}: not a kernel release (expected e.g. 6.1.192 or 6.12.118)`);
  const [from] = nearestCaptured(release, vendor);
  if (!from) throw new Error(`--kernel ${releaseText}: no captured built-in profile of ${vendor}`);
  return deriveForRelease(builtinProfile(from), from, releaseText);
}

/**
 * `base` (a captured profile: a built-in, or the one a capture embeds) answering as `releaseText`:
 * the release's rules, and its index list moved by index-list.ts.
 */
export function deriveForRelease(base: HostProfile, from: string, releaseText: string): ReleaseProfile {
  const release = parseRelease(releaseText);
  if (!release) throw new Error(`--kernel ${releaseText}: not a kernel release (expected e.g. 6.1.192 or 6.12.118)`);
  const vendor = base.host.vendorModule;
  const baseRelease = parseRelease(base.host.kernel)!;
  const notes: string[] = [];
  const exact = compareRelease(baseRelease, release) === 0;
  notes.push(
    exact
      ? `kernel ${releaseText}: the captured profile ${from} (${base.host.vendorModule} ${base.host.kernel})`
      : `kernel ${releaseText}: no ${vendor} capture of it; answering with the nearest captured profile ${from} (${base.host.kernel}, ${base.host.cpuModel}) and the rules of ${formatRelease(release)}`,
  );
  if (seriesOf(baseRelease) !== seriesOf(release)) {
    notes.push(`kernel ${releaseText}: the nearest capture is of another series (${seriesOf(baseRelease)}): what its host measured (reset values, measured rules) may not hold on ${seriesOf(release)}`);
  }
  let list = [...base.msrIndexList];
  for (const e of LISTED_BY_RELEASE) {
    const had = ruleHolds(e.rule.where, baseRelease);
    const has = ruleHolds(e.rule.where, release);
    if (had === has) continue;
    if (had && !has) {
      const before = list.length;
      list = list.filter((i) => !e.msrs.includes(i));
      if (list.length !== before) notes.push(`kernel ${releaseText}: index list without ${e.msrs.map(hex).join(', ')} (${e.rule.id})`);
    } else if (e.hostHas(base) && !e.msrs.some((i) => list.includes(i))) {
      const at = list.indexOf(e.after);
      list.splice(at < 0 ? list.length : at + 1, 0, ...e.msrs);
      notes.push(`kernel ${releaseText}: index list with ${e.msrs.map(hex).join(', ')} (${e.rule.id}; their place in the list is assumed)`);
    }
  }
  const profile = revalidated({
    ...base,
    source: 'derived',
    notes: `Derived by --kernel ${releaseText} from the captured profile ${from}. ${notes.slice(1).join(' ')}`.trim(),
    host: { ...base.host, kernel: releaseText },
    msrIndexList: list,
  }, `--kernel ${releaseText}`);
  return { profile, from, notes };
}

const hex = (i: number): string => '0x' + i.toString(16);
