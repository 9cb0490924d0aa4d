/*
 * For `kvmsr run` (test/run.test.ts): the kvm_run page is shared. The VM asks for MSR exits
 * (KVM_CAP_X86_USER_SPACE_MSR) and filters SYSENTER_CS reads and writes, both ranges pointing at one
 * bitmap. kvmsr runs no guest code, so the test stands in for the guest (a WRMSR, then a RDMSR, at
 * KVM_RUN); this program reads the exits from its mapping of the vCPU fd and answers them there.
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

static void show_exit(const char *what, int r, struct kvm_run *run) {
  printf("%s: ret %d errno %d exit_reason %u", what, r, r < 0 ? errno : 0, run->exit_reason);
  if (run->exit_reason == KVM_EXIT_X86_RDMSR || run->exit_reason == KVM_EXIT_X86_WRMSR)
    printf(" msr reason %u index 0x%x data 0x%llx", run->msr.reason, run->msr.index, (unsigned long long)run->msr.data);
  printf("\n");
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int sys = open("/dev/kvm", O_RDWR);
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR, .args = {KVM_MSR_EXIT_REASON_FILTER}};
  int r = ioctl(vm, KVM_ENABLE_CAP, &cap);
  printf("enable_cap user_space_msr: ret %d\n", r);
  static uint8_t deny[8]; /* bit 0 clear: SYSENTER_CS is denied */
  struct kvm_msr_filter f;
  memset(&f, 0, sizeof f);
  f.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
  f.ranges[0] = (struct kvm_msr_filter_range){.flags = KVM_MSR_FILTER_WRITE, .nmsrs = 1, .base = 0x174, .bitmap = deny};
  f.ranges[1] = (struct kvm_msr_filter_range){.flags = KVM_MSR_FILTER_READ, .nmsrs = 1, .base = 0x174, .bitmap = deny};
  r = ioctl(vm, KVM_X86_SET_MSR_FILTER, &f);
  printf("set_msr_filter: ret %d errno %d\n", r, r < 0 ? errno : 0);
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  int size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) return 1;
  show_exit("run 1", ioctl(vcpu, KVM_RUN, 0), run);
  run->msr.error = 1; /* refuse the WRMSR: the guest gets #GP */
  show_exit("run 2", ioctl(vcpu, KVM_RUN, 0), run);
  run->msr.error = 0;
  run->msr.data = 0xabcd; /* what the guest's RDMSR reads */
  show_exit("run 3", ioctl(vcpu, KVM_RUN, 0), run);
  return 0;
}
