// Which ioctls a capture keeps, and how many bytes each one reads through its pointer argument
// (the struct and the variable part after it), the same rule the C recorder uses.
import { _IOC_SIZE } from '../abi/ioc.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_MAX_CPUID_ENTRIES, MAX_IO_MSRS } from '../abi/layout.js';
import type { CaptureHeader, FdKind } from './format.js';

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
  // vmx/svm_set_nested_state: VMX/SVM MSRs of L1 and L2 (and EFER.SVME) come with it.
  I.KVM_SET_NESTED_STATE,
  I.KVM_SET_USER_MEMORY_REGION2,
  // kvm_xen_hvm_config: names the MSR that writes the Xen hypercall page.
  I.KVM_XEN_HVM_CONFIG,
  // On vCPU fds only: kvm_arch_tsc_set_attr (group KVM_VCPU_TSC_CTRL) moves the TSC offset.
  I.KVM_SET_DEVICE_ATTR,
  // kvm_vcpu_ioctl_x86_set_vcpu_events and kvm_arch_vcpu_ioctl_set_mpstate: SMM and run state.
  I.KVM_SET_VCPU_EVENTS,
  I.KVM_SET_MP_STATE,
]);
/**
 * State getters: recorded so a checker sees what a save read (the LAPIC's LVT timer mode and IRR,
 * kvmclock, EFER and the APIC base); replay runs them but compares no output.
 */
export const STATE_GETTERS: ReadonlySet<number> = new Set([I.KVM_GET_LAPIC, I.KVM_GET_SREGS, I.KVM_GET_SREGS2, I.KVM_GET_CLOCK]);

/** Requests recorded only on vCPU fds (KVM_SET_DEVICE_ATTR also reaches VMs and devices). */
const VCPU_ONLY: ReadonlySet<number> = new Set([I.KVM_SET_DEVICE_ATTR]);

const isRecordedRequest = (req: number): boolean => MSR_IOCTLS.has(req) || SHAPING_IOCTLS.has(req) || STATE_GETTERS.has(req);

/** Whether a recorder records `req` on an fd of `kind`. */
export const isRecorded = (req: number, kind: FdKind): boolean => isRecordedRequest(req) && (kind === 'vcpu' || !VCPU_ONLY.has(req));

/** The names of the recorded ioctls, in the order both recorders write them into the header's `recorded`. */
export const RECORDED_IOCTL_NAMES: readonly string[] = Object.freeze(
  [...MSR_IOCTLS, ...SHAPING_IOCTLS, ...STATE_GETTERS].map((r) => I.ioctlName(r)),
);
export const recordedIoctlNames = (): string[] => [...RECORDED_IOCTL_NAMES];

/**
 * Whether the capture's recorder recorded the state getters: only then does the absence of a
 * KVM_GET_LAPIC/CLOCK/SREGS mean the VMM never called it (older captures have no `recorded`).
 */
export const recordsStateGetters = (header: CaptureHeader): boolean => header.recorded?.includes('KVM_GET_CLOCK') ?? false;

/** Integer-argument ioctls (no bytes to capture). */
export const INTEGER_IOCTLS: ReadonlySet<number> = new Set([
  I.KVM_CREATE_VM,
  I.KVM_CREATE_VCPU,
  I.KVM_CREATE_IRQCHIP,
  I.KVM_RUN,
  I.KVM_SET_TSC_KHZ,
]);

const NESTED_STATE_HEADER = 128;
const NESTED_STATE_MAX_DATA = 8192;

/** struct kvm_device_attr: `addr` (at 16) points at the value; KVM_VCPU_TSC_OFFSET's is 8 bytes. */
export const DEVICE_ATTR_ADDR_OFFSET = 16;
export const DEVICE_ATTR_VALUE_BYTES = 8;

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
    case I.KVM_SET_NESTED_STATE:
      // The 128-byte header's `size` covers the data; vmx_set_nested_state reads at most two
      // 4096-byte vmcs12s after it.
      return Math.min(Math.max(u32(at, 4), NESTED_STATE_HEADER), NESTED_STATE_HEADER + NESTED_STATE_MAX_DATA);
    default:
      // Every other recorded ioctl reads one fixed-size struct: its _IOC_SIZE (0 for the integer ones).
      return isRecordedRequest(req) && !INTEGER_IOCTLS.has(req) ? _IOC_SIZE(req) : 0;
  }
}
