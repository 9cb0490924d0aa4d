// `kvmsr harvest judge DIR`: builds the host's profile from a harvest's answers, replays every
// case of the plan on kvmsr with it, and compares each step with what the host answered: the
// return value, the errno and every byte; the guest's value, #GP or userspace exit. Runs anywhere:
// the host's answers are in DIR. What moves with time (IA32_TSC) is compared by a stated rule.
import { statsFileId, statsFileWithId } from '../kvm/state/binary-stats.js';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { decodeMsrs } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { MOVING_MSRS, movingAgree, movingRule, MSR_IA32_TSC } from '../kvm/x86/moving-msrs.js';
import { msrLabel } from '../abi/msr-names.js';
import { KVM_MSR_ENTRY_LAYOUT, KVM_MSRS_LAYOUT } from '../abi/layout.js';
import { profileToJson, type HostProfile } from '../kvm/profile.js';
import { msrGroup } from '../conform/conform.js';
import { apicIdsByRule } from '../native/pair.js';
import { sameAnswer } from '../profile/classify-rules.js';
import { measureFromAnswers } from '../profile/from-answers.js';
import { parseAnswers, parsePlan, type Answers, type PlanCase, type PlanStep, type StepAnswer } from './format.js';
import { harvestCaseFile } from './case-file.js';
import { runOnKvmsr } from './on-kvmsr.js';

export const TSC_RULE = movingRule(MSR_IA32_TSC)!;

export interface JudgeDisagreement {
  group: string;
  caseId: string;
  /** The step where kvmsr first answered otherwise. */
  step: number;
  what: string;
  host: string;
  kvmsr: string;
  /** Other cases whose first disagreement has the same signature (not written again). */
  alike: number;
  file?: string;
}

export interface JudgeReport {
  host: HostProfile['host'];
  groups: { group: string; cases: number; agreed: number }[];
  cases: number;
  agreed: number;
  /** Plan cases the answers lack (the probe did not finish them). */
  unanswered: string[];
  /** Cases whose setup failed on the host, and so could not be compared. */
  setupFailed: string[];
  disagreements: JudgeDisagreement[];
  rules: string[];
  /** Measured rule sides no rule kind reproduces. */
  unmatchedRules: string[];
  agreementRate: number;
}

/** Reads DIR/NAME or DIR/NAME.gz as text. */
export function readHarvestFile(dir: string, name: string): { text: string; file: string } {
  const plain = join(dir, name);
  if (existsSync(plain)) return { text: readFileSync(plain, 'utf8'), file: plain };
  const gz = plain + '.gz';
  if (existsSync(gz)) return { text: gunzipSync(readFileSync(gz)).toString('utf8'), file: gz };
  throw new Error(`${plain}: no such file (nor ${name}.gz)`);
}

/** The group a case counts under in the report. */
export function caseGroup(c: PlanCase): string {
  const [kind, a, b] = c.id.split('.');
  if (kind === 'sys' && b !== undefined && b !== 'batch') return `systematic ${msrGroup(Number.parseInt(b, 16))}`;
  if (kind === 'sys') return 'systematic batch';
  if (kind === 'rule') return 'rule probes';
  if (kind === 'pair') return 'pair probes';
  if (kind === 'rnd') return 'random batches';
  if (kind === 'guest') return `guest path (${a})`;
  if (kind === 'profile') return 'profile probes';
  return kind ?? 'other';
}

const ans = (s: StepAnswer | undefined): string => {
  if (!s) return 'no answer';
  switch (s.op) {
    case 'io':
      return `ret ${s.ret}${s.ret < 0 ? ` errno ${s.errno}` : ''}${s.out ? ` ${Buffer.from(s.out).toString('hex')}` : ''}`;
    case 'g':
      return s.kind === 'ok' ? `ok 0x${s.value.toString(16)}` : s.kind === 'exit' ? `exit ${s.exitReason} reason ${s.reason} index 0x${s.index.toString(16)} data 0x${s.data.toString(16)}` : s.kind === 'fail' ? `fail ${s.what} errno ${s.errno}` : 'gp';
    case 'tsckhz':
      return `tsc_khz floor ${s.value}`;
    case 'stats':
      return s.bytes ? `stats file of ${s.bytes.length} bytes, ${Buffer.from(s.bytes).toString('hex')}` : `ret ${s.ret} errno ${s.errno}`;
    default:
      return s.op;
  }
};

