// Replays a capture on kvmsr: rebuilds the fds and state, runs each MSR ioctl with the recorded
// input bytes, and compares the return value, errno and every output byte with what the real
// kernel gave. What kvmsr cannot know is said, not hidden: values the guest may have written
// while it ran (KVM_RUN), and state set through ioctls kvmsr does not model (KVM_SET_NESTED_STATE,
// a vCPU's KVM_SET_DEVICE_ATTR, KVM_SET_SREGS on PVM) are counted apart and adopted, never
// reported as divergences. State reads (KVM_GET_LAPIC, KVM_GET_CLOCK, KVM_GET_SREGS/SREGS2) run
// on kvmsr with their return value compared, their bytes not.
import { MOVING_MSRS, movingAgree, movingRule } from '../kvm/x86/moving-msrs.js';
import { decodeMsrs, encodeMsrFilter, decodeMsrFilter } from '../abi/codecs.js';
import { errnoName } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_MSR_ENTRY_LAYOUT, KVM_MSRS_LAYOUT } from '../abi/layout.js';
import { msrLabel } from '../abi/msr-names.js';
import { Kvm } from '../kvm/kvm.js';
import { M } from '../kvm/x86/msr-index.js';
import { slotOf } from '../kvm/x86/msr-slots.js';
import { parseProfile, type HostProfile } from '../kvm/profile.js';
import { releaseOf, seriesOf } from '../kvm/x86/release.js';
import { writeTsc } from '../kvm/x86/tsc.js';
import { INTEGER_IOCTLS, MSR_IOCTLS, STATE_GETTERS } from './extents.js';
import type { CaptureRecord, ParsedCapture } from './format.js';

