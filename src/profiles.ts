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
} as const;
export type BuiltinProfileName = keyof typeof BUILTIN_PROFILES;
/**
 * The default: a capture of the project's own development host (kvm_pvm 6.18.44 on AMD EPYC), the
 * host most kvmsr runs meet, measured rather than derived.
 */
export const DEFAULT_PROFILE_NAME: BuiltinProfileName = 'pvm-amd-epyc-6.18.44-v669';

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
