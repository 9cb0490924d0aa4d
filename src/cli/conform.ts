// `kvmsr conform`: the same ioctls on this machine's /dev/kvm and on kvmsr (with the profile
// captured here), every byte compared; the guest path through kvmsr-probe's real-mode guest.
import type { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as I from '../abi/kvm-ioctls.js';
import { caseFile, Conformance } from '../conform/conform.js';
import { harvestCaseFile } from '../harvest/case-file.js';
import { probeCases } from '../harvest/probe-runner.js';
import { Kvm } from '../kvm/kvm.js';
import { loadRealKvm, realKvmStatus } from '../native/real-kvm.js';
import { captureProfile } from '../profile/capture.js';
import { CliError, print } from './common.js';

function cmdConform(opts: { cases?: string; seed?: string; json?: boolean; save?: string; guest?: boolean }): number {
  const cases = opts.cases === undefined ? 1000 : Number(opts.cases);
  const seed = opts.seed === undefined ? 1 : Number(opts.seed);
  if (!Number.isInteger(cases) || cases < 0) throw new CliError(`--cases takes a whole number, not '${opts.cases}'`);
  if (!Number.isInteger(seed)) throw new CliError(`--seed takes a whole number, not '${opts.seed}'`);
  const st = realKvmStatus();
  if (!st.ok) throw new CliError(`conform compares kvmsr with the real kernel and needs /dev/kvm: ${st.reason}`);
  const real = loadRealKvm()!;
  const profile = captureProfile();
  const bar = !opts.json && process.stderr.isTTY ? new SingleBar({ format: 'conform [{bar}] {value}/{total} {phase}', stream: process.stderr }, Presets.shades_classic) : null;
  let started = false;
  const c = new Conformance(real, new Kvm({ profile }), profile, {
    cases,
    seed,
    ...(opts.guest === false ? {} : { guestRunner: (g) => probeCases(g, 1) }),
    onProgress: (done, total, phase) => {
      if (!started) bar?.start(total, 0, { phase });
      started = true;
      bar?.update(done, { phase });
    },
  });
  const r = c.run();
  c.close();
  bar?.stop();
  const dir = opts.save ?? 'conform-cases';
  const saved: string[] = [];
  if (r.disagreements.length > 0) {
    mkdirSync(dir, { recursive: true });
    r.disagreements.forEach((d, i) => {
      const f = join(dir, `case-seed${seed}-${i}.json`);
      const json = d.guest ? harvestCaseFile(d.guest.case, d.guest.host, d.guest.case.steps.length - 1, profile, d.differences) : caseFile(d, profile);
      writeFileSync(f, JSON.stringify(json, null, 1) + '\n');
      saved.push(f);
    });
  }
  print(!!opts.json, { ...r, saved, host: profile.host }, () => {
    const out = [`kvmsr conform on ${profile.host.vendorModule} ${profile.host.kernel} (${profile.host.cpuModel}), seed ${seed}`, '', '| group | cases | agreed |', '|---|---:|---:|'];
    for (const g of r.systematic) out.push(`| ${g.group} | ${g.cases} | ${g.agreed} |`);
    out.push(`| random batches | ${r.random.batches} | ${r.random.agreed} |`, '');
    for (const rule of r.rules) out.push(`rule: ${rule}`);
    if (r.rules.some((x) => x.includes('longest time one paired call took'))) out.push(`(the longest paired call took ${r.longestCallMs} ms)`);
    if (r.guestSkipped) out.push(`the guest path was not compared: ${r.guestSkipped}`);
    if (r.alike > 0) out.push(`${r.alike} more disagreements had the signature of one below (the same group, request, MSR and kind of difference), so were counted, not shrunk`);
    r.disagreements.forEach((d, i) => {
      out.push('', `DISAGREEMENT ${i + 1} (${d.group}; irqchip ${d.setup.irqchip}, KVM_SET_CPUID2 ${d.setup.cpuid}${d.setup.hv ? ' with Hyper-V leaves' : ''}): ${d.recurred ? d.differences.join('; ') : 'did not recur when the shrunk steps ran again: it hangs on host timing'}`);
      if (d.guest) out.push(`  ${d.guest.case.steps.length} guest steps after shrinking (the last one differs)`);
      d.steps.forEach((s, k) => out.push(`  step ${k}: ${I.ioctlName(s.request)} on ${typeof s.on === 'number' ? `vCPU ${s.on}` : s.on}${s.writeBack ? ' (write-back of the previous read)' : s.arg instanceof Uint8Array ? ` ${Buffer.from(s.arg).toString('hex')}` : ` ${s.arg}`}`));
      if (!d.guest) out.push(`  kernel wrote: ${d.realBytes}`, `  kvmsr wrote:  ${d.emuBytes}`, ...d.decoded.map((x) => `  ${x}`));
      out.push(`  saved as ${saved[i]}`);
    });
    out.push('', `systematic agreement ${(r.systematicRate * 100).toFixed(2)}%, overall ${(r.agreementRate * 100).toFixed(3)}%`);
    return out.join('\n');
  });
  return r.disagreements.length > 0 ? 1 : 0;
}

export function registerConform(program: Command, setStatus: (s: number) => void): void {
  program
    .command('conform')
    .description('run the same ioctls on /dev/kvm and on kvmsr and compare every byte, listed and unlisted MSRs and the guest path (needs /dev/kvm)')
    .option('--cases <n>', 'random batches (default 1000)')
    .option('--seed <s>', 'seed of the random part (default 1)')
    .option('--save <dir>', 'where to write disagreement cases (default ./conform-cases)')
    .option('--no-guest', 'leave out the guest path (the real-mode guest of kvmsr-probe)')
    .option('--json', 'machine-readable output')
    .action((o) => setStatus(cmdConform(o)));
}
