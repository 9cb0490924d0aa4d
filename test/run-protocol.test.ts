// The server side of `kvmsr run` without the C library (no compiler needed): malformed frames drop
// their connection and nothing else; no request, however odd, makes the session throw; pointer
// arguments and the regions they reach fault, map and write back as the kernel's copies do.
import fc from 'fast-check';
import { mkdtempSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeMsrs, encodeMsrFilter, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { RunServer } from '../src/run/server.js';
import { RunSession } from '../src/run/session.js';
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  OP_CLOSE,
  OP_IOCTL,
  OP_OPEN,
  ProtocolError,
  REQ_MAGIC,
  responseLength,
  type Request,
  type Response,
} from '../src/run/protocol.js';

const req = (q: Partial<Request> & { op: number }): Request => ({ kfd: -1, request: 0, tid: 1, arg: 0n, pointer: false, argBytes: new Uint8Array(0), regions: [], ...q });

describe('kvmsr run session', () => {
  const s = new RunSession({ dir: mkdtempSync(join(tmpdir(), 'kvmsr-run-proto-')), log: () => undefined });
  const sys = s.handle(req({ op: OP_OPEN })).ret;
  const vm = s.handle(req({ op: OP_IOCTL, kfd: sys, request: I.KVM_CREATE_VM })).ret;
  const created = s.handle(req({ op: OP_IOCTL, kfd: vm, request: I.KVM_CREATE_VCPU }));
  const vcpu = created.ret;

  test('a pointer argument is the program\'s bytes at its address; a short one faults, as copy_from_user', () => {
    expect(created.newKind).toBe(3);
    expect(created.path).toMatch(/vcpu-1$/);
    const buf = encodeMsrs([{ index: 0x277, data: 0n }]);
    const r = s.handle(req({ op: OP_IOCTL, kfd: vcpu, request: I.KVM_GET_MSRS, arg: 0x7f0000001000n, pointer: true, argBytes: buf }));
    expect(r.ret).toBe(1);
    expect(decodeMsrs(r.argBytes).entries[0]!.data).toBe(0x7040600070406n);
    const short = s.handle(req({ op: OP_IOCTL, kfd: vcpu, request: I.KVM_GET_MSRS, arg: 0x7f0000001000n, pointer: true, argBytes: buf.subarray(0, 20) }));
    expect(short.ret).toBe(-14);
    expect(s.handle(req({ op: OP_IOCTL, kfd: vcpu, request: I.KVM_GET_MSRS, arg: 0n, pointer: true })).ret).toBe(-14);
    expect(s.handle(req({ op: OP_IOCTL, kfd: 99, request: I.KVM_GET_MSRS })).ret).toBe(-9);
  });

  test('filter bitmaps arrive as regions at their addresses; two ranges may share one', () => {
    const bitmap = 0x600000n;
    const filter = encodeMsrFilter({
      flags: 0,
      ranges: [
        { flags: 2, nmsrs: 1, base: 0x174, bitmap },
        { flags: 1, nmsrs: 1, base: 0x174, bitmap },
      ],
    });
    const q = req({ op: OP_IOCTL, kfd: vm, request: I.KVM_X86_SET_MSR_FILTER, arg: 0x500000n, pointer: true, argBytes: filter });
    expect(s.handle({ ...q, regions: [] }).ret).toBe(-14); // the bitmaps not sent: unreadable
    expect(s.handle({ ...q, regions: [{ addr: bitmap, bytes: new Uint8Array(8) }, { addr: bitmap, bytes: new Uint8Array(8) }] }).ret).toBe(0);
    expect(s.kvm.wrmsr(vcpu, 0x174, 1n)).toEqual({ kind: 'gp' }); // denied, and no exit was asked for
  });

  test('random requests never throw and leave no memory mapped', () => {
    const arbReq = fc.record({
      op: fc.constantFrom(OP_OPEN, OP_IOCTL, OP_IOCTL, OP_IOCTL, OP_CLOSE, 7),
      kfd: fc.integer({ min: -2, max: 8 }),
      request: fc.oneof(fc.constantFrom(...Object.values(I.KVM_IOCTLS), 0x5421, 0x2), fc.integer({ min: 0, max: 0xffffffff })),
      tid: fc.nat(),
      arg: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x1004n, (1n << 64n) - 1n, 1n << 53n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      pointer: fc.boolean(),
      argBytes: fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.array(fc.record({ index: fc.nat(), data: fc.constant(0n) }), { maxLength: 5 }).map((e) => encodeMsrs(e))),
      regions: fc.array(fc.record({ addr: fc.constantFrom(0n, 0x1000n, 0x1008n, 0x2000n, (1n << 63n) + 5n), bytes: fc.uint8Array({ maxLength: 64 }) }), { maxLength: 4 }),
    });
    fc.assert(
      fc.property(fc.array(arbReq, { maxLength: 30 }), (qs) => {
        for (const q of qs) {
          const r = s.handle(q);
          expect(Number.isInteger(r.ret)).toBe(true);
          expect(r.regions).toHaveLength(q.regions.length);
          // Nothing stays mapped between requests.
          expect(s.kvm.memory.read(0x1000, 1)).toBeNull();
        }
      }),
      { numRuns: 300, seed: 1 },
    );
  });

  afterAll(() => s.close());
});

