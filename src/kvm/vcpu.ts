// A vCPU's MSR state: values in a typed array indexed by slot, plus the few facts (CPUID-derived
// capabilities, "has run") that KVM's MSR rules consult.
import { SLOT_COUNT, slotOf } from './x86/msr-slots.js';
import type { Vm } from './vm.js';
import type { CpuidEntry2 } from '../abi/codecs.js';
import type { HvVcpu } from './x86/hyperv.js';
import type { VcpuState } from './state/vcpu-state.js';

export class Vcpu {
  /** Two u32 halves per slot: [lo, hi]. */
  readonly msrs = new Uint32Array(SLOT_COUNT * 2);
  /** Raw kvm_cpuid_entry2 bytes as KVM_SET_CPUID2 copied them in (KVM_GET_CPUID2 returns them). */
  cpuidBytes = new Uint8Array(0);
  cpuidNent = 0;
  /** KVM_SET_CPUID2 has run (kvm_vcpu_after_set_cpuid: the guest's reserved CR4 bits are set). */
  cpuidSet = false;
  /** The same entries decoded once at KVM_SET_CPUID2, for kvm_find_cpuid_entry. */
  cpuid: readonly CpuidEntry2[] = [];
  /** kvm_vcpu_has_run(): set by a KVM_RUN that entered the guest (vcpu-run.ts), or by Kvm.markRan(). */
  hasRun = false;
  /** !guest_cpuid_is_intel_compatible: computed from the vendor string at KVM_SET_CPUID2 only. */
  amdCompatible = false;
  /** guest_cpuid_is_intel: the vCPU's CPUID vendor is GenuineIntel. */
  intelVendor = false;
  /** vcpu->arch.pv_cpuid: KVM_CPUID_FEATURES eax and KVM_CAP_ENFORCE_PV_FEATURE_CPUID. */
  pvFeatures = 0;
  enforcePvCpuid = false;
  /** cpuid_maxphyaddr: 0x80000008 EAX[7:0] of the guest CPUID, 36 without one. */
  maxPhyAddr = 36;
  /** guest_cpu_cap_has bits (see cpuid-caps.ts); 0 until KVM_SET_CPUID2. */
  capBits = 0;
  /** Guest TSC = tscBase + cycles elapsed since tscBaseAt (performance.now() ms). */
  tscBaseLo = 0;
  tscBaseHi = 0;
  tscBaseAt = 0;
  /**
   * The base rests on kvmsr's estimate of the host TSC: the kernel's reading kept the offset across
   * a change of TSC multiplier (or a generation joined at another multiplier), adding rdtsc's share.
   */
  tscEstimated = false;
  /** vcpu->arch.this_tsc_write and this_tsc_nsec (ms): the TSC generation the vCPU last joined. */
  thisTscLo = 0;
  thisTscHi = 0;
  thisTscAt = 0;
  /**
   * vcpu->arch.tsc_always_catchup: set_tsc_khz took a rate above the host's without TSC scaling, so
   * each guest entry catches the TSC up to its generation's virtual time (kvm_guest_time_update).
   */
  tscCatchup = false;
  /** The vendor module's own per-vCPU state (not MSR values), set by its vcpuCreate. */
  vendorState: unknown = undefined;
  /** vcpu->stats_id: "kvm-<the creating thread's id>/vcpu-<id>". */
  statsId = '';
  /** The kvm_run page userspace would mmap from the vCPU fd (the MSR exit fields live here). */
  readonly run = new Uint8Array(4096);
  /** KVM_EXIT_X86_RDMSR/WRMSR while an MSR exit waits for userspace to complete it; else 0. */
  pendingMsrExit = 0;
  /**
   * The rate a host read of IA32_TSC advances at: the hardware's with the default multiplier, the
   * scaled rate with TSC scaling, 0 while l1_tsc_scaling_ratio was never written.
   */
  tscKhz = 0;
  /** vcpu->arch.virtual_tsc_khz: what KVM_GET_TSC_KHZ reports (set even when the rate could not be). */
  virtualTscKhz = 0;

  /** struct kvm_vcpu_hv (hyperv.ts); null on a kernel built without CONFIG_KVM_HYPERV. */
  hv: HvVcpu | null = null;
  /** vcpu->arch.hyperv_enabled: the vCPU's CPUID has the Hyper-V interface leaf ("Hv#1"). */
  hypervEnabled = false;
  /** Registers, LAPIC, events and the rest of the state API (vcpu-state.ts); null until first used. */
  state: VcpuState | null = null;
  /** The LVT timer is in TSC-deadline mode (state.timerMode): the MSR loops' gate for TSC_DEADLINE. */
  tscDeadlineMode = false;
  /**
   * vcpu->sigset when vcpu->sigset_active (KVM_SET_SIGNAL_MASK): the signals blocked while the vCPU
   * is in KVM_RUN, bit n-1 for signal n; null when no mask is set (the thread's own applies).
   */
  sigmask: bigint | null = null;
  /** vcpu->arch.pv_time.active: kvmclock's page was set up (KVM_SYSTEM_TIME(_NEW) with bit 0). */
  pvTimeActive = false;
  /** vcpu->guest_debug (KVM_SET_GUEST_DEBUG's control, 0 unless KVM_GUESTDBG_ENABLE) and what came with it. */
  guestDebug = 0;
  guestDebugRegs = new Uint8Array(64);
  /** vcpu->arch.singlestep_rip: the linear RIP single-stepping started at. */
  singlestepRip = 0n;

  constructor(
    readonly id: number,
    readonly vm: Vm,
    /** vcpu->vcpu_idx: the vCPU's place in its VM's creation order (the initial Hyper-V VP index). */
    readonly idx = 0,
  ) {}

  get(index: number): bigint {
    const s = slotOf(index) * 2;
    return (BigInt(this.msrs[s + 1]!) << 32n) | BigInt(this.msrs[s]!);
  }
  set(index: number, v: bigint): void {
    const s = slotOf(index) * 2;
    this.msrs[s] = Number(v & 0xffffffffn);
    this.msrs[s + 1] = Number((v >> 32n) & 0xffffffffn);
  }
}
