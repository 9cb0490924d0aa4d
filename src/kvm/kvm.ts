// The device: file descriptors for /dev/kvm, VMs and vCPUs, and ioctl() dispatch on the real
// request numbers. ioctl returns what the kernel's handler returns: a value >= 0 or -errno.
import { vfioDeviceIoctl } from './state/vfio-device.js';
import { threadCapable } from './caller.js';
import { enterGuest, tscEstimated } from './x86/tsc.js';
import { DEFAULT_FRESH_STATE, type FreshState } from './state/fresh-state.js';
import { EBADF, EFAULT, EINVAL, ENOENT, ENOSYS, errnoName, ENOTTY } from '../abi/errno.js';
import { ioctlName, KVM_GET_MSRS, KVM_SET_MSRS } from '../abi/kvm-ioctls.js';
import { UserMemory } from '../abi/user-memory.js';
import { defaultProfile, statsLayoutFor } from '../profiles.js';
import * as Files from './files.js';
import { FD_SYSTEM, type KvmFile, type PlainFile } from './files.js';
import { completeMsrExit, guestRdmsr, guestWrmsr, type GuestMsrResult } from './x86/guest-msr.js';
import { systemIoctl } from './ioctl-system.js';
import { vfsIoctl } from './ioctl-vfs.js';
import * as VcpuIoctl from './ioctl-vcpu.js';
import { vmIoctl } from './ioctl-vm.js';
import { withMeasuredRules } from './x86/measured-rules.js';
import { MSR_IO_GET, MSR_IO_SET, msrIo } from './x86/msr-io.js';
import type { MsrValue } from './x86/msr-ret.js';
import { isValidatedProfile, parseProfile, type HostProfile } from './profile.js';
import { ArgResolver, type IoctlArg } from './user-arg.js';
import { Vcpu } from './vcpu.js';
import type { RunSignals } from './vcpu-run.js';
import type { VendorOps } from './vendor.js';
import { vendorFor } from './vendors.js';
import { Vm } from './vm.js';
import { X86, type X86Options } from './x86/x86.js';

// Module-local copies of what every ioctl uses: V8 reloads and hole-checks an imported binding at
// each use, even in optimized code, and folds a const of this module (see msr-io.ts).
const { FD_VCPU, FD_VM, FD_FILE, FD_DEVICE } = Files;
const { vcpuIoctl } = VcpuIoctl;
const EBADF_ = EBADF;
const EFAULT_ = EFAULT;
const ENOTTY_ = ENOTTY;
const GET_MSRS = KVM_GET_MSRS;
const SET_MSRS = KVM_SET_MSRS;
const MSR_IO_GET_ = MSR_IO_GET;
const MSR_IO_SET_ = MSR_IO_SET;

export interface KvmOptions extends X86Options {
  /** A HostProfile, or the parsed JSON that `kvmsr profile capture` writes. Default: built in. */
  profile?: HostProfile | unknown;
  /** The emulated user address space pointer arguments resolve through. */
  memory?: UserMemory;
  /** Vendor rules to use instead of the ones the profile's vendor module names (for experiments and tests). */
  vendor?: VendorOps;
}

/** An ioctl kvmsr received but does not model, so it cannot know the kernel's answer. */
export interface UnmodeledCall {
  fdKind: 'system' | 'vm' | 'vcpu';
  request: number;
  name: string;
  cap?: number;
}

