// Return codes of the kernel's MSR accessors (arch/x86/kvm/x86.h): 0 is success, 1 a #GP-style
// error, and these two are KVM-internal. A negative number is an errno.
export const MSR_OK = 0;
export const MSR_ERR = 1;
/** KVM_MSR_RET_UNSUPPORTED: no handler claimed the index. */
export const MSR_UNSUPPORTED = 2;
/** KVM_MSR_RET_FILTERED: a userspace MSR filter denied a guest access. */
export const MSR_FILTERED = 3;

/** The value an MSR accessor produced, as two u32 halves. Reused, never allocated per entry. */
export interface MsrValue {
  lo: number;
  hi: number;
}
