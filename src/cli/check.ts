// `kvmsr check SAVE [RESTORE] [--on PROFILE] [--kernel RELEASE]`: the MSR save/restore mistakes a
// VMM's captured traffic shows, and with a destination, whether the restore would lose state there
// (the question before a kernel upgrade or a migration between host generations). Status 1 when
// state would be lost (an error), 0 otherwise, 2 for a usage or input error.
import type { Command } from 'commander';
import { checkCaptures, type CheckReport, type Finding } from '../check/check.js';
import type { HostProfile } from '../kvm/profile.js';
import { deriveForRelease } from '../profile/for-release.js';
import { resolveBuiltinName } from '../profiles.js';
import { profileForCapture } from '../capture/replay.js';
import { CliError, print } from './common.js';
import { loadProfile, PROFILE_HELP } from './profile-option.js';
import { readCapture } from './read-capture.js';

interface CheckCliOptions {
  json?: boolean;
  profile?: string;
  on?: string;
  kernel?: string;
}

/** --on takes builtin:NAME, a bare built-in name, or a profile file. */
function loadDestination(on: string): HostProfile {
  if (!on.startsWith('builtin:') && resolveBuiltinName(on)) return loadProfile(`builtin:${on}`);
  return loadProfile(on);
}

function destinationOf(o: CheckCliOptions, source: HostProfile): HostProfile | undefined {
  if (o.on === undefined && o.kernel === undefined) return undefined;
  const base = o.on !== undefined ? loadDestination(o.on) : source;
  if (o.kernel === undefined) return base;
  try {
    const r = deriveForRelease(base, o.on ?? 'the save capture', o.kernel);
    for (const n of r.notes) process.stderr.write(`kvmsr: ${n}\n`);
    return r.profile;
  } catch (e) {
    throw new CliError((e as Error).message);
  }
}

function render(r: CheckReport): string {
  const out: string[] = [];
  const count = (sev: string): number => r.findings.filter((f) => f.severity === sev).length;
  const where = r.destination ? ` (restored on ${r.destination.vendorModule} ${r.destination.kernel}, ${r.destination.cpuModel})` : '';
  out.push(`kvmsr check: ${count('error')} errors, ${count('warning')} warnings${where}`);
  // Findings of one kind, level, vCPU and rule (twenty unsaved MTRRs) print as one line and a list.
  const groups = new Map<string, Finding[]>();
  for (const f of r.findings) {
    // The same message but for the MSR and its numbers.
    const shape = f.message.split(f.msr ?? '\u0000').join('MSR').replace(/0x[0-9a-f]+/g, 'N');
    const k = `${f.severity}|${f.kind}|${f.vcpu}|${f.rule ?? ''}|${shape}`;
    groups.set(k, [...(groups.get(k) ?? []), f]);
  }
  for (const g of groups.values()) {
    const f = g[0]!;
    out.push(`${f.severity.toUpperCase().padEnd(7)} [${f.kind}] ${f.vcpu}: ${f.message}`);
    if (g.length > 1) out.push(`        and the same for ${g.length - 1} more: ${g.slice(1).map((x) => x.msr).join(', ')}`);
    if (f.rule && f.severity !== 'info') out.push(`        kernel: ${f.rule}`);
  }
  if (r.coverage.length > 0) {
    out.push('', '| vCPU | listed MSRs | saved | not saved |', '|---|---:|---:|---|');
    for (const c of r.coverage) out.push(`| ${c.vcpu} | ${c.listed} | ${c.saved} | ${c.missing.slice(0, 6).join(', ')}${c.missing.length > 6 ? ', ...' : ''} |`);
  }
  for (const n of r.notes) out.push(`note: ${n}`);
  return out.join('\n');
}

export function registerCheck(program: Command, setStatus: (s: number) => void): void {
  program
    .command('check')
    .description("find MSR save/restore mistakes in a VMM's captured traffic, and whether the restore loses state on another host")
    .argument('<save>', 'a capture of the save (e.g. a migration to a file)')
    .argument('[restore]', 'a capture of the restore')
    .option('--profile <file>', `the host the save was recorded on (default: the one in the capture). ${PROFILE_HELP}`)
    .option('--on <profile>', 'also play the restore (or, with a save alone, the restore of exactly what was saved) on this host: builtin:NAME, a built-in name, or a profile file')
    .option('--kernel <release>', 'the destination answers as this kernel release (of --on, else of the save\'s own host), with the nearest captured profile of its vendor module')
    .option('--json', 'machine-readable output')
    .action((save: string, restore: string | undefined, o: CheckCliOptions) => {
      const sv = readCapture(save);
      const rs = restore ? readCapture(restore) : undefined;
      for (const c of [sv, rs]) if (c?.error) process.stderr.write(`kvmsr check: ${c.error.message} (checked the ${c.records.length} records before it)\n`);
      const source = o.profile !== undefined ? loadProfile(o.profile) : profileForCapture(sv);
      const destination = destinationOf(o, source ?? loadProfile(undefined));
      const r = checkCaptures(sv, rs, { ...(source ? { profile: source } : {}), ...(destination ? { destination } : {}) });
      print(!!o.json, r, () => render(r));
      setStatus(r.findings.some((f) => f.severity === 'error') ? 1 : 0);
    });
}
