// kvm_dev_ioctl (virt/kvm/kvm_main.c) and kvm_arch_dev_ioctl (arch/x86/kvm/x86.c): /dev/kvm.
import { E2BIG, EFAULT, EINVAL } from '../abi/errno.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_CPUID2_LAYOUT, KVM_MAX_CPUID_ENTRIES } from '../abi/layout.js';
import { encodeCpuid2, type CpuidEntry2 } from '../abi/codecs.js';
import type { Kvm } from './kvm.js';
import { MSR_IO_GET_FEATURE } from './x86/msr-io.js';
import type { IoctlArg } from './user-arg.js';
import { systemDeviceAttr } from './state/vm-state.js';

const KVM_CAP_VM_TYPES = 235;

export function systemIoctl(k: Kvm, req: number, arg: IoctlArg): number {
  const a = k.args;
  switch (req) {
    case I.KVM_GET_API_VERSION:
      return a.intValue(arg) !== 0 ? -EINVAL : k.profile.apiVersion;
    case I.KVM_CREATE_VM: {
      const type = a.intValue(arg);
      // kvm_arch_init_vm: the type must be one KVM supports (KVM_X86_DEFAULT_VM is always).
      const types = k.profile.extensions.system[KVM_CAP_VM_TYPES] ?? 1;
      if (type >= 32 || ((types >>> type) & 1) === 0) return -EINVAL;
      return k.createVm(type);
    }
    case I.KVM_CHECK_EXTENSION:
      return k.profile.extensions.system[a.intValue(arg)] ?? 0;
    case I.KVM_GET_VCPU_MMAP_SIZE:
      return a.intValue(arg) !== 0 ? -EINVAL : k.profile.vcpuMmapSize;
    case I.KVM_GET_MSR_INDEX_LIST:
      return msrListIoctl(k, arg, k.msrIndexListBytes);
    case I.KVM_GET_MSR_FEATURE_INDEX_LIST:
      return msrListIoctl(k, arg, k.featureIndexListBytes);
    case I.KVM_GET_MSRS:
      if (!a.resolve(arg)) return -EFAULT;
      return k.msrIo(null, MSR_IO_GET_FEATURE);
    case I.KVM_GET_SUPPORTED_CPUID:
      return supportedCpuid(k, arg);
    case I.KVM_GET_EMULATED_CPUID:
      return emulatedCpuid(k, arg);
    case I.KVM_GET_SUPPORTED_HV_CPUID:
      if (!k.x86.hyperv) return -EINVAL;
      return supportedHvCpuid(k, arg, k.x86.hvCpuid);
    case I.KVM_X86_GET_MCE_CAP_SUPPORTED: {
      if (!a.resolve(arg) || a.avail < 8) return -EFAULT;
      a.dv.setUint32(a.base, k.x86.supportedMceCapLo, true);
      a.dv.setUint32(a.base + 4, k.x86.supportedMceCapHi, true);
      return 0;
    }
    case I.KVM_GET_DEVICE_ATTR:
    case I.KVM_HAS_DEVICE_ATTR:
      return systemDeviceAttr(k, arg, req === I.KVM_GET_DEVICE_ATTR);
    default:
      return k.unmodeledOr(req, 'system', -EINVAL, SYSTEM_UNMODELED);
  }
}

/** Real system ioctls kvmsr does not model; anything else gets kvm_arch_dev_ioctl's -EINVAL. */
const SYSTEM_UNMODELED = new Set<number>();

/**
 * kvm_dev_ioctl_get_cpuid for KVM_GET_EMULATED_CPUID (__do_cpuid_func_emulated): what KVM emulates
 * beyond the CPU, the same on every host but for RDPID, which needs RDTSCP: leaf 0 (max leaf 7),
 * leaf 1 (MOVBE), leaf 7 (RDPID). sanity_check_entries first wants the padding of every entry the
 * caller offers zero (EINVAL, also where it cannot be read).
 */
