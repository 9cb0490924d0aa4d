/* A client for the recorder tests: calls the ioctl numbers it is given, so a test can compare what
 * the C recorder records with what KvmRecorder records.
 * usage: record-set all SYSTEM VCPU REQ...   each REQ on both fds, then KVM_RUN twice on VCPU
 *        record-set sleep SYSTEM MS          two calls MS milliseconds apart
 *        record-set live                     state getters on a real /dev/kvm; prints each call */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static unsigned char buf[16384];
static const uint64_t attr_value = 0x1122334455667788ULL;

static int call(int fd, unsigned long req) {
  memset(buf, 0, sizeof buf);
  /* kvm_device_attr.addr (at 16): the value the recorder copies into extra[0]. */
  if (req == KVM_SET_DEVICE_ATTR) { uint64_t a = (uintptr_t)&attr_value; memcpy(buf + 16, &a, 8); }
  return ioctl(fd, req, _IOC_DIR(req) == _IOC_NONE ? (unsigned long)0 : (unsigned long)buf);
}

static void report(const char *name, int ret, const void *p, size_t len) {
  printf("{\"name\":\"%s\",\"ret\":%d,\"errno\":%d,\"out\":\"", name, ret, ret < 0 ? errno : 0);
  for (size_t i = 0; i < len; i++) printf("%02x", ((const unsigned char *)p)[i]);
  printf("\"}\n");
}

static int live(void) {
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (sys < 0) { perror("open"); return 1; }
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  if (vm < 0) { perror("KVM_CREATE_VM"); return 1; }
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) { perror("KVM_CREATE_IRQCHIP"); return 1; }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) { perror("KVM_CREATE_VCPU"); return 1; }
  struct kvm_lapic_state lapic;
  memset(&lapic, 0, sizeof lapic);
  int r = ioctl(vcpu, KVM_GET_LAPIC, &lapic);
  report("KVM_GET_LAPIC", r, &lapic, sizeof lapic);
  struct kvm_clock_data clock;
  memset(&clock, 0, sizeof clock);
  r = ioctl(vm, KVM_GET_CLOCK, &clock);
  report("KVM_GET_CLOCK", r, &clock, sizeof clock);
  struct kvm_sregs sregs;
  memset(&sregs, 0, sizeof sregs);
  r = ioctl(vcpu, KVM_GET_SREGS, &sregs);
  report("KVM_GET_SREGS", r, &sregs, sizeof sregs);
  struct kvm_mp_state mp = { KVM_MP_STATE_RUNNABLE };
  r = ioctl(vcpu, KVM_SET_MP_STATE, &mp);
  report("KVM_SET_MP_STATE", r, &mp, sizeof mp);
  close(vcpu);
  close(vm);
  close(sys);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "live") == 0) return live();
  if (argc < 4) return 2;
  int sys = open(argv[2], O_RDWR | O_CLOEXEC);
  if (sys < 0) { perror("open"); return 1; }
  if (strcmp(argv[1], "sleep") == 0) {
    call(sys, KVM_GET_MSR_INDEX_LIST);
    usleep((useconds_t)atoi(argv[3]) * 1000);
    call(sys, KVM_GET_MSR_INDEX_LIST);
    return 0;
  }
  int vcpu = open(argv[3], O_RDWR | O_CLOEXEC);
  if (vcpu < 0) { perror("open"); return 1; }
  for (int i = 4; i < argc; i++) {
    unsigned long req = strtoul(argv[i], NULL, 0);
    call(sys, req);
    call(vcpu, req);
  }
  call(vcpu, KVM_RUN);
  call(vcpu, KVM_RUN);
  close(vcpu);
  close(sys);
  return 0;
}
