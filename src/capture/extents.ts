// Which ioctls a capture keeps, and how many bytes each one reads through its pointer argument
// (the struct and the variable part after it), the same rule the C recorder uses.
import * as I from '../abi/kvm-ioctls.js';
import { KVM_MAX_CPUID_ENTRIES, MAX_IO_MSRS } from '../abi/layout.js';

/** MSR ioctls: replay compares their results. */
export const MSR_IOCTLS: ReadonlySet<number> = new Set([
  I.KVM_GET_MSR_INDEX_LIST,
  I.KVM_GET_MSR_FEATURE_INDEX_LIST,
  I.KVM_GET_MSRS,
  I.KVM_SET_MSRS,
  I.KVM_X86_SET_MSR_FILTER,
]);
/** Calls that shape MSR state: replay applies them (or says it cannot know what they did). */
export const SHAPING_IOCTLS: ReadonlySet<number> = new Set([
  I.KVM_CREATE_VM,
  I.KVM_CREATE_VCPU,
  I.KVM_SET_CPUID2,
  I.KVM_ENABLE_CAP,
  I.KVM_CREATE_IRQCHIP,
  I.KVM_RUN,
  I.KVM_SET_USER_MEMORY_REGION,
  I.KVM_SET_SREGS,
  I.KVM_SET_SREGS2,
  I.KVM_SET_LAPIC,
  I.KVM_SET_TSC_KHZ,
  I.KVM_X86_SETUP_MCE,
  I.KVM_SET_CLOCK,
]);
export const isRecorded = (req: number): boolean => MSR_IOCTLS.has(req) || SHAPING_IOCTLS.has(req);

/** Integer-argument ioctls (no bytes to capture). */
export const INTEGER_IOCTLS: ReadonlySet<number> = new Set([
  I.KVM_CREATE_VM,
  I.KVM_CREATE_VCPU,
  I.KVM_CREATE_IRQCHIP,
  I.KVM_RUN,
  I.KVM_SET_TSC_KHZ,
]);

const u32 = (b: Uint8Array, off: number): number =>
  b.length >= off + 4 ? new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true) : 0;

/** The number of bytes the ioctl reads at its pointer, given the bytes that are there (at least the header). */
export function argExtent(req: number, at: Uint8Array): number {
  switch (req) {
    case I.KVM_GET_MSRS:
    case I.KVM_SET_MSRS: {
      const n = u32(at, 0);
      return n >= MAX_IO_MSRS ? 8 : 8 + 16 * n;
    }
    case I.KVM_GET_MSR_INDEX_LIST:
    case I.KVM_GET_MSR_FEATURE_INDEX_LIST:
      return 4 + 4 * Math.min(u32(at, 0), 0x10000);
    case I.KVM_SET_CPUID2:
    case I.KVM_GET_CPUID2:
    case I.KVM_GET_SUPPORTED_CPUID:
      return 8 + 40 * Math.min(u32(at, 0), KVM_MAX_CPUID_ENTRIES);
    case I.KVM_ENABLE_CAP:
      return 104;
    case I.KVM_X86_SET_MSR_FILTER:
      return 392;
    case I.KVM_SET_USER_MEMORY_REGION:
      return 32;
    case I.KVM_SET_SREGS:
      return 312;
    case I.KVM_SET_SREGS2:
      return 320;
    case I.KVM_SET_CLOCK:
      return 48;
    case I.KVM_SET_LAPIC:
      return 1024;
    case I.KVM_X86_SETUP_MCE:
      return 8;
    default:
      return 0;
  }
}
