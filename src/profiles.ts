// The built-in host profiles. A captured profile is named after its host; a derived one (written
// from the kernel source and the reference spec, with no host to capture) keeps "derived" in its name.
import pvmAmd669 from './profiles/pvm-amd-epyc-6.18.44-v669.json' with { type: 'json' };
import pvmAmd1045 from './profiles/pvm-amd-epyc-6.18.44-v1045.json' with { type: 'json' };
import pvmIntel669 from './profiles/pvm-intel-6.18.44-v669.json' with { type: 'json' };
import pvmAmd1300 from './profiles/pvm-amd-epyc-6.18.44-v1300.json' with { type: 'json' };
import pvmIntel1272 from './profiles/pvm-intel-6.18.44-v1272.json' with { type: 'json' };
import pvmAmd782Derived from './profiles/pvm-amd-epyc-6.18.44-v782-derived.json' with { type: 'json' };
import svmAmd from './profiles/svm-amd-derived.json' with { type: 'json' };
import vmxIntel from './profiles/vmx-intel-derived.json' with { type: 'json' };
import kvmAmdTcg from './profiles/kvm-amd-6.12-qemu-tcg.json' with { type: 'json' };
import kvmAmdDistroTcg from './profiles/kvm-amd-6.12-distro-qemu-tcg.json' with { type: 'json' };
import kvmIntelDistroBochs from './profiles/kvm-intel-6.12-distro-bochs-skx.json' with { type: 'json' };
import kvmAmd61DistroTcg from './profiles/kvm-amd-6.1-distro-qemu-tcg.json' with { type: 'json' };
import kvmIntel61DistroBochs from './profiles/kvm-intel-6.1-distro-bochs-skx.json' with { type: 'json' };
import { parseProfile, type HostProfile } from './kvm/profile.js';
import type { StatsLayout } from './kvm/state/binary-stats.js';
import { releaseOf, seriesOf } from './kvm/x86/release.js';

export const BUILTIN_PROFILES = {
  'pvm-amd-epyc-6.18.44-v669': pvmAmd669,
  'pvm-amd-epyc-6.18.44-v1045': pvmAmd1045,
  'pvm-intel-6.18.44-v669': pvmIntel669,
  'pvm-amd-epyc-6.18.44-v1300': pvmAmd1300,
  'pvm-intel-6.18.44-v1272': pvmIntel1272,
  'pvm-amd-epyc-6.18.44-v782-derived': pvmAmd782Derived,
  'svm-amd-derived': svmAmd,
  'vmx-intel-derived': vmxIntel,
  'kvm-amd-6.12-qemu-tcg': kvmAmdTcg,
  'kvm-amd-6.12-distro-qemu-tcg': kvmAmdDistroTcg,
  'kvm-intel-6.12-distro-bochs-skx': kvmIntelDistroBochs,
  'kvm-intel-6.1-distro-bochs-skx': kvmIntel61DistroBochs,
  'kvm-amd-6.1-distro-qemu-tcg': kvmAmd61DistroTcg,
} as const;
export type BuiltinProfileName = keyof typeof BUILTIN_PROFILES;

