// The Hyper-V MSRs of arch/x86/kvm/hyperv.c (CONFIG_KVM_HYPERV): kvm_hv_get_msr_common and
// kvm_hv_set_msr_common, the partition-wide MSRs (struct kvm_hv, one per VM) and the per-vCPU
// ones (struct kvm_vcpu_hv: VP index, VP assist page, SynIC, synthetic timers, PV vAPIC), the
// CPUID gates of hv_check_msr_access (KVM_CAP_HYPERV_ENFORCE_CPUID), and the exits a guest write
// asks for (KVM_REQ_HV_CRASH, KVM_REQ_HV_RESET, KVM_REQ_HV_EXIT). Per-vCPU values live in the
// vCPU's MSR array, partition-wide ones in the VM's; both as u32 halves, with no BigInt.
import { versioned, type VersionedRule } from './release.js';
import { MSR_ERR, MSR_OK, type MsrValue } from './msr-ret.js';
import { slotOf } from './msr-slots.js';
import type { Vcpu } from '../vcpu.js';
import type { Vm } from '../vm.js';

export const HV_X64_MSR_GUEST_OS_ID = 0x40000000;
export const HV_X64_MSR_HYPERCALL = 0x40000001;
export const HV_X64_MSR_VP_INDEX = 0x40000002;
export const HV_X64_MSR_RESET = 0x40000003;
export const HV_X64_MSR_VP_RUNTIME = 0x40000010;
export const HV_X64_MSR_TIME_REF_COUNT = 0x40000020;
export const HV_X64_MSR_REFERENCE_TSC = 0x40000021;
export const HV_X64_MSR_TSC_FREQUENCY = 0x40000022;
export const HV_X64_MSR_APIC_FREQUENCY = 0x40000023;
export const HV_X64_MSR_EOI = 0x40000070;
export const HV_X64_MSR_ICR = 0x40000071;
export const HV_X64_MSR_TPR = 0x40000072;
export const HV_X64_MSR_VP_ASSIST_PAGE = 0x40000073;
export const HV_X64_MSR_SCONTROL = 0x40000080;
export const HV_X64_MSR_SVERSION = 0x40000081;
export const HV_X64_MSR_SIEFP = 0x40000082;
export const HV_X64_MSR_SIMP = 0x40000083;
export const HV_X64_MSR_EOM = 0x40000084;
export const HV_X64_MSR_SINT0 = 0x40000090;
export const HV_X64_MSR_SINT15 = 0x4000009f;
export const HV_X64_MSR_STIMER0_CONFIG = 0x400000b0;
export const HV_X64_MSR_STIMER3_COUNT = 0x400000b7;
export const HV_X64_MSR_SYNDBG_CONTROL = 0x400000f1;
export const HV_X64_MSR_SYNDBG_STATUS = 0x400000f2;
export const HV_X64_MSR_SYNDBG_SEND_BUFFER = 0x400000f3;
export const HV_X64_MSR_SYNDBG_RECV_BUFFER = 0x400000f4;
export const HV_X64_MSR_SYNDBG_PENDING_BUFFER = 0x400000f5;
export const HV_X64_MSR_SYNDBG_OPTIONS = 0x400000ff;
export const HV_X64_MSR_CRASH_P0 = 0x40000100;
export const HV_X64_MSR_CRASH_P4 = 0x40000104;
export const HV_X64_MSR_CRASH_CTL = 0x40000105;
export const HV_X64_MSR_REENLIGHTENMENT_CONTROL = 0x40000106;
export const HV_X64_MSR_TSC_EMULATION_CONTROL = 0x40000107;
export const HV_X64_MSR_TSC_EMULATION_STATUS = 0x40000108;
export const HV_X64_MSR_TSC_INVARIANT_CONTROL = 0x40000118;

export const HV_TSC_INVARIANT_CONTROL: VersionedRule = versioned({
  id: 'hyperv.tsc-invariant-control',
  family: 'hyperv',
  kernel: 'kvm_hv_get_msr_common, kvm_hv_set_msr_common (HV_X64_MSR_TSC_INVARIANT_CONTROL), emulated_msrs_all',
  holds: 'HV_X64_MSR_TSC_INVARIANT_CONTROL (0x40000118) is a Hyper-V MSR: listed, and answered as hyperv.c does',
  otherwise: 'it has no handler: unsupported, host and guest, and not listed (seen live on kvm_intel 6.1.192)',
  where: { since: '6.2' },
  note: 'assumed release; absent from 6.1.192, present in 6.12.0',
});

