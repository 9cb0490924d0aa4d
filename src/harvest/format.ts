// The harvest directory: `plan.txt` (what to run, written by `kvmsr harvest plan`) and
// `answers.txt` (what the kernel answered, written by `kvmsr-probe` on the host). Both are plain
// text, one item a line, so a small static C program can read and write them. docs/oracles.md
// ("Measuring a host") is the reference; probe/kvmsr-probe.c is the other side.
import { readFileSync } from 'node:fs';
import { FileLineError } from '../util/file-error.js';

export type Target = 'sys' | 'vm' | number;

export type PlanStep =
  | { op: 'io'; on: Target; request: number; arg: number | Uint8Array | 'wb' }
  | { op: 'rd'; vcpu: number; index: number }
  | { op: 'wr'; vcpu: number; index: number; value: bigint }
  | { op: 'sleep'; ms: number }
  | { op: 'tsckhz-floor'; on: number; lo: number; hi: number }
  /** KVM_GET_STATS_FD on the VM or a vCPU, and the whole binary stats file it gives. */
  | { op: 'stats'; on: 'vm' | number };

export interface CaseSetup {
  vcpus: number;
  irqchip: boolean;
  cpuid: boolean;
  /**
   * With cpuid: Hyper-V's CPUID leaves too (written cpuid=2): KVM_GET_SUPPORTED_HV_CPUID's leaves
   * at 0x40000000 and KVM's own moved to 0x40000100, as QEMU lays them out with hv-* flags.
   */
  hv?: boolean;
  /** KVM_CAP_X86_USER_SPACE_MSR mask enabled on the VM (0: none). */
  usermsr: number;
  /** A 64 KiB memory slot at GPA 0 and a real-mode guest on vCPU 0 for the rd/wr steps. */
  guest: boolean;
}

export interface PlanCase {
  id: string;
  setup: CaseSetup;
  steps: PlanStep[];
}

export type StepAnswer =
  | { op: 'io'; ret: number; errno: number; out: Uint8Array | null }
  | { op: 'g'; kind: 'ok'; value: bigint }
  | { op: 'g'; kind: 'gp' }
  | { op: 'g'; kind: 'exit'; exitReason: number; reason: number; index: number; data: bigint }
  | { op: 'g'; kind: 'fail'; what: string; errno: number }
  | { op: 'sleep' }
  | { op: 'tsckhz'; value: number }
  | { op: 'stats'; ret: number; errno: number; bytes: Uint8Array | null };

export interface CaseAnswer {
  id: string;
  /** Set when the case's setup failed on the host: which call, and its errno. */
  setupFail?: { what: string; errno: number };
  steps: StepAnswer[];
}

export interface Answers {
  info: {
    kernel: string;
    machine: string;
    cpuVendor: string;
    cpuModel: string;
    modules: string[];
    params: Record<string, string>;
    jobs: number;
  };
  cases: Map<string, CaseAnswer>;
  /** Present when the probe finished the whole plan. */
  done?: { cases: number; seconds: number };
}

