// The VM capabilities KVM_ENABLE_CAP turns on that kvmsr keeps but no MSR rule reads (x86.c
// kvm_vm_ioctl_enable_cap, kvm_main.c kvm_vm_ioctl_enable_cap_generic), and KVM_SET_BOOT_CPU_ID.
// Each is checked as the kernel checks it and stored, so a second call and the calls that depend
// on it (KVM_CREATE_IRQCHIP after a split irqchip, KVM_RESET_DIRTY_RINGS, the BSP's APIC base and
// MP state) answer as the kernel's do. What they change in a running guest (exits, halt polling,
// quirks a guest would hit) kvmsr, which runs none, has nothing to show for.
import { E2BIG, EBUSY, EEXIST, EINVAL, ENXIO, EPERM } from '../../abi/errno.js';
import { KVM_CAP } from '../../abi/kvm-ioctls.js';
import type { Kvm } from '../kvm.js';
import { versioned, type VersionedRule } from '../x86/release.js';
import type { Vm } from '../vm.js';

/** MAX_NR_RESERVED_IOAPIC_PINS (arch/x86/include/asm/kvm_host.h). */
const MAX_NR_RESERVED_IOAPIC_PINS = 48;
/** KVM_X86_DISABLE_VALID_EXITS: MWAIT, HLT, PAUSE, CSTATE. */
const KVM_X86_DISABLE_VALID_EXITS = 0xf;
/** KVM_DIRTY_RING_MAX_ENTRIES (65536) * sizeof(struct kvm_dirty_gfn) (16). */
const DIRTY_RING_MAX_BYTES = 65536 * 16;
/** KVM_MAX_VCPU_IDS where the profile does not report KVM_CAP_MAX_VCPU_ID. */
const DEFAULT_MAX_VCPU_IDS = 4096;
const CAP_SYS_BOOT = 22;

export const BOOT_CPU_ID_CHECKED: VersionedRule = versioned({
  id: 'vm-caps.boot-cpu-id-checked',
  family: 'vm-caps',
  kernel: 'kvm_arch_vm_ioctl (KVM_SET_BOOT_CPU_ID), kvm_vm_ioctl_enable_cap (KVM_CAP_MAX_VCPU_ID)',
  holds: 'KVM_SET_BOOT_CPU_ID refuses an id above KVM_MAX_VCPU_IDS or the VM\'s KVM_CAP_MAX_VCPU_ID (EINVAL), and KVM_CAP_MAX_VCPU_ID refuses a limit below the BSP\'s id',
  otherwise: 'any id is taken, and any limit',
  where: { since: '6.4' },
  note: 'assumed release: absent from Debian\'s 6.1 source, present in 6.12\'s',
});

export class VmCaps {
  /** kvm->arch.bsp_vcpu_id (KVM_SET_BOOT_CPU_ID). */
  bspVcpuId = 0;
  /** KVM_IRQCHIP_SPLIT: the LAPICs are in the kernel, the PIC and IOAPIC in userspace. */
  splitIrqchip = false;
  nrReservedIoapicPins = 0;
  disabledQuirks = 0n;
  x2apicFormat = false;
  x2apicBroadcastQuirkDisabled = false;
  disabledExits = 0;
  /** kvm->max_halt_poll_ns once KVM_CAP_HALT_POLL overrode it, else null. */
  maxHaltPollNs: number | null = null;
  hypercallExit = 0n;
  exitOnEmulationError = false;
  /** kvm->dirty_ring_size in bytes; 0: no dirty ring. */
  dirtyRingSize = 0;
  disableNxHugePages = false;
  /** kvm->arch.apic_bus_cycle_ns (KVM_CAP_X86_APIC_BUS_CYCLES_NS); APIC_BUS_CYCLE_NS_DEFAULT is 1. */
  apicBusCycleNs = 1n;
  /** kvm->arch.n_requested_mmu_pages (KVM_SET_NR_MMU_PAGES). */
  requestedMmuPages = 0;
  /** A memory slot change was committed (kvm_arch_commit_memory_region sets the default MMU pages). */
  memslotCommitted = false;
}