/** What moves with time or with the CPU a call ran on, taken from the host's answer where the stated rule holds. */
function byRule(step: PlanStep, host: StepAnswer, emu: StepAnswer, rules: Set<string>): void {
  if (step.op === 'io' && step.request === I.KVM_GET_SUPPORTED_CPUID && host.op === 'io' && emu.op === 'io' && host.out && emu.out && host.ret === 0 && emu.ret === 0) {
    const said: string[] = [];
    apicIdsByRule(host.out, emu.out, said);
    for (const r of said) rules.add(r);
    return;
  }
  tscByRule(step, host, emu, rules);
  clockByRule(step, host, emu, rules);
  statsByRule(host, emu, rules);
}

export const STATS_ID_RULE = "the binary stats file's id string (kvm-<the creating thread's id>) not compared";

/** The stats files name the thread that made the VM: take the host's id where the rest agrees. */
function statsByRule(host: StepAnswer, emu: StepAnswer, rules: Set<string>): void {
  if (host.op !== 'stats' || emu.op !== 'stats' || !host.bytes || !emu.bytes || host.bytes.length !== emu.bytes.length) return;
  const id = statsFileId(host.bytes);
  if (id === statsFileId(emu.bytes)) return;
  emu.bytes = statsFileWithId(emu.bytes, id);
  rules.add(STATS_ID_RULE);
}

export const CLOCK_RULE = 'KVM_GET_CLOCK compared by rule, since the host and kvmsr read kvmclock at different times: both non-zero';
export const PIT_RULE = "KVM_GET_PIT2's count_load_time (the host's ktime when each count was loaded) not compared";

/** kvmclock and the PIT's load times move with the host's clock: take the host's where the rest agrees. */
function clockByRule(step: PlanStep, host: StepAnswer, emu: StepAnswer, rules: Set<string>): void {
  if (step.op !== 'io' || host.op !== 'io' || emu.op !== 'io' || !host.out || !emu.out || host.ret !== 0 || emu.ret !== 0) return;
  if (host.out.length !== emu.out.length) return;
  if (step.request === I.KVM_GET_CLOCK && host.out.length >= 8) {
    const a = new DataView(host.out.buffer, host.out.byteOffset).getBigUint64(0, true);
    const b = new DataView(emu.out.buffer, emu.out.byteOffset);
    if (a !== b.getBigUint64(0, true) && a !== 0n && b.getBigUint64(0, true) !== 0n) {
      b.setBigUint64(0, a, true);
      rules.add(CLOCK_RULE);
    }
  } else if (step.request === I.KVM_GET_PIT2 && host.out.length >= 72) {
    for (const ch of [0, 1, 2]) emu.out.set(host.out.subarray(24 * ch + 16, 24 * ch + 24), 24 * ch + 16);
    rules.add(PIT_RULE);
  }
}

/** Takes the host's value of a moving MSR (moving-msrs.ts) where both sides read one and its rule holds. */
function tscByRule(step: PlanStep, host: StepAnswer, emu: StepAnswer, rules: Set<string>): void {
  if (step.op === 'rd' && MOVING_MSRS.has(step.index) && host.op === 'g' && emu.op === 'g' && host.kind === 'ok' && emu.kind === 'ok') {
    if (host.value !== emu.value && movingAgree(step.index, host.value, emu.value)) {
      rules.add(movingRule(step.index)!);
      emu.value = host.value;
    }
    return;
  }
  if (step.op !== 'io' || step.request !== I.KVM_GET_MSRS || host.op !== 'io' || emu.op !== 'io' || !host.out || !emu.out) return;
  if (host.out.length < KVM_MSRS_LAYOUT.size) return;
  const a = new DataView(host.out.buffer, host.out.byteOffset, host.out.byteLength);
  const b = new DataView(emu.out.buffer, emu.out.byteOffset, emu.out.byteLength);
  const n = Math.min(a.getUint32(0, true), Math.floor((host.out.length - 8) / 16), Math.max(0, Math.min(host.ret, emu.ret)));
  for (let i = 0; i < n; i++) {
    const off = KVM_MSRS_LAYOUT.entries + i * KVM_MSR_ENTRY_LAYOUT.size;
    const index = a.getUint32(off, true);
    if (!MOVING_MSRS.has(index) || b.getUint32(off, true) !== index) continue;
    const va = a.getBigUint64(off + 8, true);
    const vb = b.getBigUint64(off + 8, true);
    if (va !== vb && movingAgree(index, va, vb)) {
      rules.add(movingRule(index)!);
      b.setBigUint64(off + 8, va, true);
    }
  }
}

