// The bench's JavaScript peers do the work they stand for: the baseline answers the bench batch
// with kvmsr's bytes, and the table loop processes the whole batch. The bench checks the counts
// before timing; this pins the bytes too, without running the bench.
import { describe, expect, test } from 'vitest';
import { decodeMsrs, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { NaiveMsrs } from '../bench/baseline/naive-msrs.js';
import { TableLoop } from '../bench/baseline/table-loop.js';
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
