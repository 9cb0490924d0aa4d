/*
 * kvmsr-seccomp: `kvmsr run --intercept seccomp -- COMMAND`, under which /dev/kvm is kvmsr for
 * programs the preload library never reaches: static binaries (Firecracker with musl) and raw
 * syscalls (Go).
 *
 * It forks. The child sets PR_SET_NO_NEW_PRIVS, installs a seccomp filter with a listener
 * (SECCOMP_FILTER_FLAG_NEW_LISTENER), passes the listener to the parent over a socketpair
 * (SCM_RIGHTS) and execs COMMAND. The filter sends open, openat, openat2, and ioctl whose request's
 * type byte is KVMIO (0xAE), to the parent (SECCOMP_RET_USER_NOTIF); every other call runs as it
 * would. The parent, the broker, answers each notification (kvmsr-broker.h); it exits with the
 * command's status (raising the command's signal on itself), passes SIGTERM, SIGHUP and SIGQUIT on
 * to the command, and ignores SIGINT (the terminal's ^C, which the command gets too).
 *
 * Environment: KVMSR_RUN_SOCKET, the server's Unix socket (set by `kvmsr run`; the command's
 * environment does not keep it). `kvmsr-seccomp --probe` says whether this kernel can do it all
 * (a listener, and SECCOMP_ADDFD_FLAG_SEND: Linux 5.14) and exits 0 when it can.
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "kvmsr-broker.h"

/* Calls to the broker: open, openat, openat2, and ioctl(fd, _IOC(*, KVMIO, *, *), ...). */
static int install_filter(void) {
  struct sock_filter f[] = {
      /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 8),
      /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 7, 0),
      /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 6, 0),
      /* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 5, 0),
      /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
      /* 7: the request's low word (ioctl(2) takes an unsigned int cmd) */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args) + 8),
      /* 8 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xff00),
      /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KVMIO << 8, 1, 0),
      /* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      /* 11 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  /* Once the broker has a notification, only a fatal signal ends the wait (5.19): a handled one
   * would restart the call and so repeat what kvmsr already did (a second KVM_CREATE_VCPU). */
  long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                    SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &prog);
  if (fd < 0 && errno == EINVAL) fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
  return (int)fd;
}

/* The child's message: an errno (0: installed) and, when installed, the listener. */
static void send_listener(int sock, int fd, int err) {
  char ctl[CMSG_SPACE(sizeof(int))];
  memset(ctl, 0, sizeof ctl);
  struct iovec iov = {&err, sizeof err};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  while (sendmsg(sock, &m, 0) < 0 && errno == EINTR) {}
}

