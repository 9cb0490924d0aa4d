// The profile a command runs on: `--profile FILE|builtin:NAME` and `--kernel RELEASE`, which
// answers as that release with the nearest captured built-in of the vendor module (saying so on
// stderr). Shared by list, get, run, replay and check.
import { readFileSync } from 'node:fs';
import { parseProfile, VENDOR_MODULES, type HostProfile, type VendorModule } from '../kvm/profile.js';
import { deriveForRelease, profileForRelease } from '../profile/for-release.js';
import { BUILTIN_PROFILES, builtinProfile, defaultProfile, PROFILE_ALIASES, resolveBuiltinName } from '../profiles.js';
import { CliError } from './common.js';

export const PROFILE_HELP = 'a host profile file, or builtin:NAME (`kvmsr profile list`; default: builtin:pvm-amd-epyc-6.18.44-v669)';
export const KERNEL_HELP =
  'answer as this kernel release (6.1.192, 6.12.118, 6.18.44): the nearest captured built-in profile of the vendor module (of --profile, else kvm_amd), with the rules of that release';

export function loadProfile(file: string | undefined): HostProfile {
  if (!file) return defaultProfile();
  if (file.startsWith('builtin:')) {
    const name = resolveBuiltinName(file.slice('builtin:'.length));
    if (!name) {
      const known = [...Object.keys(BUILTIN_PROFILES), ...Object.keys(PROFILE_ALIASES)];
      throw new CliError(`no built-in profile '${file.slice('builtin:'.length)}' (there are: ${known.join(', ')})`);
    }
    return builtinProfile(name);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read profile ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CliError(`${file}: not JSON: ${(e as Error).message}`);
  }
  return parseProfile(json, file);
}

export interface ProfileOptions {
  profile?: string;
  kernel?: string;
}

/**
 * The profile for a command's --profile and --kernel; undefined where neither is given and the
 * command has a default of its own (a capture's embedded profile). `vendorHint`: the vendor module
 * to take when --profile does not name one (a capture header's).
 */
export function profileFromOptions(o: ProfileOptions, vendorHint?: string, embedded?: HostProfile): HostProfile | undefined {
  if (o.kernel === undefined) return o.profile !== undefined ? loadProfile(o.profile) : undefined;
  const hint = VENDOR_MODULES.includes(vendorHint as VendorModule) ? (vendorHint as VendorModule) : undefined;
  const vendor: VendorModule = o.profile !== undefined ? loadProfile(o.profile).host.vendorModule : hint ?? 'kvm_amd';
  try {
    // A capture's own host is the nearest capture there is: its profile answers as the release.
    const r =
      o.profile === undefined && embedded !== undefined && embedded.source === 'capture'
        ? deriveForRelease(embedded, 'the capture header', o.kernel)
        : profileForRelease(o.kernel, vendor);
    for (const n of r.notes) process.stderr.write(`kvmsr: ${n}\n`);
    return r.profile;
  } catch (e) {
    throw new CliError((e as Error).message);
  }
}
