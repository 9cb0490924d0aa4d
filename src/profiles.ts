// The built-in host profiles. A captured profile is named after its host; a derived one (written
// from the kernel source and the reference spec, with no host to capture) keeps "derived" in its name.
import pvmAmd669 from './profiles/pvm-amd-epyc-6.18.44-v669.json' with { type: 'json' };
import pvmAmd1045 from './profiles/pvm-amd-epyc-6.18.44-v1045.json' with { type: 'json' };
import pvmIntel669 from './profiles/pvm-intel-6.18.44-v669.json' with { type: 'json' };
import pvmAmd782Derived from './profiles/pvm-amd-epyc-6.18.44-v782-derived.json' with { type: 'json' };
import svmAmd from './profiles/svm-amd-derived.json' with { type: 'json' };
import vmxIntel from './profiles/vmx-intel-derived.json' with { type: 'json' };
import kvmAmdTcg from './profiles/kvm-amd-6.12-qemu-tcg.json' with { type: 'json' };
import kvmAmdDistroTcg from './profiles/kvm-amd-6.12-distro-qemu-tcg.json' with { type: 'json' };
import kvmIntelDistroBochs from './profiles/kvm-intel-6.12-distro-bochs-skx.json' with { type: 'json' };
import { parseProfile, type HostProfile } from './kvm/profile.js';

export const BUILTIN_PROFILES = {
  'pvm-amd-epyc-6.18.44-v669': pvmAmd669,
  'pvm-amd-epyc-6.18.44-v1045': pvmAmd1045,
  'pvm-intel-6.18.44-v669': pvmIntel669,
  'pvm-amd-epyc-6.18.44-v782-derived': pvmAmd782Derived,
  'svm-amd-derived': svmAmd,
  'vmx-intel-derived': vmxIntel,
  'kvm-amd-6.12-qemu-tcg': kvmAmdTcg,
  'kvm-amd-6.12-distro-qemu-tcg': kvmAmdDistroTcg,
  'kvm-intel-6.12-distro-bochs-skx': kvmIntelDistroBochs,
} as const;
export type BuiltinProfileName = keyof typeof BUILTIN_PROFILES;
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
