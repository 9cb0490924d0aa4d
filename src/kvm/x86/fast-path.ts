// Per-slot classes for the host-initiated KVM_GET_MSRS/KVM_SET_MSRS loop. An MSR whose host access
// is, for this profile and vendor, always a plain load, a zero, a plain store, a dropped write or
// a store after one fixed check gets a class here, and msr_io handles it without the call chain.
// Everything else is SLOW and takes the full kvm_do_msr_access path. test/fast-path.test.ts checks
// every slot against the full path.
export const FAST_SLOW = 0;
export const GET_LOAD = 1;
export const GET_ZERO = 2;
/** Load when the vCPU has the capability in capMask[slot]; otherwise the read is unsupported-but-advertised: 0. */
export const GET_LOAD_IF_CAP = 3;
/** Load when guest_pv_has(the feature in pvBit[slot]); otherwise the full path. */
export const GET_PV_LOAD = 4;
/** Read 0 when guest_pv_has(the feature in pvBit[slot]); otherwise the full path. */
export const GET_PV_ZERO = 5;
/** Read the VM-wide kvmclock wall clock when guest_pv_has(pvBit[slot]); otherwise the full path. */
export const GET_PV_WALL_CLOCK = 6;
/** IA32_TSC: computed from the clock (X86.readTsc). */
export const GET_TSC = 7;
/** IA32_TSC_DEADLINE: 0 unless the vCPU's LVT timer is in TSC-deadline mode (then the full path). */
export const GET_TSC_DEADLINE = 8;
export const SET_STORE = 1;
export const SET_DROP = 2;
/** Refuse a non-canonical value (is_noncanonical_msr_address), else store. */
export const SET_CANONICAL = 3;
/** Store the value made canonical (__canonical_address): SYSENTER_EIP/ESP. */
export const SET_CANONICALIZE = 4;
/** Refuse an invalid PAT (kvm_pat_valid), else store. */
export const SET_PAT = 5;
/** Advertised but unhandled: a write of 0 succeeds and stores nothing; anything else takes the full path. */
export const SET_ZERO_ONLY = 6;
/** Store when guest_pv_has(the feature in pvBit[slot]); otherwise the full path. */
export const SET_PV_STORE = 7;
/** A write of 0 always succeeds and stores 0; anything else takes the full path. */
export const SET_ZERO_STORE = 8;
/** As SET_ZERO_STORE when guest_pv_has(pvBit[slot]); otherwise the full path. */
export const SET_PV_ZERO_STORE = 9;
/** A write of 0 succeeds and stores nothing when guest_pv_has(pvBit[slot]); otherwise the full path. */
export const SET_PV_ZERO_ONLY = 10;
/** Store the VM-wide wall clock when guest_pv_has(pvBit[slot]); otherwise the full path. */
export const SET_PV_WALL_CLOCK = 11;
/** Store when the vCPU has the capability in capMask[slot]; otherwise accept and drop. */
export const SET_STORE_IF_CAP_ELSE_DROP = 12;
/** Store when the vCPU has the capability; otherwise advertised-but-unsupported: 0 passes, the rest takes the full path. */
export const SET_STORE_IF_CAP_ELSE_ZERO_ONLY = 13;
/** KVM_POLL_CONTROL: 0 or 1 stored when guest_pv_has(pvBit[slot]); otherwise the full path. */
export const SET_PV_BIT0_STORE = 14;
/** KVM_ASYNC_PF_INT: a vector (bits 7:0) stored when guest_pv_has and the VM has an irqchip; otherwise the full path. */
export const SET_PV_BYTE_STORE_IF_IRQCHIP = 15;
/** PLATFORM_INFO: stored unless it clears CPUID_FAULT while CPUID faulting is on (then the full path). */
export const SET_PLATFORM_INFO = 16;
/** A write of 0 stored when the vCPU has the capability in capMask[slot], accepted as advertised-unsupported without it. */
export const SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY = 17;
/** KVM_SYSTEM_TIME and KVM_SYSTEM_TIME_NEW: both slots take the value (vcpu->arch.time) when guest_pv_has(pvBit[slot]); otherwise the full path. */
export const SET_PV_STORE_KVMCLOCK = 18;
/** IA32_TSC_DEADLINE: dropped unless the vCPU's LVT timer is in TSC-deadline mode (then the full path). */
export const SET_TSC_DEADLINE = 19;

// What the vendor and common classifiers may also answer; X86 turns these into the classes above.
/** The accessor has no case for the index: KVM_MSR_RET_UNSUPPORTED. */
export const UNHANDLED = 0x40;
/** Read gated on a guest capability: (GATED_CAP | capBitIndex << 8). */
export const GATED_CAP = 0x41;
/** Access gated on a KVM PV feature: (GATED_PV | featureBit << 8). */
export const GATED_PV = 0x42;
/** As GATED_PV, for a class other than load/store: (cls | PV_PARAM | featureBit << 8). */
export const PV_PARAM = 0x80;
/** A class whose parameter is a capability bit: (cls | CAP_PARAM | capBitIndex << 8). */
export const CAP_PARAM = 0x20; // classes stay below 0x20
