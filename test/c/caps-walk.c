/*
 * Every capability the host reports, served: for each KVM_CHECK_EXTENSION that is not 0 (on /dev/kvm
 * or on a VM), the calls that capability advertises, made the way a VMM makes them, on fresh VMs
 * and vCPUs, with what each answered. test/caps-walk.test.ts runs it on the real kernel and under
 * `kvmsr run`; the two must print the same. A capability this program does not know is printed as
 * "NOT WALKED", so a profile that gains one fails until it is walked here.
 *   caps-walk            every capability
 *   caps-walk N ...      only those
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KVM_SET_USER_MEMORY_REGION2
struct kvm_userspace_memory_region2 {
  uint32_t slot, flags;
  uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
  uint32_t guest_memfd, pad1;
  uint64_t pad2[14];
};
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#endif
#ifndef KVM_GET_SREGS2
struct kvm_sregs2_raw { unsigned char b[320]; };
#define KVM_GET_SREGS2 _IOR(KVMIO, 0xcc, struct kvm_sregs2_raw)
#endif
#define KVM_PMU_EVENT_FLAG_MASKED_EVENTS_ (1u << 0)
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define MSR_IA32_MC0_STATUS 0x401u

static int kvm;
static unsigned char *guest;

#define R(expr) report(#expr, (expr))
static int report(const char *what, long ret) {
  int e = errno;
  printf("  %s = %ld%s%s\n", what, ret, ret < 0 ? " errno " : "", ret < 0 ? strerrorname_np(e) ? strerrorname_np(e) : "?" : "");
  errno = e;
  return (int)ret;
}

static int new_vm(void) { return ioctl(kvm, KVM_CREATE_VM, 0); }
static int vm_irqchip(void) {
  int vm = new_vm();
  ioctl(vm, KVM_CREATE_IRQCHIP, 0);
  return vm;
}
static int vcpu_of(int vm, int id) { return ioctl(vm, KVM_CREATE_VCPU, id); }
static int guest_slot(int vm) {
  struct kvm_userspace_memory_region s = {.slot = 0, .guest_phys_addr = 0, .memory_size = 0x100000, .userspace_addr = (uint64_t)(uintptr_t)guest};
  return ioctl(vm, KVM_SET_USER_MEMORY_REGION, &s);
}
static int enable(int fd, uint32_t cap, uint64_t a0) {
  struct kvm_enable_cap c = {.cap = cap, .args = {a0}};
  return ioctl(fd, KVM_ENABLE_CAP, &c);
}
static long msr_get(int vcpu, uint32_t index, uint64_t *v) {
  struct { struct kvm_msrs h; struct kvm_msr_entry e; } b = {{.nmsrs = 1}, {.index = index}};
  long r = ioctl(vcpu, KVM_GET_MSRS, &b);
  *v = b.e.data;
  return r;
}
static long msr_set(int vcpu, uint32_t index, uint64_t v) {
  struct { struct kvm_msrs h; struct kvm_msr_entry e; } b = {{.nmsrs = 1}, {.index = index, .data = v}};
  return ioctl(vcpu, KVM_SET_MSRS, &b);
}
/* The host's supported CPUID, set on the vCPU (what every VMM does first). */
static int set_cpuid(int vcpu) {
  static struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[256]; } c;
  memset(&c, 0, sizeof c);
  c.h.nent = 256;
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &c)) return -1;
  return ioctl(vcpu, KVM_SET_CPUID2, &c);
}

