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

int main(int argc, char **argv) {
  /* argv: the MSR indices, in batch order */
  int nidx = argc - 1;
  uint32_t *idx = malloc(sizeof(uint32_t) * (nidx ? nidx : 1));
  for (int i = 0; i < nidx; i++) { idx[i] = (uint32_t)strtoul(argv[i + 1], 0, 0); int s = slot_of(idx[i]); if (s >= 0) known[s] = 1; }
  int sizes[] = {1, 8, 32, 128, 255};
  for (int k = 0; k < 5; k++) {
    int n = sizes[k];
    struct msrs *m = calloc(1, sizeof(struct msrs) + n * sizeof(struct entry));
    m->nmsrs = n;
    for (int i = 0; i < n; i++) m->entries[i].index = idx[i % nidx];
    long iters = 40000000L / n + 1000;
    volatile int sink = 0;
    for (long j = 0; j < 1000; j++) sink += get_msrs(m);
    double t0 = now_ns();
    for (long j = 0; j < iters; j++) sink += get_msrs(m);
    double t1 = now_ns();
    for (long j = 0; j < iters; j++) sink += set_msrs(m);
    double t2 = now_ns();
    printf("{\"n\":%d,\"getNsPerIoctl\":%.3f,\"setNsPerIoctl\":%.3f}\n", n, (t1 - t0) / iters, (t2 - t1) / iters);
    free(m);
  }
  return 0;
}