/** Every index kvm_{get,set}_msr_common hands to the Hyper-V code (the case ranges in x86.c). */
export function isHvMsr(index: number): boolean {
  const i = index >>> 0;
  if (i < 0x40000000 || i > 0x40000118) return false;
  return (
    i <= HV_X64_MSR_SINT15 ||
    (i >= HV_X64_MSR_SYNDBG_CONTROL && i <= HV_X64_MSR_SYNDBG_PENDING_BUFFER) ||
    i === HV_X64_MSR_SYNDBG_OPTIONS ||
    (i >= HV_X64_MSR_CRASH_P0 && i <= HV_X64_MSR_TSC_EMULATION_STATUS) ||
    (i >= HV_X64_MSR_STIMER0_CONFIG && i <= HV_X64_MSR_STIMER3_COUNT) ||
    i === HV_X64_MSR_TSC_INVARIANT_CONTROL
  );
}

/** Every Hyper-V MSR KVM has a case for, in index order (what conform and harvest try). */
export const HV_MSRS: readonly number[] = (() => {
  const out: number[] = [];
  for (let i = 0x40000000; i <= 0x40000118; i++) if (isHvMsr(i) && hvKnown(i)) out.push(i);
  return out;
})();

/** Indices in the ranges above that kvm_hv_get/set_msr have a case for (others answer 1). */
function hvKnown(i: number): boolean {
  return (
    i <= HV_X64_MSR_RESET ||
    i === HV_X64_MSR_VP_RUNTIME ||
    (i >= HV_X64_MSR_TIME_REF_COUNT && i <= HV_X64_MSR_APIC_FREQUENCY) ||
    (i >= HV_X64_MSR_EOI && i <= HV_X64_MSR_VP_ASSIST_PAGE) ||
    (i >= HV_X64_MSR_SCONTROL && i <= HV_X64_MSR_EOM) ||
    (i >= HV_X64_MSR_SINT0 && i <= HV_X64_MSR_SINT15) ||
    i > HV_X64_MSR_SINT15
  );
}

// HYPERV_CPUID_FEATURES (0x40000003) bits hv_check_msr_access tests.
const HV_MSR_VP_RUNTIME_AVAILABLE = 1 << 0;
const HV_MSR_TIME_REF_COUNT_AVAILABLE = 1 << 1;
const HV_MSR_SYNIC_AVAILABLE = 1 << 2;
const HV_MSR_SYNTIMER_AVAILABLE = 1 << 3;
const HV_MSR_APIC_ACCESS_AVAILABLE = 1 << 4;
const HV_MSR_HYPERCALL_AVAILABLE = 1 << 5;
const HV_MSR_VP_INDEX_AVAILABLE = 1 << 6;
const HV_MSR_RESET_AVAILABLE = 1 << 7;
const HV_MSR_REFERENCE_TSC_AVAILABLE = 1 << 9;
const HV_ACCESS_FREQUENCY_MSRS = 1 << 11;
const HV_ACCESS_REENLIGHTENMENT = 1 << 13;
const HV_ACCESS_TSC_INVARIANT = 1 << 15;
// ... in EDX.
const HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE = 1 << 10;
const HV_FEATURE_DEBUG_MSRS_AVAILABLE = 1 << 11;
const HV_STIMER_DIRECT_MODE_AVAILABLE = 1 << 19;
/** HYPERV_CPUID_SYNDBG_PLATFORM_CAPABILITIES (0x40000082) EAX. */
const HV_X64_SYNDBG_CAP_ALLOW_KERNEL_DEBUGGING = 1 << 1;
export const HYPERV_CPUID_SIGNATURE_EAX = 0x31237648; // "Hv#1"

const HV_SYNIC_SINT_MASKED = 1 << 16;
const HV_SYNIC_FIRST_VALID_VECTOR = 16;

export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_HYPERV = 27;
/** What KVM_RUN's next entry will exit with first (vcpu_enter_guest checks CRASH, RESET, then EXIT). */
const REQ_CRASH = 1;
const REQ_RESET = 2;
const REQ_EXIT = 4;

