// `kvmsr profile capture`: records what the running host's KVM lists, reports and resets to, and
// the MSR rules only a measurement tells. It runs the profile and rule cases of a harvest plan
// (harvest/plan.ts) through kvmsr-probe on this machine's /dev/kvm and builds the profile from the
// answers exactly as `kvmsr harvest judge` does (from-answers.ts), so the two give the same profile.
import type { HostProfile } from '../kvm/profile.js';
import { profileCases, ruleCases } from '../harvest/plan.js';
import { probeCases } from '../harvest/probe-runner.js';
import { profileFromAnswers } from './from-answers.js';

export class CaptureError extends Error {}

/** The cases a capture runs: a subset of every harvest plan. */
export function captureCases(): ReturnType<typeof profileCases> {
  return [...profileCases(), ...ruleCases()];
}

/** Captures the host's profile through the real /dev/kvm (needs kvmsr-probe, built by `npm ci`). */
export function captureProfile(opts: { jobs?: number } = {}): HostProfile {
  try {
    const cases = captureCases();
    return profileFromAnswers(cases, probeCases(cases, opts.jobs ?? 2));
  } catch (e) {
    throw new CaptureError(`profile capture: ${(e as Error).message}`);
  }
}
