// The Hyper-V MSRs (arch/x86/kvm/hyperv.c) and the Xen hypercall-page MSR (xen.c), on a profile of
// a kernel built as distributions build it (CONFIG_KVM_HYPERV, CONFIG_KVM_XEN): each expectation
// is the 6.12 source's answer, named in the test.
import { describe, expect, test } from 'vitest';
import { decodeCpuid2, encodeCpuid2, encodeEnableCap, encodeXenHvmConfig, type CpuidEntry2 } from '../src/abi/codecs.js';
import { E2BIG, EINVAL, ENOTTY } from '../src/abi/errno.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { HV_MSRS } from '../src/kvm/x86/hyperv.js';
import { Kvm } from '../src/kvm/kvm.js';
import { parseProfile, profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { withHypervLeaves } from '../src/harvest/on-kvmsr.js';
import { datas, msrs, sourceProfile } from './helpers.js';

/** What emulated_msrs_all lists under CONFIG_KVM_HYPERV (x86.c), in its order. */
const HV_LISTED = [
  0x40000000, 0x40000001, 0x40000020, 0x40000021, 0x40000022, 0x40000023, 0x40000100, 0x40000101, 0x40000102, 0x40000103, 0x40000104,
  0x40000105, 0x40000003, 0x40000002, 0x40000010, 0x40000080, 0x400000b0, 0x40000073, 0x40000106, 0x40000107, 0x40000108, 0x40000118,
  0x400000ff, 0x400000f1, 0x400000f2, 0x400000f3, 0x400000f4, 0x400000f5,
];

/** The source profile as a distribution kernel would have it: Hyper-V and Xen on. */
function distroProfile(): HostProfile {
  const j = JSON.parse(JSON.stringify(profileToJson(sourceProfile()))) as Record<string, unknown> & { extensions: { system: Record<string, number>; vm: Record<string, number> }; msrIndexList: string[] };
  for (const c of [KVM_CAP.HYPERV, KVM_CAP.HYPERV_SYNIC, KVM_CAP.HYPERV_SYNIC2, KVM_CAP.HYPERV_ENFORCE_CPUID, KVM_CAP.XEN_HVM]) {
    j.extensions.system[String(c)] = 1;
    j.extensions.vm[String(c)] = 1;
  }
  j.msrIndexList = [...j.msrIndexList, ...HV_LISTED.map((i) => '0x' + i.toString(16))];
  return parseProfile(j as never, 'distro');
}

interface Vm {
  kvm: Kvm;
  sys: number;
  vm: number;
  v: number[];
}
function vmWith(opts: { irqchip?: boolean; vcpus?: number; memslot?: boolean; profile?: HostProfile } = {}): Vm {
  const kvm = new Kvm({ profile: opts.profile ?? distroProfile() });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  if (opts.irqchip) kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
  if (opts.memslot) {
    const region = new Uint8Array(32);
    new DataView(region.buffer).setBigUint64(16, 0x10000n, true); // slot 0, GPA 0, 64 KiB
    kvm.ioctlOrThrow(vm, I.KVM_SET_USER_MEMORY_REGION, region);
  }
  const v = Array.from({ length: opts.vcpus ?? 1 }, (_, i) => kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, i));
  return { kvm, sys, vm, v };
}
const get = (m: Vm, v: number, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(v, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
const set = (m: Vm, v: number, index: number, value: bigint): boolean => m.kvm.ioctl(v, I.KVM_SET_MSRS, msrs([[index, value]])) === 1;

/** The supported CPUID with Hyper-V's leaves, as QEMU lays it out with hv-* flags. */
function hvCpuid(m: Vm, edit?: (e: CpuidEntry2) => CpuidEntry2): Uint8Array {
  const buf = encodeCpuid2([], 32, 32);
  expect(m.kvm.ioctl(m.sys, I.KVM_GET_SUPPORTED_HV_CPUID, buf)).toBe(0);
  const all = withHypervLeaves(m.kvm.profile.supportedCpuid, decodeCpuid2(buf).entries);
  return encodeCpuid2(edit ? all.map(edit) : all);
}

describe('Hyper-V MSRs from the host (kvm_hv_get/set_msr_common, host_initiated)', () => {
  test('a fresh vCPU: VP index = its creation index, SynIC version 1, SINTs masked, frequencies', () => {
    const m = vmWith({ vcpus: 2 });
    expect(get(m, m.v[1]!, 0x40000002)).toBe(1n); // kvm_hv_vcpu_init: vp_index = vcpu_idx
    expect(get(m, m.v[0]!, 0x40000081)).toBe(1n); // HV_SYNIC_VERSION_1
    expect(get(m, m.v[0]!, 0x40000090)).toBe(0x10000n); // HV_SYNIC_SINT_MASKED
    expect(get(m, m.v[0]!, 0x40000080)).toBe(0n); // SCONTROL before KVM_CAP_HYPERV_SYNIC
    expect(get(m, m.v[0]!, 0x40000022)).toBe(BigInt(m.kvm.profile.tscKhz) * 1000n); // virtual_tsc_khz * 1000
    expect(get(m, m.v[0]!, 0x40000023)).toBe(1000000000n); // 1e9 / apic_bus_cycle_ns
    expect(get(m, m.v[0]!, 0x40000003)).toBe(0n); // RESET reads 0
    expect(get(m, m.v[0]!, 0x40000004)).toBeNull(); // in the range, no case: kvm_hv_get_msr answers 1
    expect(get(m, m.v[0]!, 0x400000f0)).toBeNull(); // GUEST_IDLE: no handler at all
  });

  test('partition-wide MSRs are one per VM, per-vCPU ones are not', () => {
    const m = vmWith({ vcpus: 2, memslot: true });
    expect(set(m, m.v[0]!, 0x40000000, 0x1040a00003839n)).toBe(true);
    expect(get(m, m.v[1]!, 0x40000000)).toBe(0x1040a00003839n);
    expect(set(m, m.v[0]!, 0x40000073, 0x1000n)).toBe(true); // VP_ASSIST_PAGE, not enabled
    expect(get(m, m.v[1]!, 0x40000073)).toBe(0n);
    expect(set(m, m.v[0]!, 0x40000102, 0xdeadn)).toBe(true); // CRASH_P2
    expect(get(m, m.v[1]!, 0x40000102)).toBe(0xdeadn);
  });

  test('HYPERCALL: dropped without a guest OS ID; enabling writes the page, which must be in a memslot', () => {
    const m = vmWith({ memslot: true });
    const v = m.v[0]!;
    expect(set(m, v, 0x40000001, 0x2001n)).toBe(true);
    expect(get(m, v, 0x40000001)).toBe(0n);
    expect(set(m, v, 0x40000000, 1n)).toBe(true);
    expect(set(m, v, 0x40000001, 0x100001n)).toBe(false); // GPA 1 MiB is in no slot
    expect(set(m, v, 0x40000001, 0x2001n)).toBe(true);
    expect(get(m, v, 0x40000001)).toBe(0x2001n);
    expect(set(m, v, 0x40000000, 0n)).toBe(true); // a guest OS ID of 0 disables the page
    expect(get(m, v, 0x40000001)).toBe(0x2000n);
  });

  test('CRASH_CTL keeps only CRASH_NOTIFY; TSC_INVARIANT_CONTROL only bit 0; VP_INDEX only below KVM_MAX_VCPUS', () => {
    const m = vmWith();
    const v = m.v[0]!;
    expect(set(m, v, 0x40000105, 0xffffffffffffffffn)).toBe(true);
    expect(get(m, v, 0x40000105)).toBe(0x8000000000000000n);
    expect(set(m, v, 0x40000118, 2n)).toBe(false);
    expect(set(m, v, 0x40000118, 1n)).toBe(true);
    expect(set(m, v, 0x40000002, 0x100000005n)).toBe(true); // (u32)data
    expect(get(m, v, 0x40000002)).toBe(5n);
    expect(set(m, v, 0x40000002, 1n << 20n)).toBe(false);
  });

  test('SynIC: without KVM_CAP_HYPERV_SYNIC only a host write of 0 passes; the cap needs the irqchip', () => {
    const plain = vmWith();
    expect(set(plain, plain.v[0]!, 0x40000090, 0x10030n)).toBe(false);
    expect(set(plain, plain.v[0]!, 0x40000090, 0n)).toBe(true);
    expect(plain.kvm.ioctl(plain.v[0]!, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.HYPERV_SYNIC2, [0n]))).toBe(-EINVAL);
    const m = vmWith({ irqchip: true });
    const v = m.v[0]!;
    expect(m.kvm.ioctl(v, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.HYPERV_SYNIC2, [1n]))).toBe(-EINVAL); // args[0] must be 0
    expect(m.kvm.ioctl(v, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.HYPERV_SYNIC2, [0n]))).toBe(0);
    expect(get(m, v, 0x40000080)).toBe(1n); // HV_SYNIC_CONTROL_ENABLE
    expect(set(m, v, 0x40000090, 0x10005n)).toBe(true); // the host may write any vector
    expect(set(m, v, 0x400000b0, 0x30001n)).toBe(true); // STIMER0_CONFIG
    expect(get(m, v, 0x400000b0)).toBe(0x30001n);
    expect(set(m, v, 0x400000b0, 0x0n)).toBe(true);
  });

  test('VP_ASSIST_PAGE enabled sets PV EOI (MSR_KVM_PV_EOI_EN) to the page; disabled clears it', () => {
    const m = vmWith({ memslot: true });
    const v = m.v[0]!;
    expect(set(m, v, 0x40000073, 0x3001n)).toBe(true);
    expect(get(m, v, 0x4b564d04)).toBe(0x3001n);
    expect(set(m, v, 0x40000073, 0n)).toBe(true);
    expect(get(m, v, 0x4b564d04)).toBe(0n);
    expect(set(m, v, 0x40000073, 0x20001n)).toBe(false); // not in a memslot
  });

  test('EOI/ICR/TPR need the in-kernel LAPIC; EOI is write-only; ICR drops BUSY and refuses reserved bits', () => {
    const none = vmWith();
    expect(get(none, none.v[0]!, 0x40000072)).toBeNull();
    const m = vmWith({ irqchip: true });
    const v = m.v[0]!;
    expect(get(m, v, 0x40000070)).toBeNull();
    expect(set(m, v, 0x40000070, 0n)).toBe(true);
    expect(set(m, v, 0x40000072, 0x1ffn)).toBe(true);
    expect(get(m, v, 0x40000072)).toBe(0xffn);
    expect(set(m, v, 0x40000071, 0x100001000n | 0x40n)).toBe(true);
    expect(get(m, v, 0x40000071)).toBe(0x100000040n);
    expect(set(m, v, 0x40000071, 0x100000n)).toBe(false);
  });

  test('a bulk KVM_GET_MSRS of every Hyper-V MSR equals the one-by-one reads (the full path)', () => {
    const m = vmWith({ irqchip: true });
    const v = m.v[0]!;
    const fixed = HV_MSRS.filter((i) => i !== 0x40000010 && i !== 0x40000020);
    const b = msrs(fixed);
    const n = m.kvm.ioctl(v, I.KVM_GET_MSRS, b);
    const one = fixed.map((i) => get(m, v, i));
    const stop = one.findIndex((x) => x === null);
    expect(n).toBe(stop < 0 ? fixed.length : stop);
    expect(datas(b).slice(0, n)).toEqual(one.slice(0, n));
  });

  test('without CONFIG_KVM_HYPERV (no KVM_CAP_HYPERV) there is no handler and no KVM_GET_SUPPORTED_HV_CPUID', () => {
    const m = vmWith({ profile: sourceProfile() });
    expect(get(m, m.v[0]!, 0x40000000)).toBeNull();
    expect(m.kvm.ioctl(m.sys, I.KVM_GET_SUPPORTED_HV_CPUID, encodeCpuid2([], 16, 16))).toBe(-EINVAL);
  });
});