/** struct kvm_vcpu_hv, the parts MSR answers depend on (the values are in the vCPU's MSR array). */
export class HvVcpu {
  /** synic->active: KVM_CAP_HYPERV_SYNIC or SYNIC2 enabled on the vCPU. */
  synicActive = false;
  /** synic->dont_zero_synic_pages (SYNIC2). */
  dontZeroSynicPages = false;
  /** hv_vcpu->enforce_cpuid (KVM_CAP_HYPERV_ENFORCE_CPUID). */
  enforceCpuid = false;
  /** hv_vcpu->cpuid_cache, filled by kvm_hv_set_cpuid. */
  featuresEax = 0;
  featuresEdx = 0;
  syndbgCapEax = 0;
  /** vmx->nested.enlightened_vmcs_enabled (KVM_CAP_HYPERV_ENLIGHTENED_VMCS). */
  evmcsEnabled = false;
  /** runtime_offset: what a host write of VP_RUNTIME set, in 100 ns units. */
  runtimeOffset = 0;
  /** KVM_REQ_HV_CRASH / _RESET / _EXIT pending for the next guest entry. */
  requests = 0;
}

/** struct kvm_hv: the partition-wide MSR values, by index - 0x40000000. */
export class HvVm {
  readonly msrs = new Uint32Array(0x200 * 2);
}

const pw = (vm: Vm): Uint32Array => vm.hv.msrs;
const off = (index: number): number => ((index - 0x40000000) | 0) * 2;

/**
 * The Hyper-V state of a new vCPU (kvm_hv_vcpu_init, synic_init, stimer_init): VP index =
 * vcpu_idx, SynIC version 1, every SINT masked, everything else 0.
 */
export function hvInitVcpu(vcpu: Vcpu): void {
  const m = vcpu.msrs;
  for (let i = 0x40000000; i <= 0x40000118; i++) {
    if (!isHvMsr(i)) continue;
    const s = slot(i);
    m[s] = 0;
    m[s + 1] = 0;
  }
  m[slot(HV_X64_MSR_VP_INDEX)] = vcpu.idx;
  m[slot(HV_X64_MSR_SVERSION)] = 1;
  for (let i = HV_X64_MSR_SINT0; i <= HV_X64_MSR_SINT15; i++) m[slot(i)] = HV_SYNIC_SINT_MASKED;
  vcpu.hv = new HvVcpu();
}

/** The vCPU MSR array's position of an index's low half. */
const slot = (index: number): number => slotOf(index) * 2;

/** kvm_hv_set_cpuid: vcpu->arch.hyperv_enabled and the CPUID cache, at KVM_SET_CPUID2. */
export function hvSetCpuid(vcpu: Vcpu, find: (leaf: number) => { eax: number; ebx: number; ecx: number; edx: number } | undefined): void {
  const iface = find(0x40000001);
  vcpu.hypervEnabled = iface !== undefined && iface.eax >>> 0 === HYPERV_CPUID_SIGNATURE_EAX;
  const hv = vcpu.hv!;
  hv.featuresEax = 0;
  hv.featuresEdx = 0;
  hv.syndbgCapEax = 0;
  if (!vcpu.hypervEnabled) return;
  const f = find(0x40000003);
  if (f) {
    hv.featuresEax = f.eax;
    hv.featuresEdx = f.edx;
  }
  const d = find(0x40000082);
  if (d) hv.syndbgCapEax = d.eax;
}

