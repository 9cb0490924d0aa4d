/* KVM_CREATE_DEVICE of the KVM-VFIO device and its fd (test/caps-walk.test.ts): run on the real kernel
 * and under `kvmsr run`, which must print the same. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#define R(expr) report(#expr, (expr))
static long report(const char *w, long r) { int e = errno; printf("%s = %ld%s%s\n", w, r, r < 0 ? " errno " : "", r < 0 ? strerrorname_np(e) : ""); errno = e; return r; }
int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm = ioctl(kvm, KVM_CREATE_VM, 0);
  struct kvm_create_device d = {.type = KVM_DEV_TYPE_VFIO, .fd = 12345};
  R(ioctl(vm, KVM_CREATE_DEVICE, &d));
  int dev = (int)d.fd;
  printf("fd is a new fd: %s; close-on-exec %d\n", dev >= 0 && dev != 12345 && fcntl(dev, F_GETFD) >= 0 ? "yes" : "no", (fcntl(dev, F_GETFD) & FD_CLOEXEC) != 0);
  struct kvm_create_device d2 = {.type = KVM_DEV_TYPE_VFIO};
  R(ioctl(vm, KVM_CREATE_DEVICE, &d2));
  int32_t gfd = -1;
  struct kvm_device_attr a = {.group = KVM_DEV_VFIO_GROUP, .attr = KVM_DEV_VFIO_GROUP_ADD, .addr = (uint64_t)(uintptr_t)&gfd};
  R(ioctl(dev, KVM_HAS_DEVICE_ATTR, &a));
  a.attr = KVM_DEV_VFIO_GROUP_DEL;
  R(ioctl(dev, KVM_HAS_DEVICE_ATTR, &a));
  a.attr = 3;
  R(ioctl(dev, KVM_HAS_DEVICE_ATTR, &a));
  a.group = 2;
  R(ioctl(dev, KVM_HAS_DEVICE_ATTR, &a));
  a.group = KVM_DEV_VFIO_GROUP;
  a.attr = KVM_DEV_VFIO_GROUP_ADD;
  R(ioctl(dev, KVM_GET_DEVICE_ATTR, &a));
  a.addr = 0;
  R(ioctl(dev, KVM_SET_DEVICE_ATTR, &a));
  a.group = 9;
  R(ioctl(dev, KVM_SET_DEVICE_ATTR, &a));
  R(ioctl(dev, KVM_GET_MSRS, 0));
  R(ioctl(dev, KVM_CHECK_EXTENSION, 0));
  R(close(dev));
  R(ioctl(vm, KVM_CREATE_DEVICE, &d2));
  return 0;
}
