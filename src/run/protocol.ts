// The wire format between the `kvmsr run` preload library (preload/kvmsr-run.c) and its server:
// little-endian frames over a Unix stream socket, one request and then its response. After OP_LANE
// the same frames travel through a shared file instead (lane.ts); the socket then carries only the
// OP_RING and WAKE frames that wake a side that sleeps.
//
// Request (48-byte header): magic, size (whole frame), op, kvmsr fd (i32), ioctl request, tid,
// arg (u64: the integer argument, or the pointer), flags (bit 0: arg is a pointer and its bytes
// follow; bit 1: the calling thread's signals follow), argLen, nregions, reserved; then, with
// flag bit 1 (KVM_RUN), 16 bytes: the signals the thread blocks and those pending for it (each a
// u64, the kernel's sigset_t: bit n-1 for signal n), as the library saw them with every signal
// blocked; then argLen bytes (what the kernel would read at arg: the readable prefix of it, so a
// short one faults), then per region (memory that pointers inside the struct reach): addr (u64),
// len (u32), reserved (u32) and len bytes.
// Response (32-byte header): magic, size, ret (>= 0 or -errno), argLen, nregions, pathLen, newKind,
// flags; then the argument's bytes and each region's bytes after the call (the same lengths as
// sent), for a new vCPU the path of the file that holds its kvm_run page, and, with flag bit 0
// (RESP_WAIT: a KVM_RUN whose vCPU sleeps), 8 bytes: the signal mask (u64, as above) the calling
// thread waits under until a signal outside it is pending; the library then writes exit_reason =
// KVM_EXIT_INTR into the vCPU's kvm_run page and returns ret (-EINTR). The wait is the thread's
// own: the server answers at once and serves every other thread meanwhile.
//
// Decoding never throws anything but ProtocolError.

export const REQ_MAGIC = 0x52534d4b;
export const RESP_MAGIC = 0x5053524b;
export const OP_OPEN = 1;
export const OP_IOCTL = 2;
export const OP_CLOSE = 3;
/** Make this connection a shared-memory lane (lane.ts): the response's path names its file. */
export const OP_LANE = 4;
/** A request waits in this connection's lane: answered there, never on the socket. */
export const OP_RING = 5;
/** A RESP_HEADER-sized frame on the socket: the lane holds the response its caller sleeps for. */
export const WAKE_MAGIC = 0x454b4157;
export const REQ_HEADER = 48;
export const RESP_HEADER = 32;
export const REGION_HEADER = 16;
export const FLAG_BUFFER = 1;
/** Request flag: 16 bytes of signal state follow the header (KVM_RUN on a vCPU). */
export const FLAG_SIGNALS = 2;
export const SIGNALS_LEN = 16;
/** Response flag: the calling thread waits for a signal; the 8-byte mask follows the path. */
export const RESP_WAIT = 1;
export const WAIT_MASK_LEN = 8;
/** Far above the largest legitimate frame (a 64Ki-entry MSR list plus sixteen filter bitmaps). */
export const MAX_FRAME = 1 << 20;
export const MAX_REGIONS = 16;
/** newKind: what the returned fd is, when the call made one (KVM_CREATE_VM, KVM_CREATE_VCPU). */
export const NEW_NONE = 0;
export const NEW_VM = 2;
export const NEW_VCPU = 3;
/** A plain file (KVM_GET_STATS_FD's): the path names it; the library opens it read-only as the program's. */
export const NEW_FILE = 4;
/** The same, opened read-write and not close-on-exec (KVM_CREATE_GUEST_MEMFD's). */
export const NEW_FILE_RW = 5;
/**
 * A KVM device (KVM_CREATE_DEVICE returns 0 and puts the kvmsr fd in the struct's fd field, at 4):
 * the library makes a real fd for it, as for a VM, and writes that into the field instead.
 */
export const NEW_DEVICE = 6;

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export interface Region {
  addr: bigint;
  bytes: Uint8Array;
}

