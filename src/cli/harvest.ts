// `kvmsr harvest plan|judge`: measure a host with kvmsr-probe (a static binary, no Node needed on
// the host) and judge kvmsr against its answers anywhere.
import type { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writePlan } from '../harvest/format.js';
import { formatJudge, judgeDir } from '../harvest/judge.js';
import { harvestPlan } from '../harvest/plan.js';
import { CliError, print } from './common.js';

function whole(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new CliError(`${name} takes a whole number, not '${v}'`);
  return n;
}

function cmdPlan(opts: { output: string; cases?: string; seed?: string; json?: boolean }): void {
  const cases = whole(opts.cases, '--cases', 300);
  const seed = whole(opts.seed, '--seed', 1);
  const plan = harvestPlan({ cases, seed });
  mkdirSync(opts.output, { recursive: true });
  const file = join(opts.output, 'plan.txt');
  writeFileSync(file, writePlan(plan, [`kvmsr harvest plan --cases ${cases} --seed ${seed}`, 'run on the host: kvmsr-probe [--jobs N] DIR; then anywhere: kvmsr harvest judge DIR']));
  print(!!opts.json, { file, cases: plan.length, seed, randomBatches: cases }, () => `wrote ${file}: ${plan.length} cases (${cases} random batches, seed ${seed}); run \`kvmsr-probe --jobs N ${opts.output}\` on the host, then \`kvmsr harvest judge ${opts.output}\``);
}

function cmdJudge(dir: string, opts: { json?: boolean }): number {
  const bar = !opts.json && process.stderr.isTTY ? new SingleBar({ format: 'judge [{bar}] {value}/{total} cases', stream: process.stderr }, Presets.shades_classic) : null;
  let started = false;
  let result: ReturnType<typeof judgeDir>;
  try {
    result = judgeDir(dir, {
      onProgress: (d, t) => {
        if (!started) bar?.start(t, 0);
        started = true;
        if (d % 50 === 0 || d === t) bar?.update(d);
      },
    });
  } catch (e) {
    bar?.stop();
    throw new CliError((e as Error).message);
  }
  bar?.stop();
  const { report } = result;
  print(!!opts.json, { ...report, profile: join(dir, 'profile.json') }, () => formatJudge(report, dir) + `\nwrote ${join(dir, 'profile.json')}`);
  return report.disagreements.length > 0 ? 1 : 0;
}

export function registerHarvest(program: Command, setStatus: (s: number) => void): void {
  const h = program.command('harvest').description('measure a host with kvmsr-probe, and judge kvmsr against its answers');
  h.command('plan')
    .description('write DIR/plan.txt: profile probes, rule probes, conform systematic and random cases, guest steps')
    .requiredOption('-o, --output <dir>', 'the harvest directory')
    .option('--cases <n>', 'random batches (default 300)')
    .option('--seed <s>', 'seed of the random batches (default 1)')
    .option('--json', 'machine-readable summary')
    .action((o) => cmdPlan(o));
  h.command('judge')
    .description("build the host's profile from DIR/answers.txt, replay every case on kvmsr and compare; status 1 on a disagreement")
    .argument('<dir>', 'a harvest directory holding plan.txt and answers.txt (either may be gzipped)')
    .option('--json', 'machine-readable report')
    .action((d: string, o) => setStatus(cmdJudge(d, o)));
}
