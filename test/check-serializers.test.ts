// `kvmsr check` on small C serializers (test/c/ser-*.c), each planting one class of MSR
// save/restore bug that VMMs shipped, with its fixed variant beside it:
//   ser-unsaved  state the guest set, never saved (only KVM_GET_MSR_INDEX_LIST's MSRs saved)
//   ser-failed   a failed or partial KVM_GET/SET_MSRS taken as success
//   ser-order    restore order (LAPIC, IA32_TSC, CPUID, SynIC, KVM_RUN against the MSRs)
//   ser-time     time (TSC synchronization, kvmclock, a fired TSC deadline)
// Each save and restore runs as its own process under `kvmsr run --record`, and the two captures go
// to checkCaptures. None of it needs /dev/kvm. Where /dev/kvm exists, every pair also runs on the
// real kernel under the recorder; there only that the programs ran and the captures parse is
// asserted (the real kernel's findings are compared elsewhere).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { msrLabel } from '../src/abi/msr-names.js';
import { parseCapture, type ParsedCapture } from '../src/capture/format.js';
import { recordCommand } from '../src/capture/recorder-lib.js';
import { checkCaptures } from '../src/check/check.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { captureProfile } from '../src/profile/capture.js';
import { builtinProfile, type BuiltinProfileName } from '../src/profiles.js';
import { runUnderKvmsr } from '../src/run/run-command.js';

// ---- The expected findings: one row per save/restore pair. Adjust here. ----

type Severity = 'error' | 'warning' | 'info';
type Program = 'ser-unsaved' | 'ser-failed' | 'ser-order' | 'ser-time';
interface Want {
  severity: Severity;
  kind: string;
  msr?: string;
  /** A part of the kernel rule the finding names. */
  rule?: string;
}
interface Pair {
  program: Program;
  /** Arguments after `save FILE` and after `restore FILE`. */
  save: string[];
  restore: string[];
  /** kvmsr's profile for both runs; kvmsr's default (kvm_pvm on AMD EPYC) when absent. */
  profile?: BuiltinProfileName;
  /** Findings that must be there. */
  want: Want[];
  /** Findings that must not be there. */
  wantNot?: Want[];
  /**
   * The fixed variants: no finding of severity 'error' at all, or none of these kinds (ser-order
   * and ser-time save only the MSRs of their class, so check rightly finds the rest not saved).
   */
  clean?: 'all' | string[];
  /** Why the row expects what it does, where the profile decides. */
  note?: string;
}

/** The kernel rule each finding must name, by kind, or by kind and MSR where it differs. */
const RULES: Record<string, string> = {
  'not-saved 0x2ff': 'kvm_mtrr_set_msr',
  'not-saved 0x200': 'kvm_mtrr_set_msr',
  'not-saved 0x201': 'kvm_mtrr_set_msr',
  'not-saved 0x250': 'kvm_mtrr_set_msr',
  'not-saved 0x400': 'set_msr_mce',
  'not-saved 0x40000083': 'synic_set_msr',
  'failed-save': 'msr_io',
  partial: '__msr_io',
  'restore-order 0x6e0': 'kvm_set_lapic_tscdeadline_msr',
  'restore-order 0x40000080': 'synic_set_msr',
  'restore-order 0x40000083': 'synic_set_msr',
  'tsc-unsynchronized': 'kvm_synchronize_tsc',
  'tsc-restored-twice': 'kvm_synchronize_tsc',
  'kvmclock-not-restored': 'KVM_SET_CLOCK',
  'deadline-lost': 'apic_timer_expired',
};
const at = (severity: Severity, kind: string, msr?: number, ruleOf?: string): Want => {
  const rule = ruleOf ?? RULES[`${kind} 0x${(msr ?? -1).toString(16)}`] ?? RULES[kind];
  return { severity, kind, ...(msr === undefined ? {} : { msr: msrLabel(msr) }), ...(rule ? { rule } : {}) };
};
/** The matcher for a wanted finding: its rule as a part of the finding's. */
const like = (w: Want) => expect.objectContaining(w.rule ? { ...w, rule: expect.stringContaining(w.rule) } : w);
const error = (kind: string, msr?: number, rule?: string): Want => at('error', kind, msr, rule);
const warning = (kind: string, msr?: number): Want => at('warning', kind, msr);