export interface Request {
  op: number;
  kfd: number;
  request: number;
  tid: number;
  arg: bigint;
  /** The argument is a pointer, and `argBytes` are what is readable there (up to the ioctl's extent). */
  pointer: boolean;
  argBytes: Uint8Array;
  regions: Region[];
  /** The calling thread's signals (KVM_RUN): blocked and pending, as the kernel's sigset_t. */
  signals?: { blocked: bigint; pending: bigint };
}

export interface Response {
  ret: number;
  argBytes: Uint8Array;
  regions: Uint8Array[];
  path: string;
  newKind: number;
  /** KVM_RUN's vCPU sleeps: the calling thread waits under this signal mask (RESP_WAIT). */
  wait?: bigint;
}

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** The frame's length from its first 8 bytes, or null while fewer are there. Throws on a bad header. */
export function frameLength(buf: Uint8Array): number | null {
  if (buf.length < 8) return null;
  const dv = view(buf);
  if (dv.getUint32(0, true) !== REQ_MAGIC) throw new ProtocolError('bad magic: not a kvmsr run request');
  const size = dv.getUint32(4, true);
  if (size < REQ_HEADER || size > MAX_FRAME) throw new ProtocolError(`bad frame size ${size}`);
  return size;
}

export function decodeRequest(frame: Uint8Array): Request {
  const size = frameLength(frame);
  if (size === null || size !== frame.length) throw new ProtocolError('truncated frame');
  const dv = view(frame);
  const op = dv.getUint32(8, true);
  if (op < OP_OPEN || op > OP_RING) throw new ProtocolError(`unknown op ${op}`);
  const flags = dv.getUint32(32, true);
  const argLen = dv.getUint32(36, true);
  const nregions = dv.getUint32(40, true);
  if ((flags & ~(FLAG_BUFFER | FLAG_SIGNALS)) !== 0) throw new ProtocolError(`unknown flags 0x${flags.toString(16)}`);
  if (nregions > MAX_REGIONS) throw new ProtocolError(`${nregions} regions (at most ${MAX_REGIONS})`);
  if ((flags & FLAG_BUFFER) === 0 && (argLen !== 0 || nregions !== 0)) throw new ProtocolError('bytes with an integer argument');
  if (op !== OP_IOCTL && flags !== 0) throw new ProtocolError('bytes with an open or a close');
  let off = REQ_HEADER;
  const take = (n: number, what: string): Uint8Array => {
    if (n > frame.length - off) throw new ProtocolError(`${what} runs past the frame`);
    const b = frame.slice(off, off + n);
    off += n;
    return b;
  };
  let signals: Request['signals'];
  if ((flags & FLAG_SIGNALS) !== 0) {
    const b = take(SIGNALS_LEN, 'the signal state');
    const sv = view(b);
    signals = { blocked: sv.getBigUint64(0, true), pending: sv.getBigUint64(8, true) };
  }
  const argBytes = take(argLen, 'the argument');
  const regions: Region[] = [];
  for (let i = 0; i < nregions; i++) {
    if (REGION_HEADER > frame.length - off) throw new ProtocolError(`region ${i} runs past the frame`);
    const addr = dv.getBigUint64(off, true);
    const len = dv.getUint32(off + 8, true);
    off += REGION_HEADER;
    regions.push({ addr, bytes: take(len, `region ${i}`) });
  }
  if (off !== frame.length) throw new ProtocolError(`${frame.length - off} bytes after the last region`);
  return {
    op,
    kfd: dv.getInt32(12, true),
    request: dv.getUint32(16, true),
    tid: dv.getUint32(20, true),
    arg: dv.getBigUint64(24, true),
    pointer: (flags & FLAG_BUFFER) !== 0,
    argBytes,
    regions,
    ...(signals ? { signals } : {}),
  };
}

