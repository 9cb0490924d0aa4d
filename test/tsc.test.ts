// IA32_TSC and IA32_TSC_ADJUST (kvm_synchronize_tsc, kvm_set_msr_common), on a vendor that can
// offset the guest TSC (kvm_amd), with a controlled clock; and on PVM, which cannot.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2 } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { builtinProfile } from '../src/profiles.js';
import { parseProfile, profileToJson } from '../src/kvm/profile.js';
import { datas, msrs } from './helpers.js';

function setup(profile = builtinProfile('svm-amd-derived')) {
  let t = 1000;
  const kvm = new Kvm({ profile, now: () => t });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = (id: number): number => kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, id);
  const get = (fd: number, i: number): bigint => {
    const b = msrs([i]);
    kvm.ioctlOrThrow(fd, I.KVM_GET_MSRS, b);
    return datas(b)[0]!;
  };
  const set = (fd: number, i: number, v: bigint): number => kvm.ioctl(fd, I.KVM_SET_MSRS, msrs([[i, v]]));
  const khz = BigInt(kvm.profile.tscKhz);
  const cpuid = (fd: number): void => {
    const n = kvm.profile.supportedCpuid.length;
    const c = encodeCpuid2([], n, n);
    kvm.ioctlOrThrow(sys, I.KVM_GET_SUPPORTED_CPUID, c);
    kvm.ioctlOrThrow(fd, I.KVM_SET_CPUID2, c);
  };
  return { kvm, vcpu, get, set, khz, cpuid, advance: (ms: number) => (t += ms) };
}

describe('kvm_synchronize_tsc (kvm_amd profile)', () => {
  test('a new vCPU starts at 0 and counts at the TSC rate; a later vCPU joins the same generation', () => {
    const s = setup();
    const a = s.vcpu(0);
    expect(s.get(a, 0x10)).toBe(0n);
    s.advance(5000);
    expect(s.get(a, 0x10)).toBe(5000n * s.khz);
    const b = s.vcpu(1); // 5 s later: still synchronized (a write of 0 always is)
    expect(s.get(b, 0x10)).toBe(s.get(a, 0x10));
  });
  test('the one-second window is u64 arithmetic: after a small negative TSC, a small positive one synchronizes', () => {
    // Seen live (conform, kvm_amd 6.12): 0xffffffffff9f9fff then 0x10344040 read back the first
    // generation, since last_tsc_write plus the elapsed cycles wraps past 2^64.
    const s = setup();
    const a = s.vcpu(0);
    s.set(a, 0x10, 0xffffffffff9f9fffn); // about -3 ms
    s.advance(10);
    expect(s.set(a, 0x10, 0x10344040n)).toBe(1); // about +130 ms: within a second of the expected value
    expect(s.get(a, 0x10)).toBe(BigInt.asUintN(64, 0xffffffffff9f9fffn + 10n * s.khz));
    s.set(a, 0x10, 0x7fffffffffffffffn); // far from it: a new generation
    expect(s.get(a, 0x10)).toBe(0x7fffffffffffffffn);
  });
  test('a host write sets the TSC; writing 0 joins the VM generation instead of resetting', () => {
    const s = setup();
    const a = s.vcpu(0);
    const b = s.vcpu(1);
    s.advance(3000);
    expect(s.set(a, 0x10, 1n << 40n)).toBe(1);
    expect(s.get(a, 0x10)).toBe(1n << 40n);
    s.advance(10);
    expect(s.get(a, 0x10)).toBe((1n << 40n) + 10n * s.khz);
    // b writes 0: it joins a's generation.
    expect(s.set(b, 0x10, 0n)).toBe(1);
    expect(s.get(b, 0x10)).toBe(s.get(a, 0x10));
  });
  test('after a user write, a value within a second of the expected one synchronizes; one further away does not', () => {
    const s = setup();
    const a = s.vcpu(0);
    const b = s.vcpu(1);
    s.set(a, 0x10, 1n << 40n);
    s.advance(100);
    const expected = (1n << 40n) + 100n * s.khz;
    s.set(b, 0x10, expected + 500n * s.khz); // half a second off: matched to a's generation
    expect(s.get(b, 0x10)).toBe(s.get(a, 0x10));
    s.set(b, 0x10, expected + 3000n * s.khz); // three seconds off: a new generation
    expect(s.get(b, 0x10)).toBe(expected + 3000n * s.khz);
  });
});

