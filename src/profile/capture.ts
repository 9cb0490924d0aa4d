// `kvmsr profile capture`: records what the running host's KVM lists, reports and resets to.
import { readFileSync, existsSync } from 'node:fs';
import { release } from 'node:os';
import { decodeCpuid2, decodeMsrList, decodeMsrs, encodeMsrList, encodeMsrs, type CpuidEntry2 } from '../abi/codecs.js';
import { E2BIG } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_CPUID2_LAYOUT, KVM_CPUID_ENTRY2_LAYOUT, KVM_MAX_CPUID_ENTRIES } from '../abi/layout.js';
import type { RealKvm } from '../native/real-kvm.js';
import { parseProfile, profileToJson, type HostProfile, type ProfileMsr, type VendorModule } from '../kvm/profile.js';
import { adjustTscKhz, tscTolerancePpm } from '../kvm/x86.js';
import { KVMSR_VERSION } from '../version.js';

/** MSRs read on a fresh vCPU besides the listed ones, to record how unlisted indices answer. */
export const PROBE_MSRS: readonly number[] = [
  0x0, 0x1, 0x1b, 0x3a, 0x49, 0x9e, 0xc1, 0xc2, 0xfe, 0x10b, 0x179, 0x186, 0x187, 0x1c4, 0x1c5, 0x200, 0x201, 0x250,
  0x280, 0x2ff, 0x400, 0x401, 0x480, 0x4d0, 0x6a0, 0x6a2, 0x6a4, 0x6a8, 0xda0, 0x4b564dff, 0xc0000080, 0xc0000100,
  0xc0000101, 0xc0000103, 0xc0000104, 0xc0010000, 0xc0010004, 0xc0010114, 0xc0010115, 0xc0011029, 0x12345678,
];
/** Capability numbers asked with KVM_CHECK_EXTENSION. */
const MAX_CAP = 300;

export class CaptureError extends Error {}

function must(r: number, what: string): number {
  if (r < 0) throw new CaptureError(`${what} failed with errno ${-r}`);
  return r;
}

function readList(real: RealKvm, sys: number, req: number): number[] {
  const probe = encodeMsrList(0);
  const r = real.ioctl(sys, req, probe);
  if (r !== -E2BIG && r !== 0) must(r, I.ioctlName(req));
  const n = decodeMsrList(probe).nmsrs;
  const buf = encodeMsrList(n);
  must(real.ioctl(sys, req, buf), I.ioctlName(req));
  return decodeMsrList(buf).indices;
}

function readOne(real: RealKvm, fd: number, index: number): ProfileMsr {
  const b = encodeMsrs([{ index, data: 0n }]);
  const r = must(real.ioctl(fd, I.KVM_GET_MSRS, b), `KVM_GET_MSRS 0x${index.toString(16)}`);
  return { index, value: r === 1 ? decodeMsrs(b).entries[0]!.data : null };
}

function vendorModule(): VendorModule {
  for (const m of ['kvm_pvm', 'kvm_intel', 'kvm_amd'] as const) if (existsSync(`/sys/module/${m}`)) return m;
  throw new CaptureError('no KVM vendor module (kvm_intel, kvm_amd, kvm_pvm) is loaded');
}

function cpuInfo(): { vendor: string; model: string } {
  const text = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const field = (k: string): string => new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? 'unknown';
  return { vendor: field('vendor_id'), model: field('model name') };
}

function moduleParams(vendor: VendorModule): Record<string, string> {
  const out: Record<string, string> = {};
  const want: Record<string, string[]> = {
    kvm: ['ignore_msrs', 'report_ignored_msrs', 'enable_pmu', 'force_emulation_prefix', 'tsc_tolerance_ppm'],
    [vendor]: ['nested', 'pt_mode', 'lbrv', 'enable_pmu', 'vnmi'],
  };
  for (const [mod, params] of Object.entries(want)) {
    for (const p of params) {
      const f = `/sys/module/${mod}/parameters/${p}`;
      if (existsSync(f)) out[`${mod}.${p}`] = readFileSync(f, 'utf8').trim();
    }
  }
  return out;
}