/** Thrown by Kvm.ioctlOrThrow: carries the errno and its name. */
export class KvmError extends Error {
  constructor(
    readonly errno: number,
    readonly request: number,
  ) {
    super(`${ioctlName(request)}: ${errnoName(errno)} (${errno})`);
    this.name = 'KvmError';
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

const FIRST_FD = 3;

export class Kvm {
  readonly profile: HostProfile;
  /** What KVM_GET_STATS_FD serves (state/binary-stats.ts): the profile's layout, or its series'. */
  readonly statsLayout: ReturnType<typeof statsLayoutFor>;
  readonly x86: X86;
  readonly memory: UserMemory;
  /** What a fresh VM and vCPU answer to the state ioctls: the profile's capture, else the defaults. */
  readonly freshState: FreshState;
  readonly args: ArgResolver;
  /** The two index lists as the u32 little-endian bytes the list ioctls copy out. */
  readonly msrIndexListBytes: Uint8Array;
  readonly featureIndexListBytes: Uint8Array;
  /** Calls kvmsr answered with -ENOSYS because it does not model them. */
  readonly unmodeled: UnmodeledCall[] = [];
  /**
   * The signals of the thread that makes the next KVM_RUN (blocked, pending), as `kvmsr run`'s
   * library reports them; null through the TypeScript API, where a KVM_RUN that would wait for a
   * signal gets one at once (-EINTR, exit_reason KVM_EXIT_INTR).
   */
  runSignals: RunSignals | null = null;
  /**
   * Set by a KVM_RUN made with runSignals that must wait: the signal mask the calling thread waits
   * under (the vCPU's KVM_SET_SIGNAL_MASK, else its own) until a signal outside it is delivered;
   * KVM_RUN then returns -EINTR with exit_reason KVM_EXIT_INTR. Null after one that returned.
   */
  runWait: bigint | null = null;
  /** The thread whose call this is (`kvmsr run` sets it per request); null: this process. */
  callerTid: number | null = null;
  private readonly files: (KvmFile | undefined)[] = [];
  private readonly out: MsrValue = { lo: 0, hi: 0 };

  constructor(opts: KvmOptions = {}) {
    const p = opts.profile ?? defaultProfile();
    this.profile = isHostProfile(p) ? p : parseProfile(p);
    this.statsLayout = statsLayoutFor(this.profile);
    // The measured rules stand in front of the vendor's hooks (measured-rules.ts).
    this.x86 = new X86(this.profile, withMeasuredRules(opts.vendor ?? vendorFor(this.profile.host.vendorModule), this.profile.msrRules), opts);
    this.memory = opts.memory ?? new UserMemory();
    this.freshState = this.profile.freshState ?? DEFAULT_FRESH_STATE;
    this.x86.userReadable = (addr, len) => this.memory.read(addr, len) !== null;
    this.args = new ArgResolver(this.memory);
    this.msrIndexListBytes = u32Bytes(this.profile.msrIndexList);
    this.featureIndexListBytes = u32Bytes(this.profile.featureMsrs.map((m) => m.index));
  }

  /** open(2) of a device path: only /dev/kvm exists here. Returns an fd or -errno. */
  open(path: string): number {
    if (path !== '/dev/kvm') return -ENOENT;
    return this.install({ kind: FD_SYSTEM });
  }

  close(fd: number): number {
    const f = this.fileOf(fd);
    if (f === undefined) return -EBADF;
    if (f.kind === FD_DEVICE) f.vm.vfioDevice = false; // kvm_device_release takes it off the VM's list
    this.files[fd] = undefined;
    return 0;
  }

  /** ioctl(2): returns the handler's value (>= 0) or a negative errno. Never throws. */
  ioctl(fd: number, request: number, arg: IoctlArg = 0): number {
    const f = this.fileOf(fd);
    if (f === undefined) return -EBADF_;
    const req = request >>> 0;
    // The VFS answers a handful of generic requests (FIOCLEX, FIONBIO, ...) for every file.
    if (req < 0x10000) {
      const v = vfsIoctl(this.args, req, arg);
      if (v !== undefined) return v;
    }
    switch (f.kind) {
      case FD_VCPU:
        // The bulk MSR requests first, here: KVM_GET_MSRS is above 2^31, so passing `req` on to a
        // call V8 does not inline would box it in a new heap number on every ioctl.
        if (req === GET_MSRS || req === SET_MSRS) {
          if (!this.args.resolve(arg)) return -EFAULT_;
          return this.msrIo(f.vcpu, req === GET_MSRS ? MSR_IO_GET_ : MSR_IO_SET_);
        }
        return vcpuIoctl(this, f.vcpu, req, arg);
      case FD_VM:
        return vmIoctl(this, f.vm, req, arg);
      case FD_FILE:
        return -ENOTTY_; // the stats and guest_memfd files have no ioctl
      case FD_DEVICE:
        return vfioDeviceIoctl(this, f, req, arg);
      default:
        return systemIoctl(this, req, arg);
    }
  }

  /** ioctl that throws a KvmError (with the errno name) instead of returning -errno. */
  ioctlOrThrow(fd: number, request: number, arg: IoctlArg = 0): number {
    const r = this.ioctl(fd, request, arg);
    if (r < 0) throw new KvmError(-r, request);
    return r;
  }

  /**
   * Marks a vCPU as having entered the guest (kvm_vcpu_has_run) without a KVM_RUN: for replaying a
   * capture's KVM_RUN record. A KVM_RUN itself marks it when the vCPU is entered (vcpu-run.ts).
   */
  markRan(vcpuFd: number): number {
    const f = this.fileOf(vcpuFd);
    if (f === undefined) return -EBADF;
    if (f.kind !== FD_VCPU) return -EINVAL;
    f.vcpu.hasRun = true;
    enterGuest(this.x86, f.vcpu);
    return 0;
  }

  /** The guest executes RDMSR: the value, a #GP, a userspace exit, or an error from KVM_RUN. */
  rdmsr(vcpuFd: number, index: number): GuestMsrResult {
    const v = this.vcpuOf(vcpuFd);
    if (!v) return { kind: 'error', errno: EBADF };
    return guestRdmsr(this.x86, v, index >>> 0, this.out);
  }

  /** The guest executes WRMSR. */
  wrmsr(vcpuFd: number, index: number, value: bigint): GuestMsrResult {
    const v = this.vcpuOf(vcpuFd);
    if (!v) return { kind: 'error', errno: EBADF };
    return guestWrmsr(this.x86, v, index >>> 0, value);
  }

  /** The vCPU's kvm_run page (what mmap of the vCPU fd shows at offset 0). */
  runPage(vcpuFd: number): Uint8Array | undefined {
    return this.vcpuOf(vcpuFd)?.run;
  }

  /**
   * Resumes a vCPU stopped at an MSR exit, as KVM_RUN does before re-entering the guest: reads
   * run->msr.error (and run->msr.data for RDMSR) and returns what the guest sees. Null when no MSR
   * exit is pending.
   */
  completeMsrExit(vcpuFd: number): GuestMsrResult | null {
    const v = this.vcpuOf(vcpuFd);
    return v ? completeMsrExit(v) : null;
  }

  /** The vCPU behind an fd, for the guest-path API and tests. */
  vcpuOf(fd: number): Vcpu | undefined {
    const f = this.fileOf(fd);
    return f?.kind === FD_VCPU ? f.vcpu : undefined;
  }

  /**
   * Whether IA32_TSC as this vCPU fd reads it now rests on kvmsr's estimate of the host TSC (PVM,
   * or a change of TSC multiplier), so a comparison with the kernel can only be loose.
   */
  tscEstimated(fd: number): boolean {
    const v = this.vcpuOf(fd);
    return v !== undefined && tscEstimated(this.x86, v);
  }

  /** What kind of file an fd is, or undefined when it is not open. */
  fdKind(fd: number): 'system' | 'vm' | 'vcpu' | 'file' | 'device' | undefined {
    const f = this.fileOf(fd);
    if (f === undefined) return undefined;
    return f.kind === FD_SYSTEM ? 'system' : f.kind === FD_VM ? 'vm' : f.kind === FD_VCPU ? 'vcpu' : f.kind === FD_DEVICE ? 'device' : 'file';
  }

  /** Makes the VM's KVM-VFIO device (KVM_CREATE_DEVICE): its fd. */
  createVfioDevice(vm: Vm): number {
    vm.vfioDevice = true;
    return this.install({ kind: FD_DEVICE, vm, files: new Set() });
  }

  /** A plain file a call handed out (a binary stats file, guest memory), or undefined. */
  plainFile(fd: number): PlainFile | undefined {
    const f = this.fileOf(fd);
    return f?.kind === FD_FILE ? f : undefined;
  }

  /** A binary stats fd's bytes (KVM_GET_STATS_FD, state/binary-stats.ts), or undefined. */
  statsFile(fd: number): Uint8Array | undefined {
    const f = this.plainFile(fd);
    return f && !f.writable ? (f.bytes ?? undefined) : undefined;
  }

  /** Opens a plain file: the fd KVM_GET_STATS_FD or KVM_CREATE_GUEST_MEMFD returns. */
  createPlainFile(file: Omit<PlainFile, 'kind'>): number {
    return this.install({ kind: FD_FILE, ...file });
  }

  // ---- used by the dispatchers ----
  createVm(type: number): number {
    const vm = new Vm(type, this.x86.now());
    vm.statsId = `kvm-${this.callerTid ?? process.pid}`; // kvm_create_vm: task_pid_nr(current)
    return this.install({ kind: FD_VM, vm });
  }

  createVcpu(vm: Vm, id: number): number {
    const vcpu = new Vcpu(id, vm, vm.createdVcpus);
    vcpu.statsId = `kvm-${this.callerTid ?? process.pid}/vcpu-${id}`; // kvm_vm_ioctl_create_vcpu
    this.x86.initVcpu(vcpu);
    vm.vcpus.set(id, vcpu);
    vm.createdVcpus++;
    return this.install({ kind: FD_VCPU, vm, vcpu });
  }

  msrIo(vcpu: Vcpu | null, op: number): number {
    const a = this.args;
    return msrIo(this.x86, vcpu, a.dv, a.u32, a.i32, a.base, a.avail, op, this.out);
  }

  /** For a real ioctl kvmsr does not model: record it and answer -ENOSYS; else the kernel's default errno. */
  unmodeledOr(req: number, fdKind: UnmodeledCall['fdKind'], dflt: number, known: ReadonlySet<number>): number {
    if (!known.has(req)) return dflt;
    this.unmodeled.push({ fdKind, request: req, name: ioctlName(req) });
    return -ENOSYS;
  }
  /** capable(cap) for the caller (caller.ts). */
  callerCapable(cap: number): boolean {
    return threadCapable(this.callerTid, cap);
  }

  unmodeledCap(req: number, fdKind: UnmodeledCall['fdKind'], cap: number): number {
    this.unmodeled.push({ fdKind, request: req, name: ioctlName(req), cap });
    return -ENOSYS;
  }

  private fileOf(fd: number): KvmFile | undefined {
    return Number.isInteger(fd) && fd >= 0 ? this.files[fd] : undefined;
  }

  private install(f: KvmFile): number {
    let fd = FIRST_FD;
    while (this.files[fd] !== undefined) fd++;
    this.files[fd] = f;
    return fd;
  }
}

function u32Bytes(list: readonly number[]): Uint8Array {
  const b = new Uint8Array(list.length * 4);
  const dv = new DataView(b.buffer);
  list.forEach((v, i) => dv.setUint32(i * 4, v, true));
  return b;
}

function isHostProfile(p: unknown): p is HostProfile {
  return typeof p === 'object' && p !== null && isValidatedProfile(p);
}
