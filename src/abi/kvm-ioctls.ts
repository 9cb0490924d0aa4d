// The KVM ioctl request numbers kvmsr knows, built as include/uapi/linux/kvm.h builds them.
import { _IO, _IOR, _IOW, _IOWR } from './ioc.js';

export const KVMIO = 0xae;

// system fd
export const KVM_GET_API_VERSION = _IO(KVMIO, 0x00);
export const KVM_CREATE_VM = _IO(KVMIO, 0x01);
export const KVM_GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, 4);
export const KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03);
export const KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04);
export const KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, 8);
export const KVM_GET_EMULATED_CPUID = _IOWR(KVMIO, 0x09, 8);
export const KVM_GET_MSR_FEATURE_INDEX_LIST = _IOWR(KVMIO, 0x0a, 4);
export const KVM_X86_GET_MCE_CAP_SUPPORTED = _IOR(KVMIO, 0x9d, 8);
// VM fd
export const KVM_CREATE_VCPU = _IO(KVMIO, 0x41);
export const KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, 32);
export const KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47);
export const KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60);
export const KVM_ENABLE_CAP = _IOW(KVMIO, 0xa3, 104);
export const KVM_X86_SET_MSR_FILTER = _IOW(KVMIO, 0xc6, 392);
// vCPU fd
export const KVM_RUN = _IO(KVMIO, 0x80);
export const KVM_GET_REGS = _IOR(KVMIO, 0x81, 144);
export const KVM_SET_REGS = _IOW(KVMIO, 0x82, 144);
export const KVM_GET_SREGS = _IOR(KVMIO, 0x83, 312);
export const KVM_SET_SREGS = _IOW(KVMIO, 0x84, 312);
export const KVM_GET_MSRS = _IOWR(KVMIO, 0x88, 8);
export const KVM_SET_MSRS = _IOW(KVMIO, 0x89, 8);
export const KVM_GET_LAPIC = _IOR(KVMIO, 0x8e, 1024);
export const KVM_SET_LAPIC = _IOW(KVMIO, 0x8f, 1024);
export const KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, 8);
export const KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, 8);
export const KVM_X86_SETUP_MCE = _IOW(KVMIO, 0x9c, 8);
export const KVM_SET_TSC_KHZ = _IO(KVMIO, 0xa2);
export const KVM_GET_TSC_KHZ = _IO(KVMIO, 0xa3);
export const KVM_GET_SUPPORTED_HV_CPUID = _IOWR(KVMIO, 0xc1, 8);
export const KVM_XEN_HVM_CONFIG = _IOW(KVMIO, 0x7a, 56);

// VM and vCPU state (the rest of the API a VMM's save and restore calls)
export const KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, 8);
export const KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, 16);
export const KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xc0, 24);
export const KVM_IRQ_LINE = _IOW(KVMIO, 0x61, 8);
export const KVM_GET_IRQCHIP = _IOWR(KVMIO, 0x62, 520);
export const KVM_SET_IRQCHIP = _IOR(KVMIO, 0x63, 520);
export const KVM_REGISTER_COALESCED_MMIO = _IOW(KVMIO, 0x67, 16);
export const KVM_IRQ_LINE_STATUS = _IOWR(KVMIO, 0x67, 8);
export const KVM_UNREGISTER_COALESCED_MMIO = _IOW(KVMIO, 0x68, 16);
export const KVM_SET_GSI_ROUTING = _IOW(KVMIO, 0x6a, 8);
export const KVM_IRQFD = _IOW(KVMIO, 0x76, 32);
export const KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, 64);
export const KVM_IOEVENTFD = _IOW(KVMIO, 0x79, 64);
export const KVM_SET_CLOCK = _IOW(KVMIO, 0x7b, 48);
export const KVM_GET_CLOCK = _IOR(KVMIO, 0x7c, 48);
export const KVM_GET_PIT2 = _IOR(KVMIO, 0x9f, 112);
export const KVM_SET_PIT2 = _IOW(KVMIO, 0xa0, 112);
export const KVM_SIGNAL_MSI = _IOW(KVMIO, 0xa5, 32);
export const KVM_SET_DEVICE_ATTR = _IOW(KVMIO, 0xe1, 24);
export const KVM_GET_DEVICE_ATTR = _IOW(KVMIO, 0xe2, 24);
export const KVM_HAS_DEVICE_ATTR = _IOW(KVMIO, 0xe3, 24);
export const KVM_GET_FPU = _IOR(KVMIO, 0x8c, 416);
export const KVM_SET_FPU = _IOW(KVMIO, 0x8d, 416);
export const KVM_SET_SIGNAL_MASK = _IOW(KVMIO, 0x8b, 4);
export const KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9b, 72);
export const KVM_KVMCLOCK_CTRL = _IO(KVMIO, 0xad);
export const KVM_TPR_ACCESS_REPORTING = _IOWR(KVMIO, 0x92, 40);
export const KVM_SET_VAPIC_ADDR = _IOW(KVMIO, 0x93, 8);
export const KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, 4);
export const KVM_SET_MP_STATE = _IOW(KVMIO, 0x99, 4);
export const KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9f, 64);
export const KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xa0, 64);
export const KVM_GET_DEBUGREGS = _IOR(KVMIO, 0xa1, 128);
export const KVM_SET_DEBUGREGS = _IOW(KVMIO, 0xa2, 128);
export const KVM_GET_XSAVE = _IOR(KVMIO, 0xa4, 4096);
export const KVM_SET_XSAVE = _IOW(KVMIO, 0xa5, 4096);
export const KVM_GET_XCRS = _IOR(KVMIO, 0xa6, 392);
export const KVM_SET_XCRS = _IOW(KVMIO, 0xa7, 392);
export const KVM_GET_SREGS2 = _IOR(KVMIO, 0xcc, 320);
export const KVM_SET_SREGS2 = _IOW(KVMIO, 0xcd, 320);
export const KVM_GET_XSAVE2 = _IOR(KVMIO, 0xcf, 4096);
// struct kvm_nested_state is a 128-byte header; `size` (at 4) covers the data after it.
export const KVM_GET_NESTED_STATE = _IOWR(KVMIO, 0xbe, 128);
export const KVM_SET_NESTED_STATE = _IOW(KVMIO, 0xbf, 128);
// Linux 6.8+ (struct kvm_userspace_memory_region2, 160 bytes).
export const KVM_SET_USER_MEMORY_REGION2 = _IOW(KVMIO, 0x49, 160);