describe('KVM_GET_SUPPORTED_HV_CPUID (kvm_get_hv_cpuid)', () => {
  test('ten leaves, E2BIG below ten, nent trimmed above; the vCPU fd drops direct timers without an irqchip', () => {
    const m = vmWith();
    const small = encodeCpuid2([], 4, 4);
    expect(m.kvm.ioctl(m.sys, I.KVM_GET_SUPPORTED_HV_CPUID, small)).toBe(-E2BIG);
    const sys = encodeCpuid2([], 32, 32);
    expect(m.kvm.ioctl(m.sys, I.KVM_GET_SUPPORTED_HV_CPUID, sys)).toBe(0);
    const s = decodeCpuid2(sys);
    expect(s.nent).toBe(10);
    expect(s.entries.find((e) => e.function === 0x40000001)!.eax).toBe(0x31237648); // "Hv#1"
    const vc = encodeCpuid2([], 32, 32);
    expect(m.kvm.ioctl(m.v[0]!, I.KVM_GET_SUPPORTED_HV_CPUID, vc)).toBe(0);
    const feat = (b: Uint8Array): number => decodeCpuid2(b).entries.find((e) => e.function === 0x40000003)!.edx;
    expect(feat(sys) & (1 << 19)).not.toBe(0);
    expect(feat(vc) & (1 << 19)).toBe(0);
  });
  test('KVM_CAP_HYPERV_ENLIGHTENED_VMCS is VMX-only (ENOTTY here, a PVM profile)', () => {
    const m = vmWith();
    expect(m.kvm.ioctl(m.v[0]!, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.HYPERV_ENLIGHTENED_VMCS, [0x1000n]))).toBe(-ENOTTY);
  });
});

