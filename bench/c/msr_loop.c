/* The practical limit: the msr_io loop in C over an in-memory table indexed like kvmsr's slots,
 * timed on the same buffers. Prints one JSON line per batch size. Built by the bench with gcc -O2. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct entry { uint32_t index, reserved; uint64_t data; };
struct msrs { uint32_t nmsrs, pad; struct entry entries[]; };
#define SLOTS (0x2000 + 0x100 + 0x100 + 0x2000 + 0x2000)
static uint64_t table[SLOTS];
static uint8_t known[SLOTS];

static inline int slot_of(uint32_t i) {
  if (i < 0x2000) return i;
  if (i - 0x40000000u < 0x100) return 0x2000 + (i - 0x40000000u);
  if (i - 0x4b564d00u < 0x100) return 0x2100 + (i - 0x4b564d00u);
  if (i - 0xc0000000u < 0x2000) return 0x2200 + (i - 0xc0000000u);
  if (i - 0xc0010000u < 0x2000) return 0x4200 + (i - 0xc0010000u);
  return -1;
}
__attribute__((noinline)) static int get_msrs(struct msrs *m) {
  uint32_t n = m->nmsrs, i;
  if (n >= 256) return -7;
  for (i = 0; i < n; i++) {
    int s = slot_of(m->entries[i].index);
    if (s < 0 || !known[s]) { m->entries[i].data = 0; break; }
    m->entries[i].data = table[s];
  }
  return i;
}
__attribute__((noinline)) static int set_msrs(struct msrs *m) {
  uint32_t n = m->nmsrs, i;
  if (n >= 256) return -7;
  for (i = 0; i < n; i++) {
    int s = slot_of(m->entries[i].index);
    if (s < 0 || !known[s]) break;
    table[s] = m->entries[i].data;
  }
  return i;
}
static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

/* Times `op` on m for about `ms` milliseconds (after a warm-up), in ns per ioctl. */
static double time_op(int (*op)(struct msrs *), struct msrs *m, double ms) {
  volatile int sink = 0;
  for (long j = 0; j < 1000; j++) sink += op(m);
  long iters = 0;
  double t0 = now_ns(), t1;
  do {
    for (long j = 0; j < 1000; j++) sink += op(m);
    iters += 1000;
    t1 = now_ns();
  } while (t1 - t0 < ms * 1e6);
  return (t1 - t0) / iters;
}

int main(int argc, char **argv) {
  /* argv: the batch size, the milliseconds to time each of GET and SET, then the MSR indices in
   * batch order. The bench runs this right before and right after kvmsr's suite of the same size,
   * so that the ratio compares one time window on this noisy machine, not two. */
  if (argc < 4) { fprintf(stderr, "usage: msr_loop N MS INDEX...\n"); return 2; }
  int n = atoi(argv[1]);
  double ms = atof(argv[2]);
  int nidx = argc - 3;
  uint32_t *idx = malloc(sizeof(uint32_t) * nidx);
  for (int i = 0; i < nidx; i++) { idx[i] = (uint32_t)strtoul(argv[i + 3], 0, 0); int s = slot_of(idx[i]); if (s >= 0) known[s] = 1; }
  struct msrs *m = calloc(1, sizeof(struct msrs) + n * sizeof(struct entry));
  m->nmsrs = n;
  for (int i = 0; i < n; i++) m->entries[i].index = idx[i % nidx];
  if (get_msrs(m) != n || set_msrs(m) != n) { fprintf(stderr, "msr_loop: the batch does not run whole\n"); return 1; }
  double get = time_op(get_msrs, m, ms);
  double set = time_op(set_msrs, m, ms);
  printf("{\"n\":%d,\"getNsPerIoctl\":%.3f,\"setNsPerIoctl\":%.3f}\n", n, get, set);
  free(m);
  return 0;
}