describe('kvmsr run server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-run-srv-'));
  const path = join(dir, 'sock');
  const log: string[] = [];
  const session = new RunSession({ dir });
  const server = new RunServer(session, (l) => log.push(l));
  beforeAll(() => server.listen(path));
  afterAll(async () => {
    await server.close();
    session.close();
  });

  const open = (): Promise<Socket> => new Promise((resolve) => { const c = connect(path, () => resolve(c)); });
  const closed = (c: Socket): Promise<void> => new Promise((resolve) => c.once('close', () => resolve()));
  async function ask(c: Socket, q: Request): Promise<Response> {
    const frame = await new Promise<Buffer>((resolve, reject) => {
      let got = Buffer.alloc(0);
      const on = (d: Buffer): void => {
        got = Buffer.concat([got, d]);
        const n = responseLength(got);
        if (n !== null && got.length >= n) {
          c.off('data', on);
          resolve(got.subarray(0, n));
        }
      };
      c.on('data', on);
      c.once('close', () => reject(new Error('closed')));
      c.write(encodeRequest(q));
    });
    return decodeResponse(frame, q.regions.map((r) => r.bytes.length));
  }

  test('garbage, oversized and inconsistent frames drop their own connection only', async () => {
    const good = await open();
    const sys = (await ask(good, req({ op: OP_OPEN }))).ret;
    const header = (size: number, fill: (b: Buffer) => void = () => undefined): Buffer => {
      const b = Buffer.alloc(Math.max(48, Math.min(size, 64)));
      b.writeUInt32LE(REQ_MAGIC, 0);
      b.writeUInt32LE(size, 4);
      fill(b);
      return b;
    };
    const bad: Buffer[] = [
      Buffer.from('GET / HTTP/1.0\r\n\r\n'),
      header(1 << 30), // larger than any request
      header(12), // smaller than a header
      header(48, (b) => b.writeUInt32LE(9, 8)), // no such op
      header(48, (b) => (b.writeUInt32LE(OP_IOCTL, 8), b.writeUInt32LE(1, 32), b.writeUInt32LE(1000, 36))), // argLen past the frame
      header(48, (b) => (b.writeUInt32LE(OP_IOCTL, 8), b.writeUInt32LE(1, 32), b.writeUInt32LE(500, 40))), // too many regions
    ];
    for (const f of bad) {
      const c = await open();
      const done = closed(c);
      c.write(f);
      await done;
    }
    // A truncated frame and a hang-up: nothing to answer, nothing broken.
    const t = await open();
    t.end(encodeRequest(req({ op: OP_OPEN })).subarray(0, 30));
    await closed(t);
    expect(server.dropped).toBe(bad.length);
    expect(log).toHaveLength(bad.length);
    expect((await ask(good, req({ op: OP_IOCTL, kfd: sys, request: I.KVM_GET_API_VERSION }))).ret).toBe(12);
    good.destroy();
  });

  test('random bytes: decodeRequest throws nothing but ProtocolError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 200 }), (bytes, size) => {
        const b = Buffer.alloc(bytes.length + 8);
        b.writeUInt32LE(REQ_MAGIC, 0);
        b.writeUInt32LE(size, 4);
        b.set(bytes, 8);
        try {
          decodeRequest(b);
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
        }
      }),
      { numRuns: 2000, seed: 1 },
    );
  });
});