describe('Hyper-V MSRs from the guest (host_initiated = false)', () => {
  test('without "Hv#1" in CPUID every guest access faults; with it they pass', () => {
    const m = vmWith();
    const v = m.v[0]!;
    m.kvm.markRan(v);
    expect(m.kvm.rdmsr(v, 0x40000000).kind).toBe('gp');
    const h = vmWith();
    h.kvm.ioctlOrThrow(h.v[0]!, I.KVM_SET_CPUID2, hvCpuid(h));
    h.kvm.markRan(h.v[0]!);
    expect(h.kvm.wrmsr(h.v[0]!, 0x40000000, 0x1234n)).toEqual({ kind: 'ok', value: 0x1234n });
    expect(h.kvm.rdmsr(h.v[0]!, 0x40000002)).toEqual({ kind: 'ok', value: 0n });
    expect(h.kvm.wrmsr(h.v[0]!, 0x40000002, 3n).kind).toBe('gp'); // only the host sets the VP index
  });

  test('KVM_CAP_HYPERV_ENFORCE_CPUID: the guest needs the feature bit of each MSR', () => {
    const m = vmWith();
    const v = m.v[0]!;
    // HYPERV_CPUID_FEATURES without HV_MSR_HYPERCALL_AVAILABLE (bit 5)
    m.kvm.ioctlOrThrow(v, I.KVM_SET_CPUID2, hvCpuid(m, (e) => (e.function === 0x40000003 ? { ...e, eax: e.eax & ~(1 << 5) } : e)));
    expect(m.kvm.ioctl(v, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.HYPERV_ENFORCE_CPUID, [1n]))).toBe(0);
    m.kvm.markRan(v);
    expect(m.kvm.rdmsr(v, 0x40000000).kind).toBe('gp');
    expect(m.kvm.rdmsr(v, 0x40000002).kind).toBe('ok'); // VP_INDEX_AVAILABLE is still there
  });

  test('writes that ask for an exit: crash, reset, SynIC (KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_HYPERV)', () => {
    const m = vmWith({ irqchip: true, memslot: true });
    const v = m.v[0]!;
    m.kvm.ioctlOrThrow(v, I.KVM_SET_CPUID2, hvCpuid(m));
    m.kvm.ioctlOrThrow(v, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.HYPERV_SYNIC2, [0n]));
    m.kvm.markRan(v);
    expect(m.kvm.wrmsr(v, 0x40000105, 1n << 63n)).toEqual({ kind: 'vmexit', exitReason: 24 });
    expect(get(m, v, 0x40000105)).toBe(0n); // the guest's crash write keeps nothing
    expect(m.kvm.wrmsr(v, 0x40000080, 1n)).toEqual({ kind: 'vmexit', exitReason: 27 });
    expect(m.kvm.rdmsr(v, 0x40000080)).toEqual({ kind: 'ok', value: 1n });
    // A host write of RESET = 1 leaves the request; the next guest entry exits before the access.
    expect(set(m, v, 0x40000003, 1n)).toBe(true);
    expect(m.kvm.rdmsr(v, 0x40000000)).toEqual({ kind: 'vmexit', exitReason: 24 });
    expect(m.kvm.rdmsr(v, 0x40000000).kind).toBe('ok');
    // A SINT vector below 16, unmasked, is the guest's #GP; masked it passes.
    expect(m.kvm.wrmsr(v, 0x40000091, 0x5n).kind).toBe('gp');
    expect(m.kvm.wrmsr(v, 0x40000091, 0x10005n).kind).toBe('ok');
  });

  test("KVM's PV leaves found at base 0x40000100 (kvm_get_hypervisor_cpuid) gate the KVM MSRs", () => {
    const m = vmWith();
    const v = m.v[0]!;
    m.kvm.ioctlOrThrow(v, I.KVM_SET_CPUID2, hvCpuid(m, (e) => (e.function === 0x40000101 ? { ...e, eax: 0 } : e)));
    m.kvm.ioctlOrThrow(v, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.ENFORCE_PV_FEATURE_CPUID, [1n]));
    m.kvm.markRan(v);
    expect(m.kvm.rdmsr(v, 0x4b564d01).kind).toBe('gp'); // KVM_FEATURE_CLOCKSOURCE2 cleared at 0x40000101
  });
});

