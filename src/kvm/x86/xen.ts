// The Xen hypercall page MSR (arch/x86/kvm/xen.c, CONFIG_KVM_XEN): KVM_XEN_HVM_CONFIG names an MSR,
// and from then on kvm_set_msr_common hands every write of it to kvm_xen_write_hypercall_page,
// before its own switch. Reads of that index are not affected.
import { EFAULT, EINVAL } from '../../abi/errno.js';
import { MSR_ERR, MSR_OK } from './msr-ret.js';
import { versioned, type VersionedRule } from './release.js';
import type { Vm } from '../vm.js';

export const KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL = 1 << 1;
const KVM_XEN_HVM_CONFIG_EVTCHN_SEND = 1 << 5;
const KVM_XEN_HVM_CONFIG_PVCLOCK_TSC_UNSTABLE = 1 << 7;
export { KVM_XEN_HVM_CONFIG_SIZE } from '../../abi/codecs.js';

export const XEN_MSR_RANGE: VersionedRule = versioned({
  id: 'xen.msr-range',
  family: 'xen',
  kernel: 'kvm_xen_hvm_config',
  holds: "KVM_XEN_HVM_CONFIG's MSR must lie in 0x40000000-0x4fffffff (the synthetic range), else EINVAL",
  otherwise: 'every MSR index is taken',
  where: { since: '6.14' },
  note: 'assumed release: absent from 6.12.118, present on 6.18.44',
});

/** kvm_xen_hvm_config (KVM_XEN_HVM_CONFIG). */
export function xenHvmConfig(vm: Vm, dv: DataView, base: number, msrRangeChecked: boolean): number {
  const flags = dv.getUint32(base, true);
  const msr = dv.getUint32(base + 4, true);
  const blob32 = Number(dv.getBigUint64(base + 8, true));
  const blob64 = Number(dv.getBigUint64(base + 16, true));
  const size32 = dv.getUint8(base + 24);
  const size64 = dv.getUint8(base + 25);
  const permitted = KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL | KVM_XEN_HVM_CONFIG_EVTCHN_SEND | KVM_XEN_HVM_CONFIG_PVCLOCK_TSC_UNSTABLE;
  if ((flags & ~permitted) !== 0) return -EINVAL;
  // With hypercall interception KVM writes its own page, so no blob may be given.
  if ((flags & KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL) !== 0 && (blob32 !== 0 || blob64 !== 0 || size32 !== 0 || size64 !== 0)) return -EINVAL;
  if (msrRangeChecked && msr !== 0 && (msr < 0x40000000 || msr > 0x4fffffff)) return -EINVAL;
  vm.xenHvmMsr = msr;
  vm.xenHvmFlags = flags;
  vm.xenBlob32 = blob32;
  vm.xenBlob64 = blob64;
  vm.xenBlobSize32 = size32;
  vm.xenBlobSize64 = size64;
  return 0;
}

/**
 * kvm_xen_write_hypercall_page: the low 12 bits pick a page, the rest is the guest page to fill:
 * with interception, page 0 only, filled by KVM; otherwise the page of the VMM's blob (read from
 * its memory: EFAULT if unmapped, which KVM_SET_MSRS treats as a failed entry).
 */
export function xenWriteHypercallPage(vm: Vm, lo: number, hi: number, longMode: boolean, userReadable: (addr: number, len: number) => boolean): number {
  const pageNum = lo & 0xfff;
  const pageAddr = (hi >>> 0) * 4294967296 + ((lo & ~0xfff) >>> 0);
  if ((vm.xenHvmFlags & KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL) !== 0) {
    if (pageNum !== 0) return MSR_ERR;
    return vm.gpaRangeMapped(pageAddr, 4096) ? MSR_OK : MSR_ERR;
  }
  const size = longMode ? vm.xenBlobSize64 : vm.xenBlobSize32;
  if (pageNum >= size) return MSR_ERR;
  const blob = (longMode ? vm.xenBlob64 : vm.xenBlob32) + pageNum * 4096;
  if (!userReadable(blob, 4096)) return -EFAULT;
  return vm.gpaRangeMapped(pageAddr, 4096) ? MSR_OK : MSR_ERR;
}
