// `npm run robustness`: 1,000,000 random ioctls and 10,000 random capture files against kvmsr,
// counting anything thrown (the target is zero) and any result the kernel could not return.
// Seeded: `npm run robustness -- --seed 7 --ioctls 1000000 --captures 10000`.
import { Command } from 'commander';
import { encodeMsrs, type MsrEntry } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { parseCapture, CaptureFormatError } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { Kvm } from '../src/kvm/kvm.js';
import { prng } from '../src/util/prng.js';

const KERNEL_ERRNOS = new Set([1, 5, 7, 9, 12, 14, 16, 17, 22, 25, 38, 95]);
const REQUESTS = [...Object.values(I.KVM_IOCTLS), 0x5421, 0x5450, 0x5451, 0x5452, 0x5460, 0x2, 0x541b];

const program = new Command()
  .option('--seed <n>', 'seed', '1')
  .option('--ioctls <n>', 'random ioctls', '1000000')
  .option('--captures <n>', 'random capture files', '10000')
  .parse(process.argv);
const o = program.opts<{ seed: string; ioctls: string; captures: string }>();
const seed = Number(o.seed);
const rnd = prng(seed);
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
const u32 = (): number => Math.floor(rnd() * 0x100000000);

let kvm = new Kvm();
const indices = [...kvm.profile.msrIndexList, 0x12345678, 0x480, 0xc0000080, 0x400, 0x0];
let thrown = 0;
let impossible = 0;
const firstThrows: string[] = [];
function fresh(): void {
  kvm = new Kvm();
  kvm.memory.map(0x10000, new Uint8Array(256));
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
}
function arg(): number | bigint | Uint8Array {
  const r = rnd();
  if (r < 0.15) return Math.floor(rnd() * 8) - 1;
  if (r < 0.25) return pick([0x10000, 0x10008, 0x20000, 0n, 1n << 60n]);
  if (r < 0.4) return new Uint8Array(Math.floor(rnd() * 600)).map(() => Math.floor(rnd() * 256));
  const n = Math.floor(rnd() * 40);
  const entries: MsrEntry[] = Array.from({ length: n }, () => ({
    index: rnd() < 0.8 ? pick(indices) : u32(),
    data: rnd() < 0.5 ? pick([0n, 1n, (1n << 64n) - 1n, 1n << 63n]) : (BigInt(u32()) << 32n) | BigInt(u32()),
  }));
  const nmsrs = rnd() < 0.1 ? Math.floor(rnd() * 300) : n;
  return encodeMsrs({ nmsrs, entries });
}

const t0 = performance.now();
const ioctls = Number(o.ioctls);
fresh();
for (let i = 0; i < ioctls; i++) {
  if (i % 5000 === 0) fresh();
  const fd = Math.floor(rnd() * 8) - 1;
  const req = rnd() < 0.9 ? pick(REQUESTS) : u32();
  try {
    const r = kvm.ioctl(fd, req, arg());
    if (!Number.isInteger(r) || (r < 0 && !KERNEL_ERRNOS.has(-r))) impossible++;
  } catch (e) {
    thrown++;
    if (firstThrows.length < 5) firstThrows.push(`${I.ioctlName(req)}: ${(e as Error).message}`);
  }
}
const t1 = performance.now();

const header = '{"format":"kvmsr-capture","version":1,"kernel":"k","cpuVendor":"v","cpuModel":"m","vendorModule":"kvm_pvm","kvmsrVersion":"0","recorder":"r","createdAt":"t"}';
let captureThrows = 0;
let formatErrors = 0;
const captures = Number(o.captures);
for (let i = 0; i < captures; i++) {
  const lines: string[] = [rnd() < 0.9 ? header : Buffer.from(new Uint8Array(40).map(() => Math.floor(rnd() * 256))).toString('latin1')];
  const n = Math.floor(rnd() * 10);
  for (let k = 0; k < n; k++) {
    const b = arg();
    const bytes = b instanceof Uint8Array ? Buffer.from(b).toString('hex') : '';
    const rec = {
      seq: rnd() < 0.95 ? k : Math.floor(rnd() * 3),
      tid: 1,
      fd: Math.floor(rnd() * 6),
      fdKind: pick(['system', 'vm', 'vcpu', 'vcpu', 'bogus']),
      vcpuId: Math.floor(rnd() * 3),
      request: '0x' + (rnd() < 0.9 ? pick(REQUESTS) : u32()).toString(16),
      ...(b instanceof Uint8Array ? { in: bytes, out: rnd() < 0.9 ? bytes : bytes.slice(2) } : { arg: typeof b === 'number' ? b : 0 }),
      ret: Math.floor(rnd() * 4) - 1,
      errno: Math.floor(rnd() * 30),
    };
    let line = JSON.stringify(rec);
    if (rnd() < 0.05) line = line.slice(0, Math.floor(rnd() * line.length));
    lines.push(line);
  }
  try {
    const c = parseCapture(lines.join('\n'), `fuzz-${i}.jsonl`);
    if (c.error) formatErrors++;
    replay(c, { continueOnDivergence: true });
  } catch (e) {
    if (e instanceof CaptureFormatError) formatErrors++;
    else {
      captureThrows++;
      if (firstThrows.length < 5) firstThrows.push(`capture ${i}: ${(e as Error).stack ?? String(e)}`);
    }
  }
}
const t2 = performance.now();
const result = {
  seed,
  ioctls,
  thrownByIoctls: thrown,
  resultsNoKernelCouldGive: impossible,
  captures,
  capturesWithFormatErrors: formatErrors,
  thrownByCaptures: captureThrows,
  firstThrows,
  seconds: { ioctls: +((t1 - t0) / 1000).toFixed(1), captures: +((t2 - t1) / 1000).toFixed(1) },
};
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
process.exitCode = thrown + captureThrows + impossible === 0 ? 0 : 1;
