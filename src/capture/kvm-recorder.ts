// A recorder for kvmsr itself: wraps a Kvm so every MSR ioctl and every call that shapes MSR state
// is written as a capture record, in the format the C recorder writes for a real VMM.
import { release } from 'node:os';
import * as I from '../abi/kvm-ioctls.js';
import { decodeMsrFilter } from '../abi/codecs.js';
import type { Kvm } from '../kvm/kvm.js';
import type { IoctlArg } from '../kvm/user-arg.js';
import { profileToJson } from '../kvm/profile.js';
import { KVMSR_VERSION } from '../version.js';
import { argExtent, DEVICE_ATTR_ADDR_OFFSET, DEVICE_ATTR_VALUE_BYTES, INTEGER_IOCTLS, isRecorded, recordedIoctlNames } from './extents.js';
import { CAPTURE_FORMAT, CAPTURE_VERSION, headerLine, recordLine, type CaptureHeader, type CaptureRecord, type FdKind } from './format.js';

export interface KvmRecorderOptions {
  /**
   * Microseconds of a monotonic clock, for each record's `monoUs`. Default: process.hrtime, which
   * on Linux is CLOCK_MONOTONIC, the clock the C recorder reads.
   */
  clock?: () => number;
}

const hrtimeUs = (): number => Number(process.hrtime.bigint() / 1000n);

export class KvmRecorder {
  readonly lines: string[] = [];
  private seq = 0;
  /** VM identity per fd: the VM fd number at creation, as the C recorder reports it. */
  private readonly vmOf = new Map<number, number>();
  /**
   * vCPU fds whose first KVM_RUN that left the vCPU as having run is recorded: later ones are not
   * (the C recorder's "has run" marker; it records the first KVM_RUN whatever it did).
   */
  private readonly ran = new Set<number>();
  private readonly clock: () => number;

  constructor(
    readonly kvm: Kvm,
    private readonly sink: (line: string) => void = () => undefined,
    opts: KvmRecorderOptions = {},
  ) {
    this.clock = opts.clock ?? hrtimeUs;
    const p = kvm.profile;
    const header: CaptureHeader = {
      format: CAPTURE_FORMAT,
      version: CAPTURE_VERSION,
      kernel: p.host.kernel,
      cpuVendor: p.host.cpuVendor,
      cpuModel: p.host.cpuModel,
      vendorModule: p.host.vendorModule,
      kvmsrVersion: KVMSR_VERSION,
      recorder: `kvmsr ${KVMSR_VERSION} (emulated; host ${release()})`,
      createdAt: new Date().toISOString(),
      recorded: recordedIoctlNames(),
      profile: profileToJson(p),
    };
    this.emit(headerLine(header));
  }

  /** The capture so far, one JSON line each, newline-terminated. */
  text(): string {
    return this.lines.map((l) => l + '\n').join('');
  }

  /** Kvm.ioctl, recorded. */
  ioctl(fd: number, request: number, arg: IoctlArg = 0): number {
    const req = request >>> 0;
    const kind = this.kvm.fdKind(fd);
    // A stats or guest-memory file, or a KVM-VFIO device: nothing an MSR answer depends on.
    if (kind === undefined || kind === 'file' || kind === 'device' || !isRecorded(req, kind)) return this.kvm.ioctl(fd, req, arg);
    if (req === I.KVM_RUN && this.ran.has(fd)) return this.kvm.ioctl(fd, req, arg);
    let inBytes: Uint8Array | undefined;
    let extra: Uint8Array[] | undefined;
    let live: Uint8Array | undefined;
    if (!INTEGER_IOCTLS.has(req)) {
      live = this.pointee(arg);
      if (live) {
        live = live.subarray(0, Math.min(live.length, argExtent(req, live)));
        inBytes = live.slice();
        if (req === I.KVM_X86_SET_MSR_FILTER && inBytes.length === 392) extra = this.filterBitmaps(inBytes);
        if (req === I.KVM_SET_DEVICE_ATTR && inBytes.length === 24) extra = this.attrValue(inBytes);
      }
    }
    const monoUs = this.clock();
    const r = this.kvm.ioctl(fd, req, arg);
    if (req === I.KVM_RUN) {
      // The "has run" marker replay and check read (kvm_vcpu_has_run): a KVM_RUN that entered no
      // guest (immediate_exit, a signal already pending, a vCPU halted or waiting for INIT) is none.
      const vcpu = this.kvm.vcpuOf(fd);
      if (vcpu !== undefined && !vcpu.hasRun) return r;
      this.ran.add(fd);
    }
    const rec: CaptureRecord = {
      seq: this.seq++,
      tid: 0,
      monoUs,
      fd,
      fdKind: kind,
      request: req,
      name: I.ioctlName(req),
      ret: r < 0 ? -1 : r,
      errno: r < 0 ? -r : 0,
    };
    this.identify(rec, fd, kind);
    if (INTEGER_IOCTLS.has(req)) rec.arg = this.kvm.args.intValue(arg);
    if (inBytes && live) {
      rec.in = inBytes;
      rec.out = live.slice();
    }
    if (extra) rec.extra = extra;
    if (r >= 0 && req === I.KVM_CREATE_VM) this.vmOf.set(r, r);
    if (r >= 0 && req === I.KVM_CREATE_VCPU) this.vmOf.set(r, this.vmOf.get(fd) ?? fd);
    this.emit(recordLine(rec));
    return r;
  }

  close(fd: number): number {
    const kind = this.kvm.fdKind(fd);
    if (kind !== undefined && kind !== 'file' && kind !== 'device') {
      const rec: CaptureRecord = { seq: this.seq++, tid: 0, monoUs: this.clock(), fd, fdKind: kind, request: 0, name: '', ret: 0, errno: 0, op: 'close' };
      this.identify(rec, fd, kind);
      this.emit(recordLine(rec));
      this.vmOf.delete(fd);
      this.ran.delete(fd);
    }
    return this.kvm.close(fd);
  }

  private identify(rec: CaptureRecord, fd: number, kind: FdKind): void {
    if (kind === 'vcpu') rec.vcpuId = this.kvm.vcpuOf(fd)!.id;
    if (kind !== 'system') rec.vm = this.vmOf.get(fd) ?? fd;
  }

  private pointee(arg: IoctlArg): Uint8Array | undefined {
    if (arg instanceof Uint8Array) return arg;
    const a = this.kvm.args;
    if (!a.resolve(arg)) return undefined;
    return new Uint8Array(a.dv.buffer, a.base, a.avail);
  }

  private filterBitmaps(filter: Uint8Array): Uint8Array[] {
    return decodeMsrFilter(filter).ranges.map((r) => {
      const size = r.nmsrs === 0 ? 0 : Math.ceil(r.nmsrs / 64) * 8;
      return (size > 0 && size <= 0x600 ? this.kvm.args.copyIn(r.bitmap, size) : null) ?? new Uint8Array(0);
    });
  }

  /** The value kvm_device_attr.addr points at (the TSC offset for KVM_VCPU_TSC_CTRL); none when addr is 0. */
  private attrValue(attr: Uint8Array): Uint8Array[] | undefined {
    const addr = new DataView(attr.buffer, attr.byteOffset, attr.byteLength).getBigUint64(DEVICE_ATTR_ADDR_OFFSET, true);
    if (addr === 0n) return undefined;
    return [this.kvm.args.copyIn(addr, DEVICE_ATTR_VALUE_BYTES) ?? new Uint8Array(0)];
  }

  private emit(line: string): void {
    this.lines.push(line);
    this.sink(line + '\n');
  }
}
