// The straightforward JavaScript a user would write first: a Map of MSR values, BigInt reads and
// writes through DataView, and an object per entry. The benchmark's baseline peer.
export class NaiveMsrs {
  private readonly values = new Map<number, bigint>();

  constructor(initial: Iterable<[number, bigint]>) {
    for (const [i, v] of initial) this.values.set(i, v);
  }

  /** The entries of a kvm_msrs buffer as objects, or null for nmsrs >= 256 (E2BIG). */
  private entries(dv: DataView): { index: number; data: bigint }[] | null {
    const n = dv.getUint32(0, true);
    if (n >= 256) return null;
    const entries: { index: number; data: bigint }[] = [];
    for (let i = 0; i < n; i++) entries.push({ index: dv.getUint32(8 + 16 * i, true), data: dv.getBigUint64(16 + 16 * i, true) });
    return entries;
  }

  getMsrs(buf: Uint8Array): number {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const entries = this.entries(dv);
    if (!entries) return -7;
    let done = 0;
    for (const e of entries) {
      const v = this.values.get(e.index);
      if (v === undefined) {
        e.data = 0n;
        break;
      }
      e.data = v;
      done++;
    }
    entries.forEach((e, i) => dv.setBigUint64(16 + 16 * i, e.data, true));
    return done;
  }

  setMsrs(buf: Uint8Array): number {
    const entries = this.entries(new DataView(buf.buffer, buf.byteOffset, buf.byteLength));
    if (!entries) return -7;
    let done = 0;
    for (const e of entries) {
      if (!this.values.has(e.index)) break;
      this.values.set(e.index, e.data);
      done++;
    }
    return done;
  }
}
