/*
 * For `kvmsr run` (test/run.test.ts): MSR ioctls with bad arguments, each of which the kernel refuses
 * with a defined errno (msr_io, kvm_arch_dev_ioctl, kvm_vm_ioctl_set_msr_filter, kvm_vcpu_ioctl_set_cpuid2),
 * then one good call to show the server still answers. Buffers end at a PROT_NONE page, so a short
 * buffer faults exactly where it ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static void show(const char *what, int r) { printf("%s: ret %d errno %d\n", what, r, r < 0 ? errno : 0); }

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int sys = open("/dev/kvm", O_RDWR);
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  unsigned char *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mprotect(page + 4096, 4096, PROT_NONE);
  unsigned char *end = page + 4096, *guard = page + 4096;

  struct kvm_msrs *m = (struct kvm_msrs *)(end - 8);
  m->nmsrs = 0xffffffff;
  show("GET_MSRS nmsrs 0xffffffff, 8-byte buffer", ioctl(vcpu, KVM_GET_MSRS, m));
  m = (struct kvm_msrs *)(end - 24);
  m->nmsrs = 200;
  m->entries[0].index = 0x174;
  show("GET_MSRS nmsrs 200, room for 1", ioctl(vcpu, KVM_GET_MSRS, m));
  m->nmsrs = 1;
  m->entries[0].data = 0x55;
  show("SET_MSRS nmsrs 1 at the end of the page", ioctl(vcpu, KVM_SET_MSRS, m));
  show("GET_MSRS NULL", ioctl(vcpu, KVM_GET_MSRS, NULL));
  show("SET_MSRS unreadable", ioctl(vcpu, KVM_SET_MSRS, guard));
  show("GET_MSRS non-canonical pointer", ioctl(vcpu, KVM_GET_MSRS, (void *)0xdead000000000000ull));
  show("GET_MSRS nmsrs 300 on /dev/kvm", ioctl(sys, KVM_GET_MSRS, &(struct kvm_msrs){.nmsrs = 300}));

  struct kvm_msr_list *l = (struct kvm_msr_list *)(end - 8);
  l->nmsrs = 1000;
  int r = ioctl(sys, KVM_GET_MSR_INDEX_LIST, l);
  printf("GET_MSR_INDEX_LIST nmsrs 1000, room for 1: ret %d errno %d nmsrs %u\n", r, r < 0 ? errno : 0, l->nmsrs);

  struct kvm_msr_filter f;
  memset(&f, 0, sizeof f);
  f.ranges[0].flags = KVM_MSR_FILTER_WRITE;
  f.ranges[0].nmsrs = 1;
  f.ranges[0].base = 0x174;
  f.ranges[0].bitmap = guard;
  show("SET_MSR_FILTER bitmap unreadable", ioctl(vm, KVM_X86_SET_MSR_FILTER, &f));
  f.ranges[0].bitmap = NULL;
  show("SET_MSR_FILTER bitmap NULL", ioctl(vm, KVM_X86_SET_MSR_FILTER, &f));
  f.ranges[0].bitmap = end - 4; /* 8 bytes needed (BITS_TO_LONGS(1) longs), 4 readable */
  show("SET_MSR_FILTER bitmap half readable", ioctl(vm, KVM_X86_SET_MSR_FILTER, &f));

  struct kvm_cpuid2 *c = (struct kvm_cpuid2 *)(end - 8);
  c->nent = 0xffffffff;
  show("SET_CPUID2 nent 0xffffffff", ioctl(vcpu, KVM_SET_CPUID2, c));
  c->nent = 3;
  show("SET_CPUID2 nent 3, room for 0", ioctl(vcpu, KVM_SET_CPUID2, c));

  show("request 0xdeadbeef", ioctl(vcpu, 0xdeadbeef, page));
  show("KVMIO nr 0xff, _IOC_SIZE 16383", ioctl(vcpu, _IOWR(KVMIO, 0xff, char[16383]), page));

  struct { struct kvm_msrs h; struct kvm_msr_entry e[1]; } ok = {{.nmsrs = 1}, {{.index = 0x277}}};
  r = ioctl(vcpu, KVM_GET_MSRS, &ok);
  printf("GET_MSRS PAT afterwards: ret %d 0x%llx\n", r, (unsigned long long)ok.e[0].data);
  return 0;
}
