// kvm_vm_ioctl (virt/kvm/kvm_main.c) and kvm_arch_vm_ioctl (arch/x86/kvm/x86.c): a VM fd.
import { decodeEnableCap, decodeMsrFilter } from '../abi/codecs.js';
import { EEXIST, EFAULT, EINVAL, ENOTTY } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_CAP } from '../abi/kvm-ioctls.js';
import {
  KVM_ENABLE_CAP_LAYOUT,
  KVM_MSR_EXIT_REASON_FILTER,
  KVM_MSR_EXIT_REASON_INVAL,
  KVM_MSR_EXIT_REASON_UNKNOWN,
  KVM_MSR_FILTER_LAYOUT,
  KVM_MSR_FILTER_DEFAULT_DENY,
  KVM_MSR_FILTER_MAX_BITMAP_SIZE,
  KVM_MSR_FILTER_READ,
  KVM_MSR_FILTER_WRITE,
} from '../abi/layout.js';
import type { Kvm } from './kvm.js';
import { KVM_XEN_HVM_CONFIG_SIZE, xenHvmConfig } from './x86/xen.js';
import { memslotKey, updateDirtyBitmap, vmStateIoctl } from './state/vm-state.js';
import { enableVmCap, setBootCpuId } from './state/vm-caps.js';
import { hypervEventfd, irqfd, reinjectControl, signalMsi } from './state/vm-irq.js';
import { createGuestMemfd, setMemoryAttributes } from './state/vm-memory.js';
import { setPmuEventFilter } from './x86/pmu-filter.js';
import { statsFile, statsFileWithId } from './state/binary-stats.js';
import type { IoctlArg } from './user-arg.js';
import type { FilterRange, Vm } from './vm.js';

/** KVM_MAX_VCPU_IDS and KVM_MAX_VCPUS when the profile does not report them. */
const DEFAULT_MAX_VCPU_IDS = 4096;
const DEFAULT_MAX_VCPUS = 1024;

export function vmIoctl(k: Kvm, vm: Vm, req: number, arg: IoctlArg): number {
  const a = k.args;
  switch (req) {
    case I.KVM_CREATE_VCPU: {
      const id = a.intValue(arg);
      const ext = k.profile.extensions;
      const maxIds = maxVcpuIds(k);
      const maxVcpus = ext.vm[KVM_CAP.MAX_VCPUS] ?? ext.system[KVM_CAP.MAX_VCPUS] ?? DEFAULT_MAX_VCPUS;
      if (id >= maxIds) return -EINVAL;
      if (vm.createdVcpus >= maxVcpus) return -EINVAL;
      if (vm.maxVcpuIds !== 0 && id >= vm.maxVcpuIds) return -EINVAL; // kvm_arch_vcpu_precreate
      if (vm.vcpus.has(id)) return -EEXIST;
      return k.createVcpu(vm, id);
    }
    case I.KVM_CHECK_EXTENSION:
      return k.profile.extensions.vm[a.intValue(arg)] ?? 0;
    case I.KVM_CREATE_IRQCHIP:
      if (vm.irqchip) return -EEXIST;
      if (vm.createdVcpus > 0) return -EINVAL;
      vm.irqchip = true;
      return 0;
    case I.KVM_ENABLE_CAP:
      return enableCap(k, vm, req, arg);
    case I.KVM_X86_SET_MSR_FILTER:
      return setMsrFilter(k, vm, arg);
    case I.KVM_SET_USER_MEMORY_REGION:
      return setMemoryRegion(k, vm, arg, false);
    case I.KVM_SET_USER_MEMORY_REGION2:
      // From 6.8, where KVM_CAP_USER_MEMORY2 says so; before, kvm_arch_vm_ioctl does not know it.
      if ((k.profile.extensions.vm[KVM_CAP.USER_MEMORY2] ?? 0) === 0) return -ENOTTY;
      return setMemoryRegion(k, vm, arg, true);
    case I.KVM_SET_TSC_KHZ: {
      // The default for vCPUs created later (tsc.ts VM_TSC_KHZ_BEFORE_VCPUS).
      const khz = a.intValue(arg) % 0x100000000;
      if (vm.createdVcpus > 0 && k.x86.rules.vmTscKhzBeforeVcpus) return -EINVAL;
      vm.defaultTscKhz = khz === 0 ? k.x86.hostTscKhz : khz; // 0: the kernel's tsc_khz
      return 0;
    }
    case I.KVM_GET_TSC_KHZ:
      return vm.defaultTscKhz === 0 ? k.x86.tscKhz : vm.defaultTscKhz;
    case I.KVM_GET_STATS_FD: {
      const stats = k.statsLayout?.layout;
      if (!stats) return k.unmodeledOr(req, 'vm', -ENOTTY, VM_UNMODELED);
      return k.createPlainFile(statsFile(statsFileWithId(stats.vm, vm.statsId)));
    }
    case I.KVM_CREATE_GUEST_MEMFD:
      // CONFIG_KVM_PRIVATE_MEM, which the system-level KVM_CAP_GUEST_MEMFD tells.
      if ((k.profile.extensions.system[KVM_CAP_GUEST_MEMFD] ?? 0) === 0) return -ENOTTY;
      return createGuestMemfd(k, arg);
    case I.KVM_SET_BOOT_CPU_ID:
      return setBootCpuId(k, vm, a.intValue(arg));
    case I.KVM_IRQFD:
      return irqfd(k, vm, arg);
    case I.KVM_SIGNAL_MSI:
      return signalMsi(k, vm, arg);
    case I.KVM_REINJECT_CONTROL:
      return reinjectControl(k, vm, arg);
    case I.KVM_HYPERV_EVENTFD:
      // CONFIG_KVM_HYPERV, which KVM_CAP_HYPERV tells.
      if ((k.profile.extensions.system[KVM_CAP.HYPERV] ?? 0) === 0) return -ENOTTY;
      return hypervEventfd(k, vm, arg);
    case I.KVM_SET_MEMORY_ATTRIBUTES:
      // CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES, which the system-level KVM_CAP_MEMORY_ATTRIBUTES tells.
      if ((k.profile.extensions.system[KVM_CAP_MEMORY_ATTRIBUTES] ?? 0) === 0) return -ENOTTY;
      return setMemoryAttributes(k, arg);
    case I.KVM_SET_PMU_EVENT_FILTER:
      return setPmuEventFilter(k, vm, arg);
    case I.KVM_XEN_HVM_CONFIG:
      // CONFIG_KVM_XEN, which KVM_CAP_XEN_HVM tells.
      if ((k.profile.extensions.system[KVM_CAP.XEN_HVM] ?? 0) === 0) return -ENOTTY;
      if (!a.resolve(arg) || a.avail < KVM_XEN_HVM_CONFIG_SIZE) return -EFAULT;
      return xenHvmConfig(vm, a.dv, a.base, k.x86.rules.xenMsrRange);
    default:
      return vmStateIoctl(k, vm, req, arg) ?? k.unmodeledOr(req, 'vm', -ENOTTY, VM_UNMODELED);
  }
}

