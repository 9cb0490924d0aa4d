// The socket side of `kvmsr run`: a Unix stream socket every process of the command connects to
// (each its own connection, so a forked child does not share its parent's stream). Frames are
// answered in order on one event loop, so calls from all processes and threads are serialized.
// A malformed frame drops that connection and nothing else; an internal error answers EIO.
import { createServer, type Server, type Socket } from 'node:net';
import { EIO } from '../abi/errno.js';
import { decodeRequest, encodeResponse, frameLength, NEW_NONE, ProtocolError } from './protocol.js';
import type { RunSession } from './session.js';

export class RunServer {
  private readonly server: Server;
  private readonly conns = new Set<Socket>();
  /** Connections dropped for a malformed frame, and internal errors answered with EIO. */
  dropped = 0;
  internalErrors = 0;

  constructor(
    private readonly session: RunSession,
    private readonly log: (line: string) => void,
  ) {
    this.server = createServer((c) => this.serve(c));
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
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(c: Socket): void {
    this.conns.add(c);
    let pending: Buffer = Buffer.alloc(0);
    c.on('close', () => this.conns.delete(c));
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
          c.write(this.answer(frame));
        }
      } catch (e) {
        this.dropped++;
        this.log(`kvmsr run: dropped a connection: ${(e as Error).message}`);
        c.destroy();
        return;
      }
      pending = off === pending.length ? Buffer.alloc(0) : pending.subarray(off);
    });
  }

  private answer(frame: Uint8Array): Buffer {
    const q = decodeRequest(frame); // a ProtocolError drops the connection (serve)
    try {
      return encodeResponse(this.session.handle(q));
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      this.internalErrors++;
      this.log(`kvmsr run: internal error answering request ${q.request.toString(16)}: ${(e as Error).message}; answered EIO`);
      return encodeResponse({ ret: -EIO, argBytes: q.argBytes, regions: q.regions.map((r) => r.bytes), path: '', newKind: NEW_NONE });
    }
  }
}
