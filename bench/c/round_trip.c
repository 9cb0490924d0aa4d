/* One KVM_GET_MSRS of one MSR (IA32_LSTAR), from a native program: on the real /dev/kvm, or under
 * `kvmsr run`, where the same binary reaches kvmsr through the preload library. Times `batches`
 * batches of `per` calls after as many warm-up calls, and prints one JSON line: the median and the
 * fastest batch, in ns per ioctl. Built by the bench with gcc -O2. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int batches = argc > 1 ? atoi(argv[1]) : 20, per = argc > 2 ? atoi(argv[2]) : 1000;
  if (batches < 1 || batches > 1000 || per < 1) return 2;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) { perror("round_trip: /dev/kvm"); return 1; }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  int vcpu = vm < 0 ? -1 : ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) { perror("round_trip: KVM_CREATE_VM/VCPU"); return 1; }
  struct { struct kvm_msrs h; struct kvm_msr_entry e[1]; } b;
  double *t = calloc((size_t)batches, sizeof *t);
  for (int i = -1; i < batches; i++) { /* batch -1 warms up */
    double t0 = now_ns();
    for (int j = 0; j < per; j++) {
      memset(&b, 0, sizeof b);
      b.h.nmsrs = 1;
      b.e[0].index = 0xc0000082; /* IA32_LSTAR */
      if (ioctl(vcpu, KVM_GET_MSRS, &b) != 1) { perror("round_trip: KVM_GET_MSRS"); return 1; }
    }
    if (i >= 0) t[i] = (now_ns() - t0) / per;
  }
  qsort(t, (size_t)batches, sizeof *t, cmp);
  printf("{\"medianNs\":%.1f,\"minNs\":%.1f,\"batches\":%d,\"per\":%d}\n", t[batches / 2], t[0], batches, per);
  return 0;
}
