/*
 * More vCPU threads asleep in KVM_RUN at once than the seccomp broker has workers (64): each sits in
 * a halted guest (one VM, an in-kernel irqchip) until the main thread signals it (SA_RESTART
 * handler); meanwhile the main thread's own ioctls are answered at once. Prints what each got.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N 80

static int kvm, vm;
static volatile int ready, handled, returned;
static struct { int vcpu; struct kvm_run *run; int ret, err; unsigned reason; } t[N];

static void die(const char *what) { printf("%s: %s\n", what, strerror(errno)); exit(1); }
static void on_usr1(int s) { (void)s; __atomic_add_fetch(&handled, 1, __ATOMIC_RELAXED); }
static double now_ms(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6; }

static void *vcpu_thread(void *p) {
  int i = (int)(long)p;
  __atomic_add_fetch(&ready, 1, __ATOMIC_RELEASE);
  t[i].ret = ioctl(t[i].vcpu, KVM_RUN, 0);
  t[i].err = t[i].ret < 0 ? errno : 0;
  t[i].reason = t[i].run->exit_reason;
  __atomic_add_fetch(&returned, 1, __ATOMIC_RELEASE);
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0)) die("KVM_CREATE_IRQCHIP");
  unsigned char *mem = mmap(0, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  memset(mem, 0xf4, 0x10000); /* hlt */
  struct kvm_userspace_memory_region slot = {.guest_phys_addr = 0xffff0000, .memory_size = 0x10000, .userspace_addr = (unsigned long)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot)) die("KVM_SET_USER_MEMORY_REGION");
  int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  pthread_t th[N];
  for (int i = 0; i < N; i++) {
    t[i].vcpu = ioctl(vm, KVM_CREATE_VCPU, i);
    if (t[i].vcpu < 0) die("KVM_CREATE_VCPU");
    t[i].run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, t[i].vcpu, 0);
    if (t[i].run == MAP_FAILED) die("mmap vcpu");
    t[i].run->exit_reason = 0x77;
    if (pthread_create(&th[i], NULL, vcpu_thread, (void *)(long)i)) die("pthread_create");
  }
  while (__atomic_load_n(&ready, __ATOMIC_ACQUIRE) < N) usleep(1000);
  usleep(300000); /* every one of them in KVM_RUN by now */
  double t0 = now_ms();
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  double took = now_ms() - t0;
  int still = N - __atomic_load_n(&returned, __ATOMIC_ACQUIRE);
  printf("%d threads in KVM_RUN, %d still there; KVM_GET_API_VERSION meanwhile %d, at once %s\n", N, still, api, took < 1000 ? "yes" : "no");
  for (int i = 0; i < N; i++) pthread_kill(th[i], SIGUSR1);
  for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
  int intr = 0, exits = 0;
  for (int i = 0; i < N; i++) {
    intr += t[i].ret == -1 && t[i].err == EINTR;
    exits += t[i].reason == KVM_EXIT_INTR;
  }
  printf("after the signals: EINTR %d, exit_reason KVM_EXIT_INTR %d, handler ran %d time(s)\n", intr, exits, handled);
  return 0;
}
