// The bulk get/set loop allocates nothing per entry: 1,000,000 entries through KVM_GET_MSRS and
// KVM_SET_MSRS trigger no garbage collection (16 bytes per entry would fill the young generation
// and start a scavenge) and grow the heap by less than 1 MiB (JIT code and feedback included).
// Not timed.
import { PerformanceObserver } from 'node:perf_hooks';
import { expect, test } from 'vitest';
import { decodeMsrs, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { machine } from './helpers.js';

const gc = (globalThis as { gc?: () => void }).gc;

test.skipIf(!gc)(`1,000,000 entries: no GC, heap within 1 MiB${gc ? '' : ' (skipped: node runs without --expose-gc)'}`, async () => {
  const { kvm, vcpu } = machine();
  const list = kvm.profile.msrIndexList;
  const get = encodeMsrs(Array.from({ length: 250 }, (_, i) => ({ index: list[i % list.length]!, data: 0n })));
  kvm.ioctlOrThrow(vcpu, I.KVM_GET_MSRS, get);
  // Writing back what was read, without the MSR that a write-back refuses without an irqchip.
  const set = encodeMsrs(decodeMsrs(get).entries.filter((e) => e.index !== 0x4b564d06));
  const perSet = decodeMsrs(set).nmsrs;
  const run = (entries: number): void => {
    let done = 0;
    while (done < entries) {
      if (kvm.ioctl(vcpu, I.KVM_GET_MSRS, get) !== 250) throw new Error('GET stopped early');
      if (kvm.ioctl(vcpu, I.KVM_SET_MSRS, set) !== perSet) throw new Error('SET stopped early');
      done += 250 + perSet;
    }
  };
  run(1_000_000); // warm up: let the JIT settle before measuring
  gc!();
  await new Promise((r) => setTimeout(r, 20));
  let collections = 0;
  const obs = new PerformanceObserver((l) => (collections += l.getEntries().length));
  obs.observe({ entryTypes: ['gc'] });
  // Three measured rounds; the smallest growth counts (a one-off JIT or feedback allocation can
  // land in any single round, a per-entry allocation would be in every one).
  const growths: number[] = [];
  for (let round = 0; round < 3; round++) {
    const before = process.memoryUsage().heapUsed;
    run(1_000_000);
    growths.push(process.memoryUsage().heapUsed - before);
  }
  const growth = Math.min(...growths);
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  expect(collections).toBe(0);
  expect(growth).toBeLessThan(1024 * 1024);
});
