// The rules the pair runner applies where the kernel's value depends on time: each says so in its
// result, and each still catches a difference it can know.
import { describe, expect, test } from 'vitest';
import { decodeMsrs, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { parseProfile, profileToJson } from '../src/kvm/profile.js';
import { Pair } from '../src/native/pair.js';
import type { RealKvm } from '../src/native/real-kvm.js';
import { builtinProfile } from '../src/profiles.js';

/** A stand-in for the kernel that answers KVM_GET_MSRS of IA32_TSC (and PAT) with given values. */
function fakeKernel(tsc: bigint, pat = 0x7040600070406n): RealKvm {
  return {
    open: () => 3,
    close: () => 0,
    ioctl: (_fd, req, arg) => {
      if (req !== I.KVM_GET_MSRS || !(arg instanceof Uint8Array)) return 4;
      const d = decodeMsrs(arg);
      const out = encodeMsrs(d.entries.map((e) => ({ index: e.index, data: e.index === 0x10 ? tsc : pat })));
      arg.set(out.subarray(0, arg.length));
      return d.entries.length;
    },
  };
}
const unstable = parseProfile({ ...(profileToJson(builtinProfile('kvm-amd-6.12-qemu-tcg')) as object), tscUnstable: true }, 'unstable');

describe('IA32_TSC on a host whose TSC is unstable', () => {
  function pairWith(kernelTsc: bigint, pat?: bigint) {
    const kvm = new Kvm({ profile: unstable, now: () => 0 });
    const p = new Pair(fakeKernel(kernelTsc, pat), kvm);
    const sys = p.open();
    const vm = p.create(sys, I.KVM_CREATE_VM, 0);
    const vcpu = p.create(vm, I.KVM_CREATE_VCPU, 0);
    return p.run(vcpu, I.KVM_GET_MSRS, encodeMsrs([0x10, 0x277].map((index) => ({ index, data: 0n }))));
  }
  const ms = BigInt(unstable.tscKhz);

  test('within 50 ms of cycles (modulo 2^64) agrees, and the rule is stated', () => {
    const r = pairWith(10n * ms); // kvmsr's vCPU reads 0: it never ran and time stands still
    expect(r.differences).toEqual([]);
    expect(r.rules.join('\n')).toMatch(/host TSC is unstable .*within 50 ms of cycles of each other, plus the longest time one paired call took \(\d+ ms so far\), modulo 2\^64/);
    expect(pairWith(2n ** 64n - 5n).differences).toEqual([]); // just below 2^64 wraps to just below 0
  });

  test('a TSC a second away, or another MSR\'s value, is still a difference', () => {
    expect(pairWith(1000n * ms).differences.length).toBeGreaterThan(0);
    const r = pairWith(ms, 0x6n);
    expect(r.differences.length).toBeGreaterThan(0);
    expect(r.differences[0]).toMatch(/^byte 3[2-9]:/); // PAT's data: entry 1, bytes 32-39
  });
});

describe('IA32_TSC on a host whose TSC is stable', () => {
  const stable = builtinProfile('kvm-amd-6.12-qemu-tcg');
  const ms = BigInt(stable.tscKhz);
  function pairWith(kernelTsc: bigint, profile = stable) {
    const kvm = new Kvm({ profile, now: () => 0 });
    const p = new Pair(fakeKernel(kernelTsc), kvm);
    const sys = p.open();
    const vm = p.create(sys, I.KVM_CREATE_VM, 0);
    const vcpu = p.create(vm, I.KVM_CREATE_VCPU, 0);
    return { p, vcpu, r: p.run(vcpu, I.KVM_GET_MSRS, encodeMsrs([{ index: 0x10, data: 0n }])) };
  }

  test('within 50 ms of cycles agrees, and the rule is stated', () => {
    const { r } = pairWith(10n * ms); // kvmsr's clock stands at its creation: it reads 0
    expect(r.differences).toEqual([]);
    expect(r.rules.join('\n')).toMatch(/since it moves with time: within 50 ms of cycles of each other, plus the longest time one paired call took/);
  });

  test('a TSC a second away is a difference, and so is one that stands still where kvmsr counts', () => {
    expect(pairWith(1000n * ms).r.differences.length).toBeGreaterThan(0);
    expect(pairWith(2n ** 40n).r.differences.length).toBeGreaterThan(0);
  });

  test('where kvmsr\'s value rests on its estimate of the host TSC, the looser rule is stated, and 0 still differs', () => {
    const tcg = profileToJson(stable) as Record<string, unknown>;
    const frozen = parseProfile({ ...tcg, tscKhz: 2080000, hostTscKhz: 2095992 }, 'frozen');
    const { p, vcpu } = pairWith(2n ** 45n, frozen);
    p.emu.ioctl(vcpu.emu, I.KVM_SET_TSC_KHZ, 0); // the multiplier is written: rdtsc's share is added
    const r = p.run(vcpu, I.KVM_GET_MSRS, encodeMsrs([{ index: 0x10, data: 0n }]));
    expect(r.differences).toEqual([]);
    expect(r.rules.join('\n')).toMatch(/rests on its estimate of the host TSC: equal, or both non-zero/);
    const { p: p0, vcpu: v0 } = pairWith(0n, frozen);
    p0.emu.ioctl(v0.emu, I.KVM_SET_TSC_KHZ, 0);
    expect(p0.run(v0, I.KVM_GET_MSRS, encodeMsrs([{ index: 0x10, data: 0n }])).differences.length).toBeGreaterThan(0);
  });
});
