// The socket side of `kvmsr run`: a Unix stream socket every process of the command connects to
// (each its own connection, so a forked child does not share its parent's stream). Frames are
// answered in order on one event loop, so calls from all processes and threads are serialized.
// A connection may turn into a shared-memory lane (lane.ts): its requests then wait in a file the
// server polls, for a while after each one, instead of waking it through the socket each time.
// A malformed frame drops that connection and nothing else; an internal error answers EIO.
import { createServer, type Server, type Socket } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { EIO } from '../abi/errno.js';
import { Lane, laneFence } from './lane.js';
import { decodeRequest, encodeResponse, frameLength, NEW_NONE, OP_LANE, OP_RING, ProtocolError, WAKE_FRAME, type Response } from './protocol.js';
import type { RunSession } from './session.js';

export interface ServerOptions {
  /** Where lanes are made; without it every request goes through the socket. */
  laneDir?: string;
  /**
   * How long (µs) the server keeps polling its lanes after the last request: 0 never polls (every
   * request rings). Default: KVMSR_RUN_SPIN_US, else 500 where there is more than one CPU, else 0.
   */
  spinUs?: number;
}

/** The longest the event loop waits while lanes are polled: then it turns once, and polling goes on. */
const TURN_MS = 2;

function defaultSpinUs(): number {
  const env = process.env['KVMSR_RUN_SPIN_US'];
  if (env !== undefined && /^\d+$/.test(env)) return Number(env);
  return availableParallelism() > 1 ? 500 : 0;
}

export class RunServer {
  private readonly server: Server;
  private readonly conns = new Set<Socket>();
  private readonly lanes = new Map<Socket, Lane>();
  private laneSeq = 0;
  private readonly spinMs: number;
  /** Lanes are polled (their LANE_POLLING is set); a turn of polling is scheduled or running. */
  private polling = false;
  private lastRequest = 0;
  /** Connections dropped for a malformed frame, and internal errors answered with EIO. */
  dropped = 0;
  internalErrors = 0;
  /** Lanes made; requests answered through them; rings that woke the server; WAKE frames sent. */
  readonly laneStats = { lanes: 0, requests: 0, rings: 0, wakes: 0 };

  constructor(
    private readonly session: RunSession,
    private readonly log: (line: string) => void,
    private readonly opts: ServerOptions = {},
  ) {
    this.server = createServer((c) => this.serve(c));
    this.spinMs = (opts.spinUs ?? defaultSpinUs()) / 1000;
  }

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** Stops listening and ends every connection (a grandchild may outlive the command). */
  close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    for (const l of this.lanes.values()) l.close();
    this.lanes.clear();
    this.polling = false;
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(c: Socket): void {
    this.conns.add(c);
    let pending: Buffer = Buffer.alloc(0);
    c.on('close', () => {
      this.conns.delete(c);
      this.lanes.get(c)?.close();
      this.lanes.delete(c);
    });
    c.on('error', () => undefined); // the peer died: nothing to answer
    c.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let off = 0;
      try {
        for (;;) {
          const size = frameLength(pending.subarray(off));
          if (size === null || pending.length - off < size) break;
          const frame = pending.subarray(off, off + size);
          off += size;
          const out = this.socketFrame(c, frame);
          if (out) c.write(out);
        }
      } catch (e) {
        this.drop(c, e);
        return;
      }
      pending = off === pending.length ? Buffer.alloc(0) : pending.subarray(off);
    });
  }

  private drop(c: Socket, e: unknown): void {
    this.dropped++;
    this.log(`kvmsr run: dropped a connection: ${(e as Error).message}`);
    c.destroy();
  }

  /** A frame that came through the socket: its response, or null (a ring is answered in the lane). */
  private socketFrame(c: Socket, frame: Uint8Array): Buffer | null {
    const op = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(8, true);
    if (op === OP_RING) {
      decodeRequest(frame);
      if (!this.lanes.has(c)) throw new ProtocolError('a ring without a lane');
      this.laneStats.rings++;
      this.serveLanes();
      return null;
    }
    if (op === OP_LANE) return this.openLane(c, frame);
    return this.answer(frame);
  }

  /** OP_LANE: a new lane for this connection (its path in the response), or -EIO without one. */
  private openLane(c: Socket, frame: Uint8Array): Buffer {
    const q = decodeRequest(frame);
    const none: Response = { ret: -EIO, argBytes: q.argBytes, regions: [], path: '', newKind: NEW_NONE };
    if (this.opts.laneDir === undefined || this.lanes.has(c)) return encodeResponse(none);
    let lane: Lane;
    try {
      lane = new Lane(join(this.opts.laneDir, `lane-${++this.laneSeq}`));
    } catch (e) {
      this.log(`kvmsr run: no lane for a connection (${(e as Error).message}); its calls go through the socket`);
      return encodeResponse(none);
    }
    if (this.polling) lane.setPolling(true);
    this.lanes.set(c, lane);
    this.laneStats.lanes++;
    return encodeResponse({ ...none, ret: 0, path: lane.path });
  }

  /** Answers what waits in the lanes, then polls them for a while where polling is on. */
  private serveLanes(): void {
    this.lastRequest = performance.now();
    if (this.polling) {
      this.answerLanes(); // a ring that raced with the last turn: the polling goes on anyway
      return;
    }
    if (this.spinMs <= 0) {
      this.answerLanes();
      return;
    }
    this.polling = true;
    for (const l of this.lanes.values()) l.setPolling(true);
    this.poll();
  }

  /**
   * One turn of polling: up to TURN_MS without yielding, so the event loop (other sockets, the
   * command's exit) is never held longer; then again on the next turn, until nothing has come for
   * spinMs. Stopping clears LANE_POLLING and looks once more, so a caller that saw it set has rung
   * or is answered.
   */
  private poll(): void {
    if (!this.polling) return;
    const end = performance.now() + TURN_MS;
    for (;;) {
      if (this.answerLanes()) this.lastRequest = performance.now();
      const now = performance.now();
      if (now - this.lastRequest > this.spinMs) {
        for (const l of this.lanes.values()) l.setPolling(false);
        laneFence();
        if (this.answerLanes()) {
          for (const l of this.lanes.values()) l.setPolling(true);
          this.lastRequest = performance.now();
          continue;
        }
        this.polling = false;
        return;
      }
      if (now > end) {
        setImmediate(() => this.poll());
        return;
      }
    }
  }

  /** Answers every lane whose request waits; whether there was one. */
  private answerLanes(): boolean {
    let any = false;
    for (const [c, lane] of this.lanes) {
      try {
        const frame = lane.take();
        if (frame === null) continue;
        any = true;
        this.laneStats.requests++;
        const resp = this.answer(frame);
        if (lane.putResponse(resp)) {
          this.laneStats.wakes++;
          c.write(WAKE_FRAME);
        }
      } catch (e) {
        this.lanes.delete(c);
        lane.close();
        this.drop(c, e);
      }
    }
    return any;
  }

  private answer(frame: Uint8Array): Buffer {
    const q = decodeRequest(frame); // a ProtocolError drops the connection (serve)
    if (q.op === OP_LANE || q.op === OP_RING) throw new ProtocolError(`op ${q.op} inside a lane`);
    try {
      return this.session.respond(q);
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      this.internalErrors++;
      this.log(`kvmsr run: internal error answering request ${q.request.toString(16)}: ${(e as Error).message}; answered EIO`);
      return encodeResponse({ ret: -EIO, argBytes: q.argBytes, regions: q.regions.map((r) => r.bytes), path: '', newKind: NEW_NONE });
    }
  }
}
