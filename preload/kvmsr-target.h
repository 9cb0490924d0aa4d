/*
 * The target's memory and fds, the files the broker handed out, and the kvmsr server, for the
 * broker (kvmsr-target.c).
 */
#ifndef KVMSR_TARGET_H
#define KVMSR_TARGET_H
#include "kvmsr-broker.h"

/* A file the broker installed in the target: known by its inode, which the broker's own fd keeps
 * from being reused while it runs. tgid: the process that made a VM or vCPU. */
struct kfile {
  dev_t dev;
  ino_t ino;
  int kfd;
  int kind;
  pid_t tgid;
  int fd;
};

/* One connection to the server (one per broker thread), -1 until first used. It has no lane (lane.ts):
 * the server would poll one per broker thread, and the seccomp hops cost wake-ups of their own. */
struct conn { int fd; };


/* How many bytes at addr the thread can read (a prefix of len), copied into dst. */
size_t read_target(pid_t tid, void *dst, uint64_t addr, size_t len);
/* Writes back the span of `now` that differs from `was`; 0, or -1 where the target cannot take it. */
int write_back(pid_t tid, uint64_t addr, const unsigned char *was, const unsigned char *now, size_t len);
/* A NUL-terminated string of at most cap bytes; 0, or -1 when unreadable or too long. */
int read_string(pid_t tid, uint64_t addr, char *buf, size_t cap);
/* The process a thread belongs to, or -1. */
pid_t tgid_of(pid_t tid);

/* Records fd (the broker's, kept open) as kvmsr fd kfd; 0, or -1 when the table is full. */
int files_add(int fd, int kfd, int kind, pid_t tgid);
void files_remove(int fd);
/* Whether the thread's fd tfd is a file the broker handed out (then *out says which). */
int files_find(pid_t tid, int tfd, struct kfile *out);

/* One request and its response (the library's frame); 0, or -1 when the server is unreachable.
 * sig: NULL, or (KVM_RUN) the thread's blocked and pending signals, sent with FLAG_SIGNALS. */
int transact(struct conn *c, uint32_t op, int32_t kfd, uint32_t req, uint64_t arg, int buffer, const unsigned char *argb,
             uint32_t arg_len, const struct region *rg, uint32_t nrg, const uint64_t *sig, pid_t tid, struct reply *out);
void reply_free(struct reply *r);
/* OP_CLOSE: kvmsr forgets kfd (a file the target never got). */
void close_in_kvmsr(struct conn *c, int kfd, pid_t tid);

#endif