/**
 * Whether the kernel treats the host TSC as unstable (kvm_check_tsc_unstable), from what
 * kvm_synchronize_tsc makes of a host write of 0 that joins the generation an earlier write of
 * 2^40 started 20 ms before: on a stable host the vCPU takes that generation's offset and reads
 * about 2^40 (exactly 2^40 when its TSC multiplier was never written and the TSC stands still);
 * on an unstable one it reads 0 plus the cycles since that write. A TSC that merely stands still
 * between two reads cannot tell the two apart.
 */
function tscUnstableMeasured(real: RealKvm, vcpu: number): boolean {
  const write = (v: bigint): void => {
    if (real.ioctl(vcpu, I.KVM_SET_MSRS, encodeMsrs([{ index: 0x10, data: v }])) !== 1) {
      throw new Error(`profile capture: KVM_SET_MSRS IA32_TSC=${v} was refused`);
    }
  };
  write(1n << 40n);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  write(0n);
  const b = encodeMsrs([{ index: 0x10, data: 0n }]);
  must(real.ioctl(vcpu, I.KVM_GET_MSRS, b), 'KVM_GET_MSRS IA32_TSC');
  return decodeMsrs(b).entries[0]!.data < 1n << 39n;
}

/** The single bits a host write of `index` accepts on a vCPU, each written alone, then 0 again. */
function acceptedBits(real: RealKvm, vcpu: number, index: number): bigint {
  let ok = 0n;
  for (let b = 0n; b < 64n; b++) {
    if (real.ioctl(vcpu, I.KVM_SET_MSRS, encodeMsrs([{ index, data: 1n << b }])) === 1) ok |= 1n << b;
  }
  real.ioctl(vcpu, I.KVM_SET_MSRS, encodeMsrs([{ index, data: 0n }]));
  return ok;
}

/**
 * The kernel's tsc_khz on a host without TSC scaling, found from kvm_set_tsc_khz's answers on a
 * scratch vCPU: it refuses a rate below the tolerance band ("below hardware speed") and accepts
 * the rest, so the lowest accepted rate is adjust_tsc_khz(tsc_khz, -tsc_tolerance_ppm).
 */
function kernelTscKhz(real: RealKvm, vm: number, vcpuKhz: number, ppm: number): number | undefined {
  const vcpu = real.ioctl(vm, I.KVM_CREATE_VCPU, 1);
  if (vcpu < 0) return undefined;
  try {
    let lo = Math.floor(vcpuKhz / 2); // refused
    let hi = vcpuKhz * 2; // accepted (catch-up mode)
    if (real.ioctl(vcpu, I.KVM_SET_TSC_KHZ, lo) === 0 || real.ioctl(vcpu, I.KVM_SET_TSC_KHZ, hi) !== 0) return undefined;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (real.ioctl(vcpu, I.KVM_SET_TSC_KHZ, mid) === 0) hi = mid;
      else lo = mid;
    }
    // The smallest tsc_khz whose lower threshold (u64 arithmetic, rounded down) is hi.
    let khz = Math.floor((hi * 1e6) / (1e6 - ppm));
    while (adjustTscKhz(khz, -ppm) < hi) khz++;
    return khz;
  } finally {
    real.close(vcpu);
  }
}