/** Both answers in words; for long buffers only the return values and the bytes that differ. */
function pairDetail(h: StepAnswer | undefined, e: StepAnswer | undefined): [string, string] {
  if (h?.op !== 'io' || e?.op !== 'io' || !h.out || !e.out || h.out.length <= 48) return [ans(h), ans(e)];
  const at: string[] = [];
  for (let i = 0; i < h.out.length && at.length < 8; i++) if (h.out[i] !== e.out[i]) at.push(`byte ${i}: 0x${h.out[i]!.toString(16)} vs 0x${(e.out[i] ?? 0).toString(16)}`);
  const r = (x: typeof h): string => `ret ${x.ret}${x.ret < 0 ? ` errno ${x.errno}` : ''}`;
  return [`${r(h)}, ${h.out.length} bytes${at.length ? ` (host vs kvmsr: ${at.join('; ')})` : ''}`, `${r(e)}`];
}

/** What differs at a step, in words, with the MSR entries decoded. */
function describe(step: PlanStep, host: StepAnswer | undefined, emu: StepAnswer | undefined): { what: string; signature: string } {
  if (step.op === 'rd' || step.op === 'wr') {
    return { what: `guest ${step.op === 'rd' ? 'RDMSR' : `WRMSR 0x${step.value.toString(16)} to`} ${msrLabel(step.index)}`, signature: `${step.op} ${step.index} ${ans(host).split(' ')[0]} ${ans(emu).split(' ')[0]}` };
  }
  if (step.op === 'io' && host?.op === 'io' && emu?.op === 'io') {
    const name = I.ioctlName(step.request);
    if ((step.request === I.KVM_GET_MSRS || step.request === I.KVM_SET_MSRS) && host.out && emu.out && host.out.length >= 8) {
      const a = decodeMsrs(host.out).entries;
      const b = decodeMsrs(emu.out).entries;
      const k = a.findIndex((e, i) => e.data !== b[i]?.data);
      const at = host.ret !== emu.ret ? Math.min(host.ret, emu.ret) : k;
      const e = a[at];
      if (e) return { what: `${name} entry ${at} ${msrLabel(e.index)}`, signature: `${name} ${e.index} ${host.ret === emu.ret ? 'data' : 'ret'}` };
    }
    return { what: name, signature: `${name} ${host.ret} ${emu.ret}` };
  }
  return { what: step.op, signature: step.op };
}

export interface JudgeOptions {
  /** Where shrunk cases go (default DIR/cases); null: not written. */
  casesDir?: string | null;
  /** Where the host's profile goes (default DIR/profile.json); null: not written. */
  profileFile?: string | null;
  onProgress?: (done: number, total: number) => void;
}