/** Every request number above, by its kernel name. */
export const KVM_IOCTLS: Readonly<Record<string, number>> = Object.freeze({
  KVM_GET_API_VERSION,
  KVM_CREATE_VM,
  KVM_GET_MSR_INDEX_LIST,
  KVM_CHECK_EXTENSION,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_EMULATED_CPUID,
  KVM_GET_MSR_FEATURE_INDEX_LIST,
  KVM_X86_GET_MCE_CAP_SUPPORTED,
  KVM_CREATE_VCPU,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SET_TSS_ADDR,
  KVM_CREATE_IRQCHIP,
  KVM_ENABLE_CAP,
  KVM_X86_SET_MSR_FILTER,
  KVM_RUN,
  KVM_GET_REGS,
  KVM_SET_REGS,
  KVM_GET_SREGS,
  KVM_SET_SREGS,
  KVM_GET_MSRS,
  KVM_SET_MSRS,
  KVM_GET_LAPIC,
  KVM_SET_LAPIC,
  KVM_SET_CPUID2,
  KVM_GET_CPUID2,
  KVM_X86_SETUP_MCE,
  KVM_SET_TSC_KHZ,
  KVM_GET_TSC_KHZ,
  KVM_GET_SUPPORTED_HV_CPUID,
  KVM_XEN_HVM_CONFIG,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_GET_DIRTY_LOG,
  KVM_CLEAR_DIRTY_LOG,
  KVM_IRQ_LINE,
  KVM_GET_IRQCHIP,
  KVM_SET_IRQCHIP,
  KVM_REGISTER_COALESCED_MMIO,
  KVM_IRQ_LINE_STATUS,
  KVM_UNREGISTER_COALESCED_MMIO,
  KVM_SET_GSI_ROUTING,
  KVM_IRQFD,
  KVM_CREATE_PIT2,
  KVM_IOEVENTFD,
  KVM_SET_CLOCK,
  KVM_GET_CLOCK,
  KVM_GET_PIT2,
  KVM_SET_PIT2,
  KVM_SIGNAL_MSI,
  KVM_SET_DEVICE_ATTR,
  KVM_GET_DEVICE_ATTR,
  KVM_HAS_DEVICE_ATTR,
  KVM_GET_FPU,
  KVM_SET_FPU,
  KVM_SET_SIGNAL_MASK,
  KVM_SET_GUEST_DEBUG,
  KVM_KVMCLOCK_CTRL,
  KVM_TPR_ACCESS_REPORTING,
  KVM_SET_VAPIC_ADDR,
  KVM_GET_MP_STATE,
  KVM_SET_MP_STATE,
  KVM_GET_VCPU_EVENTS,
  KVM_SET_VCPU_EVENTS,
  KVM_GET_DEBUGREGS,
  KVM_SET_DEBUGREGS,
  KVM_GET_XSAVE,
  KVM_SET_XSAVE,
  KVM_GET_XCRS,
  KVM_SET_XCRS,
  KVM_GET_SREGS2,
  KVM_SET_SREGS2,
  KVM_GET_XSAVE2,
  KVM_GET_NESTED_STATE,
  KVM_SET_NESTED_STATE,
  KVM_SET_USER_MEMORY_REGION2,
});

const namesByNumber = new Map<number, string>(Object.entries(KVM_IOCTLS).map(([k, v]) => [v, k]));
/** The kernel name of a request number, or its hex form when kvmsr does not know it. */
export function ioctlName(req: number): string {
  return namesByNumber.get(req >>> 0) ?? `0x${(req >>> 0).toString(16)}`;
}

// KVM_CHECK_EXTENSION / KVM_ENABLE_CAP capability numbers used by kvmsr.
export const KVM_CAP = Object.freeze({
  IRQCHIP: 0,
  NR_VCPUS: 9,
  XCRS: 56,
  TSC_CONTROL: 60,
  GET_TSC_KHZ: 61,
  MAX_VCPUS: 66,
  SPLIT_IRQCHIP: 121,
  X86_SMM: 117,
  MULTI_ADDRESS_SPACE: 118,
  MAX_VCPU_ID: 128,
  GET_MSR_FEATURES: 153,
  MSR_PLATFORM_INFO: 159,
  EXCEPTION_PAYLOAD: 164,
  MANUAL_DIRTY_LOG_PROTECT2: 168,
  X86_USER_SPACE_MSR: 188,
  X86_MSR_FILTER: 189,
  ENFORCE_PV_FEATURE_CPUID: 190,
  X86_TRIPLE_FAULT_EVENT: 218,
  XEN_HVM: 38,
  USER_MEMORY2: 231,
  HYPERV: 44,
  HYPERV_SYNIC: 123,
  HYPERV_SYNIC2: 148,
  HYPERV_ENLIGHTENED_VMCS: 163,
  HYPERV_DIRECT_TLBFLUSH: 175,
  HYPERV_ENFORCE_CPUID: 199,
  XSAVE2: 208,
});
