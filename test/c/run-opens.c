/*
 * For `kvmsr run` (test/run.test.ts): opens /dev/kvm every way a program can name it through libc
 * (open, open64, openat with AT_FDCWD and with a directory fd, openat64, the _FORTIFY_SOURCE entry
 * points, "//dev/./kvm", "/dev/../dev/kvm", a relative path after chdir, a symlink) and asks each fd
 * for KVM_GET_API_VERSION; also opens two ordinary files, so the open sentinel has something to see.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
extern int __openat_2(int, const char *, int);
extern int __openat64_2(int, const char *, int);

static void report(const char *how, int fd) {
  if (fd < 0) { printf("%s: open failed errno %d\n", how, errno); return; }
  printf("%s: api %d\n", how, ioctl(fd, KVM_GET_API_VERSION, 0));
  close(fd);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int dev = open("/dev", O_RDONLY | O_DIRECTORY);
  report("open", open("/dev/kvm", O_RDWR));
  report("open64", open64("/dev/kvm", O_RDWR | O_CLOEXEC));
  report("openat AT_FDCWD", openat(AT_FDCWD, "/dev/kvm", O_RDWR));
  report("openat /dev fd", openat(dev, "kvm", O_RDWR));
  report("openat64 /dev fd", openat64(dev, "./kvm", O_RDWR));
  report("__open_2", __open_2("/dev/kvm", O_RDWR));
  report("__open64_2", __open64_2("/dev/kvm", O_RDWR));
  report("__openat_2", __openat_2(dev, "kvm", O_RDWR));
  report("__openat64_2", __openat64_2(AT_FDCWD, "/dev/kvm", O_RDWR));
  report("//dev/./kvm", open("//dev/./kvm", O_RDWR));
  report("/dev/../dev/kvm", open("/dev/../dev/kvm", O_RDWR));
  /* Paths the test made: a symlink to /dev/kvm, a path through a symlink to /dev. */
  for (int i = 1; i < argc; i++) report(argv[i], open(argv[i], O_RDWR));
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd) && chdir("/dev") == 0) {
    report("relative after chdir", open("kvm", O_RDWR));
    if (chdir(cwd) != 0) return 1;
  }
  report("O_CREAT|O_EXCL", open("/dev/kvm", O_RDWR | O_CREAT | O_EXCL, 0600));
  /* Ordinary files go to libc as they are. */
  int proc = open("/proc/self", O_RDONLY | O_DIRECTORY);
  int st = openat(proc, "status", O_RDONLY);
  printf("ordinary openat %s\n", st >= 0 ? "ok" : strerror(errno));
  int hosts = open("/etc/hostname", O_RDONLY);
  printf("ordinary open %s\n", hosts >= 0 ? "ok" : strerror(errno));
  return 0;
}
