// MSR rules a host profile carries because only a measurement tells them. Out-of-tree vendor
// modules (kvm_pvm) differ from build to build, and from the public source, in how their
// get_msr/set_msr answer some MSRs; `profile capture` (and `harvest judge`) measures each candidate
// MSR on a scratch vCPU, from the host (KVM_GET/SET_MSRS) and from a real-mode guest
// (RDMSR/WRMSR), and records a rule only where kvmsr's source-derived model answers otherwise.
// A rule takes the place of the vendor's get_msr/set_msr hook (kvm_x86_ops.get_msr/set_msr), so
// __kvm_set_msr's common checks and kvm_do_msr_access's handling of the result still apply.
import { FAST_SLOW, GET_LOAD, GET_ZERO, SET_DROP, SET_STORE } from './fast-path.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import { SLOT_COUNT, slotOf } from './msr-slots.js';
import type { VendorOps } from '../vendor.js';

/**
 * What the vendor's get_msr does: `load` the value last stored (or the profile's reset value);
 * `zero`: read 0; `unsupported`: KVM_MSR_RET_UNSUPPORTED (the host may still read 0 from an MSR KVM
 * lists; the guest's userspace exit says KVM_MSR_EXIT_REASON_UNKNOWN); `error`: 1, a plain
 * failure (the exit says KVM_MSR_EXIT_REASON_INVAL).
 */
export type ReadKind = 'load' | 'zero' | 'unsupported' | 'error';
/** What the vendor's set_msr does: `store` any value; `drop`: accept any value, keep nothing; `unsupported`; `error`. */
export type WriteKind = 'store' | 'drop' | 'unsupported' | 'error';
export const READ_KINDS: readonly ReadKind[] = ['load', 'zero', 'unsupported', 'error'];
export const WRITE_KINDS: readonly WriteKind[] = ['store', 'drop', 'unsupported', 'error'];

/**
 * The measured rule of one MSR, for host-initiated accesses and for the guest's. With `store`, a
 * keep mask says which bits of a write stick (a guest write the CPU itself takes, unintercepted,
 * keeps what the CPU keeps: QEMU's TCG keeps 16 bits of SYSENTER_CS on kvm_amd).
 */
export interface MsrRule {
  hostRead?: ReadKind;
  hostWrite?: WriteKind;
  hostKeep?: bigint;
  guestRead?: ReadKind;
  guestWrite?: WriteKind;
  guestKeep?: bigint;
  /**
   * A pair probe (harvest's `pair.*` cases) measured that KVM's cross-MSR checks read the stored
   * value after all; absent, they do not (decoupledMsrs).
   */
  coupled?: boolean;
}
export const RULE_FIELDS = ['hostRead', 'hostWrite', 'hostKeep', 'guestRead', 'guestWrite', 'guestKeep', 'coupled'] as const;

/**
 * The MSRs whose measured store keeps the value in the vendor's own field, away from KVM's
 * cross-MSR checks (PLATFORM_INFO refusing to drop CPUID_FAULT while MISC_FEATURES_ENABLES has
 * CPUID faulting on, MCi_STATUS writes gated by HWCR.McStatusWrEn): every MSR with a measured
 * `store` unless a harvest's pair probe measured `coupled` (kvm_pvm 6.18.44-fc-v1272 and v1300
 * store MISC_FEATURES_ENABLES so: their PLATFORM_INFO takes a clear CPUID_FAULT after a write of 1).
 */
export function decoupledMsrs(rules: Readonly<Record<number, MsrRule>> | undefined): number[] {
  if (rules === undefined) return [];
  return Object.entries(rules)
    .filter(([, r]) => (r.hostWrite === 'store' || r.guestWrite === 'store') && r.coupled !== true)
    .map(([k]) => Number(k));
}

const NONE = 0;
const READ_CODE: Record<ReadKind, number> = { load: 1, zero: 2, unsupported: 3, error: 4 };
const WRITE_CODE: Record<WriteKind, number> = { store: 1, drop: 2, unsupported: 3, error: 4 };
const answer = (kind: number): number => (kind === 3 ? MSR_UNSUPPORTED : MSR_ERR);

