// A connection's shared-memory lane: a file in the session's directory that the preload library (or
// the seccomp broker) maps and kvmsr reads and writes with pread/pwrite (Node cannot map memory).
// The request frame goes in at LANE_CTL and its response comes back LANE_MAX further, in the
// socket's format (protocol.ts). What it saves is the wake-up: on a guest like these hosts' PVM
// vCPUs, waking a process that sleeps on another CPU costs 30-70 µs, the kernel's KVM_GET_MSRS 5.
// So both sides poll while they are busy: the server polls its lanes for a while after each request
// (LANE_POLLING set: the caller need not ring), the caller polls for its response for a while before
// it sleeps on the socket (LANE_SLEEPING set: the server sends a WAKE frame). The layout and the
// caller's half are preload/kvmsr-common.h's (lane_exchange).
import { closeSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { frameLength, ProtocolError, REQ_HEADER } from './protocol.js';

const LANE_POLLING = 0;
const LANE_SLEEPING = 64;
const LANE_CTL = 4096;
/** Right before the request frame: one read gets the state and a small frame whole. */
const LANE_STATE = LANE_CTL - 8;
const LANE_REQUEST = 1;
const LANE_RESPONSE = 2;
export const LANE_MAX = (1 << 20) + 8192;
const LANE_SIZE = LANE_CTL + 2 * LANE_MAX;
/** How much of the frame each look at the lane reads with its state (a KVM_GET_MSRS of 120 entries fits). */
const PEEK = 2048;

/** A full memory fence (a locked instruction): orders this thread's earlier stores before its later loads. */
const FENCE = new Int32Array(new SharedArrayBuffer(4));
const fence = (): number => Atomics.add(FENCE, 0, 0);

export class Lane {
  readonly fd: number;
  private readonly word = Buffer.alloc(4);
  private frame = Buffer.alloc(8 + 64 * 1024);

  constructor(readonly path: string) {
    this.fd = openSync(path, 'wx+', 0o600);
    try {
      ftruncateSync(this.fd, LANE_SIZE);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The waiting request's frame (a view valid until the next call), or null. Throws ProtocolError on a bad one. */
  take(): Uint8Array | null {
    const b = this.frame;
    const got = readSync(this.fd, b, 0, 8 + PEEK, LANE_STATE);
    if (got < 8 + REQ_HEADER || b.readUInt32LE(0) !== LANE_REQUEST) return null;
    const size = frameLength(b.subarray(8))!;
    if (size > LANE_MAX) throw new ProtocolError(`a lane frame of ${size} bytes`);
    if (size <= PEEK) return b.subarray(8, 8 + size);
    if (8 + size > b.length) {
      this.frame = Buffer.alloc(Math.min(8 + LANE_MAX, Math.max(8 + size, b.length * 2)));
      b.copy(this.frame, 0, 0, 8 + PEEK);
    }
    const rest = size - PEEK;
    if (readSync(this.fd, this.frame, 8 + PEEK, rest, LANE_CTL + PEEK) !== rest) throw new ProtocolError('the lane is cut short');
    return this.frame.subarray(8, 8 + size);
  }

  /** Puts the response and marks it ready; true when the caller sleeps and must be woken. */
  putResponse(resp: Uint8Array): boolean {
    if (resp.length > LANE_MAX) throw new ProtocolError(`a lane response of ${resp.length} bytes`);
    writeSync(this.fd, resp, 0, resp.length, LANE_CTL + LANE_MAX);
    fence(); // the response's bytes before the state that says they are there
    this.write(LANE_STATE, LANE_RESPONSE);
    fence(); // the state before reading whether the caller sleeps (it reads them the other way round)
    return this.read(LANE_SLEEPING) === 1;
  }

  /** Says whether the server polls this lane (the caller then does not ring). */
  setPolling(on: boolean): void {
    this.write(LANE_POLLING, on ? 1 : 0);
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    try {
      unlinkSync(this.path);
    } catch {
      // the caller unlinks it once mapped
    }
  }

  private read(off: number): number {
    return readSync(this.fd, this.word, 0, 4, off) === 4 ? this.word.readUInt32LE(0) : 0;
  }

  private write(off: number, v: number): void {
    this.word.writeUInt32LE(v, 0);
    writeSync(this.fd, this.word, 0, 4, off);
  }
}

/** After setPolling(false) on every lane: the fence that orders it before the last look at them. */
export { fence as laneFence };
