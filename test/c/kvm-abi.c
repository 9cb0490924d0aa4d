/* Prints every ioctl number and struct layout kvmsr uses, from the system's UAPI headers. */
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#ifndef KVM_SET_USER_MEMORY_REGION2
/* Linux 6.8's include/uapi/linux/kvm.h, for older system headers. */
struct kvm_userspace_memory_region2 {
  __u32 slot; __u32 flags; __u64 guest_phys_addr; __u64 memory_size; __u64 userspace_addr;
  __u64 guest_memfd_offset; __u32 guest_memfd; __u32 pad1; __u64 pad2[14];
};
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#endif
/* KVM_CAP_USER_MEMORY2 came in 6.8; Debian 12's headers are 6.1. */
#ifndef KVM_CAP_USER_MEMORY2
#define KVM_CAP_USER_MEMORY2 231
#endif
/* Linux 6.8-6.10's, for older system headers. */
#ifndef KVM_SET_MEMORY_ATTRIBUTES
struct kvm_memory_attributes { __u64 address; __u64 size; __u64 attributes; __u64 flags; };
#define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
#endif
#ifndef KVM_CREATE_GUEST_MEMFD
struct kvm_create_guest_memfd { __u64 size; __u64 flags; __u64 reserved[6]; };
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#endif
#ifndef KVM_PRE_FAULT_MEMORY
struct kvm_pre_fault_memory { __u64 gpa; __u64 size; __u64 flags; __u64 padding[5]; };
#define KVM_PRE_FAULT_MEMORY _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory)
#endif
#ifndef KVM_CAP_PMU_EVENT_MASKED_EVENTS
#define KVM_CAP_PMU_EVENT_MASKED_EVENTS 226
#endif
#ifndef KVM_CAP_X86_APIC_BUS_CYCLES_NS
#define KVM_CAP_X86_APIC_BUS_CYCLES_NS 237
#endif
#define IOC(n) printf("ioctl %s %u\n", #n, (unsigned)(n))
#define SZ(t) printf("size %s %zu\n", #t, sizeof(struct t))
#define OFF(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f))
#define CAP(n) printf("cap %s %d\n", #n, (int)(n))
#define VAL(n) printf("value %s %lld\n", #n, (long long)(n))
int main(void) {
  IOC(KVM_GET_API_VERSION); IOC(KVM_CREATE_VM); IOC(KVM_GET_MSR_INDEX_LIST); IOC(KVM_CHECK_EXTENSION);
  IOC(KVM_GET_VCPU_MMAP_SIZE); IOC(KVM_GET_SUPPORTED_CPUID); IOC(KVM_GET_EMULATED_CPUID);
  IOC(KVM_GET_MSR_FEATURE_INDEX_LIST); IOC(KVM_X86_GET_MCE_CAP_SUPPORTED); IOC(KVM_CREATE_VCPU);
  IOC(KVM_SET_USER_MEMORY_REGION); IOC(KVM_SET_TSS_ADDR); IOC(KVM_CREATE_IRQCHIP); IOC(KVM_ENABLE_CAP);
  IOC(KVM_X86_SET_MSR_FILTER); IOC(KVM_RUN); IOC(KVM_SET_GUEST_DEBUG); IOC(KVM_KVMCLOCK_CTRL); IOC(KVM_GET_REGS); IOC(KVM_SET_REGS); IOC(KVM_GET_SREGS);
  IOC(KVM_SET_SREGS); IOC(KVM_GET_MSRS); IOC(KVM_SET_MSRS); IOC(KVM_GET_LAPIC); IOC(KVM_SET_LAPIC);
  IOC(KVM_SET_CPUID2); IOC(KVM_GET_CPUID2); IOC(KVM_X86_SETUP_MCE); IOC(KVM_SET_TSC_KHZ); IOC(KVM_GET_TSC_KHZ);
  IOC(KVM_GET_SUPPORTED_HV_CPUID); IOC(KVM_XEN_HVM_CONFIG);
  IOC(KVM_SET_IDENTITY_MAP_ADDR);
  IOC(KVM_GET_DIRTY_LOG);
  IOC(KVM_CLEAR_DIRTY_LOG);
  IOC(KVM_IRQ_LINE);
  IOC(KVM_GET_IRQCHIP);
  IOC(KVM_SET_IRQCHIP);
  IOC(KVM_REGISTER_COALESCED_MMIO);
  IOC(KVM_IRQ_LINE_STATUS);
  IOC(KVM_UNREGISTER_COALESCED_MMIO);
  IOC(KVM_SET_GSI_ROUTING);
  IOC(KVM_IRQFD);
  IOC(KVM_CREATE_PIT2);
  IOC(KVM_IOEVENTFD);
  IOC(KVM_SET_CLOCK);
  IOC(KVM_GET_CLOCK);
  IOC(KVM_GET_PIT2);
  IOC(KVM_SET_PIT2);
  IOC(KVM_SIGNAL_MSI);
  IOC(KVM_SET_DEVICE_ATTR);
  IOC(KVM_GET_DEVICE_ATTR);
  IOC(KVM_HAS_DEVICE_ATTR);
  IOC(KVM_GET_FPU);
  IOC(KVM_SET_FPU);
  IOC(KVM_SET_SIGNAL_MASK);
  IOC(KVM_TPR_ACCESS_REPORTING);
  IOC(KVM_SET_VAPIC_ADDR);
  IOC(KVM_GET_MP_STATE);
  IOC(KVM_SET_MP_STATE);
  IOC(KVM_GET_VCPU_EVENTS);
  IOC(KVM_SET_VCPU_EVENTS);
  IOC(KVM_GET_DEBUGREGS);
  IOC(KVM_SET_DEBUGREGS);
  IOC(KVM_GET_XSAVE);
  IOC(KVM_SET_XSAVE);
  IOC(KVM_GET_XCRS);
  IOC(KVM_SET_XCRS);
  IOC(KVM_GET_SREGS2);
  IOC(KVM_SET_SREGS2);
  IOC(KVM_GET_XSAVE2);
  IOC(KVM_GET_NESTED_STATE);
  IOC(KVM_SET_NESTED_STATE);
  IOC(KVM_SET_USER_MEMORY_REGION2);
  IOC(KVM_SET_NR_MMU_PAGES); IOC(KVM_GET_NR_MMU_PAGES); IOC(KVM_REINJECT_CONTROL); IOC(KVM_SET_BOOT_CPU_ID); IOC(KVM_INTERRUPT); IOC(KVM_NMI);
  IOC(KVM_X86_SET_MCE); IOC(KVM_GET_ONE_REG); IOC(KVM_SET_ONE_REG); IOC(KVM_GET_REG_LIST); IOC(KVM_SET_PMU_EVENT_FILTER);
  IOC(KVM_SMI); IOC(KVM_RESET_DIRTY_RINGS); IOC(KVM_GET_STATS_FD); IOC(KVM_CREATE_DEVICE); IOC(KVM_HYPERV_EVENTFD);
  IOC(KVM_SET_MEMORY_ATTRIBUTES); IOC(KVM_CREATE_GUEST_MEMFD); IOC(KVM_PRE_FAULT_MEMORY);
  SZ(kvm_regs); SZ(kvm_sregs2); SZ(kvm_fpu); SZ(kvm_xsave); SZ(kvm_xcrs); SZ(kvm_lapic_state); SZ(kvm_vcpu_events);
  SZ(kvm_debugregs); SZ(kvm_pic_state); SZ(kvm_ioapic_state); SZ(kvm_pit_state2); SZ(kvm_clock_data); SZ(kvm_irqchip);
  SZ(kvm_ioeventfd); SZ(kvm_irq_routing_entry); SZ(kvm_dirty_log); SZ(kvm_clear_dirty_log); SZ(kvm_device_attr);
  OFF(kvm_ioeventfd, flags); OFF(kvm_vcpu_events, flags); OFF(kvm_vcpu_events, exception_payload); OFF(kvm_debugregs, flags);
  OFF(kvm_pit_state2, flags); OFF(kvm_pit_channel_state, count_load_time); OFF(kvm_clock_data, realtime); OFF(kvm_xsave, region);
  SZ(kvm_msr_entry); OFF(kvm_msr_entry, index); OFF(kvm_msr_entry, reserved); OFF(kvm_msr_entry, data);
  SZ(kvm_msrs); OFF(kvm_msrs, nmsrs); OFF(kvm_msrs, pad); OFF(kvm_msrs, entries);
  SZ(kvm_msr_list); OFF(kvm_msr_list, nmsrs); OFF(kvm_msr_list, indices);
  SZ(kvm_msr_filter_range); OFF(kvm_msr_filter_range, flags); OFF(kvm_msr_filter_range, nmsrs);
  OFF(kvm_msr_filter_range, base); OFF(kvm_msr_filter_range, bitmap);
  SZ(kvm_msr_filter); OFF(kvm_msr_filter, flags); OFF(kvm_msr_filter, ranges);
  SZ(kvm_cpuid_entry2); OFF(kvm_cpuid_entry2, function); OFF(kvm_cpuid_entry2, index); OFF(kvm_cpuid_entry2, flags);
  OFF(kvm_cpuid_entry2, eax); OFF(kvm_cpuid_entry2, ebx); OFF(kvm_cpuid_entry2, ecx); OFF(kvm_cpuid_entry2, edx);
  OFF(kvm_cpuid_entry2, padding);
  SZ(kvm_cpuid2); OFF(kvm_cpuid2, nent); OFF(kvm_cpuid2, padding); OFF(kvm_cpuid2, entries);
  SZ(kvm_enable_cap); OFF(kvm_enable_cap, cap); OFF(kvm_enable_cap, flags); OFF(kvm_enable_cap, args); OFF(kvm_enable_cap, pad);
  SZ(kvm_sregs); OFF(kvm_sregs, fs); OFF(kvm_sregs, gs); OFF(kvm_sregs, efer); OFF(kvm_sregs, apic_base); OFF(kvm_segment, base);
  OFF(kvm_run, exit_reason); OFF(kvm_run, request_interrupt_window); OFF(kvm_run, immediate_exit); OFF(kvm_run, ready_for_interrupt_injection);
  OFF(kvm_run, if_flag); OFF(kvm_run, flags); OFF(kvm_run, cr8); OFF(kvm_run, apic_base); OFF(kvm_run, kvm_valid_regs); OFF(kvm_run, kvm_dirty_regs);
  OFF(kvm_run, s.regs.regs); OFF(kvm_run, s.regs.sregs); OFF(kvm_run, s.regs.events); OFF(kvm_guest_debug, control); OFF(kvm_guest_debug, arch.debugreg);
  printf("size kvm_guest_debug %zu\n", sizeof(struct kvm_guest_debug));
  VAL(KVM_EXIT_UNKNOWN); VAL(KVM_EXIT_HLT); VAL(KVM_EXIT_INTR); VAL(KVM_RUN_X86_SMM); VAL(KVM_SYNC_X86_VALID_FIELDS);
  VAL(KVM_GUESTDBG_ENABLE); VAL(KVM_GUESTDBG_SINGLESTEP); VAL(KVM_GUESTDBG_USE_SW_BP); VAL(KVM_GUESTDBG_USE_HW_BP); VAL(KVM_GUESTDBG_INJECT_DB);
  VAL(KVM_GUESTDBG_INJECT_BP); VAL(KVM_GUESTDBG_BLOCKIRQ);
  OFF(kvm_run, msr.error); OFF(kvm_run, msr.reason); OFF(kvm_run, msr.index); OFF(kvm_run, msr.data);
  CAP(KVM_CAP_IRQCHIP); CAP(KVM_CAP_NR_VCPUS); CAP(KVM_CAP_XCRS); CAP(KVM_CAP_TSC_CONTROL); CAP(KVM_CAP_GET_TSC_KHZ); CAP(KVM_CAP_MAX_VCPUS);
  CAP(KVM_CAP_X86_SMM); CAP(KVM_CAP_MULTI_ADDRESS_SPACE); CAP(KVM_CAP_SPLIT_IRQCHIP); CAP(KVM_CAP_MAX_VCPU_ID); CAP(KVM_CAP_GET_MSR_FEATURES); CAP(KVM_CAP_MSR_PLATFORM_INFO);
  CAP(KVM_CAP_X86_USER_SPACE_MSR); CAP(KVM_CAP_X86_MSR_FILTER); CAP(KVM_CAP_ENFORCE_PV_FEATURE_CPUID);
  CAP(KVM_CAP_EXCEPTION_PAYLOAD); CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2); CAP(KVM_CAP_X86_TRIPLE_FAULT_EVENT);
  CAP(KVM_CAP_USER_MEMORY2); CAP(KVM_CAP_XEN_HVM); CAP(KVM_CAP_HYPERV); CAP(KVM_CAP_HYPERV_SYNIC); CAP(KVM_CAP_HYPERV_SYNIC2);
  CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS); CAP(KVM_CAP_HYPERV_DIRECT_TLBFLUSH); CAP(KVM_CAP_HYPERV_ENFORCE_CPUID); CAP(KVM_CAP_XSAVE2);
  CAP(KVM_CAP_ONE_REG); CAP(KVM_CAP_DISABLE_QUIRKS); CAP(KVM_CAP_X2APIC_API); CAP(KVM_CAP_X86_DISABLE_EXITS); CAP(KVM_CAP_HALT_POLL);
  CAP(KVM_CAP_DIRTY_LOG_RING); CAP(KVM_CAP_SGX_ATTRIBUTE); CAP(KVM_CAP_VM_COPY_ENC_CONTEXT_FROM); CAP(KVM_CAP_EXIT_HYPERCALL);
  CAP(KVM_CAP_EXIT_ON_EMULATION_FAILURE); CAP(KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM); CAP(KVM_CAP_DISABLE_QUIRKS2);
  CAP(KVM_CAP_VM_DISABLE_NX_HUGE_PAGES); CAP(KVM_CAP_DIRTY_LOG_RING_ACQ_REL); CAP(KVM_CAP_PMU_EVENT_MASKED_EVENTS);
  CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS);
  VAL(KVM_API_VERSION); VAL(KVM_MSR_FILTER_MAX_RANGES); VAL(KVM_MSR_FILTER_MAX_BITMAP_SIZE); VAL(KVM_MSR_FILTER_READ);
  VAL(KVM_MSR_FILTER_WRITE); VAL(KVM_MSR_FILTER_DEFAULT_DENY); VAL(KVM_MSR_EXIT_REASON_INVAL);
  VAL(KVM_MSR_EXIT_REASON_UNKNOWN); VAL(KVM_MSR_EXIT_REASON_FILTER);
  return 0;
}