const WRAPPED = new WeakMap<object, WeakMap<VendorOps, VendorOps>>();

/**
 * The vendor's hooks with the measured rules in front. Cached per (rules, vendor), so the fast-path
 * tables X86 builds per vendor object are built once per profile.
 */
export function withMeasuredRules(base: VendorOps, rules: Readonly<Record<number, MsrRule>> | undefined): VendorOps {
  if (rules === undefined || Object.keys(rules).length === 0) return base;
  let byVendor = WRAPPED.get(rules);
  if (!byVendor) WRAPPED.set(rules, (byVendor = new WeakMap()));
  const cached = byVendor.get(base);
  if (cached) return cached;
  // Per slot: host read, host write, guest read, guest write.
  const kinds = [new Uint8Array(SLOT_COUNT), new Uint8Array(SLOT_COUNT), new Uint8Array(SLOT_COUNT), new Uint8Array(SLOT_COUNT)] as const;
  // Keep masks of stores, per slot as (lo, hi) halves: host, guest; all ones where none is given.
  const keep = [new Int32Array(SLOT_COUNT * 2).fill(-1), new Int32Array(SLOT_COUNT * 2).fill(-1)] as const;
  const masked = new Uint8Array(SLOT_COUNT);
  for (const [k, r] of Object.entries(rules)) {
    const s = slotOf(Number(k));
    if (s < 0) continue;
    for (const [i, m] of [r.hostKeep, r.guestKeep].entries()) {
      if (m === undefined) continue;
      keep[i]![2 * s] = Number(m & 0xffffffffn) | 0;
      keep[i]![2 * s + 1] = Number((m >> 32n) & 0xffffffffn) | 0;
      if (i === 0) masked[s] = 1;
    }
    if (r.hostRead) kinds[0][s] = READ_CODE[r.hostRead];
    if (r.hostWrite) kinds[1][s] = WRITE_CODE[r.hostWrite];
    if (r.guestRead) kinds[2][s] = READ_CODE[r.guestRead];
    if (r.guestWrite) kinds[3][s] = WRITE_CODE[r.guestWrite];
  }
  const kindOf = (index: number, host: boolean, write: boolean): number => {
    const s = slotOf(index);
    return s < 0 ? NONE : kinds[(host ? 0 : 2) + (write ? 1 : 0)][s]!;
  };
  const ops: VendorOps = {
    ...base,
    getMsr(x86, vcpu, index, host, out: MsrValue) {
      const k = kindOf(index, host, false);
      if (k === NONE) return base.getMsr(x86, vcpu, index, host, out);
      if (k === 1) return x86.load(vcpu, index, out);
      if (k === 2) {
        out.lo = 0;
        out.hi = 0;
        return MSR_OK;
      }
      return answer(k);
    },
    setMsr(x86, vcpu, index, host, lo, hi) {
      const k = kindOf(index, host, true);
      if (k === NONE) return base.setMsr(x86, vcpu, index, host, lo, hi);
      if (k === 1) {
        const m = keep[host ? 0 : 1];
        const s = slotOf(index);
        return x86.store(vcpu, index, lo & m[2 * s]!, hi & m[2 * s + 1]!);
      }
      return k === 2 ? MSR_OK : answer(k);
    },
    fastGetClass(x86, index) {
      const k = kindOf(index, true, false);
      if (k === NONE) return base.fastGetClass(x86, index);
      return k === 1 ? GET_LOAD : k === 2 ? GET_ZERO : FAST_SLOW;
    },
    fastSetClass(x86, index) {
      const k = kindOf(index, true, true);
      if (k === NONE) return base.fastSetClass(x86, index);
      if (k === 1 && masked[slotOf(index)] === 1) return FAST_SLOW;
      return k === 1 ? SET_STORE : k === 2 ? SET_DROP : FAST_SLOW;
    },
  };
  byVendor.set(base, ops);
  return ops;
}