static void walk(int cap, long sys, long vmv) {
  int vm = -1, vm2 = -1, vcpu = -1;
  switch (cap) {
  case KVM_CAP_IRQCHIP:
    vm = new_vm();
    R(ioctl(vm, KVM_CREATE_IRQCHIP, 0));
    R(ioctl(vm, KVM_CREATE_IRQCHIP, 0));
    break;
  case KVM_CAP_MMU_SHADOW_CACHE_CONTROL:
    vm = new_vm();
    R(ioctl(vm, KVM_SET_NR_MMU_PAGES, 64));
    R(ioctl(vm, KVM_SET_NR_MMU_PAGES, 1024));
    R(ioctl(vm, KVM_GET_NR_MMU_PAGES, 0));
    break;
  case KVM_CAP_USER_MEMORY:
  case KVM_CAP_DESTROY_MEMORY_REGION_WORKS:
  case KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: {
    vm = new_vm();
    R(guest_slot(vm));
    struct kvm_userspace_memory_region del = {.slot = 0};
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &del));
    break;
  }
  case KVM_CAP_SET_TSS_ADDR:
    vm = new_vm();
    R(ioctl(vm, KVM_SET_TSS_ADDR, 0xfeffd000ul));
    R(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffff000ul));
    R(ioctl(vm, KVM_SET_TSS_ADDR, 0x100000000ul));
    break;
  case KVM_CAP_VAPIC: {
    vm = vm_irqchip();
    vcpu = vcpu_of(vm, 0);
    struct kvm_tpr_access_ctl t = {.enabled = 1};
    R(ioctl(vcpu, KVM_TPR_ACCESS_REPORTING, &t));
    struct kvm_vapic_addr va = {.vapic_addr = 0x1000};
    R(ioctl(vcpu, KVM_SET_VAPIC_ADDR, &va));
    break;
  }
  case KVM_CAP_EXT_CPUID:
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    R(set_cpuid(vcpu));
    break;
  case KVM_CAP_NR_VCPUS:
  case KVM_CAP_MAX_VCPUS:
    vm = new_vm();
    R(vcpu_of(vm, 0) >= 0);
    break;
  case KVM_CAP_NR_MEMSLOTS: {
    vm = new_vm();
    struct kvm_userspace_memory_region s = {.slot = (uint32_t)vmv - 1, .guest_phys_addr = 0x100000, .memory_size = 0x1000, .userspace_addr = (uint64_t)(uintptr_t)guest};
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &s));
    s.slot = (uint32_t)vmv;
    s.guest_phys_addr = 0x200000;
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &s));
    break;
  }
  case KVM_CAP_MAX_VCPU_ID:
    vm = new_vm();
    R(vcpu_of(vm, (int)vmv - 1) >= 0);
    R(vcpu_of(vm, (int)vmv));
    break;
  case KVM_CAP_PIT:
  case KVM_CAP_PIT2:
  case KVM_CAP_PIT_STATE2:
  case KVM_CAP_REINJECT_CONTROL: {
    vm = vm_irqchip();
    struct kvm_pit_config pc = {.flags = 0};
    R(ioctl(vm, KVM_CREATE_PIT2, &pc));
    struct kvm_pit_state2 ps;
    R(ioctl(vm, KVM_GET_PIT2, &ps));
    struct kvm_reinject_control rc = {.pit_reinject = 0};
    R(ioctl(vm, KVM_REINJECT_CONTROL, &rc));
    break;
  }
  case KVM_CAP_MP_STATE: {
    vm = vm_irqchip();
    vcpu = vcpu_of(vm, 0);
    struct kvm_mp_state mp;
    R(ioctl(vcpu, KVM_GET_MP_STATE, &mp));
    printf("  mp_state %u\n", mp.mp_state);
    break;
  }
  case KVM_CAP_COALESCED_MMIO:
  case KVM_CAP_COALESCED_PIO: {
    vm = new_vm();
    struct kvm_coalesced_mmio_zone z = {.addr = cap == KVM_CAP_COALESCED_PIO ? 0x70 : 0xa0000, .size = 2, .pio = cap == KVM_CAP_COALESCED_PIO};
    R(ioctl(vm, KVM_REGISTER_COALESCED_MMIO, &z));
    R(ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, &z));
    break;
  }
  case KVM_CAP_USER_NMI: {
    vm = vm_irqchip();
    vcpu = vcpu_of(vm, 0);
    R(ioctl(vcpu, KVM_NMI, 0));
    struct kvm_vcpu_events ev;
    R(ioctl(vcpu, KVM_GET_VCPU_EVENTS, &ev));
    printf("  nmi pending %u injected %u\n", ev.nmi.pending, ev.nmi.injected);
    vm2 = new_vm();
    int v2 = vcpu_of(vm2, 0);
    struct kvm_interrupt irq = {.irq = 0x20};
    R(ioctl(v2, KVM_INTERRUPT, &irq));
    irq.irq = 256;
    R(ioctl(v2, KVM_INTERRUPT, &irq));
    irq.irq = 0x21;
    R(ioctl(vcpu, KVM_INTERRUPT, &irq));
    R(ioctl(v2, KVM_NMI, 0));
    close(v2);
    break;
  }
  case KVM_CAP_SET_GUEST_DEBUG:
  case KVM_CAP_SET_GUEST_DEBUG2: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    struct kvm_guest_debug d = {.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP};
    R(ioctl(vcpu, KVM_SET_GUEST_DEBUG, &d));
    d.control = 0;
    R(ioctl(vcpu, KVM_SET_GUEST_DEBUG, &d));
    break;
  }
  case KVM_CAP_IRQ_ROUTING: {
    vm = vm_irqchip();
    struct { struct kvm_irq_routing h; struct kvm_irq_routing_entry e[1]; } r = {{.nr = 1}, {{.gsi = 5, .type = KVM_IRQ_ROUTING_IRQCHIP, .u.irqchip = {.irqchip = 2, .pin = 5}}}};
    R(ioctl(vm, KVM_SET_GSI_ROUTING, &r));
    break;
  }
  case KVM_CAP_IRQ_INJECT_STATUS: {
    vm = vm_irqchip();
    struct kvm_irq_level l = {.irq = 4, .level = 1};
    R(ioctl(vm, KVM_IRQ_LINE_STATUS, &l));
    printf("  status %d\n", l.status);
    break;
  }
  case KVM_CAP_MCE: {
    uint64_t mcg = 0;
    R(ioctl(kvm, KVM_X86_GET_MCE_CAP_SUPPORTED, &mcg));
    printf("  mcg_cap 0x%llx\n", (unsigned long long)mcg);
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    uint64_t setup = (mcg & ~0xffull) | 10;
    R(ioctl(vcpu, KVM_X86_SETUP_MCE, &setup));
    struct kvm_x86_mce m = {.bank = 1, .status = 0xbe00000000800400ull, .addr = 0x1234000, .misc = 0x86, .mcg_status = 5};
    R(ioctl(vcpu, KVM_X86_SET_MCE, &m));
    uint64_t v = 0;
    R(msr_get(vcpu, MSR_IA32_MC0_STATUS + 4, &v));
    printf("  MC1_STATUS 0x%llx\n", (unsigned long long)v);
    R(msr_get(vcpu, 0x17a, &v)); /* MCG_STATUS */
    printf("  MCG_STATUS 0x%llx\n", (unsigned long long)v);
    m.bank = 10;
    R(ioctl(vcpu, KVM_X86_SET_MCE, &m));
    m.bank = 2;
    m.status = 0x8000000000000000ull; /* corrected (UC clear): logged, no #MC */
    R(ioctl(vcpu, KVM_X86_SET_MCE, &m));
    R(msr_get(vcpu, MSR_IA32_MC0_STATUS + 8, &v));
    printf("  MC2_STATUS 0x%llx\n", (unsigned long long)v);
    break;
  }
  case KVM_CAP_IRQFD:
  case KVM_CAP_IRQFD_RESAMPLE: {
    vm = vm_irqchip();
    int efd = eventfd(0, EFD_CLOEXEC), rfd = eventfd(0, EFD_CLOEXEC);
    struct kvm_irqfd f = {.fd = (uint32_t)efd, .gsi = 5};
    if (cap == KVM_CAP_IRQFD_RESAMPLE) { f.flags = KVM_IRQFD_FLAG_RESAMPLE; f.resamplefd = (uint32_t)rfd; }
    R(ioctl(vm, KVM_IRQFD, &f));
    f.flags = KVM_IRQFD_FLAG_DEASSIGN;
    R(ioctl(vm, KVM_IRQFD, &f));
    close(efd);
    close(rfd);
    break;
  }
  case KVM_CAP_SET_BOOT_CPU_ID: {
    vm = vm_irqchip();
    R(ioctl(vm, KVM_SET_BOOT_CPU_ID, 1));
    int v0 = vcpu_of(vm, 0);
    vcpu = vcpu_of(vm, 1);
    uint64_t b0 = 0, b1 = 0;
    msr_get(v0, 0x1b, &b0);
    msr_get(vcpu, 0x1b, &b1);
    printf("  APIC_BASE vcpu0 0x%llx vcpu1 0x%llx\n", (unsigned long long)b0, (unsigned long long)b1);
    struct kvm_mp_state m0, m1;
    ioctl(v0, KVM_GET_MP_STATE, &m0);
    ioctl(vcpu, KVM_GET_MP_STATE, &m1);
    printf("  mp_state vcpu0 %u vcpu1 %u\n", m0.mp_state, m1.mp_state);
    R(ioctl(vm, KVM_SET_BOOT_CPU_ID, 0));
    close(v0);
    vm2 = new_vm();
    R(ioctl(vm2, KVM_SET_BOOT_CPU_ID, 5000));
    break;
  }
  case KVM_CAP_IOEVENTFD:
  case KVM_CAP_IOEVENTFD_NO_LENGTH:
  case KVM_CAP_IOEVENTFD_ANY_LENGTH: {
    vm = new_vm();
    int efd = eventfd(0, EFD_CLOEXEC);
    struct kvm_ioeventfd io = {.addr = 0xfe000000, .len = cap == KVM_CAP_IOEVENTFD_NO_LENGTH ? 0 : cap == KVM_CAP_IOEVENTFD_ANY_LENGTH ? 3 : 4, .fd = efd};
    R(ioctl(vm, KVM_IOEVENTFD, &io));
    io.flags = KVM_IOEVENTFD_FLAG_DEASSIGN;
    R(ioctl(vm, KVM_IOEVENTFD, &io));
    close(efd);
    break;
  }
  case KVM_CAP_SET_IDENTITY_MAP_ADDR: {
    vm = new_vm();
    uint64_t a = 0xfeffc000;
    R(ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &a));
    break;
  }
  case KVM_CAP_ADJUST_CLOCK: {
    vm = new_vm();
    struct kvm_clock_data c;
    memset(&c, 0, sizeof c);
    R(ioctl(vm, KVM_GET_CLOCK, &c));
    printf("  flags 0x%x\n", c.flags);
    c.flags = 0;
    c.clock = 1000000000ull;
    R(ioctl(vm, KVM_SET_CLOCK, &c));
    break;
  }
  case KVM_CAP_VCPU_EVENTS: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    struct kvm_vcpu_events e;
    R(ioctl(vcpu, KVM_GET_VCPU_EVENTS, &e));
    R(ioctl(vcpu, KVM_SET_VCPU_EVENTS, &e));
    break;
  }
  case KVM_CAP_DEBUGREGS: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    struct kvm_debugregs d;
    R(ioctl(vcpu, KVM_GET_DEBUGREGS, &d));
    R(ioctl(vcpu, KVM_SET_DEBUGREGS, &d));
    break;
  }
  case KVM_CAP_ENABLE_CAP:
  case KVM_CAP_ENFORCE_PV_FEATURE_CPUID:
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    R(enable(vcpu, KVM_CAP_ENFORCE_PV_FEATURE_CPUID, 1));
    break;
  case KVM_CAP_XSAVE:
  case KVM_CAP_XSAVE2: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    static unsigned char x[16384];
    R(ioctl(vcpu, KVM_GET_XSAVE, x));
    R(ioctl(vcpu, KVM_SET_XSAVE, x));
    if (cap == KVM_CAP_XSAVE2) R(ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2));
    break;
  }
  case KVM_CAP_XCRS: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    struct kvm_xcrs x;
    R(ioctl(vcpu, KVM_GET_XCRS, &x));
    R(ioctl(vcpu, KVM_SET_XCRS, &x));
    break;
  }
  case KVM_CAP_GET_TSC_KHZ:
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    R(ioctl(vcpu, KVM_GET_TSC_KHZ, 0) > 0);
    break;
  case KVM_CAP_SYNC_REGS: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;
    run->immediate_exit = 1;
    R(ioctl(vcpu, KVM_RUN, 0));
    printf("  rip 0x%llx cs.base 0x%llx\n", (unsigned long long)run->s.regs.regs.rip, (unsigned long long)run->s.regs.sregs.cs.base);
    munmap(run, (size_t)size);
    break;
  }
  case KVM_CAP_KVMCLOCK_CTRL:
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    R(ioctl(vcpu, KVM_KVMCLOCK_CTRL, 0));
    guest_slot(vm);
    set_cpuid(vcpu);
    R(msr_set(vcpu, MSR_KVM_SYSTEM_TIME_NEW, 0x2001));
    R(ioctl(vcpu, KVM_KVMCLOCK_CTRL, 0));
    break;
  case KVM_CAP_SIGNAL_MSI: {
    vm = vm_irqchip();
    vcpu = vcpu_of(vm, 0);
    struct kvm_msi m = {.address_lo = 0xfee00000, .data = 0x31};
    R(ioctl(vm, KVM_SIGNAL_MSI, &m));
    break;
  }
  case KVM_CAP_READONLY_MEM: {
    vm = new_vm();
    struct kvm_userspace_memory_region s = {.slot = 1, .flags = KVM_MEM_READONLY, .guest_phys_addr = 0xfff00000, .memory_size = 0x100000, .userspace_addr = (uint64_t)(uintptr_t)guest};
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &s));
    break;
  }
  case KVM_CAP_DEVICE_CTRL: {
    vm = new_vm();
    struct kvm_create_device d = {.type = KVM_DEV_TYPE_VFIO, .flags = KVM_CREATE_DEVICE_TEST};
    R(ioctl(vm, KVM_CREATE_DEVICE, &d));
    d.type = 1000;
    R(ioctl(vm, KVM_CREATE_DEVICE, &d));
    break;
  }
  case KVM_CAP_EXT_EMUL_CPUID: {
    static struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[100]; } c;
    c.h.nent = 100;
    R(ioctl(kvm, KVM_GET_EMULATED_CPUID, &c));
    printf("  %u entries\n", c.h.nent);
    break;
  }
  case KVM_CAP_ENABLE_CAP_VM:
  case KVM_CAP_CHECK_EXTENSION_VM:
    vm = new_vm();
    R(ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_ENABLE_CAP_VM));
    R(enable(vm, KVM_CAP_EXCEPTION_PAYLOAD, 1));
    break;
  case KVM_CAP_DISABLE_QUIRKS:
    vm = new_vm();
    R(enable(vm, KVM_CAP_DISABLE_QUIRKS, 0x4));
    break;
  case 213: /* KVM_CAP_DISABLE_QUIRKS2 */
    vm = new_vm();
    R(enable(vm, 213, (uint64_t)vmv));
    R(enable(vm, 213, (uint64_t)vmv | (1ull << 40)));
    break;
  case KVM_CAP_SPLIT_IRQCHIP:
    vm = new_vm();
    R(enable(vm, KVM_CAP_SPLIT_IRQCHIP, 24));
    R(ioctl(vm, KVM_CREATE_IRQCHIP, 0));
    R(enable(vm, KVM_CAP_SPLIT_IRQCHIP, 24));
    vcpu = vcpu_of(vm, 0);
    {
      struct kvm_interrupt irq = {.irq = 0x30};
      R(ioctl(vcpu, KVM_INTERRUPT, &irq));
      R(ioctl(vcpu, KVM_INTERRUPT, &irq));
    }
    vm2 = new_vm();
    R(enable(vm2, KVM_CAP_SPLIT_IRQCHIP, 25));
    break;
  case KVM_CAP_VCPU_ATTRIBUTES: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    uint64_t off = 0;
    struct kvm_device_attr a = {.group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET, .addr = (uint64_t)(uintptr_t)&off};
    R(ioctl(vcpu, KVM_HAS_DEVICE_ATTR, &a));
    R(ioctl(vcpu, KVM_GET_DEVICE_ATTR, &a));
    R(ioctl(vcpu, KVM_SET_DEVICE_ATTR, &a));
    a.attr = 1;
    R(ioctl(vcpu, KVM_HAS_DEVICE_ATTR, &a));
    break;
  }
  case KVM_CAP_X2APIC_API:
    vm = new_vm();
    R(enable(vm, KVM_CAP_X2APIC_API, 3));
    R(enable(vm, KVM_CAP_X2APIC_API, 1ull << 10));
    break;
  case KVM_CAP_IMMEDIATE_EXIT: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    run->immediate_exit = 1;
    R(ioctl(vcpu, KVM_RUN, 0));
    munmap(run, (size_t)size);
    break;
  }
  case KVM_CAP_X86_DISABLE_EXITS:
    vm = new_vm();
    R(enable(vm, KVM_CAP_X86_DISABLE_EXITS, (uint64_t)vmv));
    R(enable(vm, KVM_CAP_X86_DISABLE_EXITS, 1ull << 9));
    break;
  case KVM_CAP_GET_MSR_FEATURES: {
    struct { struct kvm_msr_list h; uint32_t i[256]; } l = {{.nmsrs = 256}};
    R(ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, &l));
    break;
  }
  case KVM_CAP_MSR_PLATFORM_INFO:
    vm = new_vm();
    R(enable(vm, KVM_CAP_MSR_PLATFORM_INFO, 0));
    break;
  case KVM_CAP_EXCEPTION_PAYLOAD:
    vm = new_vm();
    R(enable(vm, KVM_CAP_EXCEPTION_PAYLOAD, 1));
    break;
  case KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
    vm = new_vm();
    R(enable(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, (uint64_t)vmv));
    break;
  case KVM_CAP_PMU_EVENT_FILTER:
  case 226: /* KVM_CAP_PMU_EVENT_MASKED_EVENTS */ {
    vm = new_vm();
    struct { struct kvm_pmu_event_filter h; uint64_t ev[2]; } f;
    memset(&f, 0, sizeof f);
    f.h.action = KVM_PMU_EVENT_DENY;
    f.h.nevents = 1;
    f.ev[0] = 0x003c; /* unhalted core cycles */
    if (cap == 226) { f.h.flags = KVM_PMU_EVENT_FLAG_MASKED_EVENTS_; f.ev[0] = 0x3c | (0xffull << 56); }
    R(ioctl(vm, KVM_SET_PMU_EVENT_FILTER, &f));
    f.h.action = 7;
    R(ioctl(vm, KVM_SET_PMU_EVENT_FILTER, &f));
    break;
  }
  case KVM_CAP_HALT_POLL:
    vm = new_vm();
    R(enable(vm, KVM_CAP_HALT_POLL, 200000));
    R(enable(vm, KVM_CAP_HALT_POLL, 1ull << 32));
    break;
  case KVM_CAP_X86_USER_SPACE_MSR:
    vm = new_vm();
    R(enable(vm, KVM_CAP_X86_USER_SPACE_MSR, 7));
    break;
  case KVM_CAP_X86_MSR_FILTER: {
    vm = new_vm();
    struct kvm_msr_filter f;
    memset(&f, 0, sizeof f);
    R(ioctl(vm, KVM_X86_SET_MSR_FILTER, &f));
    break;
  }
  case KVM_CAP_DIRTY_LOG_RING:
  case KVM_CAP_DIRTY_LOG_RING_ACQ_REL:
    vm = new_vm();
    R(enable(vm, cap, 65536));
    R(enable(vm, cap, 65536));
    vcpu = vcpu_of(vm, 0);
    R(ioctl(vm, KVM_RESET_DIRTY_RINGS, 0));
    vm2 = new_vm();
    R(enable(vm2, cap, 1000));
    break;
  case KVM_CAP_VM_COPY_ENC_CONTEXT_FROM:
  case KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM:
    vm = new_vm();
    vm2 = new_vm();
    R(enable(vm, cap, (uint64_t)vm2));
    break;
  case KVM_CAP_SREGS2: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    static unsigned char s[512];
    R(ioctl(vcpu, KVM_GET_SREGS2, s));
    break;
  }
  case KVM_CAP_EXIT_HYPERCALL:
    vm = new_vm();
    R(enable(vm, KVM_CAP_EXIT_HYPERCALL, (uint64_t)vmv));
    R(enable(vm, KVM_CAP_EXIT_HYPERCALL, 1));
    break;
  case KVM_CAP_BINARY_STATS_FD: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    for (int which = 0; which < 2; which++) {
      int sfd = which ? ioctl(vcpu, KVM_GET_STATS_FD, 0) : ioctl(vm, KVM_GET_STATS_FD, 0);
      printf("  KVM_GET_STATS_FD on the %s: %s\n", which ? "vCPU" : "VM", sfd >= 0 ? "an fd" : strerror(errno));
      if (sfd < 0) continue;
      struct kvm_stats_header h;
      char id[256] = {0};
      ssize_t n = pread(sfd, &h, sizeof h, 0);
      if (n == (ssize_t)sizeof h && h.name_size < sizeof id) pread(sfd, id, h.name_size, h.id_offset);
      /* the id names the creating thread: only its shape is printed */
      printf("  header %zd bytes: flags %u name_size %u num_desc %u; id %s\n", n, h.flags, h.name_size, h.num_desc,
             !strncmp(id, "kvm-", 4) ? (strstr(id, "/vcpu-0") ? "kvm-<tid>/vcpu-0" : "kvm-<tid>") : id);
      ssize_t w = write(sfd, &h, 1);
      printf("  write: %zd %s\n", w, w < 0 ? strerrorname_np(errno) : "");
      close(sfd);
    }
    break;
  }
  case KVM_CAP_EXIT_ON_EMULATION_FAILURE:
    vm = new_vm();
    R(enable(vm, KVM_CAP_EXIT_ON_EMULATION_FAILURE, 1));
    R(enable(vm, KVM_CAP_EXIT_ON_EMULATION_FAILURE, 2));
    break;
  case KVM_CAP_SYS_ATTRIBUTES: {
    uint64_t v = 0;
    struct kvm_device_attr a = {.group = 0, .attr = KVM_X86_XCOMP_GUEST_SUPP, .addr = (uint64_t)(uintptr_t)&v};
    R(ioctl(kvm, KVM_HAS_DEVICE_ATTR, &a));
    R(ioctl(kvm, KVM_GET_DEVICE_ATTR, &a));
    printf("  XCOMP_GUEST_SUPP 0x%llx\n", (unsigned long long)v);
    break;
  }
  case KVM_CAP_X86_TRIPLE_FAULT_EVENT:
    vm = new_vm();
    R(enable(vm, KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1));
    break;
  case KVM_CAP_VM_DISABLE_NX_HUGE_PAGES:
    vm = new_vm();
    R(enable(vm, KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, 1));
    R(enable(vm, KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, 0));
    break;
  case 231: { /* KVM_CAP_USER_MEMORY2 */
    vm = new_vm();
    struct kvm_userspace_memory_region2 s;
    memset(&s, 0, sizeof s);
    s.memory_size = 0x100000;
    s.userspace_addr = (uint64_t)(uintptr_t)guest;
    s.flags = KVM_MEM_LOG_DIRTY_PAGES;
    s.slot = 7; /* a slot no other walk makes */
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &s));
    static uint64_t bitmap[4];
    struct kvm_dirty_log d = {.slot = 7, .dirty_bitmap = bitmap};
    R(ioctl(vm, KVM_GET_DIRTY_LOG, &d)); /* the bitmap's size comes from the slot REGION2 made */
    break;
  }
  case 235: /* KVM_CAP_VM_TYPES */
    printf("  types 0x%lx\n", vmv);
    R((vm = ioctl(kvm, KVM_CREATE_VM, 0)) >= 0);
    R(ioctl(kvm, KVM_CREATE_VM, 31));
    break;
  case 237: /* KVM_CAP_X86_APIC_BUS_CYCLES_NS */
    vm = new_vm();
    R(enable(vm, 237, 2));
    ioctl(vm, KVM_CREATE_IRQCHIP, 0);
    R(enable(vm, 237, 2));
    R(enable(vm, 237, 0));
    vcpu = vcpu_of(vm, 0);
    R(enable(vm, 237, 3));
    break;
  case 38: { /* KVM_CAP_XEN_HVM */
    vm = new_vm();
    struct kvm_xen_hvm_config x = {.msr = 0x40000200};
    R(ioctl(vm, KVM_XEN_HVM_CONFIG, &x));
    x.flags = 1u << 31;
    R(ioctl(vm, KVM_XEN_HVM_CONFIG, &x));
    break;
  }
  case 44: case 45: case 46: case 96: case 149: case 155: case 161: /* KVM_CAP_HYPERV... */
  case 167: case 191: /* KVM_CAP_HYPERV_CPUID, KVM_CAP_SYS_HYPERV_CPUID */ {
    static struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[20]; } c;
    c.h.nent = 20;
    R(ioctl(kvm, KVM_GET_SUPPORTED_HV_CPUID, &c));
    printf("  %u entries\n", c.h.nent);
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    c.h.nent = 20;
    R(ioctl(vcpu, KVM_GET_SUPPORTED_HV_CPUID, &c));
    break;
  }
  case 123: case 148: /* KVM_CAP_HYPERV_SYNIC(2) */
    vm = vm_irqchip();
    vcpu = vcpu_of(vm, 0);
    R(enable(vcpu, cap, 0));
    break;
  case 199: /* KVM_CAP_HYPERV_ENFORCE_CPUID */
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    R(enable(vcpu, 199, 1));
    break;
  case 154: { /* KVM_CAP_HYPERV_EVENTFD */
    vm = new_vm();
    int efd = eventfd(0, EFD_CLOEXEC);
    struct kvm_hyperv_eventfd h = {.conn_id = 5, .fd = efd};
    R(ioctl(vm, KVM_HYPERV_EVENTFD, &h));
    R(ioctl(vm, KVM_HYPERV_EVENTFD, &h));
    h.flags = KVM_HYPERV_EVENTFD_DEASSIGN;
    R(ioctl(vm, KVM_HYPERV_EVENTFD, &h));
    R(ioctl(vm, KVM_HYPERV_EVENTFD, &h));
    h.conn_id = 1u << 24;
    h.flags = 0;
    R(ioctl(vm, KVM_HYPERV_EVENTFD, &h));
    close(efd);
    break;
  }
  case 117: { /* KVM_CAP_X86_SMM */
    vm = vm_irqchip();
    vcpu = vcpu_of(vm, 0);
    R(ioctl(vcpu, KVM_SMI, 0));
    struct kvm_vcpu_events ev;
    R(ioctl(vcpu, KVM_GET_VCPU_EVENTS, &ev));
    printf("  smi pending %u\n", ev.smi.pending);
    break;
  }
  case 118: { /* KVM_CAP_MULTI_ADDRESS_SPACE */
    vm = new_vm();
    struct kvm_userspace_memory_region s = {.slot = 1u << 16, .guest_phys_addr = 0x30000, .memory_size = 0x10000, .userspace_addr = (uint64_t)(uintptr_t)guest};
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &s));
    s.slot = (uint32_t)vmv << 16;
    R(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &s));
    break;
  }
  case 157: { /* KVM_CAP_NESTED_STATE */
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    static unsigned char n[8192];
    memset(n, 0, sizeof n);
    ((uint32_t *)n)[1] = 64;
    R(ioctl(vcpu, KVM_GET_NESTED_STATE, n));
    printf("  size %u\n", ((uint32_t *)n)[1]);
    ((uint32_t *)n)[1] = (uint32_t)sizeof n;
    R(ioctl(vcpu, KVM_GET_NESTED_STATE, n));
    printf("  flags 0x%x format %u size %u", ((uint16_t *)n)[0], ((uint16_t *)n)[1], ((uint32_t *)n)[1]);
    for (int i = 8; i < 40; i += 8) printf(" %llx", (unsigned long long)*(uint64_t *)(n + i));
    printf("\n");
    R(ioctl(vcpu, KVM_SET_NESTED_STATE, n));
    ((uint32_t *)n)[1] = 64;
    R(ioctl(vcpu, KVM_SET_NESTED_STATE, n));
    break;
  }
  case 196: /* KVM_CAP_SGX_ATTRIBUTE */
    vm = new_vm();
    R(enable(vm, 196, 0));
    break;
  case 233: { /* KVM_CAP_MEMORY_ATTRIBUTES */
    vm = new_vm();
    uint64_t m[4] = {0x100000, 0x10000, 0, 0};
    R(ioctl(vm, _IOW(KVMIO, 0xd2, uint64_t[4]), m));
    m[2] = 8; /* KVM_MEMORY_ATTRIBUTE_PRIVATE */
    R(ioctl(vm, _IOW(KVMIO, 0xd2, uint64_t[4]), m));
    break;
  }
  case 60: /* KVM_CAP_TSC_CONTROL */
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    R(ioctl(vcpu, KVM_SET_TSC_KHZ, 1000000));
    R(ioctl(vcpu, KVM_GET_TSC_KHZ, 0));
    break;
  case 214: /* KVM_CAP_VM_TSC_CONTROL */
    vm = new_vm();
    R(ioctl(vm, KVM_SET_TSC_KHZ, 1000000));
    R(ioctl(vm, KVM_GET_TSC_KHZ, 0));
    break;
  case 163: { /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    uint16_t ver = 0;
    R(enable(vcpu, 163, (uint64_t)(uintptr_t)&ver));
    printf("  eVMCS versions 0x%x\n", ver);
    break;
  }
  case 244: /* KVM_CAP_GUEST_MEMFD_FLAGS */
  case 234: { /* KVM_CAP_GUEST_MEMFD */
    vm = new_vm();
    uint64_t g[8] = {0x200000, 0};
    int gfd = ioctl(vm, _IOWR(KVMIO, 0xd4, uint64_t[8]), g);
    printf("  KVM_CREATE_GUEST_MEMFD(2 MiB): %s", gfd >= 0 ? "an fd" : strerrorname_np(errno));
    if (gfd >= 0) {
      struct stat st;
      fstat(gfd, &st);
      printf(", %lld bytes, close-on-exec %d, read-write %d", (long long)st.st_size, (fcntl(gfd, F_GETFD) & FD_CLOEXEC) != 0, (fcntl(gfd, F_GETFL) & O_ACCMODE) == O_RDWR);
      close(gfd);
    }
    printf("\n");
    g[0] = 0x1001;
    R(ioctl(vm, _IOWR(KVMIO, 0xd4, uint64_t[8]), g));
    g[0] = 0x1000;
    g[1] = 1ull << 40;
    R(ioctl(vm, _IOWR(KVMIO, 0xd4, uint64_t[8]), g));
    break;
  }
  case 236: { /* KVM_CAP_PRE_FAULT_MEMORY */
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    guest_slot(vm);
    uint64_t r[8] = {0xf0000, 0x20000, 0};
    R(ioctl(vcpu, _IOWR(KVMIO, 0xd5, uint64_t[8]), r));
    printf("  gpa 0x%llx size 0x%llx\n", (unsigned long long)r[0], (unsigned long long)r[1]);
    r[0] = 0x200000;
    r[1] = 0x1000;
    R(ioctl(vcpu, _IOWR(KVMIO, 0xd5, uint64_t[8]), r));
    r[0] = 0x1001;
    R(ioctl(vcpu, _IOWR(KVMIO, 0xd5, uint64_t[8]), r));
    break;
  }
  case KVM_CAP_ONE_REG: {
    vm = new_vm();
    vcpu = vcpu_of(vm, 0);
    uint64_t v = 0;
#define REG_MSR(i) (0x2030000000000000ull | (2ull << 32) | (i))
    struct kvm_one_reg r = {.id = REG_MSR(0xc0000082), .addr = (uint64_t)(uintptr_t)&v};
    R(ioctl(vcpu, KVM_GET_ONE_REG, &r));
    v = 0xffffffff81000000ull;
    R(ioctl(vcpu, KVM_SET_ONE_REG, &r));
    v = 0;
    R(ioctl(vcpu, KVM_GET_ONE_REG, &r));
    printf("  LSTAR 0x%llx\n", (unsigned long long)v);
    v = 0x8000000000000000ull;
    R(ioctl(vcpu, KVM_SET_ONE_REG, &r));
    r.id = REG_MSR(0x12345678);
    R(ioctl(vcpu, KVM_GET_ONE_REG, &r));
    r.id = 0x2030000300000000ull;
    R(ioctl(vcpu, KVM_GET_ONE_REG, &r));
    struct { struct kvm_reg_list h; uint64_t reg[16]; } l = {{.n = 16}};
    R(ioctl(vcpu, KVM_GET_REG_LIST, &l));
    printf("  %llu registers listed\n", (unsigned long long)l.h.n);
    break;
  }
  case KVM_CAP_HLT:
  case KVM_CAP_CLOCKSOURCE:
  case KVM_CAP_NOP_IO_DELAY:
  case KVM_CAP_SYNC_MMU:
  case KVM_CAP_INTERNAL_ERROR_DATA:
  case KVM_CAP_PCI_SEGMENT:
  case KVM_CAP_X86_ROBUST_SINGLESTEP:
  case KVM_CAP_ASYNC_PF:
  case KVM_CAP_TSC_DEADLINE_TIMER:
  case KVM_CAP_IOAPIC_POLARITY_IGNORED:
  case KVM_CAP_ASYNC_PF_INT:
  case KVM_CAP_LAST_CPU:
  case KVM_CAP_SMALLER_MAXPHYADDR:
  case KVM_CAP_STEAL_TIME:
  case KVM_CAP_SYSTEM_EVENT_DATA:
  case 232: /* KVM_CAP_MEMORY_FAULT_INFO */
  case 238: /* KVM_CAP_X86_GUEST_MODE */
    printf("  no ioctl of its own\n");
    break;
  default:
    printf("  NOT WALKED\n");
    break;
  }
  if (vcpu >= 0) close(vcpu);
  if (vm >= 0) close(vm);
  if (vm2 >= 0) close(vm2);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) { perror("open /dev/kvm"); return 1; }
  guest = mmap(NULL, 0x100000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int probe = ioctl(kvm, KVM_CREATE_VM, 0);
  for (int cap = 0; cap < 512; cap++) {
    int only = argc == 1;
    for (int i = 1; i < argc; i++) only |= atoi(argv[i]) == cap;
    if (!only) continue;
    long sys = ioctl(kvm, KVM_CHECK_EXTENSION, cap), vmv = ioctl(probe, KVM_CHECK_EXTENSION, cap);
    if (sys <= 0 && vmv <= 0) continue;
    printf("cap %d: system %ld, vm %ld\n", cap, sys, vmv);
    walk(cap, sys, vmv);
  }
  return 0;
}
