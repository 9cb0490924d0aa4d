// A VM: its vCPUs and the VM-wide state that MSR answers depend on.
import { HvVm } from './x86/hyperv.js';
import type { IrqchipState } from './state/vm-state.js';
import { VmCaps } from './state/vm-caps.js';
import type { PmuEventFilter } from './x86/pmu-filter.js';
import type { Vcpu } from './vcpu.js';

/** A parsed KVM_X86_SET_MSR_FILTER range with its bitmap copied in, as kvm_add_msr_filter keeps it. */
export interface FilterRange {
  flags: number;
  base: number;
  nmsrs: number;
  bitmap: Uint8Array;
}
export interface MsrFilterState {
  defaultAllow: boolean;
  ranges: FilterRange[];
}

export interface MemSlot {
  /** As userspace names it: the address space in bits 16-31, the slot id in bits 0-15. */
  slot: number;
  flags: number;
  gpa: number;
  size: number;
  /** userspace_addr. */
  hva: bigint;
}

export class Vm {
  readonly vcpus = new Map<number, Vcpu>();
  /** kvm->created_vcpus: counts creations in progress or done, and gates KVM_CREATE_IRQCHIP. */
  createdVcpus = 0;
  /** irqchip_in_kernel: the LAPICs are the kernel's (KVM_CREATE_IRQCHIP, or a split irqchip). */
  irqchip = false;
  /** The KVM-VFIO device exists (kvm_vfio_create allows one per VM while its fd is open). */
  vfioDevice = false;
  /** kvm->stats_id: the binary stats file's id, "kvm-<the creating thread's id>". */
  statsId = '';
  /** What KVM_ENABLE_CAP and KVM_SET_BOOT_CPU_ID set that no MSR rule reads (state/vm-caps.ts). */
  readonly caps = new VmCaps();
  /** kvm->arch.user_space_msr_mask (KVM_CAP_X86_USER_SPACE_MSR). */
  userSpaceMsrMask = 0;
  msrFilter: MsrFilterState = { defaultAllow: true, ranges: [] };
  /** kvm->arch.guest_can_read_msr_platform_info (KVM_CAP_MSR_PLATFORM_INFO). */
  guestCanReadPlatformInfo = true;
  /** kvm->arch.max_vcpu_ids (KVM_CAP_MAX_VCPU_ID); 0: not set. */
  maxVcpuIds = 0;
  /** kvm->arch.wall_clock, shared by MSR_KVM_WALL_CLOCK and MSR_KVM_WALL_CLOCK_NEW. */
  wallClockLo = 0;
  wallClockHi = 0;
  readonly memSlots: MemSlot[] = [];
  /** kvm->arch.default_tsc_khz (the VM-wide KVM_SET_TSC_KHZ); 0: max_tsc_khz (profile.tscKhz). */
  defaultTscKhz = 0;
  /** The VM's TSC generation (kvm->arch.cur_tsc_offset): its value at tscGenerationAt (ms); -1 before any. */
  tscGenerationLo = 0;
  tscGenerationHi = 0;
  tscGenerationAt = -1;
  /** The rate (vcpu.tscKhz) of the vCPU that started the generation: its offset is against that. */
  tscGenerationRate = 0;
  /** kvm->arch.last_tsc_write, last_tsc_nsec (as ms), last_tsc_khz and user_set_tsc. */
  lastTscWrite = 0;
  lastTscWriteAt = 0;
  lastTscKhz = 0;
  userSetTsc = false;
  /** kvm->arch.last_tsc_offset as KVM_VCPU_TSC_OFFSET last set it (tsc.ts setTscOffset); -1: not by it. */
  lastTscOffset = -1;

  /** struct kvm_hv: the partition-wide Hyper-V MSRs. */
  readonly hv = new HvVm();
  /** kvm->arch.xen_hvm_config (KVM_XEN_HVM_CONFIG): the MSR that writes the Xen hypercall page, 0 for none. */
  xenHvmMsr = 0;
  xenHvmFlags = 0;
  xenBlob32 = 0;
  xenBlob64 = 0;
  xenBlobSize32 = 0;
  xenBlobSize64 = 0;

  // The rest of the VM state API (vm-state.ts).
  /** KVM_CAP_EXCEPTION_PAYLOAD and KVM_CAP_X86_TRIPLE_FAULT_EVENT, as KVM_ENABLE_CAP set them. */
  exceptionPayload = false;
  tripleFaultEvent = false;
  /** KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's enabled bits (1: manual protect, 2: initially set). */
  manualDirtyLog = 0;
  /** Dirty bitmaps of the memslots that log dirty pages, by slot as userspace names it (as_id << 16 | id). */
  readonly dirty = new Map<number, Uint8Array>();
  tssAddr = 0;
  identityMapAddr = 0n;
  /** The in-kernel PIC and IOAPIC chip state, made on first use. */
  chips: IrqchipState | null = null;
  /** struct kvm_pit_state2 once KVM_CREATE_PIT2 made the PIT. */
  pit2: Uint8Array | null = null;
  /** Entries of the last KVM_SET_GSI_ROUTING (0: the default routing). */
  gsiRoutes = 0;
  readonly ioeventfds = new Set<string>();
  /** KVM_IRQFD: the GSI each eventfd (by the caller's fd number) raises. */
  readonly irqfds = new Map<number, number>();
  /** KVM_HYPERV_EVENTFD: the eventfd (the caller's fd number) of each Hyper-V connection id. */
  readonly hvEventfds = new Map<number, number>();
  /** The PIT's reinjection (KVM_REINJECT_CONTROL); on from KVM_CREATE_PIT2. */
  pitReinject = true;
  /** KVM_SET_PMU_EVENT_FILTER's filter, as x86/pmu-filter.ts keeps it; null: none. */
  pmuFilter: PmuEventFilter | null = null;
  readonly coalesced = new Set<string>();

  constructor(
    readonly type: number,
    /**
     * When kvmclock read 0 (ms on the Kvm's clock): the VM's creation, moved by KVM_SET_CLOCK
     * (kvmclock_offset). kvmclock and Hyper-V's reference time count from here.
     */
    public createdAt = 0,
  ) {}

  /**
   * kvm_gfn_to_hva_cache_init succeeds only when [gpa, gpa+len) lies in one memory slot of
   * address space 0 (kvm_memslots; SMRAM's slots, address space 1, do not count).
   */
  /** irqchip_kernel / pic_in_kernel: the PIC and IOAPIC are the kernel's too (not a split irqchip). */
  get fullIrqchip(): boolean {
    return this.irqchip && !this.caps.splitIrqchip;
  }

  gpaRangeMapped(gpa: number, len: number): boolean {
    for (const s of this.memSlots) if (s.slot >>> 16 === 0 && gpa >= s.gpa && gpa + len <= s.gpa + s.size) return true;
    return false;
  }
}
