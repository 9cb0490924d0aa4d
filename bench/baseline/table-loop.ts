// bench/c/msr_loop.c's loop written in JavaScript: a slot lookup and a plain load or store from a
// typed-array table, in place on the caller's buffer, with no KVM rule at all. Not a peer a user
// would write, but the floor for JavaScript on this machine: how close kvmsr (which applies every
// rule) comes to what V8 does with the least work, and how far that floor itself is from C.
import { slotOf, SLOT_COUNT } from '../../src/kvm/x86/msr-slots.js';

export class TableLoop {
  private readonly table = new Uint32Array(SLOT_COUNT * 2);
  private readonly known = new Uint8Array(SLOT_COUNT);
  /** The caller's buffer as words, kept for the last buffer (the bench reuses one). */
  private bytes: Uint8Array | null = null;
  private words: Uint32Array = new Uint32Array(0);

  constructor(indices: Iterable<number>) {
    for (const i of indices) {
      const s = slotOf(i);
      if (s >= 0) this.known[s] = 1;
    }
  }

  private wordsOf(buf: Uint8Array): Uint32Array {
    if (buf !== this.bytes) {
      if ((buf.byteOffset & 3) !== 0) throw new Error('TableLoop: the buffer must be 4-byte aligned');
      this.words = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
      this.bytes = buf;
    }
    return this.words;
  }

  /** The struct's words and nmsrs, or null for nmsrs >= 256 (E2BIG). */
  private batch(buf: Uint8Array): Uint32Array | null {
    const w = this.wordsOf(buf);
    return w[0]! >= 256 ? null : w;
  }

  /** The slot of a listed MSR, or -1 (C's `s < 0 || !known[s]`). */
  private slotOfKnown(index: number): number {
    const s = slotOf(index);
    return s >= 0 && this.known[s] === 1 ? s : -1;
  }

  getMsrs(buf: Uint8Array): number {
    const w = this.batch(buf);
    if (w === null) return -7;
    const n = w[0]!;
    for (let i = 0, p = 2; i < n; i++, p = (p + 4) | 0) {
      const s = this.slotOfKnown(w[p]!);
      if (s < 0) {
        w[p + 2] = w[p + 3] = 0;
        return i;
      }
      w[p + 2] = this.table[s << 1]!;
      w[p + 3] = this.table[(s << 1) | 1]!;
    }
    return n;
  }

  setMsrs(buf: Uint8Array): number {
    const w = this.batch(buf);
    if (w === null) return -7;
    let i = 0;
    for (let p = 2, s = 0; i < w[0]! && (s = this.slotOfKnown(w[p]!)) >= 0; i++, p = (p + 4) | 0) {
      this.table[s << 1] = w[p + 2]!;
      this.table[(s << 1) | 1] = w[p + 3]!;
    }
    return i;
  }
}
