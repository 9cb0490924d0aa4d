/*
 * A small VMM-like program for `kvmsr run` (test/run.test.ts): it opens /dev/kvm, makes a VM and a
 * vCPU, maps its kvm_run page, reads the MSR lists and some MSRs, writes some, and uses the vCPU fd
 * as a file (dup, close, fcntl, poll, select), printing what it saw. Nothing here is kvmsr-specific:
 * on a real /dev/kvm it prints that host's answers. No fd numbers are printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <unistd.h>

static void print_msrs(const char *what, int ret, struct kvm_msrs *m) {
  printf("%s ret %d errno %d:", what, ret, ret < 0 ? errno : 0);
  for (unsigned i = 0; i < m->nmsrs; i++) printf(" 0x%x=0x%llx", m->entries[i].index, (unsigned long long)m->entries[i].data);
  printf("\n");
}

static struct kvm_msrs *msrs(unsigned n, const uint32_t *idx, const uint64_t *data) {
  struct kvm_msrs *m = calloc(1, sizeof *m + n * sizeof(struct kvm_msr_entry));
  m->nmsrs = n;
  for (unsigned i = 0; i < n; i++) { m->entries[i].index = idx[i]; m->entries[i].data = data ? data[i] : 0; }
  return m;
}

static void print_list(int sys, unsigned long req, const char *what) {
  struct { struct kvm_msr_list l; uint32_t more[1024]; } buf;
  memset(&buf, 0, sizeof buf);
  buf.l.nmsrs = 0;
  int r = ioctl(sys, req, &buf);
  printf("%s probe ret %d errno %d nmsrs %u\n", what, r, r < 0 ? errno : 0, buf.l.nmsrs);
  buf.l.nmsrs = 1024;
  r = ioctl(sys, req, &buf);
  printf("%s ret %d nmsrs %u:", what, r, buf.l.nmsrs);
  for (unsigned i = 0; i < buf.l.nmsrs && i < 1024; i++) printf(" 0x%x", buf.l.indices[i]);
  printf("\n");
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (sys < 0) { printf("open failed errno %d\n", errno); return 1; }
  printf("open ok\n");
  printf("api %d\n", ioctl(sys, KVM_GET_API_VERSION, 0));
  printf("check_extension 188 = %d\n", ioctl(sys, KVM_CHECK_EXTENSION, 188));
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  printf("create_vm %s\n", vm >= 0 ? "ok" : strerror(errno));
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  printf("create_vcpu %s\n", vcpu >= 0 ? "ok" : strerror(errno));
  int size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
  printf("mmap_size %d\n", size);
  struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) { printf("mmap failed errno %d\n", errno); return 1; }
  printf("mmap ok exit_reason %u\n", run->exit_reason);

  print_list(sys, KVM_GET_MSR_INDEX_LIST, "index_list");
  print_list(sys, KVM_GET_MSR_FEATURE_INDEX_LIST, "feature_list");
  const uint32_t feat[] = {0x10a, 0x345, 0xc0011029};
  struct kvm_msrs *f = msrs(3, feat, NULL);
  print_msrs("feature_msrs", ioctl(sys, KVM_GET_MSRS, f), f);

  /* 0x12345678 is no MSR: KVM stops there, as msr_io does at the first failure. */
  const uint32_t get[] = {0x174, 0x277, 0xc0000080, 0xc0000081, 0x1a0, 0x12345678, 0xc0000082};
  struct kvm_msrs *g = msrs(7, get, NULL);
  print_msrs("get_msrs", ioctl(vcpu, KVM_GET_MSRS, g), g);
  const uint32_t set[] = {0xc0000082, 0xc0000081, 0x12345678, 0x174};
  const uint64_t val[] = {0x7f0000001234ull, 0x0023001000000000ull, 1, 0x10};
  struct kvm_msrs *s = msrs(4, set, val);
  print_msrs("set_msrs", ioctl(vcpu, KVM_SET_MSRS, s), s);
  g = msrs(7, get, NULL);
  print_msrs("get_msrs", ioctl(vcpu, KVM_GET_MSRS, g), g);

  int r = ioctl(vcpu, KVM_RUN, 0);
  printf("run ret %d errno %d\n", r, r < 0 ? errno : 0);

  int d = dup(vcpu);
  printf("dup %s\n", d >= 0 ? "ok" : strerror(errno));
  printf("close vcpu %d\n", close(vcpu));
  const uint32_t lstar[] = {0xc0000082};
  struct kvm_msrs *l = msrs(1, lstar, NULL);
  print_msrs("get_msrs via dup", ioctl(d, KVM_GET_MSRS, l), l);
  printf("fcntl F_GETFL vcpu 0x%x vm 0x%x\n", fcntl(d, F_GETFL), fcntl(vm, F_GETFL));
  printf("fcntl F_GETFD dup 0x%x\n", fcntl(d, F_GETFD));
  int e = fcntl(d, F_DUPFD_CLOEXEC, 100);
  printf("F_DUPFD_CLOEXEC %s F_GETFD 0x%x\n", e >= 100 ? "ok" : "failed", fcntl(e, F_GETFD));
  l = msrs(1, lstar, NULL);
  print_msrs("get_msrs via F_DUPFD_CLOEXEC", ioctl(e, KVM_GET_MSRS, l), l);
  printf("close F_DUPFD_CLOEXEC %d\n", close(e));
  struct pollfd p = {.fd = d, .events = POLLIN | POLLOUT};
  r = poll(&p, 1, 0);
  printf("poll ret %d revents 0x%x\n", r, p.revents);
  fd_set rd, wr;
  FD_ZERO(&rd);
  FD_ZERO(&wr);
  FD_SET(d, &rd);
  FD_SET(d, &wr);
  struct timeval tv = {0, 0};
  printf("select ret %d\n", select(d + 1, &rd, &wr, NULL, &tv));
  printf("close dup %d\n", close(d));
  l = msrs(1, lstar, NULL);
  r = ioctl(d, KVM_GET_MSRS, l);
  printf("ioctl after close ret %d errno %d\n", r, r < 0 ? errno : 0);
  printf("close vm %d close sys %d\n", close(vm), close(sys));
  return 0;
}