/** hv_check_msr_access: with KVM_CAP_HYPERV_ENFORCE_CPUID, the guest needs the CPUID bit. */
function accessAllowed(hv: HvVcpu, index: number): boolean {
  if (!hv.enforceCpuid) return true;
  const a = hv.featuresEax;
  const d = hv.featuresEdx;
  switch (index) {
    case HV_X64_MSR_GUEST_OS_ID:
    case HV_X64_MSR_HYPERCALL:
      return (a & HV_MSR_HYPERCALL_AVAILABLE) !== 0;
    case HV_X64_MSR_VP_RUNTIME:
      return (a & HV_MSR_VP_RUNTIME_AVAILABLE) !== 0;
    case HV_X64_MSR_TIME_REF_COUNT:
      return (a & HV_MSR_TIME_REF_COUNT_AVAILABLE) !== 0;
    case HV_X64_MSR_VP_INDEX:
      return (a & HV_MSR_VP_INDEX_AVAILABLE) !== 0;
    case HV_X64_MSR_RESET:
      return (a & HV_MSR_RESET_AVAILABLE) !== 0;
    case HV_X64_MSR_REFERENCE_TSC:
      return (a & HV_MSR_REFERENCE_TSC_AVAILABLE) !== 0;
    case HV_X64_MSR_EOI:
    case HV_X64_MSR_ICR:
    case HV_X64_MSR_TPR:
    case HV_X64_MSR_VP_ASSIST_PAGE:
      return (a & HV_MSR_APIC_ACCESS_AVAILABLE) !== 0;
    case HV_X64_MSR_TSC_FREQUENCY:
    case HV_X64_MSR_APIC_FREQUENCY:
      return (a & HV_ACCESS_FREQUENCY_MSRS) !== 0;
    case HV_X64_MSR_REENLIGHTENMENT_CONTROL:
    case HV_X64_MSR_TSC_EMULATION_CONTROL:
    case HV_X64_MSR_TSC_EMULATION_STATUS:
      return (a & HV_ACCESS_REENLIGHTENMENT) !== 0;
    case HV_X64_MSR_TSC_INVARIANT_CONTROL:
      return (a & HV_ACCESS_TSC_INVARIANT) !== 0;
    case HV_X64_MSR_SYNDBG_OPTIONS:
      return (d & HV_FEATURE_DEBUG_MSRS_AVAILABLE) !== 0;
    default:
      if (index >= HV_X64_MSR_SCONTROL && index <= HV_X64_MSR_EOM) return (a & HV_MSR_SYNIC_AVAILABLE) !== 0;
      if (index >= HV_X64_MSR_SINT0 && index <= HV_X64_MSR_SINT15) return (a & HV_MSR_SYNIC_AVAILABLE) !== 0;
      if (index >= HV_X64_MSR_STIMER0_CONFIG && index <= HV_X64_MSR_STIMER3_COUNT) return (a & HV_MSR_SYNTIMER_AVAILABLE) !== 0;
      if (index >= HV_X64_MSR_CRASH_P0 && index <= HV_X64_MSR_CRASH_CTL) return (d & HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE) !== 0;
      if (index >= HV_X64_MSR_SYNDBG_CONTROL && index <= HV_X64_MSR_SYNDBG_PENDING_BUFFER) return (d & HV_FEATURE_DEBUG_MSRS_AVAILABLE) !== 0;
      return false;
  }
}

/** kvm_hv_msr_partition_wide. */
function partitionWide(index: number): boolean {
  switch (index) {
    case HV_X64_MSR_GUEST_OS_ID:
    case HV_X64_MSR_HYPERCALL:
    case HV_X64_MSR_REFERENCE_TSC:
    case HV_X64_MSR_TIME_REF_COUNT:
    case HV_X64_MSR_CRASH_CTL:
    case HV_X64_MSR_RESET:
    case HV_X64_MSR_REENLIGHTENMENT_CONTROL:
    case HV_X64_MSR_TSC_EMULATION_CONTROL:
    case HV_X64_MSR_TSC_EMULATION_STATUS:
    case HV_X64_MSR_TSC_INVARIANT_CONTROL:
    case HV_X64_MSR_SYNDBG_OPTIONS:
      return true;
    default:
      return (index >= HV_X64_MSR_CRASH_P0 && index <= HV_X64_MSR_CRASH_P4) || (index >= HV_X64_MSR_SYNDBG_CONTROL && index <= HV_X64_MSR_SYNDBG_PENDING_BUFFER);
  }
}

/** What the Hyper-V code needs from the rest of kvmsr: clocks and the guest-memory check. */
export interface HvEnv {
  /** get_kvmclock_ns(kvm) / 100: the VM's clock in 100 ns units. */
  timeRef100ns(vm: Vm): number;
  /** current_task_runtime_100ns(): the calling task's CPU time, in 100 ns units. */
  taskRuntime100ns(): number;
  /** kvm_xen_hypercall_enabled: the hypercall page then starts with the Xen disambiguation. */
  xenHypercallEnabled(vm: Vm): boolean;
  /** KVM_MAX_VCPUS (KVM_CAP_MAX_VCPUS): a VP index must be below it. */
  maxVcpus: number;
}

const TWO32 = 4294967296;
const PAGE = 4096;
const pageAddr = (lo: number, hi: number): number => (hi >>> 0) * TWO32 + ((lo & ~0xfff) >>> 0);

