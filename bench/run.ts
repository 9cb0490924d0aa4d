// `npm run bench`: bulk MSR I/O on kvmsr against peers measured in the same run on the same
// buffers: the real kernel (/dev/kvm through koffi, skipped with a note where absent), the
// straightforward JavaScript version (bench/baseline), and the msr_io loop in C (gcc -O2).
import { add, complete, cycle, save, suite } from 'benny';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeMsrs, encodeMsrList, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { loadRealKvm, realKvmStatus } from '../src/native/real-kvm.js';
import { NaiveMsrs } from './baseline/naive-msrs.js';
import { TableLoop } from './baseline/table-loop.js';
import { C_LOOP, evaluateTargets, JS_BASELINE, KERNEL, KVMSR_RUN, RUN_SUITE, targetTable, type BenchRow } from './targets.js';
import { roundTrips } from './round-trip.js';
import { parseCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = join(ROOT, 'bench', 'results');
const SIZES = [1, 8, 32, 128, 255];

const rows: BenchRow[] = [];
const notes: string[] = [];

// ---- the machines under test ----
const kvm = new Kvm();
const sys = kvm.open('/dev/kvm');
const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
const list = kvm.profile.msrIndexList;
const batch = (n: number): number[] => Array.from({ length: n }, (_, i) => list[i % list.length]!);
const readAll = encodeMsrs(list.map((index) => ({ index, data: 0n })));
kvm.ioctlOrThrow(vcpu, I.KVM_GET_MSRS, readAll);
const resetValues = decodeMsrs(readAll).entries.map((e) => [e.index, e.data] as [number, bigint]);
const naive = new NaiveMsrs(resetValues);
const tableLoop = new TableLoop(list);
/** A SET batch of values that pass validation: what a fresh vCPU reads (the TSC's write is cheap too). */
const setBatch = (n: number): Uint8Array => {
  const v = new Map(resetValues);
  return encodeMsrs(batch(n).map((index) => ({ index, data: v.get(index)! })));
};

const status = realKvmStatus();
const real = status.ok ? loadRealKvm() : null;
let realVcpu = -1;
let realSys = -1;
if (real) {
  realSys = real.open('/dev/kvm');
  const rvm = real.ioctl(realSys, I.KVM_CREATE_VM, 0);
  real.ioctl(rvm, I.KVM_CREATE_IRQCHIP, 0);
  realVcpu = real.ioctl(rvm, I.KVM_CREATE_VCPU, 0);
} else {
  notes.push(`real kernel peer skipped: ${status.reason}`);
}

// ---- the C loop ----
interface CResult {
  n: number;
  getNsPerIoctl: number;
  setNsPerIoctl: number;
}
/** The C loop's executable, built once; null (with a note) where gcc is missing. */
function buildC(): string | null {
  try {
    const exe = join(mkdtempSync(join(tmpdir(), 'kvmsr-bench-')), 'msr_loop');
    execFileSync('gcc', ['-O2', '-o', exe, join(ROOT, 'bench', 'c', 'msr_loop.c')]);
    return exe;
  } catch (e) {
    notes.push(`C peer skipped: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}
const cExe = buildC();
/**
 * The C loop at batch size n, timed for C_MS per op. It runs right before and right after kvmsr's
 * suite of the same size: this machine's speed drifts by up to 2x within a minute, so a C figure
 * taken at the start of the run would give a ratio across two time windows.
 */
const C_MS = 150;
function runC(n: number): CResult | null {
  if (cExe === null) return null;
  const out = execFileSync(cExe, [String(n), String(C_MS), ...list.map((i) => '0x' + i.toString(16))], { encoding: 'utf8' });
  return JSON.parse(out) as CResult;
}

// ---- benny suites ----
function record(suiteName: string, entries: number) {
  return complete((summary) => {
    const mine = summary.results.find((r) => r.name === 'kvmsr');
    for (const r of summary.results) {
      const ns = 1e9 / r.ops;
      rows.push({
        suite: suiteName,
        entries,
        peer: r.name,
        opsPerSec: r.ops,
        nsPerOp: ns,
        entriesPerSec: r.ops * Math.max(1, entries),
        ratioToKvmsr: mine ? r.ops / mine.ops : NaN,
      });
    }
  });
}
/** Adds the C row: the mean of the runs just before and just after kvmsr's suite. */
function addC(suiteName: string, entries: number, key: 'getNsPerIoctl' | 'setNsPerIoctl', before: CResult | null, after: CResult | null): void {
  const mine = rows.find((r) => r.suite === suiteName && r.peer === 'kvmsr');
  if (!before || !after || !mine) return;
  const ns = (before[key] + after[key]) / 2;
  const ops = 1e9 / ns;
  rows.push({ suite: suiteName, entries, peer: C_LOOP, opsPerSec: ops, nsPerOp: ns, entriesPerSec: ops * entries, ratioToKvmsr: ops / mine.opsPerSec, cBeforeNs: before[key], cAfterNs: after[key] });
}

const opts = { minSamples: 5, maxTime: 1.5 };
/** The C loop's algorithm in JavaScript, with no KVM rule (bench/baseline/table-loop.ts). */
const TABLE_LOOP = 'JS table loop (no rules)';
/** Every peer must process the whole batch, or a regression that stops early would look faster. */
function mustProcessAll(peer: string, what: string, got: number, n: number): void {
  if (got !== n) throw new Error(`bench: ${peer} ${what} returned ${got}, not ${n}: the batch would not measure the same work`);
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  for (const n of SIZES) {
    const name = `KVM_GET_MSRS x${n}`;
    const bufK = encodeMsrs(batch(n).map((index) => ({ index, data: 0n })));
    const bufN = bufK.slice();
    const bufR = bufK.slice();
    const bufT = bufK.slice();
    mustProcessAll('kvmsr', name, kvm.ioctl(vcpu, I.KVM_GET_MSRS, bufK), n);
    mustProcessAll(JS_BASELINE, name, naive.getMsrs(bufN), n);
    mustProcessAll(TABLE_LOOP, name, tableLoop.getMsrs(bufT), n);
    if (real) mustProcessAll(KERNEL, name, real.ioctl(realVcpu, I.KVM_GET_MSRS, bufR), n);
    const cases = [
      add('kvmsr', () => kvm.ioctl(vcpu, I.KVM_GET_MSRS, bufK), opts),
      add(JS_BASELINE, () => naive.getMsrs(bufN), opts),
      add(TABLE_LOOP, () => tableLoop.getMsrs(bufT), opts),
      ...(real ? [add(KERNEL, () => real.ioctl(realVcpu, I.KVM_GET_MSRS, bufR), opts)] : []),
    ];
    const before = runC(n);
    await suite(name, ...cases, cycle(), record(name, n), save({ file: `get-${n}`, folder: OUT, format: 'chart.html' }));
    addC(name, n, 'getNsPerIoctl', before, runC(n));
  }
  for (const n of SIZES) {
    const name = `KVM_SET_MSRS x${n}`;
    const bufK = setBatch(n);
    const bufN = bufK.slice();
    const bufR = bufK.slice();
    const bufT = bufK.slice();
    mustProcessAll('kvmsr', name, kvm.ioctl(vcpu, I.KVM_SET_MSRS, bufK), n);
    mustProcessAll(JS_BASELINE, name, naive.setMsrs(bufN), n);
    mustProcessAll(TABLE_LOOP, name, tableLoop.setMsrs(bufT), n);
    if (real) mustProcessAll(KERNEL, name, real.ioctl(realVcpu, I.KVM_SET_MSRS, bufR), n);
    const cases = [
      add('kvmsr', () => kvm.ioctl(vcpu, I.KVM_SET_MSRS, bufK), opts),
      add(JS_BASELINE, () => naive.setMsrs(bufN), opts),
      add(TABLE_LOOP, () => tableLoop.setMsrs(bufT), opts),
      ...(real ? [add(KERNEL, () => real.ioctl(realVcpu, I.KVM_SET_MSRS, bufR), opts)] : []),
    ];
    const before = runC(n);
    await suite(name, ...cases, cycle(), record(name, n), save({ file: `set-${n}`, folder: OUT, format: 'chart.html' }));
    addC(name, n, 'setNsPerIoctl', before, runC(n));
  }
  {
    const name = 'KVM_GET_MSR_INDEX_LIST';
    const bufK = encodeMsrList(64);
    const bufR = bufK.slice();
    await suite(
      name,
      add('kvmsr', () => kvm.ioctl(sys, I.KVM_GET_MSR_INDEX_LIST, bufK), opts),
      ...(real ? [add(KERNEL, () => real.ioctl(realSys, I.KVM_GET_MSR_INDEX_LIST, bufR), opts)] : []),
      cycle(),
      record(name, 0),
      save({ file: 'index-list', folder: OUT, format: 'chart.html' }),
    );
  }
  {
    const name = 'encode+decode kvm_msrs x255';
    const entries = batch(255).map((index) => ({ index, data: 0x1234n }));
    await suite(name, add('kvmsr', () => decodeMsrs(encodeMsrs(entries)), opts), cycle(), record(name, 255));
  }
  {
    // Replay of the QEMU fixtures (recorded on kvm_amd 6.12, each with its host profile embedded).
    const dir = join(ROOT, 'test', 'fixtures', 'qemu');
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.jsonl.gz')).sort()) {
      const parsed = parseCapture(gunzipSync(readFileSync(join(dir, f))).toString('utf8'), f);
      const ioctls = parsed.records.length;
      const name = `replay ${f.replace('.jsonl.gz', '')} (${ioctls} ioctls)`;
      await suite(name, add('kvmsr', () => replay(parsed), { minSamples: 5, maxTime: 2 }), cycle(), record(name, 0));
      const r = rows.find((x) => x.suite === name)!;
      notes.push(`replay of ${f}: ${Math.round(r.opsPerSec * ioctls).toLocaleString('en')} ioctls per second, fds, profile and comparison included`);
    }
  }
  const trip = await roundTrips(ROOT);
  notes.push(...trip.notes);
  if (trip.run !== null) {
    const inProcess = rows.find((r) => r.suite === 'KVM_GET_MSRS x1' && r.peer === 'kvmsr');
    const peers: [string, number | null][] = [
      [KVMSR_RUN, trip.run],
      [KERNEL, trip.kernel],
      ['kvmsr in process', inProcess ? inProcess.nsPerOp : null],
    ];
    for (const [peer, ns] of peers) {
      if (ns === null) continue;
      rows.push({ suite: RUN_SUITE, entries: 1, peer, opsPerSec: 1e9 / ns, nsPerOp: ns, entriesPerSec: 1e9 / ns, ratioToKvmsr: trip.run / ns });
    }
  }
  const targets = evaluateTargets(rows, SIZES, {
    kernel: real ? 'the kernel peer did not run' : `no kernel peer: ${status.ok ? 'the FFI did not load' : status.reason}`,
    c: cExe === null ? 'no C peer (gcc missing)' : 'the C peer did not run',
    ...(trip.why ? { run: trip.why } : {}),
  });
  const result = { date: new Date().toISOString(), node: process.version, profile: kvm.profile.host, notes, targets, rows };
  writeFileSync(join(OUT, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  process.stdout.write('\n' + table() + '\n\n' + targetTable(targets) + '\n' + notes.map((n) => `note: ${n}`).join('\n') + '\n');
}

function table(): string {
  const fmt = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const lines = ['| suite | peer | ns/ioctl | entries/s | ops/s vs kvmsr |', '|---|---|---:|---:|---:|'];
  for (const r of rows) {
    lines.push(`| ${r.suite} | ${r.peer} | ${fmt(r.nsPerOp)} | ${r.entries ? (r.entriesPerSec / 1e6).toFixed(1) + 'M' : '-'} | ${fmt(r.ratioToKvmsr)}x |`);
  }
  return lines.join('\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
