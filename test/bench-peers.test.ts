// The bench's JavaScript peers do the work they stand for: the baseline answers the bench batch
// with kvmsr's bytes, and the table loop processes the whole batch. The bench checks the counts
// before timing; this pins the bytes too, without running the bench.
import { describe, expect, test } from 'vitest';
import { decodeMsrs, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { NaiveMsrs } from '../bench/baseline/naive-msrs.js';
import { TableLoop } from '../bench/baseline/table-loop.js';
import { C_LOOP, evaluateTargets, JS_BASELINE, KERNEL, RUN_SUITE, targetTable, type BenchRow, type Target } from '../bench/targets.js';
import { machine } from './helpers.js';

describe('bench peers', () => {
  const { kvm, vcpu } = machine();
  const list = kvm.profile.msrIndexList.filter((i) => i !== 0x10); // IA32_TSC moves between reads
  const readAll = encodeMsrs(list.map((index) => ({ index, data: 0n })));
  kvm.ioctlOrThrow(vcpu, I.KVM_GET_MSRS, readAll);
  const values = decodeMsrs(readAll).entries.map((e) => [e.index, e.data] as [number, bigint]);

  test.each([1, 8, 255])('x%i: the JS baseline reads what kvmsr reads; the table loop reads and writes the whole batch', (n) => {
    const batch = encodeMsrs(Array.from({ length: n }, (_, i) => ({ index: list[i % list.length]!, data: 0n })));
    const mine = batch.slice();
    const naive = batch.slice();
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, mine)).toBe(n);
    expect(new NaiveMsrs(values).getMsrs(naive)).toBe(n);
    expect(Buffer.from(naive).equals(Buffer.from(mine))).toBe(true);
    const table = new TableLoop(list);
    expect(table.setMsrs(mine)).toBe(n);
    const back = batch.slice();
    expect(table.getMsrs(back)).toBe(n);
    expect(Buffer.from(back).equals(Buffer.from(mine))).toBe(true);
  });

  test('both refuse nmsrs >= 256 as msr_io does (E2BIG)', () => {
    const big = encodeMsrs(Array.from({ length: 256 }, () => ({ index: 0x174, data: 0n })));
    expect(kvm.ioctl(vcpu, I.KVM_GET_MSRS, big.slice())).toBe(-7);
    expect(new NaiveMsrs(values).getMsrs(big.slice())).toBe(-7);
    expect(new TableLoop(list).getMsrs(big.slice())).toBe(-7);
    expect(new TableLoop(list).setMsrs(big.slice())).toBe(-7);
  });
});

describe('bench targets', () => {
  const row = (suite: string, peer: string, ratioToKvmsr: number): BenchRow => ({ suite, entries: 0, peer, opsPerSec: 1, nsPerOp: 1, entriesPerSec: 1, ratioToKvmsr });
  const missing = { kernel: 'no kernel peer: /dev/kvm is absent', c: 'no C peer' };
  const byName = (t: Target[], prefix: string): Target => t.find((x) => x.target.startsWith(prefix))!;

  test('a target whose peer did not run is not measured, with why', () => {
    const t = evaluateTargets([row('KVM_GET_MSRS x255', 'kvmsr', 1)], [255], missing);
    expect(byName(t, 'KVM_GET_MSRS x255: >= 10x the kernel')).toEqual({ target: 'KVM_GET_MSRS x255: >= 10x the kernel', reached: null, status: 'not measured', why: missing.kernel });
    expect(byName(t, 'KVM_GET_MSRS x255: within 4x').status).toBe('not measured');
    expect(targetTable(t)).toContain('| KVM_SET_MSRS x255: >= 5x the kernel | - | not measured (no kernel peer: /dev/kvm is absent) |');
  });

  test('ratios are judged as kvmsr over the peer, at each threshold', () => {
    const rows = [
      row('KVM_GET_MSRS x255', KERNEL, 1 / 10), // kvmsr 10x the kernel: met
      row('KVM_SET_MSRS x255', KERNEL, 1 / 4.9), // 4.9x: not met
      row('KVM_GET_MSRS x1', KERNEL, 1 / 25),
      row('KVM_GET_MSRS x255', JS_BASELINE, 1 / 8),
      row('KVM_SET_MSRS x255', JS_BASELINE, 1 / 7.9),
      row('KVM_GET_MSRS x255', C_LOOP, 4), // C 4x kvmsr: within 4x
    ];
    const t = evaluateTargets(rows, [255], missing);
    expect(byName(t, 'KVM_GET_MSRS x255: >= 10x').status).toBe('met');
    expect(byName(t, 'KVM_SET_MSRS x255: >= 5x').status).toBe('not met');
    expect(byName(t, 'KVM_GET_MSRS x1: >= 20x').status).toBe('met');
    expect(byName(t, 'KVM_GET_MSRS x255: >= 8x the JS').status).toBe('met');
    expect(byName(t, 'KVM_SET_MSRS x255: >= 8x the JS').status).toBe('not met');
    expect(byName(t, 'KVM_GET_MSRS x255: within 4x').status).toBe('met');
    const slower = evaluateTargets([row('KVM_GET_MSRS x255', C_LOOP, 4.1)], [255], missing);
    expect(byName(slower, 'KVM_GET_MSRS x255: within 4x').status).toBe('not met');
    expect(targetTable(slower)).toContain('| KVM_GET_MSRS x255: within 4x of the C loop | 1/4.1 | not met |');
  });

  test('kvmsr run within 3x of the kernel: judged on the native round trip, not measured without it', () => {
    const name = 'KVM_GET_MSRS x1 under kvmsr run: within 3x';
    expect(byName(evaluateTargets([row(RUN_SUITE, KERNEL, 3)], [255], missing), name).status).toBe('met'); // the kernel 3x as fast
    expect(byName(evaluateTargets([row(RUN_SUITE, KERNEL, 3.1)], [255], missing), name).status).toBe('not met');
    const none = byName(evaluateTargets([], [255], { ...missing, run: 'kvmsr run round trip failed' }), name);
    expect(none).toEqual({ target: 'KVM_GET_MSRS x1 under kvmsr run: within 3x of the kernel', reached: null, status: 'not measured', why: 'kvmsr run round trip failed' });
  });
});
