// A disagreement as a file: one plan case (cut after the step that differs) and the host's answers
// to it, each in the harvest's own text form, so it replays on kvmsr alone as a regression case
// (test/conform-cases.test.ts) with the host's profile.
import type { HostProfile } from '../kvm/profile.js';
import { parseAnswers, parsePlan, writeAnswers, writePlan, type CaseAnswer, type PlanCase } from './format.js';
import { judgeAnswers, type JudgeReport } from './judge.js';

export const HARVEST_CASE_FORMAT = 'kvmsr-harvest-case';

/** The case up to and including step `upTo`, with the host's answers, as JSON. */
export function harvestCaseFile(c: PlanCase, host: CaseAnswer, upTo: number, profile: HostProfile, differences: string[] = []): Record<string, unknown> {
  const cut: PlanCase = { ...c, steps: c.steps.slice(0, upTo + 1) };
  const answers: CaseAnswer = { ...host, steps: host.steps.slice(0, upTo + 1) };
  const info = { kernel: profile.host.kernel, machine: 'x86_64', cpuVendor: profile.host.cpuVendor, cpuModel: profile.host.cpuModel, modules: [profile.host.vendorModule], params: {}, jobs: 1 };
  return {
    format: HARVEST_CASE_FORMAT,
    version: 1,
    host: profile.host,
    id: c.id,
    differences,
    plan: writePlan([cut]).split('\n').filter(Boolean),
    answers: writeAnswers({ info, cases: new Map([[c.id, answers]]) }).split('\n').filter(Boolean),
  };
}

export class HarvestCaseError extends Error {}

/** Replays a harvest case file on kvmsr with `profile`; the report says where kvmsr differs, if anywhere. */
export function replayHarvestCase(json: unknown, profile: HostProfile, file = 'case'): JudgeReport {
  const o = json as { format?: unknown; plan?: unknown; answers?: unknown };
  if (typeof o !== 'object' || o === null || o.format !== HARVEST_CASE_FORMAT) throw new HarvestCaseError(`${file}: format: expected "${HARVEST_CASE_FORMAT}"`);
  const lines = (v: unknown, field: string): string => {
    if (!Array.isArray(v) || !v.every((l) => typeof l === 'string')) throw new HarvestCaseError(`${file}: ${field}: expected an array of lines`);
    return v.join('\n') + '\n';
  };
  const plan = parsePlan(lines(o.plan, 'plan'), `${file} plan`);
  const answers = parseAnswers(lines(o.answers, 'answers'), `${file} answers`);
  return judgeAnswers(plan, answers, profile, { casesDir: null });
}
