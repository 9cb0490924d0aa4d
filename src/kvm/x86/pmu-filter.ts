// KVM_SET_PMU_EVENT_FILTER (arch/x86/kvm/pmu.c kvm_vm_ioctl_set_pmu_event_filter): which events the
// guest's counters may count. Kept for what a later KVM_SET_PMU_EVENT_FILTER replaces; the PERFEVTSEL
// and fixed-counter MSRs take the same writes with or without it (the filter only stops counting,
// and kvmsr counts nothing).
import { E2BIG, EFAULT, EINVAL } from '../../abi/errno.js';
import { KVM_CAP } from '../../abi/kvm-ioctls.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vm } from '../vm.js';

export interface PmuEventFilter {
  action: number;
  flags: number;
  fixedCounterBitmap: number;
  /** The events, sorted as the kernel sorts them for its binary search. */
  events: bigint[];
}

const KVM_PMU_EVENT_ALLOW = 0;
const KVM_PMU_EVENT_DENY = 1;
const KVM_PMU_EVENT_FLAG_MASKED_EVENTS = 1;
/** KVM_PMU_EVENT_FILTER_MAX_EVENTS. */
const MAX_EVENTS = 300;
/** KVM_PMU_MASKED_ENTRY_UMASK_MASK, _UMASK_MATCH and _EXCLUDE. */
const MASKED_ENTRY_BITS = (0xffn << 56n) | (0xffn << 8n) | (1n << 55n);

export function setPmuEventFilter(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 32) return -EFAULT;
  const dv = a.dv;
  const action = dv.getUint32(a.base, true);
  const nevents = dv.getUint32(a.base + 4, true);
  const fixed = dv.getUint32(a.base + 8, true);
  const flags = dv.getUint32(a.base + 12, true);
  if (action !== KVM_PMU_EVENT_ALLOW && action !== KVM_PMU_EVENT_DENY) return -EINVAL;
  // KVM_PMU_EVENT_FLAGS_VALID_MASK: masked events where the host reports them (6.3+), else none.
  const validFlags = (k.profile.extensions.vm[KVM_CAP.PMU_EVENT_MASKED_EVENTS] ?? 0) !== 0 ? KVM_PMU_EVENT_FLAG_MASKED_EVENTS : 0;
  if ((flags & ~validFlags) !== 0) return -EINVAL;
  if (nevents > MAX_EVENTS) return -E2BIG;
  if (a.avail < 32 + 8 * nevents) return -EFAULT;
  const events: bigint[] = [];
  for (let i = 0; i < nevents; i++) events.push(dv.getBigUint64(a.base + 32 + 8 * i, true));
  if ((flags & KVM_PMU_EVENT_FLAG_MASKED_EVENTS) !== 0) {
    // is_masked_filter_valid: only the event select (the vendor's EVENTSEL_EVENT) and the entry bits.
    const eventSelect = k.profile.host.vendorModule === 'kvm_amd' ? 0xf000000ffn : 0xffn;
    if (events.some((e) => (e & ~(eventSelect | MASKED_ENTRY_BITS)) !== 0n)) return -EINVAL;
  }
  events.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  vm.pmuFilter = { action, flags, fixedCounterBitmap: fixed, events };
  return 0;
}