function emulatedCpuid(k: Kvm, arg: IoctlArg): number {
  const a = k.args;
  const nent = cpuidRequestNent(k, arg);
  if (nent < 0) return nent;
  for (let i = 0; i < nent; i++) {
    const pad = KVM_CPUID2_LAYOUT.entries + 40 * i + 28;
    if (a.avail < pad + 12) return -EINVAL;
    if (a.dv.getUint32(a.base + pad, true) !== 0 || a.dv.getUint32(a.base + pad + 4, true) !== 0 || a.dv.getUint32(a.base + pad + 8, true) !== 0) return -EINVAL;
  }
  const ext = k.profile.supportedCpuid.find((e) => e.function === 0x80000001);
  const rdtscp = ext !== undefined && ((ext.edx >>> 27) & 1) === 1;
  const entries: CpuidEntry2[] = [
    { function: 0, index: 0, flags: 0, eax: 7, ebx: 0, ecx: 0, edx: 0 },
    { function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 1 << 22, edx: 0 }, // MOVBE
    { function: 7, index: 0, flags: 1, eax: 0, ebx: 0, ecx: rdtscp ? 1 << 22 : 0, edx: 0 }, // SIGNIFCANT_INDEX; RDPID
  ];
  if (nent < entries.length) return -E2BIG;
  const bytes = encodeCpuid2(entries).subarray(KVM_CPUID2_LAYOUT.size);
  if (!a.copyOut(KVM_CPUID2_LAYOUT.entries, bytes)) return -EFAULT;
  a.dv.setUint32(a.base, entries.length, true);
  return 0;
}

/** KVM_GET_MSR_INDEX_LIST / KVM_GET_MSR_FEATURE_INDEX_LIST; `list` holds the indices as u32 LE bytes. */
function msrListIoctl(k: Kvm, arg: IoctlArg, list: Uint8Array): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 4) return -EFAULT;
  const n = a.dv.getUint32(a.base, true);
  const count = list.length >>> 2;
  // The count is written back even when the caller's buffer is too small.
  a.dv.setUint32(a.base, count, true);
  if (n < count) return -E2BIG;
  return a.copyOut(4, list) ? 0 : -EFAULT;
}

/** kvm_dev_ioctl_get_cpuid's start: the caller's nent, at least 1 (E2BIG), at most KVM_MAX_CPUID_ENTRIES. */
function cpuidRequestNent(k: Kvm, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_CPUID2_LAYOUT.size) return -EFAULT;
  const nent = a.dv.getUint32(a.base, true);
  if (nent < 1) return -E2BIG;
  return Math.min(nent, KVM_MAX_CPUID_ENTRIES);
}

/** kvm_dev_ioctl_get_cpuid for KVM_GET_SUPPORTED_CPUID. */
function supportedCpuid(k: Kvm, arg: IoctlArg): number {
  const a = k.args;
  const nent = cpuidRequestNent(k, arg);
  if (nent < 0) return nent;
  const entries = k.profile.supportedCpuid;
  if (entries.length > nent) return -E2BIG;
  const bytes = encodeCpuid2(entries).subarray(KVM_CPUID2_LAYOUT.size);
  if (!a.copyOut(KVM_CPUID2_LAYOUT.entries, bytes)) return -EFAULT;
  a.dv.setUint32(a.base, entries.length, true);
  return 0;
}

/** kvm_ioctl_get_supported_hv_cpuid / kvm_get_hv_cpuid: all ten leaves or E2BIG, nent trimmed to ten. */
export function supportedHvCpuid(k: Kvm, arg: IoctlArg, entries: readonly CpuidEntry2[]): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_CPUID2_LAYOUT.size) return -EFAULT;
  const nent = a.dv.getUint32(a.base, true);
  if (nent < entries.length) return -E2BIG;
  const bytes = encodeCpuid2([...entries]).subarray(KVM_CPUID2_LAYOUT.size);
  if (!a.copyOut(KVM_CPUID2_LAYOUT.entries, bytes)) return -EFAULT;
  if (nent > entries.length) a.dv.setUint32(a.base, entries.length, true);
  return 0;
}