function put(out: MsrValue, lo: number, hi: number): number {
  out.lo = lo | 0;
  out.hi = hi | 0;
  return MSR_OK;
}
function fromNumber(out: MsrValue, v: number): number {
  const x = v < 0 ? 0 : Math.floor(v);
  return put(out, x % TWO32, Math.floor(x / TWO32));
}

/** kvm_hv_get_msr_common. */
export function hvGetMsr(env: HvEnv, vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
  if (!host && !vcpu.hypervEnabled) return MSR_ERR;
  const hv = vcpu.hv!;
  if (!host && !accessAllowed(hv, index)) return MSR_ERR;
  if (partitionWide(index)) {
    const p = pw(vcpu.vm);
    const o = off(index);
    switch (index) {
      case HV_X64_MSR_TIME_REF_COUNT:
        return fromNumber(out, env.timeRef100ns(vcpu.vm));
      case HV_X64_MSR_RESET:
        return put(out, 0, 0);
      default:
        if ((index >= HV_X64_MSR_SYNDBG_CONTROL && index <= HV_X64_MSR_SYNDBG_PENDING_BUFFER) || index === HV_X64_MSR_SYNDBG_OPTIONS) {
          // syndbg_get_msr: the guest needs the kernel-debugging capability in its CPUID.
          if (!syndbgEnabled(hv) && !host) return MSR_ERR;
        }
        return put(out, p[o]!, p[o + 1]!);
    }
  }
  const m = vcpu.msrs;
  const s = slot(index);
  switch (index) {
    case HV_X64_MSR_VP_INDEX:
    case HV_X64_MSR_VP_ASSIST_PAGE:
      return put(out, m[s]!, m[s + 1]!);
    case HV_X64_MSR_EOI:
      // kvm_hv_vapic_msr_read: needs the in-kernel LAPIC; EOI is write-only there.
      return MSR_ERR;
    case HV_X64_MSR_ICR:
    case HV_X64_MSR_TPR:
      if (!vcpu.vm.irqchip) return MSR_ERR;
      return put(out, m[s]!, m[s + 1]!);
    case HV_X64_MSR_VP_RUNTIME:
      return fromNumber(out, env.taskRuntime100ns() + hv.runtimeOffset);
    case HV_X64_MSR_TSC_FREQUENCY:
      return fromNumber(out, vcpu.virtualTscKhz * 1000);
    case HV_X64_MSR_APIC_FREQUENCY:
      // 1e9 / kvm->arch.apic_bus_cycle_ns (APIC_BUS_CYCLE_NS_DEFAULT, 1).
      return put(out, 1000000000, 0);
    default:
      if ((index >= HV_X64_MSR_SCONTROL && index <= HV_X64_MSR_EOM) || (index >= HV_X64_MSR_SINT0 && index <= HV_X64_MSR_SINT15)) {
        // synic_get_msr
        if (!hv.synicActive && !host) return MSR_ERR;
        if (index === HV_X64_MSR_EOM) return put(out, 0, 0);
        return put(out, m[s]!, m[s + 1]!);
      }
      if (index >= HV_X64_MSR_STIMER0_CONFIG && index <= HV_X64_MSR_STIMER3_COUNT) return put(out, m[s]!, m[s + 1]!);
      return MSR_ERR; // kvm_pr_unimpl_rdmsr
  }
}

function syndbgEnabled(hv: HvVcpu): boolean {
  return (hv.syndbgCapEax & HV_X64_SYNDBG_CAP_ALLOW_KERNEL_DEBUGGING) !== 0;
}

