// Plan, kvmsr-probe and judge on this machine's /dev/kvm: kvmsr must agree on every case, and the
// profile judge builds must be the one `profile capture` gives. Skips, visibly, without /dev/kvm.
import { describe, expect, test } from 'vitest';
import { judgeAnswers } from '../src/harvest/judge.js';
import { harvestPlan } from '../src/harvest/plan.js';
import { probeCases } from '../src/harvest/probe-runner.js';
import { realKvmStatus } from '../src/native/real-kvm.js';
import { captureProfile } from '../src/profile/capture.js';
import { measureFromAnswers } from '../src/profile/from-answers.js';
import { comparable } from './helpers.js';

const status = realKvmStatus();
if (!status.ok) console.warn(`harvest live: skipped: ${status.reason}`);

describe.skipIf(!status.ok)(`harvest on /dev/kvm${status.ok ? '' : ` (skipped: ${status.reason})`}`, () => {
  // Each phase runs for seconds without yielding; turning the event loop between them lets the
  // worker answer vitest's calls (which time out after 60 s) on a loaded machine.
  const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
  test('plan, probe, judge: every case agrees, and the profile equals what profile capture gives', async () => {
    const plan = harvestPlan({ cases: 100, seed: 11 });
    await turn();
    const answers = probeCases(plan, 2);
    await turn();
    expect(answers.cases.size).toBe(plan.length);
    const { profile, unmatched } = measureFromAnswers(plan, answers);
    expect(unmatched).toEqual([]);
    const r = judgeAnswers(plan, answers, profile, { casesDir: null });
    await turn();
    expect(r.disagreements.map((d) => `${d.caseId} step ${d.step} ${d.what}: host ${d.host}, kvmsr ${d.kvmsr}`)).toEqual([]);
    expect(comparable(captureProfile())).toEqual(comparable(profile));
  }, 120_000);
});
