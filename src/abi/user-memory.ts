// An emulated user address space. Pointer arguments and pointers embedded in structs (the
// kvm_msr_filter bitmaps) resolve through it; a range that is not fully mapped gives EFAULT the
// way copy_from_user()/copy_to_user() do.

export interface Mapping {
  readonly start: number;
  readonly bytes: Uint8Array;
}

/** Where a user pointer landed: the backing bytes, the offset in them, and how many bytes follow. */
export interface ResolvedPointer {
  bytes: Uint8Array;
  offset: number;
  avail: number;
}

const MAX_ADDR = Number.MAX_SAFE_INTEGER;

export class UserMemory {
  private readonly maps: Mapping[] = [];

  /** Map `bytes` at `start`. Overlapping an existing mapping throws: that is a caller bug. */
  map(start: number, bytes: Uint8Array): void {
    if (!Number.isSafeInteger(start) || start <= 0 || start + bytes.length > MAX_ADDR) {
      throw new RangeError(`cannot map ${bytes.length} bytes at ${start}`);
    }
    const end = start + bytes.length;
    for (const m of this.maps) {
      if (start < m.start + m.bytes.length && m.start < end) {
        throw new RangeError(`mapping at 0x${start.toString(16)} overlaps 0x${m.start.toString(16)}`);
      }
    }
    this.maps.push({ start, bytes });
    this.maps.sort((a, b) => a.start - b.start);
  }

  unmap(start: number): boolean {
    const i = this.maps.findIndex((m) => m.start === start);
    if (i < 0) return false;
    this.maps.splice(i, 1);
    return true;
  }

  /** Fill `out` for `addr`; false when `addr` is in no mapping. */
  resolveInto(addr: number, out: ResolvedPointer): boolean {
    const maps = this.maps;
    for (let i = 0; i < maps.length; i++) {
      const m = maps[i]!;
      const off = addr - m.start;
      if (off >= 0 && off < m.bytes.length) {
        out.bytes = m.bytes;
        out.offset = off;
        out.avail = m.bytes.length - off;
        return true;
      }
    }
    return false;
  }

  /** copy_to_user: writes `src` at `addr`; false (nothing written) where it would fault. */
  write(addr: number, src: Uint8Array): boolean {
    const p: ResolvedPointer = { bytes: EMPTY, offset: 0, avail: 0 };
    if (!Number.isSafeInteger(addr) || !this.resolveInto(addr, p) || p.avail < src.length) return false;
    p.bytes.set(src, p.offset);
    return true;
  }

  /** Copy `len` bytes at `addr` into a new array; null where copy_from_user would fault. */
  read(addr: number, len: number): Uint8Array | null {
    if (len === 0) return new Uint8Array(0);
    const p: ResolvedPointer = { bytes: EMPTY, offset: 0, avail: 0 };
    if (!this.resolveInto(addr, p) || p.avail < len) return null;
    return p.bytes.slice(p.offset, p.offset + len);
  }
}

const EMPTY = new Uint8Array(0);