export function encodeResponse(r: Response): Buffer {
  const path = Buffer.from(r.path, 'utf8');
  const regions = r.regions.reduce((n, b) => n + b.length, 0);
  const wait = r.wait !== undefined;
  const size = RESP_HEADER + r.argBytes.length + regions + path.length + (wait ? WAIT_MASK_LEN : 0);
  const out = Buffer.alloc(size);
  out.writeUInt32LE(RESP_MAGIC, 0);
  out.writeUInt32LE(size, 4);
  out.writeInt32LE(r.ret, 8);
  out.writeUInt32LE(r.argBytes.length, 12);
  out.writeUInt32LE(r.regions.length, 16);
  out.writeUInt32LE(path.length, 20);
  out.writeUInt32LE(r.newKind, 24);
  out.writeUInt32LE(wait ? RESP_WAIT : 0, 28);
  let off = RESP_HEADER;
  out.set(r.argBytes, off);
  off += r.argBytes.length;
  for (const b of r.regions) {
    out.set(b, off);
    off += b.length;
  }
  out.set(path, off);
  if (r.wait !== undefined) out.writeBigUInt64LE(BigInt.asUintN(64, r.wait), off + path.length);
  return out;
}

/** A request frame, as the library builds it (for tests and tools that speak to a server directly). */
export function encodeRequest(q: Request): Buffer {
  const sig = q.signals ? SIGNALS_LEN : 0;
  const size = REQ_HEADER + sig + q.argBytes.length + q.regions.reduce((n, r) => n + REGION_HEADER + r.bytes.length, 0);
  const out = Buffer.alloc(size);
  out.writeUInt32LE(REQ_MAGIC, 0);
  out.writeUInt32LE(size, 4);
  out.writeUInt32LE(q.op, 8);
  out.writeInt32LE(q.kfd, 12);
  out.writeUInt32LE(q.request >>> 0, 16);
  out.writeUInt32LE(q.tid, 20);
  out.writeBigUInt64LE(q.arg, 24);
  out.writeUInt32LE((q.pointer ? FLAG_BUFFER : 0) | (q.signals ? FLAG_SIGNALS : 0), 32);
  out.writeUInt32LE(q.argBytes.length, 36);
  out.writeUInt32LE(q.regions.length, 40);
  let off = REQ_HEADER;
  if (q.signals) {
    out.writeBigUInt64LE(BigInt.asUintN(64, q.signals.blocked), off);
    out.writeBigUInt64LE(BigInt.asUintN(64, q.signals.pending), off + 8);
    off += SIGNALS_LEN;
  }
  out.set(q.argBytes, off);
  off += q.argBytes.length;
  for (const r of q.regions) {
    out.writeBigUInt64LE(r.addr, off);
    out.writeUInt32LE(r.bytes.length, off + 8);
    off += REGION_HEADER;
    out.set(r.bytes, off);
    off += r.bytes.length;
  }
  return out;
}

/** The WAKE frame the server sends a lane's caller that sleeps on the socket. */
export const WAKE_FRAME: Buffer = (() => {
  const b = Buffer.alloc(RESP_HEADER);
  b.writeUInt32LE(WAKE_MAGIC, 0);
  b.writeUInt32LE(RESP_HEADER, 4);
  return b;
})();

/** Response frame length from its header, or null while fewer than RESP_HEADER bytes are there. */
export function responseLength(buf: Uint8Array): number | null {
  if (buf.length < RESP_HEADER) return null;
  const dv = view(buf);
  if (dv.getUint32(0, true) !== RESP_MAGIC) throw new ProtocolError('bad response magic');
  return dv.getUint32(4, true);
}

export function decodeResponse(frame: Uint8Array, regionLens: readonly number[]): Response {
  const dv = view(frame);
  const argLen = dv.getUint32(12, true);
  const pathLen = dv.getUint32(20, true);
  let off = RESP_HEADER;
  const argBytes = frame.slice(off, off + argLen);
  off += argLen;
  const regions = regionLens.map((n) => {
    const b = frame.slice(off, off + n);
    off += n;
    return b;
  });
  const path = Buffer.from(frame.slice(off, off + pathLen)).toString('utf8');
  off += pathLen;
  const r: Response = { ret: dv.getInt32(8, true), argBytes, regions, path, newKind: dv.getUint32(24, true) };
  if ((dv.getUint32(28, true) & RESP_WAIT) !== 0) r.wait = dv.getBigUint64(off, true);
  return r;
}
