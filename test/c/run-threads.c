/*
 * For `kvmsr run` (test/run.test.ts): one VM, T threads each with its own vCPU doing N rounds of
 * KVM_SET_MSRS then KVM_GET_MSRS of three MSRs with values unique to the thread and the round.
 * Prints one line per thread with how many rounds were right. Usage: run-threads T N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int vm;
static long rounds;
static const uint32_t idx[3] = {0xc0000082 /* LSTAR */, 0xc0000083 /* CSTAR */, 0xc0000102 /* KERNEL_GS_BASE */};

struct result { long ok, bad; int ret_bad; char first[160]; };
static struct result results[64];

static void *worker(void *p) {
  long t = (long)p;
  struct result *res = &results[t];
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, t);
  if (vcpu < 0) { snprintf(res->first, sizeof res->first, "KVM_CREATE_VCPU: errno %d", errno); res->bad = rounds; return NULL; }
  struct { struct kvm_msrs h; struct kvm_msr_entry e[3]; } set, get;
  for (long i = 0; i < rounds; i++) {
    memset(&set, 0, sizeof set);
    memset(&get, 0, sizeof get);
    set.h.nmsrs = get.h.nmsrs = 3;
    for (int k = 0; k < 3; k++) {
      /* Canonical (below 2^47) and different in every thread, round and MSR. */
      set.e[k].index = get.e[k].index = idx[k];
      set.e[k].data = ((uint64_t)(t + 1) << 40) | ((uint64_t)i << 4) | (uint64_t)k;
    }
    int rs = ioctl(vcpu, KVM_SET_MSRS, &set);
    int rg = ioctl(vcpu, KVM_GET_MSRS, &get);
    int good = rs == 3 && rg == 3;
    for (int k = 0; k < 3; k++) good = good && get.e[k].data == set.e[k].data && get.e[k].index == idx[k];
    if (good) { res->ok++; continue; }
    if (res->bad++ == 0)
      snprintf(res->first, sizeof res->first, "round %ld: set %d get %d (errno %d) 0x%llx want 0x%llx", i, rs, rg, errno,
               (unsigned long long)get.e[0].data, (unsigned long long)set.e[0].data);
  }
  close(vcpu);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  rounds = argc > 2 ? atol(argv[2]) : 10000;
  if (threads < 1 || threads > 64) return 2;
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (sys < 0) { printf("open /dev/kvm: errno %d\n", errno); return 1; }
  vm = ioctl(sys, KVM_CREATE_VM, 0);
  pthread_t th[64];
  for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, (void *)t);
  int bad = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    printf("thread %d ok %ld bad %ld%s%s\n", t, results[t].ok, results[t].bad, results[t].bad ? ": " : "", results[t].first);
    bad |= results[t].bad != 0;
  }
  return bad;
}
