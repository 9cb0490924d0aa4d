// A kvmsr VM rebuilt from a capture's records, one record at a time, at the capture's own times:
// what `check` replays a save or a restore on (in the captured order, in another order, or on
// another host's profile). The clock is the records' monotonic timestamps, so KVM's time rules
// (kvm_synchronize_tsc's one-second window) see the gaps the VMM left.
import { decodeMsrs, encodeMsrs, type MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { Kvm } from '../kvm/kvm.js';
import type { HostProfile } from '../kvm/profile.js';
import type { CaptureRecord } from '../capture/format.js';
import { INTEGER_IOCTLS } from '../capture/extents.js';

/** "vm3/vcpu1": one vCPU of one recorded VM, the same key in every check. */
export const vcpuKey = (r: Pick<CaptureRecord, 'vm' | 'vcpuId' | 'fd'>): string => `vm${r.vm ?? 0}/vcpu${r.vcpuId ?? r.fd}`;
export const vmKey = (r: Pick<CaptureRecord, 'vm'>): string => `vm${r.vm ?? 0}`;

/** Records a replay does not apply: reads, which change nothing, and closes. */
const READS = new Set<number>([I.KVM_GET_MSRS, I.KVM_GET_MSR_INDEX_LIST, I.KVM_GET_MSR_FEATURE_INDEX_LIST, I.KVM_GET_LAPIC, I.KVM_GET_CLOCK, I.KVM_GET_SREGS, I.KVM_GET_SREGS2]);

/** What one KVM_SET_MSRS did on kvmsr: entries before `ret` were taken, `ret` itself refused. */
export interface SetOutcome {
  ret: number;
  entries: MsrEntry[];
}

export class CaptureMachine {
  readonly kvm: Kvm;
  private ms = 1000;
  private origin: number | undefined;
  private sys = -1;
  private readonly vms = new Map<string, number>();
  private readonly vcpus = new Map<string, number>();
  /** What kvmsr answered, per record seq (for calls that are not reads). */
  readonly answers = new Map<number, number>();
  /** Calls kvmsr answered with ENOSYS (not modelled): their effect is not known. */
  readonly unmodeled = new Set<string>();

  constructor(profile: HostProfile) {
    this.kvm = new Kvm({ profile, now: () => this.ms });
  }

  /** Moves the clock to a record's time (monotonic µs), when it has one. */
  at(rec: Pick<CaptureRecord, 'monoUs'>): void {
    if (rec.monoUs === undefined) return;
    this.origin ??= rec.monoUs;
    this.ms = Math.max(this.ms, 1000 + (rec.monoUs - this.origin) / 1000);
  }

  /** Moves the clock on by `ms` (a restore replayed without the capture's gaps). */
  advance(ms: number): void {
    this.ms += ms;
  }

  vmFd(key: string): number {
    let v = this.vms.get(key);
    if (v === undefined) {
      if (this.sys < 0) this.sys = this.kvm.open('/dev/kvm');
      v = this.kvm.ioctl(this.sys, I.KVM_CREATE_VM, 0);
      this.vms.set(key, v);
    }
    return v;
  }

  /** The kvmsr vCPU for a key, created (with the recorded id) when first asked for. */
  vcpuFd(key: string, id: number): number {
    let v = this.vcpus.get(key);
    if (v === undefined) {
      v = this.kvm.ioctl(this.vmFd(key.split('/')[0]!), I.KVM_CREATE_VCPU, id);
      this.vcpus.set(key, v);
    }
    return v;
  }

  hasVcpu(key: string): boolean {
    return this.vcpus.has(key);
  }

  /**
   * Applies one recorded call (anything but a read) on the matching kvmsr fd, with the recorded
   * input bytes; `input` replaces them (a reordered or rewritten batch). Returns kvmsr's answer, or
   * undefined for a record it does not apply.
   */
  apply(rec: CaptureRecord, input?: Uint8Array): number | undefined {
    if (rec.op === 'close') return undefined;
    const req = rec.request >>> 0;
    if (READS.has(req)) return undefined;
    this.at(rec);
    let fd: number;
    if (rec.fdKind === 'system') {
      if (this.sys < 0) this.sys = this.kvm.open('/dev/kvm');
      fd = this.sys;
    } else if (rec.fdKind === 'vm') fd = this.vmFd(vmKey(rec));
    else fd = this.vcpuFd(vcpuKey(rec), rec.vcpuId ?? 0);
    if (req === I.KVM_CREATE_VM) {
      if (rec.ret >= 0) this.vmFd(`vm${rec.ret}`);
      return rec.ret;
    }
    if (req === I.KVM_CREATE_VCPU) {
      if (rec.ret >= 0) this.vcpuFd(`${vmKey(rec)}/vcpu${rec.arg ?? 0}`, rec.arg ?? 0);
      return rec.ret;
    }
    if (req === I.KVM_RUN) {
      // kvm_vcpu_has_run: what KVM_RUN leaves behind that an MSR ioctl can see.
      this.kvm.markRan(fd);
      return 0;
    }
    // KVM_X86_SET_MSR_FILTER's bitmaps live behind pointers: a check replays without them.
    if (req === I.KVM_X86_SET_MSR_FILTER) return undefined;
    const arg = INTEGER_IOCTLS.has(req) ? rec.arg ?? 0 : (input ?? rec.in)?.slice();
    if (arg === undefined) return undefined;
    const seen = this.kvm.unmodeled.length;
    const r = this.kvm.ioctl(fd, req, arg);
    for (const u of this.kvm.unmodeled.splice(seen)) this.unmodeled.add(u.name);
    this.answers.set(rec.seq, r);
    return r;
  }

  /** KVM_SET_MSRS of `entries` on a vCPU, as a VMM batch: how far kvmsr got. */
  setMsrs(key: string, id: number, entries: MsrEntry[]): SetOutcome {
    const ret = this.kvm.ioctl(this.vcpuFd(key, id), I.KVM_SET_MSRS, encodeMsrs(entries));
    return { ret, entries };
  }

  /** A host read of one MSR on a vCPU, or null when KVM refuses it. */
  read(key: string, index: number): bigint | null {
    const fd = this.vcpus.get(key);
    if (fd === undefined) return null;
    const b = encodeMsrs([{ index, data: 0n }]);
    return this.kvm.ioctl(fd, I.KVM_GET_MSRS, b) === 1 ? decodeMsrs(b).entries[0]!.data : null;
  }

  /** The kvmsr fd of a vCPU key, when it exists. */
  fdOf(key: string): number | undefined {
    return this.vcpus.get(key);
  }

  /** The current time of the replay, in ms. */
  now(): number {
    return this.ms;
  }
}

/** Whether the profile's vendor module offsets the TSC for host writes (kvm_pvm ignores them). */
export function tscOffsetHonored(profile: HostProfile): boolean {
  return new Kvm({ profile }).x86.vendor.tscOffsetHonored;
}