export const GET_NR_MMU_PAGES: VersionedRule = versioned({
  id: 'vm-caps.get-nr-mmu-pages',
  family: 'vm-caps',
  kernel: 'kvm_arch_vm_ioctl (KVM_GET_NR_MMU_PAGES), kvm_vm_ioctl_get_nr_mmu_pages',
  holds: 'KVM_GET_NR_MMU_PAGES answers kvm->arch.n_max_mmu_pages',
  otherwise: 'it is an unknown VM ioctl (ENOTTY)',
  where: { until: '6.4' },
  note: 'assumed release: present in 6.1.192 (the kvm_amd oracle answered 1024 after KVM_SET_NR_MMU_PAGES(1024)), absent from 6.12.118',
});

/**
 * kvm->arch.n_max_mmu_pages: what KVM_SET_NR_MMU_PAGES asked for, else the default each committed
 * memslot change sets (kvm_mmu_calculate_default_mmu_pages: 20 per mille of the slots' pages, at
 * least KVM_MIN_ALLOC_MMU_PAGES), 0 before any.
 */
export function maxMmuPages(vm: Vm): number {
  const c = vm.caps;
  if (c.requestedMmuPages !== 0) return c.requestedMmuPages;
  if (!c.memslotCommitted) return 0;
  const pages = vm.memSlots.reduce((n, s) => n + Math.floor(s.size / 4096), 0);
  return Math.max(Math.floor((pages * 20) / 1000), 64);
}

/** The VM-level KVM_CHECK_EXTENSION value of a capability (0 where the profile has none). */
function vmExt(k: Kvm, cap: number): number {
  return k.profile.extensions.vm[cap] ?? k.profile.extensions.system[cap] ?? 0;
}

/**
 * KVM_ENABLE_CAP on a VM for the capabilities this module holds; null for the others (ioctl-vm.ts
 * has the ones MSR rules read). `args0` is args[0].
 */
export function enableVmCap(k: Kvm, vm: Vm, cap: number, args0: bigint): number | null {
  const c = vm.caps;
  switch (cap) {
    case KVM_CAP.DISABLE_QUIRKS2:
    case KVM_CAP.DISABLE_QUIRKS: {
      // kvm_caps.supported_quirks is what KVM_CAP_DISABLE_QUIRKS2 reports; QUIRKS2 refuses the rest.
      const supported = BigInt(vmExt(k, KVM_CAP.DISABLE_QUIRKS2));
      if (cap === KVM_CAP.DISABLE_QUIRKS2 && (args0 & ~supported) !== 0n) return -EINVAL;
      c.disabledQuirks |= args0 & supported;
      return 0;
    }
    case KVM_CAP.SPLIT_IRQCHIP:
      if (args0 > BigInt(MAX_NR_RESERVED_IOAPIC_PINS)) return -EINVAL;
      if (vm.irqchip || vm.createdVcpus > 0) return -EEXIST;
      vm.irqchip = true;
      c.splitIrqchip = true;
      c.nrReservedIoapicPins = Number(args0);
      return 0;
    case KVM_CAP.X2APIC_API: {
      // KVM_X2APIC_API_VALID_FLAGS, which the system-level KVM_CHECK_EXTENSION reports.
      const valid = BigInt(k.profile.extensions.system[KVM_CAP.X2APIC_API] ?? 3);
      if ((args0 & ~valid) !== 0n) return -EINVAL;
      if ((args0 & 1n) !== 0n) c.x2apicFormat = true;
      if ((args0 & 2n) !== 0n) c.x2apicBroadcastQuirkDisabled = true;
      return 0;
    }
    case KVM_CAP.X86_DISABLE_EXITS:
      // Exits the host cannot disable (what KVM_CHECK_EXTENSION leaves out) are accepted and ignored.
      if ((args0 & ~BigInt(KVM_X86_DISABLE_VALID_EXITS)) !== 0n) return -EINVAL;
      c.disabledExits |= Number(args0) & vmExt(k, KVM_CAP.X86_DISABLE_EXITS);
      return 0;
    case KVM_CAP.HALT_POLL:
      if (args0 > 0xffffffffn) return -EINVAL;
      c.maxHaltPollNs = Number(args0);
      return 0;
    case KVM_CAP.DIRTY_LOG_RING:
    case KVM_CAP.DIRTY_LOG_RING_ACQ_REL:
      if (vmExt(k, cap) === 0) return -EINVAL;
      return enableDirtyRing(vm, args0);
    case KVM_CAP.EXIT_HYPERCALL:
      // KVM_EXIT_HYPERCALL_VALID_MASK, what KVM_CHECK_EXTENSION reports.
      if ((args0 & ~BigInt(vmExt(k, KVM_CAP.EXIT_HYPERCALL))) !== 0n) return -EINVAL;
      c.hypercallExit = args0;
      return 0;
    case KVM_CAP.EXIT_ON_EMULATION_FAILURE:
      if ((args0 & ~1n) !== 0n) return -EINVAL;
      c.exitOnEmulationError = args0 !== 0n;
      return 0;
    case KVM_CAP.VM_COPY_ENC_CONTEXT_FROM:
    case KVM_CAP.VM_MOVE_ENC_CONTEXT_FROM:
      // Without SEV (kvm_pvm, kvm_intel: no such vendor op) -EINVAL; kvm_amd's sev_vm_*_from refuse
      // a source that is not an SEV guest the same way, and kvmsr makes none.
      return -EINVAL;
    case KVM_CAP.SGX_ATTRIBUTE:
      // sgx_set_attribute: only an fd of /dev/sgx_provision is taken; kvmsr cannot see the
      // program's fd, and a host without SGX has no such file to open.
      return -EINVAL;
    case KVM_CAP.VM_DISABLE_NX_HUGE_PAGES:
      // The caller must be able to reboot the host (capable(CAP_SYS_BOOT), in the root namespace).
      if (!k.callerCapable(CAP_SYS_BOOT)) return -EPERM;
      if (args0 !== 0n || vm.createdVcpus > 0) return -EINVAL;
      c.disableNxHugePages = true;
      return 0;
    case KVM_CAP.X86_APIC_BUS_CYCLES_NS:
      // Guard against overflow in tmict_to_ns(): U32_MAX * 128 * ns must fit in a u64.
      if (args0 === 0n || 0xffffffffn * 128n * args0 > 0xffffffffffffffffn) return -EINVAL;
      if (!vm.irqchip) return -ENXIO;
      if (vm.createdVcpus > 0) return -EINVAL;
      c.apicBusCycleNs = args0;
      return 0;
    default:
      return null;
  }
}