describe('KVM_XEN_HVM_CONFIG and the Xen hypercall page MSR', () => {
  const cfg = (flags: number, msr: number, blobAddr32 = 0n, blobSize32 = 0): Uint8Array => encodeXenHvmConfig({ flags, msr, blobAddr32, blobSize32 });
  test('refused without CONFIG_KVM_XEN, and for flags or a blob with interception', () => {
    const off = vmWith({ profile: sourceProfile() });
    expect(off.kvm.ioctl(off.vm, I.KVM_XEN_HVM_CONFIG, cfg(2, 0x40000200))).toBe(-ENOTTY);
    const m = vmWith();
    expect(m.kvm.ioctl(m.vm, I.KVM_XEN_HVM_CONFIG, cfg(0x100, 0x40000200))).toBe(-EINVAL);
    expect(m.kvm.ioctl(m.vm, I.KVM_XEN_HVM_CONFIG, cfg(2, 0x40000200, 0x1000n, 1))).toBe(-EINVAL);
  });
  test('writes of the MSR fill the hypercall page: page 0 of a memslot only with interception; a Hyper-V index is taken over for writes', () => {
    const m = vmWith({ memslot: true });
    const v = m.v[0]!;
    expect(m.kvm.ioctl(m.vm, I.KVM_XEN_HVM_CONFIG, cfg(2, 0x40000000))).toBe(0);
    expect(set(m, v, 0x40000000, 0x2000n)).toBe(true);
    expect(get(m, v, 0x40000000)).toBe(0n); // the read is still Hyper-V's GUEST_OS_ID, never written
    expect(set(m, v, 0x40000000, 0x2001n)).toBe(false); // page 1
    expect(set(m, v, 0x40000000, 0x100000n)).toBe(false); // outside the slot
    // Without interception the VMM's blob has 0 pages: every write fails.
    expect(m.kvm.ioctl(m.vm, I.KVM_XEN_HVM_CONFIG, cfg(0, 0x40000000))).toBe(0);
    expect(set(m, v, 0x40000000, 0x2000n)).toBe(false);
  });
});
