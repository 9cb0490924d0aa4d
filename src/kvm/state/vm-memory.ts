// Guest memory calls beyond the memslots (vm-state.ts keeps those): KVM_PRE_FAULT_MEMORY
// (kvm_main.c kvm_vcpu_pre_fault_memory, mmu.c kvm_arch_vcpu_pre_fault_memory) and
// KVM_SET_MEMORY_ATTRIBUTES (kvm_vm_ioctl_set_mem_attributes). kvmsr has no page tables: a
// pre-fault maps what a memslot backs, page by page, as the kernel's would on a 4 KiB mapping.
import { EFAULT, EINVAL, ENOENT } from '../../abi/errno.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vcpu } from '../vcpu.js';

const PAGE = 4096n;
const KVM_CAP_MEMORY_ATTRIBUTES = 233;
const KVM_CAP_PRE_FAULT_MEMORY = 236;

/** KVM_PRE_FAULT_MEMORY: struct kvm_pre_fault_memory {gpa, size, flags, padding[5]}, the rest written back. */
export function preFaultMemory(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  // Where KVM_CAP_PRE_FAULT_MEMORY is 0 the call is the vCPU's unknown ioctl.
  if ((k.profile.extensions.vm[KVM_CAP_PRE_FAULT_MEMORY] ?? k.profile.extensions.system[KVM_CAP_PRE_FAULT_MEMORY] ?? 0) === 0) return -EINVAL;
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 64) return -EFAULT;
  const dv = a.dv;
  let gpa = dv.getBigUint64(a.base, true);
  let size = dv.getBigUint64(a.base + 8, true);
  if (dv.getBigUint64(a.base + 16, true) !== 0n) return -EINVAL;
  if (gpa % PAGE !== 0n || size % PAGE !== 0n || BigInt.asUintN(64, gpa + size) <= gpa) return -EINVAL;
  const full = size;
  let r = 0;
  while (size > 0n) {
    // kvm_tdp_map_page: a GPA no memslot backs is emulated MMIO, -ENOENT.
    if (gpa > BigInt(Number.MAX_SAFE_INTEGER) || !vcpu.vm.gpaRangeMapped(Number(gpa), 4096)) {
      r = -ENOENT;
      break;
    }
    gpa += PAGE;
    size -= PAGE;
  }
  dv.setBigUint64(a.base, gpa, true);
  dv.setBigUint64(a.base + 8, size, true);
  // Success once at least one page was mapped.
  return size === full ? r : 0;
}

/**
 * KVM_SET_MEMORY_ATTRIBUTES: struct kvm_memory_attributes {address, size, attributes, flags}. A VM
 * of the default type supports no attribute (KVM_CAP_MEMORY_ATTRIBUTES on the VM is 0), so only
 * attributes 0 over a page-aligned range are taken; kvmsr keeps nothing for them.
 */
export function setMemoryAttributes(k: Kvm, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 32) return -EFAULT;
  const dv = a.dv;
  const address = dv.getBigUint64(a.base, true);
  const size = dv.getBigUint64(a.base + 8, true);
  const attributes = dv.getBigUint64(a.base + 16, true);
  if (dv.getBigUint64(a.base + 24, true) !== 0n) return -EINVAL;
  const supported = BigInt(k.profile.extensions.vm[KVM_CAP_MEMORY_ATTRIBUTES] ?? 0);
  if ((attributes & ~supported) !== 0n) return -EINVAL;
  if (size === 0n || BigInt.asUintN(64, address + size) < address) return -EINVAL;
  if (address % PAGE !== 0n || size % PAGE !== 0n) return -EINVAL;
  return 0;
}

/** KVM_CAP_GUEST_MEMFD_FLAGS (6.18): the flags KVM_CREATE_GUEST_MEMFD takes for this VM. */
const KVM_CAP_GUEST_MEMFD_FLAGS = 244;

/**
 * KVM_CREATE_GUEST_MEMFD (guest_memfd.c kvm_gmem_create): struct kvm_create_guest_memfd {size,
 * flags, reserved[6]}; the flags the host reports (none before 6.18), a size of whole pages. The
 * file is the program's own, read-write and not close-on-exec (get_unused_fd_flags(0)), of zeros. A
 * VM of the default type cannot map it into a memslot (KVM_MEM_GUEST_MEMFD is refused), so kvmsr
 * keeps nothing of it; a guest_memfd's own refusals (read, write) are not modelled.
 */
export function createGuestMemfd(k: Kvm, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 64) return -EFAULT;
  const size = a.dv.getBigInt64(a.base, true);
  const flags = a.dv.getBigUint64(a.base + 8, true);
  const valid = BigInt(k.profile.extensions.vm[KVM_CAP_GUEST_MEMFD_FLAGS] ?? 0);
  if ((flags & ~valid) !== 0n) return -EINVAL;
  if (size <= 0n || size % PAGE !== 0n || size > BigInt(Number.MAX_SAFE_INTEGER)) return -EINVAL;
  return k.createPlainFile({ bytes: null, size: Number(size), writable: true, cloexec: false });
}
