/* A small VMM stand-in for the recorder test: issues MSR ioctls on a system fd (and, where the fd
 * is a real /dev/kvm, on a VM and vCPUs) from several threads, and prints what each call returned,
 * one JSON line per call, so the test can check the recorder against what the program saw.
 * usage: msr-client PATH THREADS [abort-after-N] */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int sys_fd, abort_after = -1, calls;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void report(unsigned long req, int ret, int err, const void *buf, size_t len) {
  pthread_mutex_lock(&lock);
  printf("{\"request\":\"0x%lx\",\"ret\":%d,\"errno\":%d,\"out\":\"", req, ret, err);
  for (size_t i = 0; i < len; i++) printf("%02x", ((const unsigned char *)buf)[i]);
  printf("\"}\n");
  fflush(stdout);
  if (abort_after >= 0 && ++calls >= abort_after) abort();
  pthread_mutex_unlock(&lock);
}

static void *worker(void *p) {
  long id = (long)p;
  struct { struct kvm_msr_list l; __u32 idx[128]; } list;
  memset(&list, 0, sizeof list);
  int r = ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, &list);
  report(KVM_GET_MSR_INDEX_LIST, r, r < 0 ? errno : 0, &list, 4);
  list.l.nmsrs = 128;
  r = ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, &list);
  report(KVM_GET_MSR_INDEX_LIST, r, r < 0 ? errno : 0, &list, 4 + 4 * 128);
  struct { struct kvm_msrs h; struct kvm_msr_entry e[3]; } m;
  memset(&m, 0, sizeof m);
  m.h.nmsrs = 3;
  m.e[0].index = 0x8b; m.e[1].index = 0x10a; m.e[2].index = 0x12345678;
  m.e[2].data = 0x1111 * (unsigned long)(id + 1);
  r = ioctl(sys_fd, KVM_GET_MSRS, &m);
  report(KVM_GET_MSRS, r, r < 0 ? errno : 0, &m, sizeof m);
  int vm = ioctl(sys_fd, KVM_CREATE_VM, 0);
  report(KVM_CREATE_VM, vm, vm < 0 ? errno : 0, NULL, 0);
  if (vm >= 0) {
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    report(KVM_CREATE_VCPU, vcpu, vcpu < 0 ? errno : 0, NULL, 0);
    if (vcpu >= 0) {
      struct { struct kvm_msrs h; struct kvm_msr_entry e[4]; } v;
      memset(&v, 0, sizeof v);
      v.h.nmsrs = 4;
      v.e[0].index = 0x277; v.e[1].index = 0x174; v.e[2].index = 0x12345678; v.e[3].index = 0x1a0;
      r = ioctl(vcpu, KVM_GET_MSRS, &v);
      report(KVM_GET_MSRS, r, r < 0 ? errno : 0, &v, sizeof v);
      r = ioctl(vcpu, KVM_SET_MSRS, &v);
      report(KVM_SET_MSRS, r, r < 0 ? errno : 0, &v, sizeof v);
      close(vcpu);
    }
    close(vm);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int threads = atoi(argv[2]);
  if (argc > 3) abort_after = atoi(argv[3]);
  sys_fd = open(argv[1], O_RDWR | O_CLOEXEC);
  if (sys_fd < 0) { perror("open"); return 1; }
  pthread_t t[64];
  for (long i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, worker, (void *)i);
  for (long i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
  close(sys_fd);
  return 0;
}
