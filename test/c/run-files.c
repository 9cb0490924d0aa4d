/*
 * For `kvmsr run --intercept seccomp` (test/run-seccomp.test.ts): what a command sees of the files
 * that stand for /dev/kvm, its VM and its vCPU (docs/run-seccomp.md, "What the command sees").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVM_GET_API_VERSION 0xae00u
#define KVM_CREATE_VM 0xae01u
#define KVM_CREATE_VCPU 0xae41u

static void name(const char *what, int fd) {
  char l[64], b[256];
  snprintf(l, sizeof l, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(l, b, sizeof b - 1);
  b[n > 0 ? n : 0] = 0;
  printf("%s %s F_GETFD %d F_GETFL 0x%x\n", what, b, fcntl(fd, F_GETFD), fcntl(fd, F_GETFL));
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int p = open("/dev/kvm", O_PATH);
  printf("O_PATH %s\n", p >= 0 ? "ok" : "failed");
  int e = open("/dev/kvm", O_CREAT | O_EXCL | O_RDWR, 0600);
  printf("O_CREAT|O_EXCL ret %d errno %d\n", e, e < 0 ? errno : 0);
  int d = openat(AT_FDCWD, "/dev/kvm", O_DIRECTORY);
  printf("O_DIRECTORY ret %d errno %d\n", d, d < 0 ? errno : 0);
  int s = open("/dev/kvm", O_RDONLY | O_NONBLOCK);
  name("sys", s);
  int vm = ioctl(s, KVM_CREATE_VM, 0), vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  name("vm", vm);
  name("vcpu", vcpu);
  int one = 1;
  int r = ioctl(vm, FIONBIO, &one);
  printf("FIONBIO ret %d F_GETFL 0x%x\n", r, fcntl(vm, F_GETFL));
  r = ioctl(vm, KVM_CREATE_VCPU, 0);
  printf("vcpu 0 again ret %d errno %d\n", r, r < 0 ? errno : 0);
  int dir = open("/dev", O_RDONLY | O_DIRECTORY);
  int at = openat(dir, "kvm", O_RDWR);
  printf("openat /dev fd: api %d\n", ioctl(at, KVM_GET_API_VERSION, 0));
  if (chdir("/dev") != 0) return 1;
  int rel = open("./kvm", O_RDWR);
  printf("relative: api %d\n", ioctl(rel, KVM_GET_API_VERSION, 0));
  int other = open("/dev/null", O_RDWR);
  printf("ordinary open %s\n", other >= 0 ? "ok" : "failed");
  return 0;
}