/** Captures the host's profile through the real /dev/kvm. */
export function captureProfile(real: RealKvm): HostProfile {
  const sys = must(real.open('/dev/kvm'), 'open /dev/kvm');
  const fds: number[] = [sys];
  try {
    const apiVersion = must(real.ioctl(sys, I.KVM_GET_API_VERSION, 0), 'KVM_GET_API_VERSION');
    const vcpuMmapSize = must(real.ioctl(sys, I.KVM_GET_VCPU_MMAP_SIZE, 0), 'KVM_GET_VCPU_MMAP_SIZE');
    const system: Record<number, number> = {};
    for (let c = 0; c <= MAX_CAP; c++) {
      const v = real.ioctl(sys, I.KVM_CHECK_EXTENSION, c);
      if (v > 0) system[c] = v;
    }
    const msrIndexList = readList(real, sys, I.KVM_GET_MSR_INDEX_LIST);
    const featureMsrs = readList(real, sys, I.KVM_GET_MSR_FEATURE_INDEX_LIST).map((i) => readOne(real, sys, i));

    const cpuidBuf = new Uint8Array(KVM_CPUID2_LAYOUT.size + KVM_MAX_CPUID_ENTRIES * KVM_CPUID_ENTRY2_LAYOUT.size);
    new DataView(cpuidBuf.buffer).setUint32(0, KVM_MAX_CPUID_ENTRIES, true);
    must(real.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, cpuidBuf), 'KVM_GET_SUPPORTED_CPUID');
    const supportedCpuid: CpuidEntry2[] = decodeCpuid2(cpuidBuf).entries;
    const mceBuf = new Uint8Array(8);
    const mceOk = real.ioctl(sys, I.KVM_X86_GET_MCE_CAP_SUPPORTED, mceBuf) === 0;

    const vm = must(real.ioctl(sys, I.KVM_CREATE_VM, 0), 'KVM_CREATE_VM');
    fds.push(vm);
    const vmExt: Record<number, number> = {};
    for (let c = 0; c <= MAX_CAP; c++) {
      const v = real.ioctl(vm, I.KVM_CHECK_EXTENSION, c);
      if (v > 0) vmExt[c] = v;
    }
    const vcpu = must(real.ioctl(vm, I.KVM_CREATE_VCPU, 0), 'KVM_CREATE_VCPU');
    fds.push(vcpu);
    const tscKhz = must(real.ioctl(vcpu, I.KVM_GET_TSC_KHZ, 0), 'KVM_GET_TSC_KHZ');
    const seen = new Set<number>();
    const vcpuReset: ProfileMsr[] = [];
    for (const i of [...msrIndexList, ...featureMsrs.map((m) => m.index), ...PROBE_MSRS]) {
      if (seen.has(i)) continue;
      seen.add(i);
      vcpuReset.push(readOne(real, vcpu, i));
    }
    const tscUnstable = tscUnstableMeasured(real, vcpu);
    const vendor = vendorModule();
    const params = moduleParams(vendor);
    const ppm = tscTolerancePpm(params);
    const hostTscKhz = (vmExt[I.KVM_CAP.TSC_CONTROL] ?? system[I.KVM_CAP.TSC_CONTROL] ?? 0) > 0 ? undefined : kernelTscKhz(real, vm, tscKhz, ppm);
    const specCtrlAccepted = msrIndexList.includes(0x48) ? acceptedBits(real, vcpu, 0x48) : undefined;
    const cpu = cpuInfo();
    const profile: HostProfile = {
      source: 'capture',
      notes: '',
      host: {
        kernel: release(),
        vendorModule: vendor,
        cpuVendor: cpu.vendor,
        cpuModel: cpu.model,
        capturedAt: new Date().toISOString(),
        kvmsrVersion: KVMSR_VERSION,
        moduleParams: params,
      },
      apiVersion,
      vcpuMmapSize,
      tscKhz,
      extensions: { system, vm: vmExt },
      msrIndexList,
      featureMsrs,
      supportedCpuid,
      vcpuReset,
      tscUnstable,
      ...(specCtrlAccepted !== undefined ? { specCtrlAccepted } : {}),
      ...(hostTscKhz !== undefined && hostTscKhz !== tscKhz ? { hostTscKhz } : {}),
      ...(mceOk ? { mceCapSupported: new DataView(mceBuf.buffer).getBigUint64(0, true) } : {}),
    };
    // Round-trip through the JSON form so a capture is exactly what a saved file loads as.
    return parseProfile(JSON.parse(JSON.stringify(profileToJson(profile))), 'capture');
  } finally {
    for (const fd of fds.reverse()) real.close(fd);
  }
}