export interface ReplayOptions {
  /** The profile to replay on; default: the one embedded in the capture, else kvmsr's default. */
  profile?: HostProfile;
  /** Go on after the first divergence and report them all. */
  continueOnDivergence?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface EntryView {
  index: number;
  name: string;
  /** The index the kernel's bytes hold there, when it is not the one kvmsr's hold. */
  expectedName?: string;
  expected: string;
  actual: string;
  differs: boolean;
}

export interface Divergence {
  seq: number;
  name: string;
  fdKind: string;
  vcpuId?: number;
  what: string[];
  /** For KVM_GET_MSRS/KVM_SET_MSRS: the entries around the first differing one, decoded. */
  entries: EntryView[];
}

export interface ReplayResult {
  ioctls: number;
  msrIoctls: number;
  entries: number;
  divergences: Divergence[];
  /** Records kvmsr could not check, with why. */
  unknowable: { seq: number; name: string; why: string }[];
  /** Entries whose value was compared by rule, or adopted because kvmsr could not know it. */
  byRule: number;
  adopted: number;
  /** State getters (extents.ts STATE_GETTERS) run on kvmsr whose output was not compared. */
  stateReads: number;
  rules: string[];
  stoppedAt?: number;
  ms: number;
}

/** What kvmsr does not model of KVM_SET_SREGS/SREGS2 on PVM. */
const PVM_SREGS_WHY = 'KVM_SET_SREGS/SREGS2 on PVM (besides EFER, APIC base and segment bases, pvm.c may rewrite STAR and EFER.SCE)';

/** State-setting ioctls kvmsr does not model, and what they may change that replay then cannot know. */
const UNMODELED_SETTERS = new Map<number, string>([
  [I.KVM_SET_NESTED_STATE, 'KVM_SET_NESTED_STATE (vmx/svm_set_nested_state: L2 state, VMX/SVM MSRs, EFER.SVME)'],
  [I.KVM_SET_DEVICE_ATTR, 'a vCPU\'s KVM_SET_DEVICE_ATTR (kvm_arch_tsc_set_attr: the TSC offset)'],
  [I.KVM_SET_USER_MEMORY_REGION2, 'KVM_SET_USER_MEMORY_REGION2 (guest_memfd memslots; no MSR answer depends on them)'],
]);

const hex64 = (v: bigint): string => '0x' + v.toString(16);

export function profileForCapture(c: ParsedCapture): HostProfile | undefined {
  return c.header.profile === undefined ? undefined : parseProfile(c.header.profile, 'capture header profile');
}

export function replay(c: ParsedCapture, opts: ReplayOptions = {}): ReplayResult {
  const profile = opts.profile ?? profileForCapture(c);
  const kvm = new Kvm(profile ? { profile } : {});
  const t0 = performance.now();
  const fds = new Map<number, number>(); // recorded fd -> kvmsr fd
  const vms = new Map<number, number>(); // recorded VM id -> kvmsr VM fd
  /** vCPUs (kvmsr fds) whose values kvmsr cannot know: the guest ran, or unmodeled state was set. */
  const uncertain = new Map<number, string>();
  let sys = -1;
  const res: ReplayResult = { ioctls: 0, msrIoctls: 0, entries: 0, divergences: [], unknowable: [], byRule: 0, adopted: 0, stateReads: 0, rules: [], ms: 0 };
  const rules = new Set<string>();
  let addr = 0x10000000;
  const h = kvm.profile.host;
  if (c.header.vendorModule !== h.vendorModule || seriesOf(releaseOf(c.header.kernel)) !== seriesOf(releaseOf(h.kernel))) {
    rules.add(
      `the capture was recorded on ${c.header.vendorModule} ${c.header.kernel} but is replayed on a ${h.vendorModule} ${h.kernel} profile: ` +
        'differences may be the hosts\', not kvmsr\'s (pass --profile, or record with the profile embedded)',
    );
  }

  const systemFd = (): number => (sys >= 0 ? sys : (sys = kvm.open('/dev/kvm')));
  const vmFd = (rec: CaptureRecord): number => {
    const id = rec.vm ?? rec.fd;
    let v = vms.get(id);
    if (v === undefined) {
      v = kvm.ioctl(systemFd(), I.KVM_CREATE_VM, 0);
      vms.set(id, v);
    }
    return v;
  };
  const fdFor = (rec: CaptureRecord): number => {
    const known = fds.get(rec.fd);
    if (known !== undefined && kvm.fdKind(known) === rec.fdKind) return known;
    // The capture began after this fd was made: make its equivalent.
    let f: number;
    if (rec.fdKind === 'system') f = systemFd();
    else if (rec.fdKind === 'vm') f = vmFd(rec);
    else f = kvm.ioctl(vmFd(rec), I.KVM_CREATE_VCPU, rec.vcpuId ?? 0);
    fds.set(rec.fd, f);
    return f;
  };

  const total = c.records.length;
  for (let n = 0; n < total; n++) {
    const rec = c.records[n]!;
    if (opts.onProgress && (n & 1023) === 0) opts.onProgress(n, total);
    if (rec.op === 'close') {
      fds.delete(rec.fd);
      continue;
    }
    res.ioctls++;
    const fd = fdFor(rec);
    const req = rec.request >>> 0;
    // KVM_SET_SREGS/SREGS2 and KVM_SET_LAPIC are modelled (vcpu-state.ts), but on PVM pvm.c may
    // also rewrite STAR and EFER.SCE from the segment state, which no capture has measured.
    const pvmSregs = (req === I.KVM_SET_SREGS || req === I.KVM_SET_SREGS2) && kvm.profile.host.vendorModule === 'kvm_pvm';
    const why = pvmSregs ? PVM_SREGS_WHY : UNMODELED_SETTERS.get(req);
    if (why !== undefined) {
      res.unknowable.push({ seq: rec.seq, name: rec.name, why: `kvmsr does not model ${why}` });
      if (rec.fdKind === 'vcpu' && rec.ret >= 0) uncertain.set(fd, `after ${rec.name} (seq ${rec.seq})`);
      continue;
    }
    if (req === I.KVM_RUN) {
      kvm.markRan(fd);
      uncertain.set(fd, `the guest ran (KVM_RUN, seq ${rec.seq}) and may have written MSRs`);
      continue;
    }
    // The argument: an integer, or a copy of the recorded input bytes.
    let arg: number | Uint8Array = rec.arg ?? 0;
    if (!INTEGER_IOCTLS.has(req) && rec.in) {
      arg = rec.in.slice();
      if (req === I.KVM_X86_SET_MSR_FILTER && arg.length === 392) arg = mapBitmaps(kvm, arg, rec.extra ?? [], () => (addr += 0x10000));
    }
    // What the kernel wrote back; for the filter, whose bitmap pointers were remapped, the kernel
    // writes nothing (_IOW), so the bytes kvmsr was given must come back unchanged.
    const expectedOut = req === I.KVM_X86_SET_MSR_FILTER && arg instanceof Uint8Array ? arg.slice() : rec.out;
    const r = kvm.ioctl(fd, req, arg);
    const realRet = rec.ret < 0 ? -rec.errno : rec.ret;
    if (req === I.KVM_CREATE_VM && r >= 0 && rec.ret >= 0) {
      fds.set(rec.ret, r);
      vms.set(rec.ret, r);
    }
    if (req === I.KVM_CREATE_VCPU && r >= 0 && rec.ret >= 0) fds.set(rec.ret, r);
    const what: string[] = [];
    // A new fd's number depends on what else the recorded process had open: only success and the
    // errno are comparable (the fd map above carries the numbers across).
    const makesFd = req === I.KVM_CREATE_VM || req === I.KVM_CREATE_VCPU;
    const retDiffers = makesFd ? (r >= 0) !== (realRet >= 0) || (r < 0 && r !== realRet) : r !== realRet;
    if (retDiffers) what.push(`returned ${fmtRet(r)} where the kernel returned ${fmtRet(realRet)}`);
    let entries: EntryView[] = [];
    if (MSR_IOCTLS.has(req)) res.msrIoctls++;
    // A state read's bytes are not what replay checks (kvmclock moves with time): counted, not compared.
    const stateRead = STATE_GETTERS.has(req);
    if (stateRead) res.stateReads++;
    if (arg instanceof Uint8Array && expectedOut && !stateRead) {
      const isMsrs = req === I.KVM_GET_MSRS || req === I.KVM_SET_MSRS;
      if (isMsrs && arg.length >= 8) {
        const n2 = Math.min(Math.floor((arg.length - 8) / 16), new DataView(arg.buffer).getUint32(0, true));
        res.entries += n2;
      }
      if (req === I.KVM_GET_MSRS && rec.fdKind === 'vcpu') {
        const d = compareMsrs(kvm, fd, arg, expectedOut, Math.min(r, realRet), uncertain.get(fd), rules, res);
        what.push(...d.what);
        entries = d.entries;
      } else if (!bytesEqual(arg, expectedOut)) {
        what.push(`output differs at byte ${firstDiff(arg, expectedOut)}`);
        if (isMsrs) entries = around(arg, expectedOut, Math.floor((firstDiff(arg, expectedOut) - 8) / 16));
      }
    }
    if (what.length > 0) {
      const dv: Divergence = { seq: rec.seq, name: rec.name, fdKind: rec.fdKind, what, entries };
      if (rec.vcpuId !== undefined) dv.vcpuId = rec.vcpuId;
      res.divergences.push(dv);
      if (!opts.continueOnDivergence) {
        res.stoppedAt = rec.seq;
        break;
      }
    }
  }
  opts.onProgress?.(total, total);
  if (res.stateReads > 0) {
    rules.add(
      `${res.stateReads} state reads not compared (${[...STATE_GETTERS].map((r) => I.ioctlName(r)).join(', ')}): run on kvmsr and their return values compared, ` +
        'but kvmclock moves with time and the LAPIC and segment state are not what replay checks',
    );
  }
  res.rules = [...rules];
  res.ms = performance.now() - t0;
  return res;
}

/**
 * KVM_GET_MSRS on a vCPU, entry by entry. IA32_TSC moves with time: compared by rule (both
 * non-zero). On a vCPU whose values kvmsr cannot know (the guest ran, or unmodeled state was set),
 * a differing value is adopted into kvmsr's state and counted, not reported.
 */
function compareMsrs(
  kvm: Kvm,
  fd: number,
  mine: Uint8Array,
  real: Uint8Array,
  processed: number,
  uncertainWhy: string | undefined,
  rules: Set<string>,
  res: ReplayResult,
): { what: string[]; entries: EntryView[] } {
  const a = new DataView(mine.buffer, mine.byteOffset, mine.byteLength);
  const b = new DataView(real.buffer, real.byteOffset, real.byteLength);
  if (mine.length < 8) return bytesEqual(mine, real) ? { what: [], entries: [] } : { what: ['header differs'], entries: [] };
  const n = Math.min(Math.floor((mine.length - 8) / 16), a.getUint32(0, true));
  const vcpu = kvm.vcpuOf(fd)!;
  for (let i = 0; i < n; i++) {
    const off = KVM_MSRS_LAYOUT.entries + i * KVM_MSR_ENTRY_LAYOUT.size;
    const index = a.getUint32(off, true);
    const va = a.getBigUint64(off + 8, true);
    const vb = b.getBigUint64(off + 8, true);
    if (va === vb || i >= Math.max(0, processed)) continue;
    if (index === M.MSR_IA32_TSC && kvm.profile.tscUnstable === true) {
      // kvm_arch_vcpu_load pins the TSC to last_guest_tsc, which kvm_synchronize_tsc moves by the host
      // time between calls: the capture holds no times, so the kernel's value is taken, not checked.
      rules.add('IA32_TSC not compared: the host TSC is unstable, so its value depends on host time between calls, which the capture does not hold; the kernel\'s value is adopted');
      writeTsc(kvm.x86, vcpu, Number(vb & 0xffffffffn), Number(vb >> 32n));
      a.setBigUint64(off + 8, vb, true);
      res.byRule++;
      continue;
    }
    if (index === M.MSR_IA32_TSC) {
      rules.add('IA32_TSC compared by rule: it moves with time, so both sides only have to read non-zero');
      if (va !== 0n && vb !== 0n) {
        a.setBigUint64(off + 8, vb, true);
        res.byRule++;
      }
      continue;
    }
    if (index !== M.MSR_IA32_TSC && MOVING_MSRS.has(index)) {
      // Hyper-V's reference counter and VP runtime (moving-msrs.ts).
      rules.add(movingRule(index)!);
      if (movingAgree(index, vb, va)) {
        a.setBigUint64(off + 8, vb, true);
        res.byRule++;
      }
      continue;
    }
    if (uncertainWhy !== undefined && slotOf(index) >= 0) {
      // kvmsr cannot know this value: adopt the kernel's so later comparisons stay meaningful.
      vcpu.set(index, vb);
      a.setBigUint64(off + 8, vb, true);
      res.adopted++;
      rules.add(`values kvmsr cannot know are adopted from the capture and counted, not compared: ${uncertainWhy.replace(/\(seq \d+\)/, '').trim()}`);
    }
  }
  if (bytesEqual(mine, real)) return { what: [], entries: [] };
  const at = Math.floor((firstDiff(mine, real) - 8) / 16);
  return { what: [`entry ${at} differs`], entries: around(mine, real, at) };
}

function around(mine: Uint8Array, real: Uint8Array, at: number): EntryView[] {
  if (mine.length < 8) return [];
  const a = decodeMsrs(mine).entries;
  const b = decodeMsrs(real).entries;
  const out: EntryView[] = [];
  for (let i = Math.max(0, at - 3); i < Math.min(a.length, at + 4); i++) {
    const ea = a[i]!;
    const eb = b[i]!;
    const v: EntryView = {
      index: ea.index,
      name: msrLabel(ea.index),
      expected: hex64(eb.data),
      actual: hex64(ea.data),
      differs: ea.data !== eb.data || ea.index !== eb.index || ea.reserved !== eb.reserved,
    };
    if (ea.index !== eb.index) v.expectedName = msrLabel(eb.index);
    out.push(v);
  }
  return out;
}

/** Maps recorded filter bitmaps into kvmsr's user memory and points the filter copy at them. */
function mapBitmaps(kvm: Kvm, filter: Uint8Array, bitmaps: Uint8Array[], nextAddr: () => number): Uint8Array {
  const f = decodeMsrFilter(filter);
  f.ranges.forEach((r, i) => {
    const b = bitmaps[i];
    if (b && b.length > 0) {
      const at = nextAddr();
      kvm.memory.map(at, b.slice());
      r.bitmap = BigInt(at);
    } else {
      r.bitmap = 0n;
    }
  });
  return encodeMsrFilter(f);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;
}
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}
function fmtRet(r: number): string {
  return r < 0 ? `-${errnoName(-r)}` : String(r);
}
