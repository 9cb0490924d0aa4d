// `kvmsr profile list` (the built-in profiles) and `kvmsr profile capture` (the running host's).
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { profileToJson } from '../kvm/profile.js';
import { loadRealKvm, realKvmStatus } from '../native/real-kvm.js';
import { captureProfile } from '../profile/capture.js';
import { BUILTIN_ORIGIN, BUILTIN_PROFILES, builtinProfile, DEFAULT_PROFILE_NAME, PROFILE_ALIASES, type BuiltinProfileName } from '../profiles.js';
import { describeHolds, versionedRules } from '../kvm/x86/release.js';
import '../kvm/x86/rules.js';
import '../kvm/x86/index-list.js';
import { CliError, print } from './common.js';

export interface BuiltinRow {
  name: string;
  aliases: string[];
  isDefault: boolean;
  kernel: string;
  vendorModule: string;
  cpu: string;
  source: 'capture' | 'derived';
  origin: string;
}

export function builtinRows(): BuiltinRow[] {
  return (Object.keys(BUILTIN_PROFILES) as BuiltinProfileName[]).map((name) => {
    const p = builtinProfile(name);
    return {
      name,
      aliases: Object.entries(PROFILE_ALIASES).filter(([, n]) => n === name).map(([a]) => a),
      isDefault: name === DEFAULT_PROFILE_NAME,
      kernel: p.host.kernel,
      vendorModule: p.host.vendorModule,
      cpu: p.host.cpuModel,
      source: p.source,
      origin: BUILTIN_ORIGIN[name],
    };
  });
}

function cmdList(o: { json?: boolean; rules?: boolean }): void {
  if (o.rules) {
    const rules = versionedRules().map((r) => ({ ...r, releases: describeHolds(r.where) }));
    print(!!o.json, rules, () =>
      ['| rule | family | holds | releases | kernel |', '|---|---|---|---|---|', ...rules.map((r) => `| ${r.id} | ${r.family} | ${r.holds} | ${r.releases}${r.note ? ` (${r.note})` : ''} | ${r.kernel} |`)].join('\n'),
    );
    return;
  }
  const rows = builtinRows();
  print(!!o.json, rows, () => {
    const out = ['| profile | kernel | vendor module | CPU | captured or derived | where |', '|---|---|---|---|---|---|'];
    for (const r of rows) {
      const name = `builtin:${r.name}${r.aliases.length ? ` (${r.aliases.map((a) => `builtin:${a}`).join(', ')})` : ''}${r.isDefault ? ' [default]' : ''}`;
      out.push(`| ${name} | ${r.kernel} | ${r.vendorModule} | ${r.cpu} | ${r.source === 'capture' ? 'captured' : 'derived'} | ${r.origin} |`);
    }
    return out.join('\n');
  });
}

function cmdCapture(opts: { output?: string; json?: boolean }): void {
  const st = realKvmStatus();
  if (!st.ok) throw new CliError(`cannot capture a profile: ${st.reason}`);
  const real = loadRealKvm();
  if (!real) throw new CliError('cannot capture a profile: koffi is not available');
  const p = captureProfile();
  const text = JSON.stringify(profileToJson(p), null, 1) + '\n';
  if (opts.output) {
    writeFileSync(opts.output, text);
    const summary = { file: opts.output, vendorModule: p.host.vendorModule, kernel: p.host.kernel, msrs: p.msrIndexList.length, featureMsrs: p.featureMsrs.length };
    print(!!opts.json, summary, () => `wrote ${opts.output}: ${p.host.vendorModule} on ${p.host.kernel}, ${p.msrIndexList.length} listed MSRs, ${p.featureMsrs.length} feature MSRs`);
  } else {
    process.stdout.write(text);
  }
}

export function registerProfile(program: Command): void {
  const profile = program.command('profile').description('host profiles');
  profile
    .command('list')
    .description('the built-in profiles: kernel release, vendor module, CPU, captured or derived, and where')
    .option('--rules', 'instead: every versioned kernel rule kvmsr knows, with the releases it holds for')
    .option('--json', 'machine-readable output')
    .action((o) => cmdList(o));
  profile
    .command('capture')
    .description("record the running host's KVM into a profile (needs /dev/kvm)")
    .option('-o, --output <file>', 'write the profile here (default: stdout)')
    .option('--json', 'machine-readable summary')
    .action((o) => cmdCapture(o));
}
