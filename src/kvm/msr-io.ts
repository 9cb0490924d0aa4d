// msr_io and __msr_io (arch/x86/kvm/x86.c): copy in the header, refuse nmsrs >= MAX_IO_MSRS,
// copy in the entries, run each through do_msr until the first failure, and (for reads) copy all
// entries back. kvmsr works on the caller's bytes in place: entries after a failure are left as
// they were, which is what the kernel's copy-back of its unmodified copy produces.
import { E2BIG, EFAULT } from '../abi/errno.js';
import { KVM_MSR_ENTRY_LAYOUT, KVM_MSRS_LAYOUT, MAX_IO_MSRS } from '../abi/layout.js';
import type { MsrValue } from './msr-ret.js';
import type { Vcpu } from './vcpu.js';
import type { X86 } from './x86.js';

export const MSR_IO_GET = 0;
export const MSR_IO_SET = 1;
export const MSR_IO_GET_FEATURE = 2;

/**
 * @param dv a DataView over the buffer that holds the struct
 * @param base the struct's offset in dv
 * @param avail how many bytes from base are mapped (copy_from_user faults past it)
 */
export function msrIo(
  x86: X86,
  vcpu: Vcpu | null,
  dv: DataView,
  base: number,
  avail: number,
  op: number,
  out: MsrValue,
): number {
  if (avail < KVM_MSRS_LAYOUT.size) return -EFAULT;
  const n = dv.getUint32(base + KVM_MSRS_LAYOUT.nmsrs, true);
  if (n >= MAX_IO_MSRS) return -E2BIG;
  if (avail - KVM_MSRS_LAYOUT.size < n * KVM_MSR_ENTRY_LAYOUT.size) return -EFAULT;
  let off = base + KVM_MSRS_LAYOUT.entries;
  let i = 0;
  if (op === MSR_IO_SET) {
    const v = vcpu as Vcpu;
    for (; i < n; i++, off += KVM_MSR_ENTRY_LAYOUT.size) {
      const index = dv.getUint32(off, true);
      const lo = dv.getUint32(off + KVM_MSR_ENTRY_LAYOUT.data, true);
      const hi = dv.getUint32(off + KVM_MSR_ENTRY_LAYOUT.data + 4, true);
      if (x86.doSetMsr(v, index, lo, hi) !== 0) break;
    }
    return i;
  }
  for (; i < n; i++, off += KVM_MSR_ENTRY_LAYOUT.size) {
    const index = dv.getUint32(off, true);
    const r = op === MSR_IO_GET ? x86.doGetMsr(vcpu as Vcpu, index, out) : x86.doGetFeatureMsr(index, out);
    // A failed read zeroes the entry's data (kvm_do_msr_access) before the loop stops.
    dv.setUint32(off + KVM_MSR_ENTRY_LAYOUT.data, out.lo, true);
    dv.setUint32(off + KVM_MSR_ENTRY_LAYOUT.data + 4, out.hi, true);
    if (r !== 0) break;
  }
  return i;
}
