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
  TSC_CONTROL: 60,
  GET_TSC_KHZ: 61,
  MAX_VCPUS: 66,
  SPLIT_IRQCHIP: 121,
  X86_SMM: 117,
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
  HYPERV: 44,
  HYPERV_SYNIC: 123,
  HYPERV_SYNIC2: 148,
  HYPERV_ENLIGHTENED_VMCS: 163,
  HYPERV_DIRECT_TLBFLUSH: 175,
  HYPERV_ENFORCE_CPUID: 199,
});