/** A kvm_intel profile with Hyper-V (SynIC) in its extensions: builtin:intel. */
const INTEL: BuiltinProfileName = 'kvm-intel-6.12-distro-bochs-skx';
/** kvm_intel from the source: TSC writes honored, ARCH_CAPABILITIES and the TSC-deadline timer there, PAT checked. */
const VMX: BuiltinProfileName = 'vmx-intel-derived';

const MTRRS_AND_MC0 = [0x2ff, 0x200, 0x201, 0x250, 0x400];
const ORDER_KINDS = ['restore-order', 'partial', 'failed-save', 'not-restored', 'restored-different'];
const TIME_KINDS = ['tsc-unsynchronized', 'tsc-restored-twice', 'kvmclock-not-restored', 'deadline-lost', ...ORDER_KINDS];
const TSC = 0x10;
const TSC_DEADLINE = 0x6e0;
const ARCH_CAPABILITIES = 0x10a;
const SCONTROL = 0x40000080;
const SIMP = 0x40000083;

const PAIRS: Pair[] = [
  // 1. State the guest set, never saved.
  {
    program: 'ser-unsaved',
    save: [],
    restore: [],
    want: MTRRS_AND_MC0.map((i) => error('not-saved', i)),
    // KVM_POLL_CONTROL and MCG_STATUS are on the host's index list, so even the list-only save reads them.
    wantNot: [error('not-saved', 0x4b564d05), error('not-saved', 0x17a)],
  },
  { program: 'ser-unsaved', save: ['full'], restore: [], want: [], clean: 'all' },
  {
    program: 'ser-unsaved',
    save: [],
    restore: [],
    profile: INTEL,
    want: [...MTRRS_AND_MC0, SIMP].map((i) => error('not-saved', i)),
    note: 'SynIC on; SCONTROL is on the index list (emulated_msrs), SIMP is not',
    wantNot: [error('not-saved', SCONTROL), error('not-saved', 0x4b564d05)],
  },
  { program: 'ser-unsaved', save: ['full'], restore: [], profile: INTEL, want: [], clean: 'all' },

  // 2. A failed or partial KVM_GET/SET_MSRS taken as success.
  // A batch refused whole with E2BIG: the kernel never copies its entries, nor does the capture
  // hold them, so which MSR was "first lost" is not in the save; no msr is pinned.
  { program: 'ser-failed', save: ['e2big'], restore: [], want: [error('failed-save')] },
  {
    program: 'ser-failed',
    save: ['short'],
    restore: ['faulty'],
    // The GET stopped at the unknown 0x12345678 (the 4th entry); the first MSR lost is the host's 4th listed one.
    want: [error('partial', 0x12345678), error('failed-save', 0xc0000081)],
  },
  { program: 'ser-failed', save: ['wrongfd'], restore: [], want: [error('failed-save', 0x174)], note: 'the first listed MSR, IA32_SYSENTER_CS' },
  { program: 'ser-failed', save: [], restore: [], want: [], clean: 'all' },
  {
    program: 'ser-failed',
    save: [],
    restore: ['faulty'],
    want: [error('partial', 0xc0000082)],
    wantNot: [error('partial', 0x277)],
    note: 'kvm_pvm stores any IA32_CR_PAT (measured), so only the non-canonical LSTAR is refused',
  },
  { program: 'ser-failed', save: [], restore: ['faulty'], profile: VMX, want: [error('partial', 0x277), error('partial', 0xc0000082)] },

  // 3. Restore order.
  { program: 'ser-order', save: [], restore: ['good'], want: [], clean: ORDER_KINDS },
  { program: 'ser-order', save: [], restore: ['lapic-late'], want: [error('restore-order', TSC_DEADLINE)] },
  { program: 'ser-order', save: [], restore: ['tsc-late'], want: [warning('restore-order', TSC_DEADLINE)], note: 'kvm_pvm ignores host writes of IA32_TSC: harmless there' },
  { program: 'ser-order', save: [], restore: ['cpuid-late'], want: [], note: 'ARCH_CAPABILITIES is unsupported on the default (AMD) kvm_pvm: saved and restored as 0' },
  { program: 'ser-order', save: [], restore: ['synic-late'], want: [], note: 'no SynIC on kvm_pvm' },
  { program: 'ser-order', save: [], restore: ['run-first'], want: [], note: 'ARCH_CAPABILITIES is 0 on the default profile: no bit to clear' },
  { program: 'ser-order', save: [], restore: ['good'], profile: VMX, want: [], clean: ORDER_KINDS },
  { program: 'ser-order', save: [], restore: ['tsc-late'], profile: VMX, want: [error('restore-order', TSC_DEADLINE)] },
  { program: 'ser-order', save: [], restore: ['cpuid-late'], profile: VMX, want: [error('restore-order', ARCH_CAPABILITIES, 'kvm_set_cpuid')] },
  { program: 'ser-order', save: [], restore: ['run-first'], profile: VMX, want: [error('restore-order', ARCH_CAPABILITIES, 'kvm_vcpu_has_run')] },
  { program: 'ser-order', save: [], restore: ['good'], profile: INTEL, want: [], clean: ORDER_KINDS },
  { program: 'ser-order', save: [], restore: ['synic-late'], profile: INTEL, want: [error('restore-order', SCONTROL), error('restore-order', SIMP)] },

  // 4. Time.
  { program: 'ser-time', save: [], restore: ['good'], want: [], clean: TIME_KINDS },
  { program: 'ser-time', save: [], restore: ['spread'], want: [warning('tsc-unsynchronized', TSC)], note: 'kvm_pvm ignores host writes of IA32_TSC: harmless there' },
  { program: 'ser-time', save: [], restore: ['twice'], want: [warning('tsc-restored-twice', TSC)] },
  { program: 'ser-time', save: [], restore: ['noclock'], want: [error('kvmclock-not-restored')] },
  { program: 'ser-time', save: ['deadline-zero'], restore: ['good'], want: [error('deadline-lost', TSC_DEADLINE)] },
  { program: 'ser-time', save: [], restore: ['good'], profile: VMX, want: [], clean: TIME_KINDS },
  { program: 'ser-time', save: [], restore: ['spread'], profile: VMX, want: [error('tsc-unsynchronized', TSC)] },
];

