/*
 * A save/restore for `kvmsr run --intercept seccomp` (test/run-seccomp.test.ts), built static with
 * musl (and dynamic with glibc): it opens /dev/kvm, makes a VM and a vCPU, maps the vCPU's kvm_run
 * page, reads the MSR index list, sets and gets MSRs, saves them and restores them into a second VM's
 * vCPU; then an ioctl on a pipe (FIONREAD, and a KVMIO one), and whether the preload library is
 * mapped. test/go/run-raw/main.go prints the same lines. No kernel headers: musl-gcc has none, so
 * the few KVM definitions are here (include/uapi/linux/kvm.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVM_GET_API_VERSION 0xae00u
#define KVM_CREATE_VM 0xae01u
#define KVM_GET_MSR_INDEX_LIST 0xc004ae02u
#define KVM_GET_VCPU_MMAP_SIZE 0xae04u
#define KVM_CREATE_VCPU 0xae41u
#define KVM_GET_MSRS 0xc008ae88u
#define KVM_SET_MSRS 0x4008ae89u
#define FIONREAD_ 0x541bu

static const uint32_t idx[] = {0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x174, 0x175, 0x176, 0x277};
#define N (sizeof idx / sizeof idx[0])

struct msrs { uint32_t nmsrs, pad; struct { uint32_t index, reserved; uint64_t data; } e[N]; };

/* The MSR ioctl on vcpu: the values in and out of v. */
static int msrs(int vcpu, unsigned long req, uint64_t *v) {
  struct msrs m;
  memset(&m, 0, sizeof m);
  m.nmsrs = N;
  for (unsigned i = 0; i < N; i++) { m.e[i].index = idx[i]; m.e[i].data = v[i]; }
  int r = ioctl(vcpu, req, &m);
  for (unsigned i = 0; i < N; i++) v[i] = m.e[i].data;
  return r;
}

static void print_msrs(const char *what, int r, const uint64_t *v) {
  printf("%s ret %d:", what, r < 0 ? -errno : r);
  for (unsigned i = 0; i < N; i++) printf(" 0x%x=0x%llx", idx[i], (unsigned long long)v[i]);
  printf("\n");
}

static int make_vcpu(int sys) {
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  int vcpu = vm < 0 ? -1 : ioctl(vm, KVM_CREATE_VCPU, 0);
  printf("create_vm %s create_vcpu %s\n", vm >= 0 ? "ok" : "failed", vcpu >= 0 ? "ok" : "failed");
  return vcpu;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (sys < 0) { printf("open failed errno %d\n", errno); return 1; }
  printf("open ok\napi %d\n", ioctl(sys, KVM_GET_API_VERSION, 0));
  int vcpu = make_vcpu(sys);
  if (vcpu < 0) return 1;
  int size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
  volatile uint32_t *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) { printf("mmap failed errno %d\n", errno); return 1; }
  printf("mmap_size %d exit_reason %u\n", size, run[2]); /* kvm_run.exit_reason at offset 8 */

  uint32_t *list = calloc(1 + 4096, 4);
  int r = ioctl(sys, KVM_GET_MSR_INDEX_LIST, list);
  printf("index_list probe ret %d nmsrs %u\n", r < 0 ? -errno : r, list[0]);
  list[0] = 4096;
  r = ioctl(sys, KVM_GET_MSR_INDEX_LIST, list);
  printf("index_list ret %d nmsrs %u:", r < 0 ? -errno : r, list[0]);
  for (unsigned i = 0; i < list[0] && i < 4096; i++) printf(" 0x%x", list[1 + i]);
  printf("\n");

  /* What a guest would have left (kvmsr runs no guest code, so the VMM writes it), then the save. */
  uint64_t g[N] = {0x0023001000000000ull, 0xffffffff81a00080ull, 0xffffffff81a01000ull, 0x47700, 0xffff888003a00000ull,
                   0x10, 0xfffffe0000003000ull, 0xffffffff81a01200ull, 0x0007010600070106ull};
  print_msrs("set_msrs", msrs(vcpu, KVM_SET_MSRS, g), g);
  uint64_t saved[N] = {0};
  print_msrs("save get_msrs", msrs(vcpu, KVM_GET_MSRS, saved), saved);
  int vcpu2 = make_vcpu(sys);
  if (vcpu2 < 0) return 1;
  uint64_t fresh[N] = {0};
  print_msrs("fresh get_msrs", msrs(vcpu2, KVM_GET_MSRS, fresh), fresh);
  uint64_t put[N];
  memcpy(put, saved, sizeof put);
  print_msrs("restore set_msrs", msrs(vcpu2, KVM_SET_MSRS, put), put);
  uint64_t back[N] = {0};
  print_msrs("restored get_msrs", msrs(vcpu2, KVM_GET_MSRS, back), back);
  printf("restored %s\n", memcmp(back, saved, sizeof back) ? "differs" : "same");

  int p[2];
  if (pipe(p) != 0 || write(p[1], "hello", 5) != 5) return 1;
  int avail = -1;
  r = ioctl(p[0], FIONREAD_, &avail);
  printf("pipe FIONREAD ret %d n %d\n", r, avail);
  r = ioctl(p[0], KVM_GET_API_VERSION, 0);
  printf("pipe KVM_GET_API_VERSION ret %d\n", r < 0 ? -errno : r);

  char maps[1 << 16];
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC), mapped = 0;
  ssize_t n;
  while (fd >= 0 && (n = read(fd, maps, sizeof maps - 1)) > 0) {
    maps[n] = 0;
    if (strstr(maps, "libkvmsr-run")) mapped = 1;
  }
  printf("preload library mapped %d\n", mapped);
  return 0;
}