/** kvm_vm_ioctl_enable_dirty_log_ring: a power of two of at least a page and of the reserved entries. */
function enableDirtyRing(vm: Vm, args0: bigint): number {
  const size = Number(args0 & 0xffffffffn); // the u32 parameter
  if (size === 0 || (size & (size - 1)) !== 0) return -EINVAL;
  // kvm_dirty_ring_get_rsvd_entries: KVM_DIRTY_RING_RSVD_ENTRIES (64) plus the CPU's dirty-log
  // buffer (PML's 512 where the vendor logs with it; kvmsr takes none), 16 bytes each.
  if (size < 64 * 16 || size < 4096) return -EINVAL;
  if (size > DIRTY_RING_MAX_BYTES) return -E2BIG;
  if (vm.caps.dirtyRingSize !== 0) return -EINVAL;
  if (vm.createdVcpus > 0) return -EINVAL;
  vm.caps.dirtyRingSize = size;
  return 0;
}

/**
 * KVM_SET_BOOT_CPU_ID (kvm_arch_vm_ioctl): before any vCPU is created; from 6.3 the id must also be
 * a possible vCPU id (KVM_MAX_VCPU_IDS, and KVM_CAP_MAX_VCPU_ID's limit once set).
 */
export function setBootCpuId(k: Kvm, vm: Vm, id: number): number {
  if (vm.createdVcpus > 0) return -EBUSY;
  if (k.x86.rules.bootCpuIdChecked) {
    const maxIds = k.profile.extensions.vm[KVM_CAP.MAX_VCPU_ID] ?? k.profile.extensions.system[KVM_CAP.MAX_VCPU_ID] ?? DEFAULT_MAX_VCPU_IDS;
    if (id > maxIds || (vm.maxVcpuIds !== 0 && id > vm.maxVcpuIds)) return -EINVAL;
  }
  vm.caps.bspVcpuId = id;
  return 0;
}
