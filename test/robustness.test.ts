// No input can make kvmsr throw: arbitrary fds, request numbers, arguments, buffer sizes, nmsrs,
// indices and data, and arbitrary bytes as capture files. Every result is a value the kernel could
// return, and a failed KVM_SET_MSRS changes only what the kernel's would (the entries before the one
// that stopped it).
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { CaptureFormatError, parseCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { Kvm } from '../src/kvm/kvm.js';

/** Every errno a KVM ioctl path in kvmsr may give, plus ENOSYS for what it does not model. */
// EPERM ENOENT EINTR (KVM_RUN) EIO ENXIO E2BIG EBADF ENOMEM EFAULT EBUSY EEXIST EINVAL ENOTTY ENOSYS EOPNOTSUPP
const KERNEL_ERRNOS = new Set([1, 2, 4, 5, 6, 7, 9, 12, 14, 16, 17, 19, 22, 25, 38, 95]);
const REQUESTS = [...Object.values(I.KVM_IOCTLS), 0x5421, 0x5450, 0x5451, 0x5452, 0x5460, 0x2, 0x541b];
const interesting = [0x10, 0x174, 0x277, 0x1a0, 0xce, 0x10a, 0x8b, 0x4b564d00, 0x4b564d05, 0x4b564d06, 0xc0000080, 0xc0000082, 0xc0000103, 0xc0010015, 0xc0010117, 0x12345678, 0x480, 0x800];

const arbIndex = fc.oneof(fc.constantFrom(...interesting), fc.integer({ min: 0, max: 0xffffffff }));
const arbData = fc.oneof(fc.constantFrom(0n, 1n, 0xffffffffffffffffn, 0x8000000000000000n, 0x0000800000000000n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
const arbArg = fc.oneof(
  fc.integer({ min: -2, max: 0x7fffffff }),
  fc.constantFrom(0, 0x10000, 0x20000),
  fc.uint8Array({ maxLength: 600 }),
  fc.array(fc.record({ index: arbIndex, data: arbData }), { maxLength: 20 }).map((e) => encodeMsrs(e)),
  fc.tuple(fc.integer({ min: 0, max: 300 }), fc.array(fc.record({ index: arbIndex, data: arbData }), { maxLength: 10 })).map(([n, e]) => encodeMsrs({ nmsrs: n, entries: e })),
);
const arbCall = fc.record({ fd: fc.integer({ min: -1, max: 9 }), req: fc.oneof(fc.constantFrom(...REQUESTS), fc.integer({ min: 0, max: 0xffffffff })), arg: arbArg });

function fresh(): Kvm {
  const kvm = new Kvm();
  kvm.memory.map(0x10000, new Uint8Array(64));
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  return kvm;
}

describe('no ioctl input throws', () => {
  test('random sequences of ioctls: results are counts, fds or kernel errnos', () => {
    fc.assert(
      fc.property(fc.array(arbCall, { maxLength: 40 }), (calls) => {
        const kvm = fresh();
        for (const c of calls) {
          const r = kvm.ioctl(c.fd, c.req, c.arg);
          expect(Number.isInteger(r)).toBe(true);
          if (r < 0) expect(KERNEL_ERRNOS.has(-r), `errno ${-r} from ${I.ioctlName(c.req)}`).toBe(true);
        }
      }),
      { numRuns: 400 },
    );
  });

  test('a KVM_SET_MSRS that stops at entry k changes exactly entries 0..k-1', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ index: arbIndex, data: arbData }), { minLength: 1, maxLength: 30 }), (entries) => {
        const a = fresh();
        const b = fresh();
        const r = a.ioctl(5, I.KVM_SET_MSRS, encodeMsrs(entries));
        expect(r).toBeGreaterThanOrEqual(0);
        // Applying just the processed prefix to a twin gives the same state.
        b.ioctl(5, I.KVM_SET_MSRS, encodeMsrs(entries.slice(0, r)));
        const va = a.vcpuOf(5)!;
        const vb = b.vcpuOf(5)!;
        expect(Buffer.from(va.msrs.buffer).equals(Buffer.from(vb.msrs.buffer))).toBe(true);
        expect([va.vm.wallClockLo, va.vm.wallClockHi]).toEqual([vb.vm.wallClockLo, vb.vm.wallClockHi]);
      }),
      { numRuns: 300 },
    );
  });

  test('guest RDMSR/WRMSR on any index and value answer without throwing', () => {
    fc.assert(
      fc.property(arbIndex, arbData, (index, data) => {
        const kvm = fresh();
        expect(['ok', 'gp', 'exit', 'error']).toContain(kvm.wrmsr(5, index, data).kind);
        expect(['ok', 'gp', 'exit', 'error']).toContain(kvm.rdmsr(5, index).kind);
      }),
      { numRuns: 300 },
    );
  });
});

describe('no capture file throws', () => {
  const header = '{"format":"kvmsr-capture","version":1,"kernel":"k","cpuVendor":"v","cpuModel":"m","vendorModule":"kvm_pvm","kvmsrVersion":"0","recorder":"r","createdAt":"t"}';
  const arbLine = fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.record({
      seq: fc.integer({ min: -1, max: 50 }),
      tid: fc.integer({ min: 0, max: 3 }),
      fd: fc.integer({ min: -1, max: 8 }),
      fdKind: fc.constantFrom('system', 'vm', 'vcpu', 'x'),
      vcpuId: fc.integer({ min: 0, max: 3 }),
      request: fc.constantFrom(...REQUESTS.map((r) => '0x' + r.toString(16)), 'zz'),
      in: fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b).toString('hex')),
      ret: fc.integer({ min: -1, max: 5 }),
      errno: fc.integer({ min: 0, max: 30 }),
    }).map((o) => JSON.stringify({ ...o, out: o.in })),
  );
  test('arbitrary lines after a valid header: parse reports CaptureFormatError or succeeds; replay never throws', () => {
    fc.assert(
      fc.property(fc.array(arbLine, { maxLength: 12 }), (lines) => {
        const c = parseCapture([header, ...lines].join('\n'), 'fuzz.jsonl');
        if (c.error) expect(c.error).toBeInstanceOf(CaptureFormatError);
        const r = replay(c, { continueOnDivergence: true });
        expect(r.ioctls).toBeLessThanOrEqual(c.records.length);
      }),
      { numRuns: 400 },
    );
  });
  test('arbitrary bytes as a whole file: only CaptureFormatError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          parseCapture(Buffer.from(bytes).toString('utf8'), 'bytes.jsonl');
        } catch (e) {
          expect(e).toBeInstanceOf(CaptureFormatError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
