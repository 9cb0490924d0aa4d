/*
 * For `kvmsr run --intercept seccomp` (test/run-seccomp.test.ts): a process killed in the middle of
 * a KVM call. The test holds KVM_GET_REGS in the server for a while; meanwhile another thread of the
 * process sends it SIGKILL.
 *   run-die self    the command itself dies so (its status is SIGKILL's)
 *   run-die child   a forked child dies so; the parent then makes its own VM and vCPU and uses them
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void *killer(void *unused) {
  (void)unused;
  usleep(200 * 1000);
  kill(getpid(), SIGKILL);
  return NULL;
}

static int vcpu_of(int sys) {
  int vm = ioctl(sys, KVM_CREATE_VM, 0);
  return vm < 0 ? -1 : ioctl(vm, KVM_CREATE_VCPU, 0);
}

/* Dies inside KVM_GET_REGS. */
static void die_in_ioctl(void) {
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  int vcpu = vcpu_of(sys);
  if (vcpu < 0) _exit(3);
  pthread_t t;
  pthread_create(&t, NULL, killer, NULL);
  struct kvm_regs regs;
  memset(&regs, 0xa5, sizeof regs);
  ioctl(vcpu, KVM_GET_REGS, &regs);
  printf("KVM_GET_REGS returned: not killed\n");
  _exit(4);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc > 1 && !strcmp(argv[1], "self")) die_in_ioctl();
  pid_t pid = fork();
  if (pid == 0) die_in_ioctl();
  int st;
  waitpid(pid, &st, 0);
  printf("child %s %d\n", WIFSIGNALED(st) ? "killed by" : "exited", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  int vcpu = vcpu_of(sys);
  struct { struct kvm_msrs h; struct kvm_msr_entry e[1]; } m;
  memset(&m, 0, sizeof m);
  m.h.nmsrs = 1;
  m.e[0].index = 0xc0000082;
  m.e[0].data = 0x7f00000000aaull;
  int rs = ioctl(vcpu, KVM_SET_MSRS, &m);
  m.e[0].data = 0;
  int rg = ioctl(vcpu, KVM_GET_MSRS, &m);
  printf("parent set %d get %d 0x%llx\n", rs, rg, (unsigned long long)m.e[0].data);
  return 0;
}
