// The MSRs a harvest asks about without knowing the host first: every index some KVM build lists
// (x86.c's msrs_to_save_base, msrs_to_save_pmu, emulated_msrs_all and msr_based_features_all, as
// of 6.12 to 6.18, and the vendor modules' additions), and the ones kvm_get/set_msr_common and the
// vendor code handle without listing them (APIC base, EFER, SPEC_CTRL, PRED_CMD, FLUSH_CMD, the
// MTRRs, MCi banks, ...). A plan reads all of them, so what a host lists or handles is found from
// its answers, not assumed.

import { HV_MSRS } from '../kvm/x86/hyperv.js';
import { MOVING_MSRS } from '../kvm/x86/moving-msrs.js';

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

/** Indices KVM may list in KVM_GET_MSR_INDEX_LIST, or handle unlisted, in ascending order. */
export const CANDIDATE_MSRS: readonly number[] = [
  ...new Set([
    0x0, 0x1, 0x10, 0x11, 0x12, 0x17, 0x1b, 0x34, 0x35, 0x3a, 0x3b, 0x48, 0x49, 0x79, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x9e,
    ...range(0xc1, 8), 0xce, 0xe1, 0xe7, 0xe8, 0xfe, 0x10a, 0x10b, 0x122, 0x140, 0x174, 0x175, 0x176, 0x179, 0x17a, 0x17b,
    ...range(0x186, 8), 0x198, 0x199, 0x1a0, 0x1c4, 0x1c5, 0x1d9, 0x1db, 0x1dc, 0x1dd, 0x1de, 0x1fc,
    ...range(0x200, 16), 0x250, 0x258, 0x259, ...range(0x268, 8), 0x277, 0x280, 0x281, 0x2ff,
    ...range(0x309, 4), 0x329, 0x345, ...range(0x38d, 4), 0x3f1, 0x3f2, 0x3f6,
    ...range(0x400, 12), ...range(0x480, 19), ...range(0x4c1, 8), 0x4d0,
    0x560, 0x561, 0x570, 0x571, 0x572, ...range(0x580, 8), 0x600, ...range(0x6a0, 9), 0x6e0, 0xd90, 0xda0,
    ...range(0x4b564d00, 8),
    // Hyper-V (CONFIG_KVM_HYPERV): every MSR hyperv.c has a case for, one in its ranges it has none
    // for (0x40000004: answers 1), and GUEST_IDLE (no case in x86.c: unsupported).
    ...HV_MSRS, 0x40000004, 0x400000f0,
    0xc0000080, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103, 0xc0000104,
    ...range(0xc0000300, 4),
    ...range(0xc0010000, 8), 0xc0010010, 0xc0010015, 0xc001001f, 0xc0010055, 0xc0010058, 0xc0010114, 0xc0010115, 0xc0010117,
    0xc001011f, 0xc0010140, 0xc0010141, ...range(0xc0010200, 12), 0xc0011020, 0xc0011021, 0xc0011022, 0xc0011023, 0xc0011029,
  ]),
].sort((a, b) => a - b);

/** Indices no KVM handles, read to see how an unknown MSR answers. */
export const UNKNOWN_MSRS: readonly number[] = [0x12345678, 0xc0011234, 0x4b564dff];

/**
 * Candidates a rule measurement leaves out: the MSRs that move with time (IA32_TSC, Hyper-V's
 * reference counter and VP runtime), whose answers cannot be compared byte for byte.
 */
export const NOT_RULE_MEASURED: ReadonlySet<number> = MOVING_MSRS;
