// What becomes of an MSR access a handler refused as unsupported (KVM_MSR_RET_UNSUPPORTED):
// kvm_do_msr_access from 6.12 (its exact mainline release not checked: between 6.1 and 6.12), and
// 6.1's kvm_{get,set}_msr_ignored_check with the exemption in kvm_{get,set}_msr_common's default
// case. kvm.ignore_msrs turns what is left into success on both.
import { M } from './msr-index.js';
import { MSR_OK, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import { versioned, type VersionedRule } from './release.js';
import type { X86 } from './x86.js';

export const HOST_EXEMPTION_ANYWHERE: VersionedRule = versioned({
  id: 'access.host-exemption',
  family: 'access',
  kernel: 'kvm_do_msr_access, kvm_is_advertised_msr',
  holds: 'a host read of any listed MSR (msrs_to_save and emulated_msrs) that a handler refused as unsupported reads 0, and a host write of 0 passes, wherever the refusal came from (vendor or common code)',
  otherwise: "only kvm_{get,set}_msr_common's default case exempts, and only msrs_to_save (not emulated_msrs): a listed emulated MSR the vCPU lacks (a PV MSR without its CPUID bit, say) fails for the host too",
  where: { since: '6.12' },
});

export const FAILED_READ_ZEROED: VersionedRule = versioned({
  id: 'access.failed-read-zeroed',
  family: 'access',
  kernel: 'kvm_do_msr_access (`if (ret && rw == MSR_TYPE_R) *data = 0;`)',
  holds: 'a KVM_GET_MSRS entry that fails reads back 0 in its data, whatever the failure',
  otherwise: 'only an unsupported MSR (KVM_MSR_RET_UNSUPPORTED) is zeroed; one that fails with 1 (a VMX capability MSR on a vCPU without VMX, say) keeps the data the VMM passed in (__kvm_get_msr writes *data only on success)',
  where: { since: '6.12' },
  note: 'absent from 6.1.192 (seen live on kvm_intel 6.1.192), present in 6.12.0',
});

const TWO32 = 4294967296;

/**
 * The tail of kvm_do_msr_access (6.12 on): userspace may read, and write 0 to, an MSR that KVM
 * advertises even if the vCPU model lacks it; ignore_msrs turns other unhandled accesses into
 * success. On 6.1 only ignore_msrs does (the exemption sits in the default case instead:
 * commonDefaultGet/Set).
 */
export function unsupportedAccess(x: X86, ret: number, index: number, host: boolean, lo: number, hi: number, op: string): number {
  if (ret !== MSR_UNSUPPORTED) return ret;
  if (x.rules.hostExemptionAnywhere && host && lo === 0 && hi === 0 && x.advertised.has(index)) return MSR_OK;
  if (!x.ignoreMsrs) return ret;
  if (x.reportIgnoredMsrs) {
    x.logLine(`kvm: ignored ${op}: 0x${(index >>> 0).toString(16)} data 0x${((hi >>> 0) * TWO32 + (lo >>> 0)).toString(16)}`);
  }
  return MSR_OK;
}

/** kvm_get_msr_common's default case on 6.1: the host reads 0 from an MSR in msrs_to_save. */
export function commonDefaultGet(x: X86, index: number, host: boolean, out: MsrValue): number {
  if (!x.rules.hostExemptionAnywhere && host && x.msrsToSave.has(index)) {
    out.lo = 0;
    out.hi = 0;
    return MSR_OK;
  }
  return MSR_UNSUPPORTED;
}

/** kvm_set_msr_common's default case on 6.1: the host may write 0 to an MSR in msrs_to_save. */
export function commonDefaultSet(x: X86, index: number, host: boolean, lo: number, hi: number): number {
  if (!x.rules.hostExemptionAnywhere && host && lo === 0 && hi === 0 && x.msrsToSave.has(index)) return MSR_OK;
  return MSR_UNSUPPORTED;
}

/**
 * msrs_to_save within a profile's KVM_GET_MSR_INDEX_LIST: the kernel copies msrs_to_save first,
 * then emulated_msrs, whose first entry (MSR_KVM_SYSTEM_TIME) is never filtered out.
 */
export function msrsToSaveOf(list: readonly number[]): number[] {
  const at = list.indexOf(M.MSR_KVM_SYSTEM_TIME);
  return at < 0 ? [...list] : list.slice(0, at);
}