/** kvm_hv_set_msr_common. */
export function hvSetMsr(env: HvEnv, vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
  if (!host && !vcpu.hypervEnabled) return MSR_ERR;
  const hv = vcpu.hv!;
  if (!host && !accessAllowed(hv, index)) return MSR_ERR;
  const vm = vcpu.vm;
  if (partitionWide(index)) return setPartitionWide(env, vcpu, hv, index, host, lo, hi);
  const m = vcpu.msrs;
  const s = slot(index);
  switch (index) {
    case HV_X64_MSR_VP_INDEX:
      // Only the host sets it, below KVM_MAX_VCPUS; the upper half is dropped ((u32)data).
      if (!host || lo >>> 0 >= env.maxVcpus) return MSR_ERR;
      m[s] = lo;
      return MSR_OK;
    case HV_X64_MSR_VP_ASSIST_PAGE: {
      if ((lo & 1) === 0) {
        // kvm_lapic_set_pv_eoi(vcpu, 0, 0) also disables PV EOI.
        m[s] = lo;
        m[s + 1] = hi;
        setPvEoi(vcpu, 0, 0);
        return MSR_OK;
      }
      // kvm_vcpu_gfn_to_hva, then __put_user(0) to the page's first u32.
      const gpa = pageAddr(lo, hi);
      if (!vm.gpaRangeMapped(gpa, 4)) return MSR_ERR;
      m[s] = lo;
      m[s + 1] = hi;
      // kvm_lapic_set_pv_eoi(vcpu, gpa | KVM_MSR_ENABLED, sizeof(struct hv_vp_assist_page)).
      if (!vm.gpaRangeMapped(gpa, PAGE)) return MSR_ERR;
      setPvEoi(vcpu, (lo & ~0xfff) | 1, hi);
      return MSR_OK;
    }
    case HV_X64_MSR_EOI:
      // kvm_hv_vapic_msr_write: the in-kernel LAPIC; bits 63:32 are reserved.
      if (!vm.irqchip || hi !== 0) return MSR_ERR;
      return MSR_OK;
    case HV_X64_MSR_TPR:
      if (!vm.irqchip || hi !== 0) return MSR_ERR;
      m[s] = lo & 0xff; // apic_set_tpr(apic, val & 0xff)
      m[s + 1] = 0;
      return MSR_OK;
    case HV_X64_MSR_ICR:
      // kvm_x2apic_icr_write: reserved bits refused, BUSY cleared; the IPI itself is not modelled.
      if (!vm.irqchip || (lo & 0xfff32000) !== 0) return MSR_ERR;
      m[s] = lo & ~0x1000;
      m[s + 1] = hi;
      return MSR_OK;
    case HV_X64_MSR_VP_RUNTIME:
      if (!host) return MSR_ERR;
      hv.runtimeOffset = (hi >>> 0) * TWO32 + (lo >>> 0) - env.taskRuntime100ns();
      return MSR_OK;
    case HV_X64_MSR_TSC_FREQUENCY:
    case HV_X64_MSR_APIC_FREQUENCY:
      // read-only, but a host write is ignored
      return host ? MSR_OK : MSR_ERR;
    default:
      if ((index >= HV_X64_MSR_SCONTROL && index <= HV_X64_MSR_EOM) || (index >= HV_X64_MSR_SINT0 && index <= HV_X64_MSR_SINT15)) {
        return setSynic(vcpu, hv, index, host, lo, hi);
      }
      if (index >= HV_X64_MSR_STIMER0_CONFIG && index <= HV_X64_MSR_STIMER3_COUNT) {
        return (index & 1) === 0 ? setStimerConfig(vcpu, hv, index, host, lo, hi) : setStimerCount(vcpu, hv, index, host, lo, hi);
      }
      return MSR_ERR; // kvm_pr_unimpl_wrmsr
  }
}

/** vcpu->arch.pv_eoi.msr_val, which MSR_KVM_PV_EOI_EN reads. */
function setPvEoi(vcpu: Vcpu, lo: number, hi: number): void {
  const s = slot(0x4b564d04); // MSR_KVM_PV_EOI_EN
  vcpu.msrs[s] = lo;
  vcpu.msrs[s + 1] = hi;
}