describe('tsc_msrs_test.c (host side, kvm_amd profile)', () => {
  const UNITY = 1n << 30n;
  const round = (v: bigint): bigint => ((v + UNITY / 2n) / UNITY) * UNITY;
  test('host writes: TSC moves TSC, TSC_ADJUST moves only TSC_ADJUST', () => {
    const s = setup();
    const v = s.vcpu(0);
    s.cpuid(v); // TSC_ADJUST is stored only with the CPUID bit
    const HOST_ADJUST = UNITY * 64n;
    const val = UNITY * 2n;
    s.set(v, 0x3b, val);
    s.set(v, 0x10, HOST_ADJUST + val);
    expect(round(s.get(v, 0x10))).toBe(HOST_ADJUST + val);
    expect(round(s.get(v, 0x3b))).toBe(val);
    s.set(v, 0x3b, UNITY * 123456n);
    expect(round(s.get(v, 0x10))).toBe(HOST_ADJUST + val);
    expect(s.get(v, 0x3b)).toBe(UNITY * 123456n);
    s.set(v, 0x3b, val);
    expect(round(s.get(v, 0x10))).toBe(HOST_ADJUST + val);
    expect(round(s.get(v, 0x3b))).toBe(val);
  });
  test('guest writes: WRMSR TSC moves TSC_ADJUST by the same amount; WRMSR TSC_ADJUST moves the TSC', () => {
    const s = setup();
    const v = s.vcpu(0);
    s.cpuid(v);
    const val = UNITY * 2n;
    expect(s.kvm.wrmsr(v, 0x10, val).kind).toBe('ok');
    expect(round(s.get(v, 0x10))).toBe(val);
    expect(round(s.get(v, 0x3b))).toBe(val);
    expect(s.kvm.wrmsr(v, 0x3b, UNITY * 3n).kind).toBe('ok');
    expect(round(s.get(v, 0x10))).toBe(UNITY * 3n);
    expect(round(s.get(v, 0x3b))).toBe(UNITY * 3n);
  });
  test('without the TSC_ADJUST CPUID bit a host TSC_ADJUST write is dropped', () => {
    const s = setup();
    const v = s.vcpu(0);
    expect(s.set(v, 0x3b, 5n)).toBe(1);
    expect(s.get(v, 0x3b)).toBe(0n);
  });
});

describe('PVM: the guest reads the host TSC', () => {
  test('a host write does not move it (pvm_write_tsc_offset forces the offset to 0)', () => {
    const s = setup(builtinProfile('pvm-amd-epyc-6.18.44-v782-derived'));
    const v = s.vcpu(0);
    const before = s.get(v, 0x10);
    expect(before).toBeGreaterThan(0n);
    expect(s.set(v, 0x10, 5n)).toBe(1);
    expect(s.get(v, 0x10)).toBe(before);
  });
});

describe('KVM_SET_TSC_KHZ (kvm_set_tsc_khz)', () => {
  test('without scaling, the tolerance is around the kernel\'s refined tsc_khz (profile.hostTscKhz), not the vCPU rate', () => {
    // Seen live on kvm_amd 6.12 under TCG: a new vCPU reported 2094375 kHz (max_tsc_khz), and
    // QEMU's KVM_SET_TSC_KHZ(2094375) got EINVAL, because the refined tsc_khz was higher.
    const base = profileToJson(builtinProfile('pvm-amd-epyc-6.18.44-v782-derived')) as Record<string, unknown>;
    const khz = base['tscKhz'] as number;
    const refined = parseProfile({ ...base, hostTscKhz: khz + 2000 }, 'refined');
    const s = setup(refined);
    const v = s.vcpu(0);
    expect(s.kvm.ioctl(v, I.KVM_GET_TSC_KHZ, 0)).toBe(khz);
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, khz)).toBe(-22);
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, khz + 2000)).toBe(0);
    expect(parseProfile(JSON.parse(JSON.stringify(profileToJson(refined))), 'p.json').hostTscKhz).toBe(khz + 2000);
    const plain = setup(builtinProfile('pvm-amd-epyc-6.18.44-v782-derived'));
    expect(plain.kvm.ioctl(plain.vcpu(0), I.KVM_SET_TSC_KHZ, khz)).toBe(0);
  });
  test('kvm_amd profile (TSC scaling): any rate; KVM_GET_TSC_KHZ reports it and the TSC counts at it', () => {
    const s = setup();
    const v = s.vcpu(0);
    const khz = Number(s.khz);
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, khz / 2)).toBe(0);
    expect(s.kvm.ioctl(v, I.KVM_GET_TSC_KHZ, 0)).toBe(khz / 2);
    const t0 = s.get(v, 0x10);
    s.advance(1000);
    expect(s.get(v, 0x10) - t0).toBe(BigInt(khz / 2) * 1000n);
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, 0)).toBe(0); // 0: the host rate
    expect(s.kvm.ioctl(v, I.KVM_GET_TSC_KHZ, 0)).toBe(khz);
  });
  test('PVM (no TSC scaling): within tolerance or faster is accepted, slower is EINVAL; the host TSC is still read', () => {
    const s = setup(builtinProfile('pvm-amd-epyc-6.18.44-v782-derived'));
    const v = s.vcpu(0);
    const khz = Number(s.khz);
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, khz + 100)).toBe(0); // 48 ppm
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, khz * 2)).toBe(0); // faster: catch-up
    expect(s.kvm.ioctl(v, I.KVM_GET_TSC_KHZ, 0)).toBe(khz * 2);
    expect(s.kvm.ioctl(v, I.KVM_SET_TSC_KHZ, khz / 2)).toBe(-22);
    const t0 = s.get(v, 0x10);
    s.advance(1000);
    expect(s.get(v, 0x10) - t0).toBe(s.khz * 1000n);
  });
});

