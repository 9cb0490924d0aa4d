// Resolves an ioctl's pointer argument to bytes: a Uint8Array is itself the mapping; a number or
// bigint is an address in the emulated user memory. Keeps one DataView per backing buffer so the
// per-ioctl path allocates nothing in steady state.
import type { ResolvedPointer, UserMemory } from '../abi/user-memory.js';

export type IoctlArg = number | bigint | Uint8Array;

/** The value an ioctl sees as `unsigned long arg` when a buffer was passed where an integer goes. */
const POINTER_AS_INTEGER = 0x7f0000001000;

export class ArgResolver {
  dv: DataView = new DataView(new ArrayBuffer(0));
  /** The same buffer as u32s (host byte order, little-endian on every platform kvmsr runs on). */
  u32: Uint32Array = new Uint32Array(0);
  /** The same words as int32, for MSR indices (they stay small integers in V8). */
  i32: Int32Array = new Int32Array(0);
  u8: Uint8Array = new Uint8Array(0);
  base = 0;
  avail = 0;
  /** The array last resolved: its views are reused (reading `.buffer` costs more than an ioctl's loop). */
  private lastBytes: Uint8Array | null = null;
  private readonly ptr: ResolvedPointer = { bytes: new Uint8Array(0), offset: 0, avail: 0 };

  constructor(private readonly memory: UserMemory) {}

  /** Points dv/base/avail at the argument. False when nothing is mapped there (EFAULT on first copy). */
  resolve(arg: IoctlArg): boolean {
    if (arg instanceof Uint8Array) {
      this.setView(arg, 0, arg.length);
      return true;
    }
    const addr = typeof arg === 'bigint' ? (arg > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(arg)) : arg;
    if (addr <= 0 || !this.memory.resolveInto(addr, this.ptr)) {
      this.avail = 0;
      return false;
    }
    this.setView(this.ptr.bytes, this.ptr.offset, this.ptr.avail);
    return true;
  }

  /** Resolves an address embedded in a struct (e.g. a filter bitmap) to a copy of `len` bytes. */
  copyIn(addr: bigint, len: number): Uint8Array | null {
    if (addr === 0n || addr > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    return this.memory.read(Number(addr), len);
  }

  /** `unsigned long arg` for integer ioctls. */
  intValue(arg: IoctlArg): number {
    if (arg instanceof Uint8Array) return POINTER_AS_INTEGER;
    if (typeof arg === 'bigint') {
      const v = BigInt.asUintN(64, arg);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
    if (!Number.isFinite(arg)) return Number.MAX_SAFE_INTEGER;
    // A negative JS number is what a C caller's (unsigned long)-1 would be: huge.
    return arg < 0 ? Number.MAX_SAFE_INTEGER : Math.floor(arg);
  }

  /**
   * copy_to_user of `src` at `off` bytes past base: writes what is mapped and reports whether
   * all of it was (the kernel writes up to the fault, then returns EFAULT).
   */
  copyOut(off: number, src: Uint8Array): boolean {
    const room = Math.max(0, this.avail - off);
    const n = Math.min(room, src.length);
    this.u8.set(n === src.length ? src : src.subarray(0, n), this.base + off);
    return n === src.length;
  }

  private setView(bytes: Uint8Array, offset: number, avail: number): void {
    if (bytes !== this.lastBytes) this.switchTo(bytes);
    this.base = this.byteOffset + offset;
    this.avail = avail;
  }

  /** Views of recently used arrays, so alternating between a few buffers allocates nothing. */
  private readonly cache: { buffer: ArrayBufferLike; dv: DataView; u32: Uint32Array; i32: Int32Array; u8: Uint8Array }[] = [];
  private next = 0;
  private byteOffset = 0;

  private switchTo(bytes: Uint8Array): void {
    // Keyed by the backing buffer: the views cover all of it, so every array over one buffer (a
    // server's scratch area, mapped a piece at a time) shares them.
    const buf = bytes.buffer;
    let c = this.cache.find((e) => e.buffer === buf);
    if (!c) {
      const words = buf.byteLength >>> 2;
      c = { buffer: buf, dv: new DataView(buf), u32: new Uint32Array(buf, 0, words), i32: new Int32Array(buf, 0, words), u8: new Uint8Array(buf) };
      this.cache[this.next] = c;
      this.next = (this.next + 1) % VIEW_CACHE_SIZE;
    }
    this.lastBytes = bytes;
    this.dv = c.dv;
    this.u32 = c.u32;
    this.i32 = c.i32;
    this.u8 = c.u8;
    this.byteOffset = bytes.byteOffset;
  }
}

const VIEW_CACHE_SIZE = 8;