/** Real VM ioctls kvmsr does not model: they need guest execution or devices kvmsr has not got. */
const VM_UNMODELED = new Set<number>([I.KVM_GET_STATS_FD]);
const KVM_CAP_MEMORY_ATTRIBUTES = 233;
const KVM_CAP_GUEST_MEMFD = 234;

/** KVM_MAX_VCPU_IDS, as the host's KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPU_ID) reports it. */
function maxVcpuIds(k: Kvm): number {
  const ext = k.profile.extensions;
  return ext.vm[KVM_CAP.MAX_VCPU_ID] ?? ext.system[KVM_CAP.MAX_VCPU_ID] ?? DEFAULT_MAX_VCPU_IDS;
}

function enableCap(k: Kvm, vm: Vm, req: number, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_ENABLE_CAP_LAYOUT.size) return -EFAULT;
  const cap = decodeEnableCap(new Uint8Array(a.dv.buffer, a.base, KVM_ENABLE_CAP_LAYOUT.size));
  if (cap.flags !== 0) return -EINVAL;
  switch (cap.cap) {
    case KVM_CAP.X86_USER_SPACE_MSR: {
      const mask = KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER;
      if ((cap.args[0] & ~BigInt(mask)) !== 0n) return -EINVAL;
      vm.userSpaceMsrMask = Number(cap.args[0]);
      return 0;
    }
    case KVM_CAP.MSR_PLATFORM_INFO:
      vm.guestCanReadPlatformInfo = cap.args[0] !== 0n;
      return 0;
    case KVM_CAP.MAX_VCPU_ID: {
      // kvm_vm_ioctl_enable_cap: set once; the same value again is fine.
      const limit = BigInt(maxVcpuIds(k));
      const want = cap.args[0];
      if (want > limit) return -EINVAL;
      if (k.x86.rules.bootCpuIdChecked && BigInt(vm.caps.bspVcpuId) > want) return -EINVAL;
      if (vm.maxVcpuIds !== 0 && BigInt(vm.maxVcpuIds) !== want) return -EINVAL;
      vm.maxVcpuIds = Number(want);
      return 0;
    }
    // Accepted as the kernel accepts them; they change no MSR answer, so kvmsr keeps nothing.
    case KVM_CAP.MANUAL_DIRTY_LOG_PROTECT2: {
      // kvm_vm_ioctl_enable_cap_generic: INITIALLY_SET (2) only together with ENABLE (1).
      const allowed = (cap.args[0] & 1n) !== 0n ? 3n : 1n;
      if ((cap.args[0] & ~allowed) !== 0n) return -EINVAL;
      vm.manualDirtyLog = Number(cap.args[0]);
      return 0;
    }
    case KVM_CAP.EXCEPTION_PAYLOAD:
      vm.exceptionPayload = cap.args[0] !== 0n;
      return 0;
    case KVM_CAP.X86_TRIPLE_FAULT_EVENT:
      vm.tripleFaultEvent = cap.args[0] !== 0n;
      return 0;
    default:
      return enableVmCap(k, vm, cap.cap, cap.args[0]) ?? k.unmodeledCap(req, 'vm', cap.cap);
  }
}