// ---- The runs. ----

const PROGRAMS: Program[] = ['ser-unsaved', 'ser-failed', 'ser-order', 'ser-time'];
const haveCc = spawnSync('cc', ['--version']).status === 0;
const haveKvm = existsSync('/dev/kvm');
if (!haveCc) console.warn('kvmsr check on the C serializers (test/c/ser-*.c): skipped: no C compiler (cc)');
if (!haveKvm) console.warn('the C serializers on the real kernel: skipped: this machine has no /dev/kvm');

const dir = mkdtempSync(join(tmpdir(), 'kvmsr-ser-'));
const bin = (p: Program): string => join(dir, p);
const pairName = (p: Pair, withProfile = true): string =>
  `${p.program} save${p.save.map((a) => ' ' + a).join('')} / restore${p.restore.map((a) => ' ' + a).join('')}${withProfile && p.profile ? ` [${p.profile}]` : ''}`;
const slug = (s: string): string => s.replace(/[^a-z0-9]+/gi, '-');
const capture = (file: string): ParsedCapture => parseCapture(readFileSync(file, 'utf8'), file);
const show = (w: Want): string => `${w.severity} ${w.kind}${w.msr ? ' ' + w.msr : ''}${w.rule ? ` (${w.rule})` : ''}`;

let compiled = false;
/** Each program once, for both describes. */
function compile(): void {
  if (compiled) return;
  for (const p of PROGRAMS) execFileSync('cc', ['-O1', '-Wall', '-Werror', '-o', bin(p), join(import.meta.dirname, 'c', `${p}.c`)]);
  compiled = true;
}

async function underKvmsr(command: string[], record: string, profile?: BuiltinProfileName): Promise<{ status: number; out: string }> {
  const log: string[] = [];
  const r = await runUnderKvmsr(command, { record, stdio: 'pipe', log: (l) => log.push(l), ...(profile ? { profile: builtinProfile(profile) } : {}) });
  return { status: r.status, out: [r.stdout, r.stderr, ...log].join('\n') };
}