/** Where each built-in was captured (or what it was derived from), for `kvmsr profile list`. */
export const BUILTIN_ORIGIN: Readonly<Record<BuiltinProfileName, string>> = {
  'pvm-amd-epyc-6.18.44-v669': 'a project development host (kvm_pvm v669 on AMD EPYC, itself a PVM guest), 2026-12-01',
  'pvm-amd-epyc-6.18.44-v1045': 'a project development host (kvm_pvm v1045 on AMD EPYC), harvest seed 90210, 2026-12-02',
  'pvm-intel-6.18.44-v669': 'a project host (kvm_pvm v669 on Intel Xeon, Sapphire Rapids class), 2026-12-01',
  'pvm-amd-epyc-6.18.44-v1300': 'a project host (kvm_pvm v1300 on AMD EPYC), harvest seed 777001, 2026-12-07 (../shared/live)',
  'pvm-intel-6.18.44-v1272': 'a development machine (kvm_pvm v1272 on Intel Xeon @ 2.80GHz), harvest seed 127204 with pair probes, 2026-12-07',
  'pvm-amd-epyc-6.18.44-v782-derived': 'derived from ../shared/reference/vendor-msr-spec.md Appendix A (no /dev/kvm in that session)',
  'svm-amd-derived': 'derived from vendor-msr-spec.md and linux-source-6.12 for an EPYC 9004 (no kvm_amd host)',
  'vmx-intel-derived': 'derived from vendor-msr-spec.md and linux-source-6.12 for a Sapphire Rapids server (no kvm_intel host)',
  'kvm-amd-6.12-qemu-tcg': "Debian's 6.12.117 (KVM_HYPERV=n) under QEMU 7.2 TCG, -cpu max (scripts/kvm-amd-oracle.sh), 2026-11-30",
  'kvm-amd-6.12-distro-qemu-tcg': "Debian's 6.12.117 built as Debian builds KVM, under QEMU 7.2 TCG (scripts/kvm-amd-oracle.sh), harvest seed 1, 2026-12-02",
  'kvm-intel-6.12-distro-bochs-skx': "Debian's 6.12.117 built as Debian builds KVM, under Bochs 2.7 corei7_skylake_x (scripts/kvm-intel-oracle.sh), harvest seed 1, 2026-12-02",
  'kvm-amd-6.1-distro-qemu-tcg': "Debian's 6.1.192 built as Debian builds KVM, under QEMU 7.2 TCG (ORACLE_KERNEL=6.1 scripts/kvm-amd-oracle.sh), harvest seed 610006, 2026-12-07",
  'kvm-intel-6.1-distro-bochs-skx': "Debian's 6.1.192 built as Debian builds KVM, under Bochs 2.7 corei7_skylake_x (ORACLE_KERNEL=6.1 scripts/kvm-intel-oracle.sh), harvest seed 610004, 2026-12-07",
};
/**
 * The default: a capture of the project's own development host (kvm_pvm 6.18.44 on AMD EPYC), the
 * host most kvmsr runs meet, measured rather than derived.
 */
export const DEFAULT_PROFILE_NAME: BuiltinProfileName = 'pvm-amd-epyc-6.18.44-v669';
/**
 * The profile a user picks for a kvm_intel host: captured live (kvm_intel nested under Bochs's VMX,
 * scripts/kvm-intel-oracle.sh), in place of the source-derived `vmx-intel-derived`.
 */
export const INTEL_PROFILE_NAME: BuiltinProfileName = 'kvm-intel-6.12-distro-bochs-skx';
/** Short names for the profile a user picks per vendor module (`--profile builtin:intel`). */
export const PROFILE_ALIASES: Readonly<Record<string, BuiltinProfileName>> = {
  intel: INTEL_PROFILE_NAME,
  amd: 'kvm-amd-6.12-distro-qemu-tcg',
  pvm: DEFAULT_PROFILE_NAME,
};
/** A built-in profile's name, or an alias of one; undefined for neither. */
export function resolveBuiltinName(name: string): BuiltinProfileName | undefined {
  if (name in BUILTIN_PROFILES) return name as BuiltinProfileName;
  return PROFILE_ALIASES[name];
}

const cache = new Map<string, HostProfile>();
/** A built-in profile, parsed and validated once. */
export function builtinProfile(name: BuiltinProfileName): HostProfile {
  let p = cache.get(name);
  if (!p) {
    p = parseProfile(BUILTIN_PROFILES[name], `builtin:${name}`);
    cache.set(name, p);
  }
  return p;
}
export function defaultProfile(): HostProfile {
  return builtinProfile(DEFAULT_PROFILE_NAME);
}

/**
 * The binary stats layout KVM_GET_STATS_FD serves for a profile: its own (`binaryStats`), else the
 * one a built-in of the same kernel series captured. x86's statistics are the release's, not the
 * vendor's or the host's: the kvm_amd and kvm_intel oracles gave the same files on 6.1.192 and on
 * 6.12.118. `from` names the built-in borrowed from (undefined for the profile's own).
 */
export function statsLayoutFor(p: HostProfile): { layout: StatsLayout; from?: string } | undefined {
  if (p.binaryStats) return { layout: p.binaryStats };
  const series = seriesOf(releaseOf(p.host.kernel));
  for (const name of Object.keys(BUILTIN_PROFILES) as BuiltinProfileName[]) {
    const b = builtinProfile(name);
    if (b.binaryStats && seriesOf(releaseOf(b.host.kernel)) === series) return { layout: b.binaryStats, from: name };
  }
  return undefined;
}
