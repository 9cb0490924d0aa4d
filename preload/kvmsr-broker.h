/*
 * The broker of kvmsr-seccomp (kvmsr-broker.c): answers the seccomp notifications of the command
 * under `kvmsr run --intercept seccomp`. The launcher (kvmsr-seccomp.c) sets what is below and
 * calls start_broker().
 */
#ifndef KVMSR_BROKER_H
#define KVMSR_BROKER_H
#include <linux/seccomp.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include "kvmsr-common.h"

#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef __NR_openat2
#define __NR_openat2 437
#endif

/* The seccomp listener, the command's pid (the launcher's child) and the server's socket. */
extern int listener;
extern pid_t target_pid;
extern const char *server_socket;

/* One line on stderr, "kvmsr run: " first. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The kernel's struct seccomp_notif size (SECCOMP_GET_NOTIF_SIZES), at least ours. */
size_t notif_size(void);
/* Installs fd in the target as the call's answer (SECCOMP_ADDFD_FLAG_SEND): its number, or -errno. */
int addfd_send(const struct seccomp_notif *n, int fd, uint32_t newfd_flags);
/* Answers the call: val, or error (a -errno), or flags SECCOMP_USER_NOTIF_FLAG_CONTINUE. */
void answer(const struct seccomp_notif *n, int64_t val, int error, uint32_t flags);
/* Starts the threads that receive and answer notifications; 0, or -1. */
int start_broker(void);

#endif