describe.skipIf(!haveCc)('kvmsr check on C serializers with planted MSR save/restore bugs, under kvmsr run', () => {
  beforeAll(compile);

  for (const pair of PAIRS) {
    const name = pairName(pair);
    describe(name + (pair.note ? ` (${pair.note})` : ''), () => {
      let findings: ReturnType<typeof checkCaptures>['findings'] = [];
      let summary = '';
      beforeAll(async () => {
        const base = join(dir, slug(name));
        const state = `${base}.state`;
        const s = await underKvmsr([bin(pair.program), 'save', state, ...pair.save], `${base}-save.jsonl`, pair.profile);
        expect(s.status, `save: ${s.out}`).toBe(0);
        const r = await underKvmsr([bin(pair.program), 'restore', state, ...pair.restore], `${base}-restore.jsonl`, pair.profile);
        expect(r.status, `restore: ${r.out}`).toBe(0);
        const report = checkCaptures(capture(`${base}-save.jsonl`), capture(`${base}-restore.jsonl`), pair.profile ? builtinProfile(pair.profile) : undefined);
        findings = report.findings;
        summary = `save: ${s.out.trim()}\nrestore: ${r.out.trim()}\nfindings:\n${findings.map((f) => `  ${f.severity} ${f.kind} ${f.msr ?? '-'}: ${f.message}`).join('\n')}`;
      }, 60_000);

      for (const w of pair.want) {
        test(`finds ${show(w)}`, () => {
          expect(findings, summary).toContainEqual(like(w));
        });
      }
      for (const w of pair.wantNot ?? []) {
        test(`does not find ${show(w)}`, () => {
          expect(findings, summary).not.toContainEqual(expect.objectContaining({ severity: w.severity, kind: w.kind, ...(w.msr ? { msr: w.msr } : {}) }));
        });
      }
      if (pair.clean) {
        const kinds = pair.clean;
        test(kinds === 'all' ? 'finds no error' : `finds no error of ${kinds.join(', ')}`, () => {
          expect(
            findings.filter((f) => f.severity === 'error' && (kinds === 'all' || kinds.includes(f.kind))),
            summary,
          ).toEqual([]);
        });
      }
      if (pair.want.length === 0 && !pair.clean && !pair.wantNot) {
        test('runs (nothing to find on this profile)', () => {
          expect(summary).not.toBe('');
        });
      }
    });
  }
});

describe.skipIf(!haveCc || !haveKvm)('the C serializers on the real kernel (/dev/kvm), under the recorder', () => {
  let host: HostProfile | undefined;
  let why = '';
  beforeAll(() => {
    compile();
    // The host's own profile, as `kvmsr record` embeds it, so check judges with this kernel's rules.
    try {
      host = captureProfile();
    } catch (e) {
      why = (e as Error).message;
    }
  }, 120_000);
  // The rows on kvmsr's default profile: the same kernel family (kvm_pvm) as the project's hosts.
  // Levels can differ by vendor module (a TSC rule is a warning on kvm_pvm), so kind and MSR are compared.
  const defaults = PAIRS.filter((p) => p.profile === undefined);
  for (const pair of defaults) {
    const name = pairName(pair, false);
    test(`${name}: runs on the real kernel, and check finds there what it finds under kvmsr run`, () => {
      const base = join(dir, 'real-' + slug(name));
      const state = `${base}.state`;
      expect(recordCommand(`${base}-save.jsonl`, [bin(pair.program), 'save', state, ...pair.save]), 'save').toBe(0);
      expect(recordCommand(`${base}-restore.jsonl`, [bin(pair.program), 'restore', state, ...pair.restore]), 'restore').toBe(0);
      const save = capture(`${base}-save.jsonl`);
      const restore = capture(`${base}-restore.jsonl`);
      expect(save.records.length).toBeGreaterThan(0);
      expect(restore.records.length).toBeGreaterThan(0);
      if (!host) {
        console.warn(`check on the real kernel's captures: skipped: no host profile (${why})`);
        return;
      }
      if (host.host.vendorModule !== 'kvm_pvm') return; // the rows pin kvm_pvm's answers
      const found = checkCaptures(save, restore, host).findings;
      const summary = found.map((f) => `  ${f.severity} ${f.kind} ${f.msr ?? '-'}: ${f.message}`).join('\n');
      for (const w of pair.want) expect(found, summary).toContainEqual(expect.objectContaining({ kind: w.kind, ...(w.msr ? { msr: w.msr } : {}) }));
      if (pair.clean) {
        const kinds = pair.clean;
        expect(found.filter((f) => f.severity === 'error' && (kinds === 'all' || kinds.includes(f.kind))), summary).toEqual([]);
      }
    }, 60_000);
  }
});
