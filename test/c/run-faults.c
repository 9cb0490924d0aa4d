/*
 * Faults under `kvmsr run` (test/run-faults.test.ts); the same program runs on the real kernel.
 *   run-faults kicks N       8 vCPU threads loop in KVM_RUN of a halted guest; the main thread kicks
 *                            each with SIGUSR1 N times, once it is back in KVM_RUN every time.
 *   run-faults close-in-run  a thread sleeps in KVM_RUN while the main thread closes its vCPU fd,
 *                            then kicks it; then a vCPU of the same id again.
 *   run-faults calls         KVM_GET_MSRS in a loop, "ready" on stdout after 100 calls, until a call
 *                            fails (the test kills kvmsr meanwhile); then one more call.
 * Every mode but `calls` counts its open fds before /dev/kvm and after closing all it opened.
 */
#define _GNU_SOURCE
#include <dirent.h>
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
#include <unistd.h>

#define N 8

static void die(const char *what) { printf("%s: %s\n", what, strerror(errno)); exit(1); }
static void on_usr1(int s) { (void)s; }

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n - 1; /* the directory's own fd */
}

static int kvm, vm, run_size;
static unsigned char *guest;

/* A VM whose guest is all HLT (one slot at the reset vector), with an in-kernel irqchip. */
static void make_vm(void) {
  kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0)) die("KVM_CREATE_IRQCHIP");
  guest = mmap(0, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (guest == MAP_FAILED) die("mmap");
  memset(guest, 0xf4, 0x10000);
  struct kvm_userspace_memory_region slot = {.guest_phys_addr = 0xffff0000, .memory_size = 0x10000, .userspace_addr = (unsigned long)guest};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot)) die("KVM_SET_USER_MEMORY_REGION");
  run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
}

static struct { int fd; struct kvm_run *run; int runs, odd; pthread_t th; } v[N];
static volatile int stop;

static void *looper(void *p) {
  int i = (int)(long)p;
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
    int r = ioctl(v[i].fd, KVM_RUN, 0);
    if (r == -1 && errno == EINTR && v[i].run->exit_reason == KVM_EXIT_INTR) __atomic_add_fetch(&v[i].runs, 1, __ATOMIC_RELEASE);
    else v[i].odd++;
  }
  return NULL;
}

/* Kicks thread i until its count passes `was` (a kick that lands between two KVM_RUNs ends none). */
static void kick_until(int i, int was) {
  for (int tries = 0; __atomic_load_n(&v[i].runs, __ATOMIC_ACQUIRE) == was; tries++) {
    if (tries > 20000) { printf("thread %d never left KVM_RUN\n", i); exit(1); }
    pthread_kill(v[i].th, SIGUSR1);
    usleep(500);
  }
}

static int kicks(int rounds) {
  int before = open_fds();
  make_vm();
  for (int i = 0; i < N; i++) {
    v[i].fd = ioctl(vm, KVM_CREATE_VCPU, i);
    if (v[i].fd < 0) die("KVM_CREATE_VCPU");
    v[i].run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v[i].fd, 0);
    if (v[i].run == MAP_FAILED) die("mmap vcpu");
    if (pthread_create(&v[i].th, NULL, looper, (void *)(long)i)) die("pthread_create");
  }
  for (int k = 0; k < rounds; k++)
    for (int i = 0; i < N; i++) kick_until(i, __atomic_load_n(&v[i].runs, __ATOMIC_ACQUIRE));
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < N; i++) {
    kick_until(i, __atomic_load_n(&v[i].runs, __ATOMIC_ACQUIRE));
    pthread_join(v[i].th, NULL);
  }
  int least = rounds + 1, odd = 0;
  for (int i = 0; i < N; i++) {
    if (v[i].runs < least) least = v[i].runs;
    odd += v[i].odd;
  }
  printf("%d threads kicked %d times each: every thread left KVM_RUN at least %d times with EINTR and KVM_EXIT_INTR, %d other returns\n", N,
         rounds, least, odd);
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  for (int i = 0; i < N; i++) { munmap(v[i].run, (size_t)run_size); close(v[i].fd); }
  close(vm);
  close(kvm);
  printf("KVM_GET_API_VERSION after: %d; fds left open after closing all: %d\n", api, open_fds() - before);
  return 0;
}

static int in_run;
static void *sleeper(void *p) {
  (void)p;
  __atomic_store_n(&in_run, 1, __ATOMIC_RELEASE);
  int r = ioctl(v[0].fd, KVM_RUN, 0);
  int e = errno;
  printf("KVM_RUN on the closed fd: ret %d errno %d exit_reason %u\n", r, r < 0 ? e : 0, v[0].run->exit_reason);
  return NULL;
}

static int close_in_run(void) {
  int before = open_fds();
  make_vm();
  v[0].fd = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (v[0].fd < 0) die("KVM_CREATE_VCPU");
  v[0].run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v[0].fd, 0);
  if (v[0].run == MAP_FAILED) die("mmap vcpu");
  pthread_t th;
  if (pthread_create(&th, NULL, sleeper, NULL)) die("pthread_create");
  while (!__atomic_load_n(&in_run, __ATOMIC_ACQUIRE)) usleep(1000);
  usleep(200000); /* asleep in KVM_RUN by now */
  printf("close while in KVM_RUN: %d\n", close(v[0].fd));
  int again = ioctl(vm, KVM_CREATE_VCPU, 0); /* the vCPU lives on with its VM: id 0 is taken */
  printf("KVM_CREATE_VCPU 0 again: ret %d errno %d\n", again, again < 0 ? errno : 0);
  pthread_kill(th, SIGUSR1);
  pthread_join(th, NULL);
  munmap(v[0].run, (size_t)run_size);
  int other = ioctl(vm, KVM_CREATE_VCPU, 1);
  printf("KVM_CREATE_VCPU 1: %s\n", other >= 0 ? "ok" : strerror(errno));
  if (other >= 0) close(other);
  close(vm);
  close(kvm);
  printf("fds left open after closing all: %d\n", open_fds() - before);
  return 0;
}

static int calls(void) {
  make_vm();
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  struct { struct kvm_msrs h; struct kvm_msr_entry e[1]; } b;
  for (long n = 0;; n++) {
    memset(&b, 0, sizeof b);
    b.h.nmsrs = 1;
    b.e[0].index = 0xc0000082;
    int r = ioctl(vcpu, KVM_GET_MSRS, &b);
    if (r != 1) {
      int e = errno;
      int again = ioctl(vcpu, KVM_GET_MSRS, &b);
      printf("KVM_GET_MSRS failed: ret %d errno %d (%s); once more: ret %d errno %d\n", r, e, strerror(e), again, errno);
      return 0;
    }
    if (n == 100) printf("ready\n");
  }
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART; /* KVM_RUN ends with EINTR all the same */
  sigaction(SIGUSR1, &sa, NULL);
  if (argc == 3 && !strcmp(argv[1], "kicks")) return kicks(atoi(argv[2]));
  if (argc == 2 && !strcmp(argv[1], "close-in-run")) return close_in_run();
  if (argc == 2 && !strcmp(argv[1], "calls")) return calls();
  fprintf(stderr, "usage: run-faults kicks N | close-in-run | calls\n");
  return 2;
}
