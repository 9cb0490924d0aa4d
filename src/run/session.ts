// What `kvmsr run` answers: one Kvm for every process of the command, fed the library's requests.
// Pointer arguments arrive as the bytes the kernel would read, and are mapped into the Kvm's
// emulated user memory at the program's own addresses (with what pointers inside the struct reach),
// so kvmsr reads, faults and writes exactly where the kernel would; the bytes are sent back after.
import { closeSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { release } from 'node:os';
import { EBADF, EINVAL, errnoName } from '../abi/errno.js';
import { ioctlName, KVM_CREATE_DEVICE, KVM_CREATE_GUEST_MEMFD, KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_GET_STATS_FD, KVM_RUN } from '../abi/kvm-ioctls.js';
import { KvmRecorder } from '../capture/kvm-recorder.js';
import { Kvm } from '../kvm/kvm.js';
import type { HostProfile } from '../kvm/profile.js';
import type { IoctlArg } from '../kvm/user-arg.js';
import { KVMSR_VERSION } from '../version.js';
import { encodeResponse, NEW_DEVICE, NEW_FILE, NEW_FILE_RW, NEW_NONE, NEW_VCPU, NEW_VM, OP_CLOSE, OP_IOCTL, OP_OPEN, type Request, type Response } from './protocol.js';
import { RunPage } from './run-page.js';

/** Called around every vCPU ioctl: lets a test stand in for the guest (kvmsr runs no guest code). */
export type VcpuHook = (kvm: Kvm, vcpuFd: number, request: number, phase: 'before' | 'after') => void;

export interface SessionOptions {
  profile?: HostProfile;
  /** Write a capture here (created or truncated): the records `kvmsr record` writes, the profile in the header. */
  record?: string;
  /** Where the vCPUs' kvm_run files go. */
  dir: string;
  /** One line per event worth telling (an unmodelled call, first time per name). */
  log?: (line: string) => void;
  onVcpuIoctl?: VcpuHook;
  /** Log every call and its answer. */
  trace?: boolean;
  /** What ran, for the capture header's "recorder". */
  command?: readonly string[];
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const toArg = (v: bigint): IoctlArg => (v <= MAX_SAFE ? Number(v) : v);

interface Span {
  start: number;
  bytes: Uint8Array;
}

export class RunSession {
  readonly kvm: Kvm;
  /** Requests answered. */
  requests = 0;
  private readonly recorder: KvmRecorder | null = null;
  private recordFd = -1;
  private tid = 0;
  private readonly pages = new Map<number, RunPage>();
  private readonly told = new Set<string>();
  private pageSeq = 0;
  private scratch = new Uint8Array(64 * 1024);
  private readonly log: (line: string) => void;

  constructor(private readonly opts: SessionOptions) {
    this.kvm = new Kvm(opts.profile ? { profile: opts.profile } : {});
    this.log = opts.log ?? ((l) => process.stderr.write(l + '\n'));
    if (opts.record !== undefined) {
      this.recordFd = openSync(opts.record, 'w', 0o644);
      const what = opts.command ? `; ${opts.command.join(' ').slice(0, 200)}` : '';
      const recorder = `kvmsr ${KVMSR_VERSION} run (emulated, host ${release()}${what})`;
      this.recorder = new KvmRecorder(this.kvm, (line) => this.write(line, recorder));
    }
  }

  /** Answers one request. Never throws for what a request holds; an internal error is the caller's to report. */
  handle(q: Request): Response {
    return this.answer(q, true);
  }

  /**
   * handle(), encoded as the wire's response frame. The bytes come straight from kvmsr's scratch
   * area, with no copy in between (the server's path).
   */
  respond(q: Request): Buffer {
    return encodeResponse(this.answer(q, false));
  }

  /** With `copy` false the response's bytes are views of the scratch area, valid until the next call. */
  private answer(q: Request, copy: boolean): Response {
    this.requests++;
    this.tid = q.tid;
    this.kvm.callerTid = q.tid > 0 ? q.tid : null;
    switch (q.op) {
      case OP_OPEN:
        return reply(this.kvm.open('/dev/kvm'), q);
      case OP_CLOSE:
        return reply(this.closeFile(q.kfd), q);
      case OP_IOCTL:
        return this.ioctl(q, copy);
      default:
        return reply(-EINVAL, q);
    }
  }

  /** Closes the capture and the kvm_run files. */
  close(): void {
    for (const p of this.pages.values()) p.close();
    this.pages.clear();
    if (this.recordFd >= 0) closeSync(this.recordFd);
    this.recordFd = -1;
  }

  private closeFile(kfd: number): number {
    const p = this.pages.get(kfd);
    if (p) {
      p.close();
      this.pages.delete(kfd);
    }
    return this.recorder ? this.recorder.close(kfd) : this.kvm.close(kfd);
  }

  private ioctl(q: Request, copy: boolean): Response {
    const kvm = this.kvm;
    const kind = kvm.fdKind(q.kfd);
    if (kind === undefined) return reply(-EBADF, q);
    const spans = q.pointer ? this.mapRanges(q) : NO_SPANS;
    try {
      const hook = kind === 'vcpu' ? this.opts.onVcpuIoctl : undefined;
      // Only KVM_RUN reads and writes kvm_run (kvm_arch_vcpu_ioctl_run); a test hook standing in for
      // the guest may touch it around any vCPU call.
      const page = kind === 'vcpu' && (q.request === KVM_RUN || hook) ? this.pages.get(q.kfd) : undefined;
      page?.pull();
      hook?.(kvm, q.kfd, q.request, 'before');
      const seen = kvm.unmodeled.length;
      const arg = toArg(q.arg);
      // KVM_RUN: the calling thread's signals decide whether it waits (vcpu-run.ts), and the wait is
      // the thread's own (the library's), never the server's.
      const running = kind === 'vcpu' && q.request === KVM_RUN;
      kvm.runSignals = running ? (q.signals ?? { blocked: 0n, pending: 0n }) : null;
      let ret: number;
      let wait: bigint | null = null;
      try {
        ret = this.recorder ? this.recorder.ioctl(q.kfd, q.request, arg) : kvm.ioctl(q.kfd, q.request, arg);
        wait = running ? kvm.runWait : null;
      } finally {
        kvm.runSignals = null;
        kvm.runWait = null;
      }
      hook?.(kvm, q.kfd, q.request, 'after');
      if (running && hook && (kvm.vcpuOf(q.kfd)?.pendingMsrExit ?? 0) !== 0) {
        // The test standing in for the guest made it exit to userspace: KVM_RUN returns 0 with that exit.
        ret = 0;
        wait = null;
      }
      page?.push();
      this.tellUnmodeled(seen);
      if (this.opts.trace) {
        const waits = wait === null ? '' : ` after a signal outside 0x${wait.toString(16)} (the vCPU sleeps)`;
        this.log(`kvmsr run: [${q.tid}] ${kind} ${q.kfd}: ${ioctlName(q.request)}${q.pointer ? '' : `(${q.arg})`} = ${ret < 0 ? `-${errnoName(-ret)}` : ret}${waits}`);
      }
      let newKind = NEW_NONE;
      let path = '';
      // Only these two calls return a plain file's fd (any other's value is a count or 0).
      const file = ret >= 0 && (q.request === KVM_GET_STATS_FD || q.request === KVM_CREATE_GUEST_MEMFD) ? kvm.plainFile(ret) : undefined;
      if (file) {
        // KVM_GET_STATS_FD, KVM_CREATE_GUEST_MEMFD: a file the program opens as its own; kvmsr's fd is done.
        newKind = file.writable ? NEW_FILE_RW : NEW_FILE;
        path = join(this.opts.dir, `file-${++this.pageSeq}`);
        writeFileSync(path, file.bytes ?? new Uint8Array(0), { mode: file.writable ? 0o600 : 0o400 });
        if (file.bytes === null) truncateSync(path, file.size);
        kvm.close(ret);
      } else if (ret === 0 && q.request === KVM_CREATE_DEVICE && q.argBytes.length >= 8) {
        const made = spans.length > 0 ? new DataView(spans[0]!.bytes.buffer, spans[0]!.bytes.byteOffset).getInt32(4, true) : -1;
        if (kvm.fdKind(made) === 'device') newKind = NEW_DEVICE;
      } else if (ret >= 0 && (q.request === KVM_CREATE_VM || q.request === KVM_CREATE_VCPU)) {
        const k = kvm.fdKind(ret);
        if (k === 'vm') newKind = NEW_VM;
        if (k === 'vcpu') {
          newKind = NEW_VCPU;
          path = this.newRunPage(ret);
        }
      }
      const back = (addr: bigint, was: Uint8Array): Uint8Array => readBack(spans, addr, was, copy);
      const r: Response = { ret, argBytes: back(q.arg, q.argBytes), regions: q.regions.length === 0 ? NO_REGIONS : q.regions.map((x) => back(x.addr, x.bytes)), path, newKind };
      if (wait !== null) r.wait = wait;
      return r;
    } finally {
      for (const s of spans) kvm.memory.unmap(s.start);
    }
  }

  /**
   * Maps the argument and the regions into the Kvm's user memory at their addresses, overlapping or
   * touching ones as one mapping (two filter ranges may share a bitmap), in pieces of one scratch
   * area that is reused from call to call. A range of zero bytes, at 0, or beyond what a JS number
   * holds is not mapped: kvmsr faults there, as copy_from_user would.
   */
  private mapRanges(q: Request): Span[] {
    const kvm = this.kvm;
    if (q.regions.length === 0) {
      // The common case: one argument and nothing it points to.
      const len = q.argBytes.length;
      if (len === 0 || q.arg <= 0n || q.arg + BigInt(len) > MAX_SAFE) return NO_SPANS;
      const bytes = this.scratchFor(len).subarray(0, len);
      bytes.set(q.argBytes);
      const start = Number(q.arg);
      kvm.memory.map(start, bytes);
      return [{ start, bytes }];
    }
    const ranges = [{ addr: q.arg, bytes: q.argBytes }, ...q.regions];
    const ok = ranges
      .filter((r) => r.bytes.length > 0 && r.addr > 0n && r.addr + BigInt(r.bytes.length) <= MAX_SAFE)
      .map((r) => ({ start: Number(r.addr), bytes: r.bytes }))
      .sort((a, b) => a.start - b.start);
    const merged: { start: number; end: number; parts: Span[] }[] = [];
    for (const r of ok) {
      const last = merged[merged.length - 1];
      if (last && r.start <= last.end) {
        last.end = Math.max(last.end, r.start + r.bytes.length);
        last.parts.push(r);
      } else {
        merged.push({ start: r.start, end: r.start + r.bytes.length, parts: [r] });
      }
    }
    const scratch = this.scratchFor(merged.reduce((n, m) => n + m.end - m.start, 0));
    const spans: Span[] = [];
    let at = 0;
    try {
      for (const m of merged) {
        const bytes = scratch.subarray(at, at + m.end - m.start);
        at += bytes.length;
        bytes.fill(0);
        for (const p of m.parts) bytes.set(p.bytes, p.start - m.start);
        kvm.memory.map(m.start, bytes);
        spans.push({ start: m.start, bytes });
      }
    } catch (e) {
      for (const s of spans) kvm.memory.unmap(s.start);
      throw e;
    }
    return spans;
  }

  /** The scratch area, at least `n` bytes (grown by doubling; one array, so its views are reused). */
  private scratchFor(n: number): Uint8Array {
    if (this.scratch.length < n) this.scratch = new Uint8Array(Math.max(n, this.scratch.length * 2));
    return this.scratch;
  }

  private newRunPage(kfd: number): string {
    this.pages.get(kfd)?.close();
    const path = join(this.opts.dir, `vcpu-${++this.pageSeq}`);
    this.pages.set(kfd, RunPage.create(path, this.kvm.profile.vcpuMmapSize, this.kvm.runPage(kfd)!));
    return path;
  }

  /** One line the first time each unmodelled call is seen; the Kvm's list is emptied so it cannot grow. */
  private tellUnmodeled(seen: number): void {
    const list = this.kvm.unmodeled;
    for (let i = seen; i < list.length; i++) {
      const u = list[i]!;
      const name = u.cap === undefined ? u.name : `${u.name}(cap ${u.cap})`;
      if (this.told.has(name)) continue;
      this.told.add(name);
      this.log(`kvmsr run: ${name} is not modelled: -ENOSYS`);
    }
    list.length = 0;
  }

  /** A capture line: the header names `kvmsr run`; records carry the calling thread's id. */
  private write(line: string, recorder: string): void {
    let out = line;
    if (line.startsWith('{"format"')) {
      const h = JSON.parse(line) as Record<string, unknown>;
      h['recorder'] = recorder;
      out = JSON.stringify(h) + '\n';
    } else {
      // recordLine writes seq then tid first (monoUs and the rest after); KvmRecorder knows no
      // thread, the library does.
      out = line.replace(/^\{"seq":(\d+),"tid":0,/, (_m, s: string) => `{"seq":${s},"tid":${this.tid},`);
    }
    writeSync(this.recordFd, out);
  }
}

const NO_SPANS: Span[] = [];
const NO_REGIONS: Uint8Array[] = [];

/** A response that changes none of the request's bytes. */
function reply(ret: number, q: Request): Response {
  return { ret, argBytes: q.argBytes, regions: q.regions.map((r) => r.bytes), path: '', newKind: NEW_NONE };
}

/** The bytes of one range after the call (its own bytes when it was not mapped). */
function readBack(spans: readonly Span[], addr: bigint, was: Uint8Array, copy: boolean): Uint8Array {
  if (was.length === 0 || addr > MAX_SAFE) return was;
  const a = Number(addr);
  const s = spans.find((x) => a >= x.start && a + was.length <= x.start + x.bytes.length);
  if (!s) return was;
  return copy ? s.bytes.slice(a - s.start, a - s.start + was.length) : s.bytes.subarray(a - s.start, a - s.start + was.length);
}