/** kvm_vm_ioctl_set_msr_filter and kvm_add_msr_filter. */
function setMsrFilter(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_MSR_FILTER_LAYOUT.size) return -EFAULT;
  const f = decodeMsrFilter(new Uint8Array(a.dv.buffer, a.base, KVM_MSR_FILTER_LAYOUT.size));
  if ((f.flags & ~KVM_MSR_FILTER_DEFAULT_DENY) !== 0) return -EINVAL;
  const empty = f.ranges.every((r) => r.nmsrs === 0);
  const defaultAllow = (f.flags & KVM_MSR_FILTER_DEFAULT_DENY) === 0;
  if (empty && !defaultAllow) return -EINVAL;
  const ranges: FilterRange[] = [];
  for (const r of f.ranges) {
    if (r.nmsrs === 0) continue;
    if ((r.flags & ~(KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE)) !== 0) return -EINVAL;
    if (r.flags === 0) return -EINVAL;
    const size = Math.ceil(r.nmsrs / 64) * 8; // BITS_TO_LONGS(nmsrs) * sizeof(long)
    if (size === 0 || size > KVM_MSR_FILTER_MAX_BITMAP_SIZE) return -EINVAL;
    const bitmap = a.copyIn(r.bitmap, size);
    if (!bitmap) return -EFAULT;
    ranges.push({ flags: r.flags, base: r.base, nmsrs: r.nmsrs, bitmap });
  }
  vm.msrFilter = { defaultAllow, ranges };
  return 0;
}

/**
 * KVM_SET_USER_MEMORY_REGION and _REGION2 (kvm_vm_ioctl: one path, the second with the longer
 * struct), kept only as the GPA ranges PV MSRs check (kvm_set_memory_region).
 */
function setMemoryRegion(k: Kvm, vm: Vm, arg: IoctlArg, v2: boolean): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < (v2 ? 160 : 32)) return -EFAULT;
  const dv = a.dv;
  const slot = dv.getUint32(a.base, true);
  const flags = dv.getUint32(a.base + 4, true);
  const gpa = Number(dv.getBigUint64(a.base + 8, true));
  const size = Number(dv.getBigUint64(a.base + 16, true));
  const hva = dv.getBigUint64(a.base + 24, true);
  // KVM_SET_USER_MEMORY_REGION_V1_FLAGS and check_memory_region_flags: LOG_DIRTY_PAGES and READONLY;
  // KVM_MEM_GUEST_MEMFD (4) only for VM types with private memory, which kvmsr's VMs are not.
  // Then __kvm_set_memory_region's checks: the address space (SMM's is 1) and slot id, page
  // alignment, no wrap-around.
  if ((flags & ~0x3) !== 0) return -EINVAL;
  if (memslotKey(k, slot) < 0) return -EINVAL;
  if (gpa % 4096 !== 0 || size % 4096 !== 0 || (hva & 0xfffn) !== 0n) return -EINVAL;
  if (gpa + size > 2 ** 64) return -EINVAL;
  const i = vm.memSlots.findIndex((s) => s.slot === slot);
  const old = i >= 0 ? vm.memSlots[i]! : undefined;
  if (size === 0 && !old) return -EINVAL; // deleting a slot that does not exist
  if (size > 0) {
    // An existing slot keeps its size, host address and READONLY (else EINVAL); a new or moved one
    // must not overlap another slot of its address space (kvm_check_memslot_overlap: EEXIST).
    if (old && (old.size !== size || old.hva !== hva || ((old.flags ^ flags) & 2) !== 0)) return -EINVAL;
    if (!old || old.gpa !== gpa) {
      const asId = slot >>> 16;
      for (const s of vm.memSlots) if (s !== old && s.slot >>> 16 === asId && gpa < s.gpa + s.size && s.gpa < gpa + size) return -EEXIST;
    }
  }
  if (old) vm.memSlots.splice(i, 1);
  if (size > 0) vm.memSlots.push({ slot, flags, gpa, size, hva });
  vm.caps.memslotCommitted = true;
  updateDirtyBitmap(vm, slot, flags, size);
  return 0;
}