function setPartitionWide(env: HvEnv, vcpu: Vcpu, hv: HvVcpu, index: number, host: boolean, lo: number, hi: number): number {
  const vm = vcpu.vm;
  const p = pw(vm);
  const o = off(index);
  switch (index) {
    case HV_X64_MSR_GUEST_OS_ID:
      p[o] = lo;
      p[o + 1] = hi;
      // A guest OS ID of 0 disables the hypercall page.
      if (lo === 0 && hi === 0) p[off(HV_X64_MSR_HYPERCALL)] &= ~1;
      return MSR_OK;
    case HV_X64_MSR_HYPERCALL: {
      const id = off(HV_X64_MSR_GUEST_OS_ID);
      // Without a guest OS ID the write is dropped and the hypercall page stays disabled.
      if (p[id] === 0 && p[id + 1] === 0) return MSR_OK;
      if ((lo & 1) !== 0) {
        // The page gets (orl $0x80000000, %eax with Xen hypercalls on,) vmcall/vmmcall and ret.
        const len = env.xenHypercallEnabled(vm) ? 9 : 4;
        if (!vm.gpaRangeMapped(pageAddr(lo, hi), len)) return MSR_ERR;
      }
      p[o] = lo;
      p[o + 1] = hi;
      return MSR_OK;
    }
    case HV_X64_MSR_REFERENCE_TSC:
      // The TSC page itself is written at the next guest entry (kvm_hv_setup_tsc_page).
      p[o] = lo;
      p[o + 1] = hi;
      return MSR_OK;
    case HV_X64_MSR_CRASH_CTL:
      if (host) {
        p[o] = 0;
        p[o + 1] = hi & (1 << 31); // HV_CRASH_CTL_CRASH_NOTIFY only
        return MSR_OK;
      }
      // A guest write of CRASH_NOTIFY reports the crash to userspace and keeps nothing.
      if ((hi & (1 << 31)) !== 0) hv.requests |= REQ_CRASH;
      return MSR_OK;
    case HV_X64_MSR_RESET:
      if (lo === 1 && hi === 0) hv.requests |= REQ_RESET;
      return MSR_OK;
    case HV_X64_MSR_REENLIGHTENMENT_CONTROL:
    case HV_X64_MSR_TSC_EMULATION_CONTROL:
      p[o] = lo;
      p[o + 1] = hi;
      return MSR_OK;
    case HV_X64_MSR_TSC_EMULATION_STATUS:
      if ((lo !== 0 || hi !== 0) && !host) return MSR_ERR;
      p[o] = lo;
      p[o + 1] = hi;
      return MSR_OK;
    case HV_X64_MSR_TIME_REF_COUNT:
      // read-only, but a host write is ignored
      return host ? MSR_OK : MSR_ERR;
    case HV_X64_MSR_TSC_INVARIANT_CONTROL:
      // Only bit 0 (HV_EXPOSE_INVARIANT_TSC), and the guest cannot turn it off once on.
      if ((lo & ~1) !== 0 || hi !== 0) return MSR_ERR;
      if (!host && p[o] !== 0 && lo === 0) return MSR_ERR;
      p[o] = lo;
      p[o + 1] = 0;
      return MSR_OK;
    default:
      if (index >= HV_X64_MSR_CRASH_P0 && index <= HV_X64_MSR_CRASH_P4) {
        p[o] = lo;
        p[o + 1] = hi;
        return MSR_OK;
      }
      // syndbg_set_msr: the guest needs the kernel-debugging capability; CONTROL and
      // PENDING_BUFFER written by the guest exit to userspace (KVM_EXIT_HYPERV_SYNDBG).
      if (!syndbgEnabled(hv) && !host) return MSR_ERR;
      p[o] = lo;
      p[o + 1] = hi;
      if (!host && (index === HV_X64_MSR_SYNDBG_CONTROL || index === HV_X64_MSR_SYNDBG_PENDING_BUFFER)) hv.requests |= REQ_EXIT;
      return MSR_OK;
  }
}

/** synic_set_msr. */
function setSynic(vcpu: Vcpu, hv: HvVcpu, index: number, host: boolean, lo: number, hi: number): number {
  if (!hv.synicActive && (!host || lo !== 0 || hi !== 0)) return MSR_ERR;
  const m = vcpu.msrs;
  const s = slot(index);
  switch (index) {
    case HV_X64_MSR_SCONTROL:
      m[s] = lo;
      m[s + 1] = hi;
      if (!host) hv.requests |= REQ_EXIT;
      return MSR_OK;
    case HV_X64_MSR_SVERSION:
      if (!host) return MSR_ERR;
      m[s] = lo;
      m[s + 1] = hi;
      return MSR_OK;
    case HV_X64_MSR_SIEFP:
    case HV_X64_MSR_SIMP:
      // Enabling the page from the guest clears it (kvm_clear_guest) unless SYNIC2 said not to.
      if ((lo & 1) !== 0 && !host && !hv.dontZeroSynicPages && !vcpu.vm.gpaRangeMapped(pageAddr(lo, hi), PAGE)) return MSR_ERR;
      m[s] = lo;
      m[s + 1] = hi;
      if (!host) hv.requests |= REQ_EXIT;
      return MSR_OK;
    case HV_X64_MSR_EOM:
      return MSR_OK;
    default:
      if (index >= HV_X64_MSR_SINT0 && index <= HV_X64_MSR_SINT15) {
        // synic_set_sint: vectors below 16 only masked, or from the host.
        if ((lo & 0xff) < HV_SYNIC_FIRST_VALID_VECTOR && !host && (lo & HV_SYNIC_SINT_MASKED) === 0) return MSR_ERR;
        m[s] = lo;
        m[s + 1] = hi;
        return MSR_OK;
      }
      return MSR_ERR;
  }
}

