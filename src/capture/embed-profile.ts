// `kvmsr record` embeds the host's profile in the capture header once the recorded command has
// ended, so that `kvmsr replay` runs on the host the capture came from without being told.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { HostProfile } from '../kvm/profile.js';
import { profileToJson } from '../kvm/profile.js';
import { parseHeader } from './format.js';

/**
 * Rewrites `file`'s header line with `profile` embedded; the records are kept byte for byte. The new
 * file is written beside the old one and renamed over it, so a failure leaves the capture as it was.
 * Returns false when there is nothing to embed into (no file, or an empty one).
 */
export function embedProfile(file: string, profile: HostProfile, opts: { capturedHere?: boolean } = {}): boolean {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return false;
  }
  const nl = text.indexOf('\n');
  if (nl <= 0) return false;
  const header = parseHeader(text.slice(0, nl), file);
  header.profile = profileToJson(profile);
  // The recorder names the first vendor module under /sys/module; a kernel may build kvm_intel and
  // kvm_amd both in, and a profile captured on the same host tells the active one from what KVM answered.
  if (opts.capturedHere === true) header.vendorModule = profile.host.vendorModule;
  const tmp = `${file}.embedding`;
  writeFileSync(tmp, JSON.stringify(header) + text.slice(nl));
  renameSync(tmp, file);
  return true;
}