/** An error in a harvest file, naming the file, the line and the field. */
export class HarvestFileError extends FileLineError {
  override name = 'HarvestFileError';
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const h = (v: number | bigint): string => '0x' + v.toString(16);
const target = (t: Target): string => (t === 'sys' || t === 'vm' ? t : `v${t}`);

/** plan.txt for these cases. */
export function writePlan(cases: readonly PlanCase[], comment: string[] = []): string {
  const out = ['kvmsr-plan 1', ...comment.map((c) => `# ${c}`)];
  for (const c of cases) {
    const s = c.setup;
    out.push(`case ${c.id} vcpus=${s.vcpus} irqchip=${s.irqchip ? 1 : 0} cpuid=${s.hv === true ? 2 : s.cpuid ? 1 : 0} usermsr=${h(s.usermsr)} guest=${s.guest ? 1 : 0}`);
    for (const st of c.steps) {
      switch (st.op) {
        case 'io': {
          const arg = st.arg === 'wb' ? 'wb' : typeof st.arg === 'number' ? `i:${st.arg}` : `x:${hex(st.arg)}`;
          out.push(`io ${target(st.on)} ${h(st.request >>> 0)} ${arg}`);
          break;
        }
        case 'rd':
          out.push(`rd ${st.vcpu} ${h(st.index >>> 0)}`);
          break;
        case 'wr':
          out.push(`wr ${st.vcpu} ${h(st.index >>> 0)} ${h(BigInt.asUintN(64, st.value))}`);
          break;
        case 'sleep':
          out.push(`sleep ${st.ms}`);
          break;
        case 'tsckhz-floor':
          out.push(`tsckhz-floor v${st.on} ${st.lo} ${st.hi}`);
          break;
        case 'stats':
          out.push(`stats ${target(st.on)}`);
          break;
      }
    }
    out.push('end');
  }
  return out.join('\n') + '\n';
}

class LineReader {
  constructor(
    readonly file: string,
    public line = 0,
  ) {}
  fail(field: string, msg: string): never {
    throw new HarvestFileError(this.file, this.line, field, msg);
  }
  num(tok: string | undefined, field: string, max = Number.MAX_SAFE_INTEGER, min = 0): number {
    if (tok === undefined || !/^-?(0x[0-9a-f]+|[0-9]+)$/i.test(tok)) this.fail(field, `expected a number, not '${tok ?? ''}'`);
    const neg = tok.startsWith('-');
    const v = Number(neg ? tok.slice(1) : tok) * (neg ? -1 : 1);
    if (!Number.isSafeInteger(v) || v < min || v > max) this.fail(field, `expected ${min}..${max}, not ${tok}`);
    return v;
  }
  u64(tok: string | undefined, field: string): bigint {
    if (tok === undefined || !/^(0x[0-9a-f]{1,16}|[0-9]{1,20})$/i.test(tok)) this.fail(field, `expected a 64-bit number, not '${tok ?? ''}'`);
    const v = BigInt(tok);
    if (v >= 1n << 64n) this.fail(field, `expected a 64-bit number, not ${tok}`);
    return v;
  }
  bytes(tok: string | undefined, field: string): Uint8Array {
    if (tok === undefined || !/^([0-9a-f]{2})*$/i.test(tok)) this.fail(field, 'expected hex bytes');
    return new Uint8Array(Buffer.from(tok, 'hex'));
  }
  target(tok: string | undefined, field: string, vcpus: number): Target {
    if (tok === 'sys' || tok === 'vm') return tok;
    const m = /^v([0-9]+)$/.exec(tok ?? '');
    if (!m) this.fail(field, `expected sys, vm or vN, not '${tok ?? ''}'`);
    const n = Number(m[1]);
    if (n >= vcpus) this.fail(field, `vCPU ${n}, but the case has ${vcpus}`);
    return n;
  }
}

const setupField = (r: LineReader, tok: string | undefined, name: string): string => {
  const m = new RegExp(`^${name}=(.*)$`).exec(tok ?? '');
  if (!m) r.fail(name, `expected ${name}=...`);
  return m[1]!;
};

/** Parses plan.txt; every error names the file, the line and the field. */
export function parsePlan(text: string, file = 'plan.txt'): PlanCase[] {
  const r: LineReader = new LineReader(file);
  const lines = text.split('\n');
  if (lines[0]?.trim() !== 'kvmsr-plan 1') {
    r.line = 1;
    r.fail('header', "expected 'kvmsr-plan 1'");
  }
  const cases: PlanCase[] = [];
  const ids = new Set<string>();
  let cur: PlanCase | null = null;
  for (let i = 1; i < lines.length; i++) {
    r.line = i + 1;
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const t = line.split(' ');
    if (t[0] === 'case') {
      if (cur) r.fail('case', `case ${cur.id} has no 'end'`);
      const id = t[1] ?? '';
      if (!/^[A-Za-z0-9._:-]+$/.test(id)) r.fail('case.id', `expected an id of letters, digits and ._:-, not '${id}'`);
      if (ids.has(id)) r.fail('case.id', `${id} is not unique`);
      ids.add(id);
      const vcpus = r.num(setupField(r, t[2], 'vcpus'), 'vcpus', 1024);
      const flag = (tok: string | undefined, name: string): boolean => r.num(setupField(r, tok, name), name, 1) === 1;
      const irqchip = flag(t[3], 'irqchip');
      const cpuid = r.num(setupField(r, t[4], 'cpuid'), 'cpuid', 2);
      const setup: CaseSetup = { vcpus, irqchip, cpuid: cpuid > 0, usermsr: r.num(setupField(r, t[5], 'usermsr'), 'usermsr', 0xffffffff), guest: flag(t[6], 'guest') };
      if (cpuid === 2) setup.hv = true;
      cur = { id, setup, steps: [] };
      continue;
    }
    if (!cur) r.fail(t[0] ?? 'line', 'a step outside a case');
    const c: PlanCase = cur;
    switch (t[0]) {
      case 'end':
        cases.push(c);
        cur = null;
        break;
      case 'io': {
        const on = r.target(t[1], 'io.target', c.setup.vcpus);
        const request = r.num(t[2], 'io.request', 0xffffffff);
        const a = t[3] ?? '';
        let arg: number | Uint8Array | 'wb';
        if (a === 'wb') arg = 'wb';
        else if (a.startsWith('i:')) arg = r.num(a.slice(2), 'io.arg');
        else if (a.startsWith('x:')) arg = r.bytes(a.slice(2), 'io.arg');
        else r.fail('io.arg', `expected i:NUMBER, x:HEX or wb, not '${a}'`);
        c.steps.push({ op: 'io', on, request, arg });
        break;
      }
      case 'rd':
      case 'wr': {
        if (!c.setup.guest) r.fail(t[0], 'a guest step in a case without guest=1');
        const vcpu = r.num(t[1], `${t[0]}.vcpu`, 0);
        const index = r.num(t[2], `${t[0]}.index`, 0xffffffff);
        if (t[0] === 'rd') c.steps.push({ op: 'rd', vcpu, index });
        else c.steps.push({ op: 'wr', vcpu, index, value: r.u64(t[3], 'wr.value') });
        break;
      }
      case 'sleep':
        c.steps.push({ op: 'sleep', ms: r.num(t[1], 'sleep.ms', 60000) });
        break;
      case 'tsckhz-floor': {
        const on = r.target(t[1], 'tsckhz-floor.target', c.setup.vcpus);
        if (typeof on !== 'number') r.fail('tsckhz-floor.target', 'expected a vCPU');
        c.steps.push({ op: 'tsckhz-floor', on, lo: r.num(t[2], 'tsckhz-floor.lo', 0xffffffff), hi: r.num(t[3], 'tsckhz-floor.hi', 0xffffffff) });
        break;
      }
      case 'stats': {
        const on = r.target(t[1], 'stats.target', c.setup.vcpus);
        if (on === 'sys') r.fail('stats.target', 'expected the VM or a vCPU');
        c.steps.push({ op: 'stats', on });
        break;
      }
      default:
        r.fail('op', `unknown step '${t[0] ?? ''}'`);
    }
  }
  if (cur) r.fail('case', `case ${cur.id} has no 'end'`);
  return cases;
}

/** Parses answers.txt. A malformed line is an error naming the file, the line and the field. */
export function parseAnswers(text: string, file = 'answers.txt'): Answers {
  const r: LineReader = new LineReader(file);
  const lines = text.split('\n');
  if (lines[0]?.trim() !== 'kvmsr-answers 1') {
    r.line = 1;
    r.fail('header', "expected 'kvmsr-answers 1'");
  }
  const info: Answers['info'] = { kernel: '', machine: '', cpuVendor: '', cpuModel: '', modules: [], params: {}, jobs: 1 };
  const cases = new Map<string, CaseAnswer>();
  let done: Answers['done'];
  let cur: CaseAnswer | null = null;
  for (let i = 1; i < lines.length; i++) {
    r.line = i + 1;
    const line = lines[i]!.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const t = line.split(' ');
    if (!cur) {
      if (t[0] === 'info') {
        const rest = t.slice(2).join(' ').trim();
        switch (t[1]) {
          case 'kernel': info.kernel = rest; break;
          case 'machine': info.machine = rest; break;
          case 'cpu_vendor': info.cpuVendor = rest; break;
          case 'cpu_model': info.cpuModel = rest; break;
          case 'module': info.modules.push(rest); break;
          case 'param': info.params[t[2] ?? ''] = t.slice(3).join(' ').trim(); break;
          case 'jobs': info.jobs = r.num(t[2], 'info.jobs'); break;
          default: break; // later probes may say more
        }
      } else if (t[0] === 'case' && t[2] === 'begin') {
        cur = { id: t[1] ?? '', steps: [] };
      } else if (t[0] === 'done') {
        done = { cases: r.num(t[1], 'done.cases'), seconds: Number(t[2]) };
      } else {
        r.fail(t[0] ?? 'line', 'expected info, case ID begin or done');
      }
      continue;
    }
    const c: CaseAnswer = cur;
    const step = (tok: string | undefined): void => {
      const n = r.num(tok, `${t[0]}.step`);
      if (n !== c.steps.length) r.fail(`${t[0]}.step`, `expected step ${c.steps.length}, not ${n}`);
    };
    switch (t[0]) {
      case 'case':
        if (t[1] !== c.id || t[2] !== 'end') r.fail('case', `expected 'case ${c.id} end'`);
        cases.set(c.id, c);
        cur = null;
        break;
      case 'setup':
        c.setupFail = { what: t[2] ?? '', errno: r.num(t[3], 'setup.errno') };
        break;
      case 'io':
        step(t[1]);
        c.steps.push({ op: 'io', ret: r.num(t[2], 'io.ret', 0x7fffffff, -1), errno: r.num(t[3], 'io.errno', 4095), out: t[4] === '-' ? null : r.bytes(t[4], 'io.out') });
        break;
      case 'g': {
        step(t[1]);
        switch (t[2]) {
          case 'ok': c.steps.push({ op: 'g', kind: 'ok', value: r.u64(t[3], 'g.value') }); break;
          case 'gp': c.steps.push({ op: 'g', kind: 'gp' }); break;
          case 'exit':
            c.steps.push({ op: 'g', kind: 'exit', exitReason: r.num(t[3], 'g.exitReason'), reason: r.num(t[4], 'g.reason'), index: r.num(t[5], 'g.index', 0xffffffff), data: r.u64(t[6], 'g.data') });
            break;
          case 'fail': c.steps.push({ op: 'g', kind: 'fail', what: t[3] ?? '', errno: r.num(t[4], 'g.errno') }); break;
          default: r.fail('g.kind', `expected ok, gp, exit or fail, not '${t[2] ?? ''}'`);
        }
        break;
      }
      case 'sleep':
        step(t[1]);
        c.steps.push({ op: 'sleep' });
        break;
      case 'tsckhz':
        step(t[1]);
        c.steps.push({ op: 'tsckhz', value: r.num(t[2], 'tsckhz.value', 0xffffffff, -1) });
        break;
      case 'stats':
        step(t[1]);
        c.steps.push({ op: 'stats', ret: r.num(t[2], 'stats.ret', 0, -1), errno: r.num(t[3], 'stats.errno', 4095), bytes: t[4] === '-' ? null : r.bytes(t[4], 'stats.bytes') });
        break;
      default:
        r.fail(t[0] ?? 'line', `unknown answer in case ${c.id}`);
    }
  }
  // A case the probe did not finish (it crashed, or was stopped) is simply absent.
  return { info, cases, ...(done ? { done } : {}) };
}

export function readPlan(file: string): PlanCase[] {
  return parsePlan(readFileSync(file, 'utf8'), file);
}
export function readAnswers(file: string): Answers {
  return parseAnswers(readFileSync(file, 'utf8'), file);
}

/** answers.txt for these answers, as kvmsr-probe writes it (for tests, and kvmsr standing in for a host). */
export function writeAnswers(a: Answers): string {
  const out = ['kvmsr-answers 1', `info kernel ${a.info.kernel}`, `info machine ${a.info.machine}`, `info cpu_vendor ${a.info.cpuVendor}`, `info cpu_model ${a.info.cpuModel}`];
  for (const m of a.info.modules) out.push(`info module ${m}`);
  for (const [k, v] of Object.entries(a.info.params)) out.push(`info param ${k} ${v}`);
  out.push(`info jobs ${a.info.jobs}`);
  for (const c of a.cases.values()) {
    out.push(`case ${c.id} begin`);
    if (c.setupFail) out.push(`setup fail ${c.setupFail.what} ${c.setupFail.errno}`);
    c.steps.forEach((s, n) => {
      switch (s.op) {
        case 'io':
          out.push(`io ${n} ${s.ret} ${s.errno} ${s.out ? hex(s.out) : '-'}`);
          break;
        case 'g':
          if (s.kind === 'ok') out.push(`g ${n} ok ${h(s.value)}`);
          else if (s.kind === 'gp') out.push(`g ${n} gp`);
          else if (s.kind === 'exit') out.push(`g ${n} exit ${s.exitReason} ${s.reason} ${h(s.index)} ${h(s.data)}`);
          else out.push(`g ${n} fail ${s.what} ${s.errno}`);
          break;
        case 'sleep':
          out.push(`sleep ${n}`);
          break;
        case 'tsckhz':
          out.push(`tsckhz ${n} ${s.value}`);
          break;
        case 'stats':
          out.push(`stats ${n} ${s.ret} ${s.errno} ${s.bytes ? hex(s.bytes) : '-'}`);
          break;
      }
    });
    out.push(`case ${c.id} end`);
  }
  if (a.done) out.push(`done ${a.done.cases} ${a.done.seconds.toFixed(1)}`);
  return out.join('\n') + '\n';
}
