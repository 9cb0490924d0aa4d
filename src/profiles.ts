// The built-in host profiles.
import pvmAmdEpyc from './profiles/pvm-amd-epyc-6.18.json' with { type: 'json' };
import svmAmd from './profiles/svm-amd-derived.json' with { type: 'json' };
import vmxIntel from './profiles/vmx-intel-derived.json' with { type: 'json' };
import kvmAmdTcg from './profiles/kvm-amd-6.12-qemu-tcg.json' with { type: 'json' };
import { parseProfile, type HostProfile } from './kvm/profile.js';

export const BUILTIN_PROFILES = {
  'pvm-amd-epyc-6.18': pvmAmdEpyc,
  'svm-amd-derived': svmAmd,
  'vmx-intel-derived': vmxIntel,
  'kvm-amd-6.12-qemu-tcg': kvmAmdTcg,
} as const;
export type BuiltinProfileName = keyof typeof BUILTIN_PROFILES;
export const DEFAULT_PROFILE_NAME: BuiltinProfileName = 'pvm-amd-epyc-6.18';

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