describe('the VM-wide KVM_SET_TSC_KHZ and virtual_tsc_khz', () => {
  test('a VM default applies to vCPUs created later, and is refused once a vCPU exists', () => {
    const kvm = new Kvm({ profile: builtinProfile('svm-amd-derived') });
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const khz = kvm.profile.tscKhz;
    expect(kvm.ioctl(vm, I.KVM_GET_TSC_KHZ, 0)).toBe(khz);
    expect(kvm.ioctl(vm, I.KVM_SET_TSC_KHZ, 1000000)).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_GET_TSC_KHZ, 0)).toBe(1000000);
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    expect(kvm.ioctl(v, I.KVM_GET_TSC_KHZ, 0)).toBe(1000000);
    expect(kvm.ioctl(vm, I.KVM_SET_TSC_KHZ, 2000000)).toBe(-22);
  });
  test('a refused slower rate still changes what KVM_GET_TSC_KHZ reports (virtual_tsc_khz is set first)', () => {
    const kvm = new Kvm({ profile: builtinProfile('pvm-amd-epyc-6.18.44-v782-derived') });
    const vm = kvm.ioctlOrThrow(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    expect(kvm.ioctl(v, I.KVM_SET_TSC_KHZ, 1000)).toBe(-22);
    expect(kvm.ioctl(v, I.KVM_GET_TSC_KHZ, 0)).toBe(1000);
  });
});

describe('an unstable host TSC (kvm_arch_vcpu_load with kvm_check_tsc_unstable)', () => {
  // Seen live on kvm_amd 6.12 booted with tsc=unstable: a fresh vCPU's TSC read 0, and stayed 0,
  // while on a stable TSC it counts. (A TSC whose multiplier was never written also stands still on
  // a stable host; see the last block.)
  const unstable = parseProfile({ ...(profileToJson(builtinProfile('svm-amd-derived')) as object), tscUnstable: true }, 'unstable');

  test('a vCPU that never ran reads last_guest_tsc: 0 at creation, and it does not move', () => {
    const s = setup(unstable);
    const a = s.vcpu(0);
    expect(s.get(a, 0x10)).toBe(0n);
    s.advance(5000);
    expect(s.get(a, 0x10)).toBe(0n);
  });

  test('a later vCPU synchronizes to 0 plus the cycles since the VM\'s last TSC write, then stands still', () => {
    const s = setup(unstable);
    const a = s.vcpu(0);
    s.advance(3000);
    const b = s.vcpu(1);
    expect(s.get(b, 0x10)).toBe(3000n * s.khz);
    s.advance(1000);
    expect(s.get(b, 0x10)).toBe(3000n * s.khz);
    expect(s.get(a, 0x10)).toBe(0n);
  });

  test('a host write far from the expected value is what the TSC then reads, for good', () => {
    const s = setup(unstable);
    const a = s.vcpu(0);
    s.advance(10);
    expect(s.set(a, 0x10, 0x1234_5678_9abcn)).toBe(1);
    s.advance(10_000);
    expect(s.get(a, 0x10)).toBe(0x1234_5678_9abcn);
  });

  test('a guest entry catches the TSC up to its generation: every vcpu_load sets tsc_catchup there', () => {
    // kvm_arch_vcpu_load on an unstable host sets tsc_catchup and requests a clock update, so
    // kvm_guest_time_update at the next entry moves the TSC up to compute_guest_tsc (no master
    // clock: the time is the clock's own). Between entries it stands still again.
    const s = setup(unstable);
    const a = s.vcpu(0);
    s.advance(5000);
    expect(s.get(a, 0x10)).toBe(0n);
    s.kvm.markRan(a);
    expect(s.get(a, 0x10)).toBe(5000n * s.khz);
    s.advance(1000);
    expect(s.get(a, 0x10)).toBe(5000n * s.khz);
    const g = s.kvm.rdmsr(a, 0x10); // a guest RDMSR is an entry too
    expect(g.kind === 'ok' ? g.value : g.kind).toBe(6000n * s.khz);
    expect(s.kvm.tscEstimated(a)).toBe(false);
    // A host write far away starts a generation there; the next entry counts from it.
    expect(s.set(a, 0x10, 0x1234_5678_9abcn)).toBe(1);
    s.advance(2000);
    expect(s.get(a, 0x10)).toBe(0x1234_5678_9abcn);
    s.kvm.markRan(a);
    expect(s.get(a, 0x10)).toBe(0x1234_5678_9abcn + 2000n * s.khz);
  });

  test('the flag round-trips through the profile JSON, and a stable profile still counts', () => {
    const back = parseProfile(JSON.parse(JSON.stringify(profileToJson(unstable))), 'p.json');
    expect(back.tscUnstable).toBe(true);
    const bad = { ...(profileToJson(unstable) as Record<string, unknown>), tscUnstable: 'yes' };
    expect(() => parseProfile(JSON.parse(JSON.stringify(bad)), 'p.json')).toThrow(/p\.json: tscUnstable: expected true or false/);
    const s = setup();
    const a = s.vcpu(0);
    s.advance(1);
    expect(s.get(a, 0x10)).toBe(s.khz);
  });
});

