// O(1) index-to-slot lookup over the architectural MSR ranges, with no hashing: each range maps
// onto a contiguous run of slots, and a slot holds one u64 as two u32 halves.

const RANGES: ReadonlyArray<readonly [number, number]> = [
  [0x00000000, 0x2000],
  [0x40000000, 0x200], // Hyper-V (up to TSC_INVARIANT_CONTROL, 0x40000118)
  [0x4b564d00, 0x100], // KVM paravirt
  [0xc0000000, 0x2000],
  [0xc0010000, 0x2000],
];

export const SLOT_COUNT = RANGES.reduce((n, [, len]) => n + len, 0);
const R1 = RANGES[1]![1] + RANGES[0]![1];
const R2 = R1 + RANGES[2]![1];
const R3 = R2 + RANGES[3]![1];

/**
 * The slot of an MSR index, or -1 when the index is outside every range kvmsr stores. Works in
 * int32 arithmetic (indices above 0x7fffffff are not small integers in V8): `index | 0` and the
 * wrapped differences stay small integers on the hot path. Each sum is `| 0` too, so that V8 types
 * the result as an int32 rather than a double it must convert back in the caller's loop.
 */
export function slotOf(index: number): number {
  const i = index | 0;
  if (i >= 0 && i < 0x2000) return i;
  let d = (i - 0x40000000) | 0;
  if (d >= 0 && d < 0x200) return (0x2000 + d) | 0;
  d = (i - 0x4b564d00) | 0;
  if (d >= 0 && d < 0x100) return (R1 + d) | 0;
  d = (i + 0x40000000) | 0; // 0xc0000000
  if (d >= 0 && d < 0x2000) return (R2 + d) | 0;
  d = (i + 0x3fff0000) | 0; // 0xc0010000
  if (d >= 0 && d < 0x2000) return (R3 + d) | 0;
  return -1;
}

/** The MSR index of a slot (the inverse of slotOf). */
export function indexOfSlot(slot: number): number {
  if (slot < 0x2000) return slot;
  if (slot < R1) return 0x40000000 + slot - 0x2000;
  if (slot < R2) return 0x4b564d00 + slot - R1;
  if (slot < R3) return 0xc0000000 + slot - R2;
  return 0xc0010000 + slot - R3;
}

/** A set of MSR indices as one byte per slot. */
export class MsrSet {
  private readonly bits = new Uint8Array(SLOT_COUNT);
  constructor(indices: Iterable<number> = []) {
    for (const i of indices) this.add(i);
  }
  add(index: number): void {
    const s = slotOf(index);
    if (s >= 0) this.bits[s] = 1;
  }
  has(index: number): boolean {
    const s = slotOf(index);
    return s >= 0 && this.bits[s] === 1;
  }
}