export function judgeAnswers(plan: PlanCase[], answers: Answers, profile: HostProfile, opts: { casesDir?: string | null; onProgress?: (d: number, t: number) => void; unmatched?: string[] } = {}): JudgeReport {
  const groups = new Map<string, { group: string; cases: number; agreed: number }>();
  const rules = new Set<string>();
  const unanswered: string[] = [];
  const setupFailed: string[] = [];
  const bySignature = new Map<string, JudgeDisagreement>();
  const disagreements: JudgeDisagreement[] = [];
  let done = 0;
  for (const c of plan) {
    opts.onProgress?.(++done, plan.length);
    const host = answers.cases.get(c.id);
    if (!host) {
      unanswered.push(c.id);
      continue;
    }
    const g = caseGroup(c);
    const stat = groups.get(g) ?? { group: g, cases: 0, agreed: 0 };
    groups.set(g, stat);
    if (host.setupFail) {
      setupFailed.push(`${c.id}: ${host.setupFail.what} errno ${host.setupFail.errno}`);
      continue;
    }
    stat.cases++;
    const emu = runOnKvmsr(profile, c);
    let bad = -1;
    if (emu.setupFail) bad = 0;
    for (let i = 0; bad < 0 && i < c.steps.length; i++) {
      const h = host.steps[i];
      const e = emu.steps[i];
      if (h && e) byRule(c.steps[i]!, h, e, rules);
      if (!sameAnswer(h, e)) bad = i;
    }
    if (bad < 0) {
      stat.agreed++;
      continue;
    }
    const step = c.steps[bad]!;
    const d = describe(step, host.steps[bad], emu.steps[bad]);
    const signature = `${g.replace(/ \(.*\)$/, '')}|${d.signature}`;
    const seen = bySignature.get(signature);
    if (seen) {
      seen.alike++;
      continue;
    }
    const [hostSaid, emuSaid] = emu.setupFail ? [ans(host.steps[bad]), `setup failed: ${emu.setupFail.what} errno ${emu.setupFail.errno}`] : pairDetail(host.steps[bad], emu.steps[bad]);
    const jd: JudgeDisagreement = { group: g, caseId: c.id, step: bad, what: d.what, host: hostSaid, kvmsr: emuSaid, alike: 0 };
    if (opts.casesDir) {
      mkdirSync(opts.casesDir, { recursive: true });
      jd.file = join(opts.casesDir, `${c.id}.json`);
      writeFileSync(jd.file, JSON.stringify(harvestCaseFile(c, host, bad, profile, [`${d.what}: host ${jd.host}, kvmsr ${jd.kvmsr}`]), null, 1) + '\n');
    }
    bySignature.set(signature, jd);
    disagreements.push(jd);
  }
  const list = [...groups.values()].sort((a, b) => a.group.localeCompare(b.group));
  const cases = list.reduce((n, x) => n + x.cases, 0);
  const agreed = list.reduce((n, x) => n + x.agreed, 0);
  return {
    host: profile.host,
    groups: list,
    cases,
    agreed,
    unanswered,
    setupFailed,
    disagreements,
    rules: [...rules],
    unmatchedRules: opts.unmatched ?? [],
    agreementRate: cases ? agreed / cases : 1,
  };
}

/** Judges DIR: writes DIR/profile.json and, for each distinct disagreement, DIR/cases/ID.json. */
export function judgeDir(dir: string, opts: JudgeOptions = {}): { report: JudgeReport; profile: HostProfile; plan: PlanCase[]; answers: Answers } {
  const p = readHarvestFile(dir, 'plan.txt');
  const plan = parsePlan(p.text, p.file);
  const a = readHarvestFile(dir, 'answers.txt');
  const answers = parseAnswers(a.text, a.file);
  const { profile, unmatched } = measureFromAnswers(plan, answers);
  const profileFile = opts.profileFile === undefined ? join(dir, 'profile.json') : opts.profileFile;
  if (profileFile) writeFileSync(profileFile, JSON.stringify(profileToJson(profile), null, 1) + '\n');
  const report = judgeAnswers(plan, answers, profile, { casesDir: opts.casesDir === undefined ? join(dir, 'cases') : opts.casesDir, unmatched, ...(opts.onProgress ? { onProgress: opts.onProgress } : {}) });
  return { report, profile, plan, answers };
}

/** conform's table for a judge report. */
export function formatJudge(r: JudgeReport, dir: string): string {
  const out = [`kvmsr harvest judge ${dir}: ${r.host.vendorModule} ${r.host.kernel} (${r.host.cpuModel})`, '', '| group | cases | agreed |', '|---|---:|---:|'];
  for (const g of r.groups) out.push(`| ${g.group} | ${g.cases} | ${g.agreed} |`);
  out.push('');
  for (const rule of r.rules) out.push(`rule: ${rule}`);
  if (r.unmatchedRules.length) out.push(`measured MSR answers no rule kind reproduces: ${r.unmatchedRules.join(', ')}`);
  if (r.unanswered.length) out.push(`not answered by the probe (not compared): ${r.unanswered.length} cases, first ${r.unanswered.slice(0, 5).join(', ')}`);
  if (r.setupFailed.length) out.push(`setup failed on the host (not compared): ${r.setupFailed.length} cases, first ${r.setupFailed.slice(0, 3).join('; ')}`);
  r.disagreements.forEach((d, i) => {
    out.push('', `DISAGREEMENT ${i + 1} (${d.group}; case ${d.caseId}, step ${d.step}${d.alike ? `; ${d.alike} more cases alike` : ''}): ${d.what}`, `  host:  ${d.host}`, `  kvmsr: ${d.kvmsr}`);
    if (d.file) out.push(`  saved as ${d.file}`);
  });
  out.push('', `agreement ${(100 * r.agreementRate).toFixed(2)}% (${r.agreed} of ${r.cases} cases), ${r.disagreements.length} distinct disagreements`);
  return out.join('\n');
}