/**
 * The captured kvm_amd 6.12 profile without TSC scaling, with the rate a new vCPU gets (max_tsc_khz)
 * below or above the tolerance band of the refined tsc_khz, as in the tsc_early_khz oracle boots.
 */
const tcg = profileToJson(builtinProfile('kvm-amd-6.12-qemu-tcg')) as Record<string, unknown>;
const below = parseProfile({ ...tcg, tscKhz: 2080000, hostTscKhz: 2095992, tscUnstable: false }, 'below');
const above = parseProfile({ ...tcg, tscKhz: 2112000, hostTscKhz: 2095992, tscUnstable: false }, 'above');

describe('a vCPU whose TSC multiplier was never written (kvm_arch_vcpu_create\'s kvm_set_tsc_khz failed)', () => {
  // Seen live on kvm_amd 6.12.117 under TCG booted with tsc_early_khz=2080000: kvm loaded before the
  // TSC calibration was refined to 2095992 kHz, so a new vCPU asks for max_tsc_khz 2080000, below
  // the tolerance band of tsc_khz; without TSC scaling set_tsc_khz fails and
  // l1_tsc_scaling_ratio stays 0, so kvm_scale_tsc(rdtsc(), 0) is 0 and IA32_TSC reads its offset.

  test('it reads 0 from creation on, and a host write is what it reads for good', () => {
    const s = setup(below);
    const a = s.vcpu(0);
    expect(s.kvm.ioctl(a, I.KVM_GET_TSC_KHZ, 0)).toBe(2080000);
    expect(s.get(a, 0x10)).toBe(0n);
    s.advance(5000);
    expect(s.get(a, 0x10)).toBe(0n);
    expect(s.set(a, 0x10, 1n << 40n)).toBe(1);
    s.advance(5000);
    expect(s.get(a, 0x10)).toBe(1n << 40n);
    expect(s.get(s.vcpu(1), 0x10)).toBe(1n << 40n); // a new vCPU joins that generation's offset
  });

  test('a write within a second of the last one joins the generation: 0 then 2^28 reads 0 (the live case)', () => {
    const s = setup(below);
    const a = s.vcpu(0);
    s.advance(20);
    s.set(a, 0x10, 0n);
    s.advance(20);
    s.set(a, 0x10, 1n << 28n);
    expect(s.get(a, 0x10)).toBe(0n);
  });

  test('a rate above the band fails the same way (the catch-up path writes no multiplier)', () => {
    const s = setup(above);
    const a = s.vcpu(0);
    s.advance(1000);
    expect(s.get(a, 0x10)).toBe(0n);
    expect(s.kvm.ioctl(a, I.KVM_SET_TSC_KHZ, 2112000)).toBe(0);
    s.advance(1000);
    expect(s.get(a, 0x10)).toBe(0n);
    expect(s.kvm.ioctl(a, I.KVM_SET_TSC_KHZ, 2000000)).toBe(-22);
  });

  test('KVM_SET_TSC_KHZ(0) asks for tsc_khz, writes the multiplier, and the TSC then counts from the host TSC', () => {
    const s = setup(below);
    const a = s.vcpu(0);
    expect(s.kvm.tscEstimated(a)).toBe(false);
    expect(s.kvm.ioctl(a, I.KVM_SET_TSC_KHZ, 0)).toBe(0);
    expect(s.kvm.ioctl(a, I.KVM_GET_TSC_KHZ, 0)).toBe(2095992);
    // The offset stays and rdtsc's share is added, which kvmsr can only estimate: it says so.
    expect(s.kvm.tscEstimated(a)).toBe(true);
    const t0 = s.get(a, 0x10);
    expect(t0).toBeGreaterThan(0n);
    s.advance(1000);
    expect(s.get(a, 0x10) - t0).toBe(2095992n * 1000n);
    s.set(a, 0x10, 1n << 50n); // a new generation at a value the kernel reads exactly
    expect(s.kvm.tscEstimated(a)).toBe(false);
    expect(s.get(a, 0x10)).toBe(1n << 50n);
  });

  test('a vCPU joining a generation another multiplier started reads its offset against its own share of the host TSC: an estimate', () => {
    // Both ask for 2112000 kHz (virtual_tsc_khz, which matching compares), but only b has a
    // multiplier: KVM_SET_TSC_KHZ(0) wrote the default one, and the faster rate after it left it.
    const s = setup(above);
    const a = s.vcpu(0);
    const b = s.vcpu(1);
    expect(s.kvm.ioctl(b, I.KVM_SET_TSC_KHZ, 0)).toBe(0);
    expect(s.kvm.ioctl(b, I.KVM_SET_TSC_KHZ, 2112000)).toBe(0);
    s.set(a, 0x10, 1n << 40n); // a new generation, started by a vCPU whose TSC stands still
    expect(s.set(b, 0x10, 0n)).toBe(1); // b joins it: cur_tsc_offset + b's rdtsc share
    expect(s.kvm.tscEstimated(b)).toBe(true);
    expect(s.get(b, 0x10)).toBeGreaterThan(1n << 40n);
    expect(s.kvm.tscEstimated(a)).toBe(false);
    expect(s.get(a, 0x10)).toBe(1n << 40n);
  });

  test('within the band a new vCPU gets the default multiplier and counts from creation', () => {
    const s = setup(builtinProfile('kvm-amd-6.12-qemu-tcg'));
    const a = s.vcpu(0);
    s.advance(10);
    expect(s.get(a, 0x10)).toBe(10n * BigInt(s.kvm.profile.hostTscKhz ?? 0));
  });

  test('on 6.12 the VM-wide KVM_SET_TSC_KHZ is taken even once vCPUs exist', () => {
    const s = setup(below);
    s.vcpu(0);
    const vm = 4; // sys 3, vm 4 (fds are allocated from 3 in order)
    expect(s.kvm.fdKind(vm)).toBe('vm');
    expect(s.kvm.ioctl(vm, I.KVM_SET_TSC_KHZ, 0)).toBe(0);
    expect(s.kvm.ioctl(vm, I.KVM_GET_TSC_KHZ, 0)).toBe(2095992);
  });
});

describe('TSC catch-up (tsc_always_catchup) when the rate is above the host\'s without TSC scaling', () => {
  // Seen live on kvm_amd 6.12.117 booted with tsc_early_khz=2112000: the vCPU's host reads stood at
  // 0, while the guest's RDMSR read about 7 ms of cycles: kvm_guest_time_update moved the offset
  // up to the generation's virtual time at guest entry.

  test('a guest read catches up to the generation\'s virtual time; a host read before it does not', () => {
    const s = setup(above);
    const a = s.vcpu(0);
    s.advance(7);
    expect(s.get(a, 0x10)).toBe(0n);
    const r = s.kvm.rdmsr(a, 0x10);
    expect(r).toEqual({ kind: 'ok', value: 7n * 2112000n });
    expect(s.kvm.tscEstimated(a)).toBe(true); // the kernel takes the master clock's time, not now
    expect(s.get(a, 0x10)).toBe(7n * 2112000n); // the offset stays caught up; the ratio is still 0
  });

  test('below the band there is no catch-up: the guest reads the offset too', () => {
    const s = setup(below);
    const a = s.vcpu(0);
    s.advance(7);
    expect(s.kvm.rdmsr(a, 0x10)).toEqual({ kind: 'ok', value: 0n });
  });
});