static int recv_listener(int sock, int *err) {
  char ctl[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {err, sizeof *err};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
  *err = EPROTO;
  ssize_t n;
  while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {}
  if (n != sizeof *err) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

static const int FORWARDED[] = {SIGTERM, SIGHUP, SIGQUIT, SIGINT};
#define NFORWARDED (sizeof FORWARDED / sizeof FORWARDED[0])

static void forward(int sig) {
  if (target_pid > 0) kill(target_pid, sig);
}

/*
 * Forks the target: in the child, the filter, the listener sent, then execvp (argv NULL: the probe's
 * one open of "/"). Returns the listener, or -1 having said why. exec_status gets the read end of a
 * close-on-exec socket: EOF once the exec happened, an errno when it failed.
 */
static int launch(char **argv, int *exec_status) {
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) return -1;
  sigset_t block, old;
  sigemptyset(&block);
  for (size_t i = 0; i < NFORWARDED; i++) sigaddset(&block, FORWARDED[i]);
  sigprocmask(SIG_BLOCK, &block, &old); /* until the parent's handlers are in place */
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(sp[0]);
    sigprocmask(SIG_SETMASK, &old, NULL); /* exec keeps the mask: give the command its own back */
    int fd = install_filter();
    send_listener(sp[1], fd, fd < 0 ? errno : 0);
    if (fd < 0) _exit(127);
    close(fd);
    if (!argv) {
      int t = open("/", O_RDONLY | O_CLOEXEC); /* the broker answers with /dev/null */
      struct stat st;
      _exit(t >= 0 && fstat(t, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3) ? 0 : 3);
    }
    unsetenv("KVMSR_RUN_SOCKET");
    execvp(argv[0], argv);
    int e = errno;
    ssize_t w = write(sp[1], &e, sizeof e);
    (void)w;
    _exit(127);
  }
  target_pid = pid;
  close(sp[1]);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = forward;
  for (size_t i = 0; i < NFORWARDED; i++) {
    if (FORWARDED[i] == SIGINT) signal(SIGINT, SIG_IGN);
    else sigaction(FORWARDED[i], &sa, NULL);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  int err;
  int fd = recv_listener(sp[0], &err);
  if (fd < 0) {
    say("cannot install the seccomp filter: %s%s\n", strerror(err),
        err == EBUSY ? " (another seccomp listener is in the chain)" : err == EINVAL || err == ENOSYS ? " (kernel too old?)" : "");
    close(sp[0]);
    return -1;
  }
  *exec_status = sp[0];
  return fd;
}

/* Exits as the target did: its code, or its signal raised on this process (no core dump). */
static void exit_as(int status) {
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
  struct rlimit none = {0, 0};
  setrlimit(RLIMIT_CORE, &none);
  signal(sig, SIG_DFL);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, sig);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  raise(sig);
  _exit(128 + sig);
}

static int wait_target(void) {
  int status;
  while (waitpid(target_pid, &status, 0) < 0) {
    if (errno != EINTR) return 1 << 8; /* exit code 1 */
  }
  return status;
}

/* The probe: one open, answered with ADDFD_FLAG_SEND; 0 when the child got its fd. */
static int probe(void) {
  int st_fd;
  listener = launch(NULL, &st_fd);
  if (listener < 0) return 1;
  close(st_fd);
  struct seccomp_notif *n = calloc(1, notif_size());
  int ok = 0, got = -1;
  while (n && (got = ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, n)) != 0 && errno == EINTR) {}
  if (got == 0) {
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r = addfd_send(n, null, O_CLOEXEC);
    if (r < 0) {
      say("cannot answer with an fd (SECCOMP_ADDFD_FLAG_SEND, Linux 5.14): %s\n", strerror(-r));
      answer(n, 0, -ENOSYS, 0);
    }
    close(null);
  }
  int status = wait_target();
  ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!ok) say("the seccomp probe failed (status 0x%x)\n", status);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "--probe")) return probe();
  int i = 1;
  if (i < argc && !strcmp(argv[i], "--")) i++;
  if (i >= argc) {
    say("usage: kvmsr-seccomp [--] COMMAND [ARGS...] (with KVMSR_RUN_SOCKET set), or kvmsr-seccomp --probe\n");
    return 2;
  }
  server_socket = getenv("KVMSR_RUN_SOCKET");
  if (!server_socket || !*server_socket) {
    say("KVMSR_RUN_SOCKET is not set (run the command under `kvmsr run --intercept seccomp`)\n");
    return 2;
  }
  server_socket = strdup(server_socket); /* the child's unsetenv leaves the parent's alone, but be plain */
  /* The broker keeps one fd per file it hands out. */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  int st_fd;
  listener = launch(argv + i, &st_fd);
  if (listener < 0) {
    if (target_pid > 0) wait_target();
    return 127;
  }
  if (start_broker() != 0) {
    say("cannot start the broker's threads\n");
    kill(target_pid, SIGKILL);
    wait_target();
    return 127;
  }
  int e = 0;
  ssize_t n;
  while ((n = read(st_fd, &e, sizeof e)) < 0 && errno == EINTR) {}
  close(st_fd);
  if (n == sizeof e) {
    say("cannot run %s: %s\n", argv[i], strerror(e));
    wait_target();
    _exit(127);
  }
  exit_as(wait_target());
}