// union hv_stimer_config: enable bit 0, periodic 1, lazy 2, auto_enable 3, apic_vector 11:4,
// direct_mode 12, sintx 19:16.
const STIMER_ENABLE = 1 << 0;
const STIMER_AUTO_ENABLE = 1 << 3;
const STIMER_DIRECT = 1 << 12;

/** stimer_set_config. */
function setStimerConfig(vcpu: Vcpu, hv: HvVcpu, index: number, host: boolean, lo: number, hi: number): number {
  if (!hv.synicActive && (!host || lo !== 0 || hi !== 0)) return MSR_ERR;
  if (!host && hv.enforceCpuid && (lo & STIMER_DIRECT) !== 0 && (hv.featuresEdx & HV_STIMER_DIRECT_MODE_AVAILABLE) === 0) return MSR_ERR;
  const m = vcpu.msrs;
  const s = slot(index);
  // A timer that was enabled, set to neither direct mode nor a SINT, ends up disabled.
  if ((m[s]! & STIMER_ENABLE) !== 0 && (lo & STIMER_DIRECT) === 0 && ((lo >>> 16) & 0xf) === 0) lo &= ~STIMER_ENABLE;
  m[s] = lo;
  m[s + 1] = hi;
  return MSR_OK;
}

/** stimer_set_count. */
function setStimerCount(vcpu: Vcpu, hv: HvVcpu, index: number, host: boolean, lo: number, hi: number): number {
  if (!hv.synicActive && (!host || lo !== 0 || hi !== 0)) return MSR_ERR;
  const m = vcpu.msrs;
  const s = slot(index);
  m[s] = lo;
  m[s + 1] = hi;
  if (!host) {
    const c = s - 2; // the timer's config
    if (lo === 0 && hi === 0) m[c] = m[c]! & ~STIMER_ENABLE;
    else if ((m[c]! & STIMER_AUTO_ENABLE) !== 0) m[c] = m[c]! | STIMER_ENABLE;
  }
  return MSR_OK;
}

/** KVM_ENABLE_CAP(KVM_CAP_HYPERV_SYNIC / SYNIC2) on the vCPU: kvm_hv_activate_synic. */
export function hvActivateSynic(vcpu: Vcpu, dontZeroPages: boolean): void {
  const hv = vcpu.hv!;
  hv.synicActive = true;
  hv.dontZeroSynicPages = dontZeroPages;
  const s = slot(HV_X64_MSR_SCONTROL);
  vcpu.msrs[s] = 1; // HV_SYNIC_CONTROL_ENABLE
  vcpu.msrs[s + 1] = 0;
}

/**
 * The exit a guest entry takes before running any guest code, from the requests Hyper-V MSR
 * writes left (vcpu_enter_guest checks HV_CRASH, HV_RESET, then HV_EXIT); 0 when none. Each
 * exit consumes its request.
 */
export function hvTakeExit(vcpu: Vcpu): number {
  const hv = vcpu.hv;
  if (hv === null || hv.requests === 0) return 0;
  const r = (hv.requests & REQ_CRASH) !== 0 ? REQ_CRASH : (hv.requests & REQ_RESET) !== 0 ? REQ_RESET : REQ_EXIT;
  hv.requests &= ~r;
  return r === REQ_EXIT ? KVM_EXIT_HYPERV : KVM_EXIT_SYSTEM_EVENT;
}


/**
 * svm.c's sync_cr8_to_lapic: at each VM exit (CR8 writes not intercepted, no interrupt pending
 * above the TPR) kvm_amd sets the LAPIC TPR from the guest's V_TPR, which holds only TPR[7:4]; so
 * around every guest instruction the TPR that HV_X64_MSR_TPR reads loses its low four bits (seen
 * live on kvm_amd 6.12: a guest write of 1 reads back 0). VMX keeps it whole in the virtual-APIC page.
 */
export function hvSyncCr8ToTpr(vcpu: Vcpu): void {
  if (vcpu.hv === null || !vcpu.vm.irqchip) return;
  const s = slot(HV_X64_MSR_TPR);
  vcpu.msrs[s] = vcpu.msrs[s]! & 0xf0;
}
