/*
 * For `kvmsr run` (test/run.test.ts): a forked child inherits the KVM fds. As in the kernel
 * (kvm_vm_ioctl, kvm_vcpu_ioctl: kvm->mm != current->mm), its VM and vCPU ioctls fail with EIO,
 * /dev/kvm still works for it (on its own connection), and its close of an inherited vCPU fd does not
 * close the parent's vCPU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct one { struct kvm_msrs h; struct kvm_msr_entry e[1]; };

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int sys = open("/dev/kvm", O_RDWR);
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  struct one set = {{.nmsrs = 1}, {{.index = 0xc0000082, .data = 0x7f00000000aaull}}};
  printf("parent set ret %d\n", ioctl(vcpu, KVM_SET_MSRS, &set));
  pid_t pid = fork();
  if (pid == 0) {
    struct one get = {{.nmsrs = 1}, {{.index = 0xc0000082}}};
    int r = ioctl(vcpu, KVM_GET_MSRS, &get);
    printf("child vcpu GET_MSRS ret %d errno %d\n", r, r < 0 ? errno : 0);
    r = ioctl(vm, KVM_CREATE_VCPU, 1);
    printf("child vm CREATE_VCPU ret %d errno %d\n", r, r < 0 ? errno : 0);
    printf("child sys API_VERSION %d\n", ioctl(sys, KVM_GET_API_VERSION, 0));
    int vm2 = ioctl(sys, KVM_CREATE_VM, 0);
    int vcpu2 = ioctl(vm2, KVM_CREATE_VCPU, 0);
    r = ioctl(vcpu2, KVM_GET_MSRS, &get);
    printf("child own vcpu GET_MSRS ret %d 0x%llx\n", r, (unsigned long long)get.e[0].data);
    printf("child close inherited vcpu %d\n", close(vcpu));
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  struct one get = {{.nmsrs = 1}, {{.index = 0xc0000082}}};
  int r = ioctl(vcpu, KVM_GET_MSRS, &get);
  printf("parent after child GET_MSRS ret %d 0x%llx\n", r, (unsigned long long)get.e[0].data);
  return 0;
}
