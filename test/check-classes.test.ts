// kvmsr check, class by class, on captures made in process (KvmRecorder with a clock the test
// moves): each planted mistake is named at its level with its kernel rule, and its fix is not.
// The same classes from real C serializers under `kvmsr run`: test/check-serializers.test.ts.
import { describe, expect, test } from 'vitest';
import { decodeCpuid2, encodeCpuid2, encodeMsrs, type MsrEntry } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KvmRecorder } from '../src/capture/kvm-recorder.js';
import { parseCapture, type ParsedCapture } from '../src/capture/format.js';
import { checkCaptures } from '../src/check/check.js';
import { familyIndices } from '../src/check/msr-families.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { builtinProfile, defaultProfile } from '../src/profiles.js';

const AMD = (): HostProfile => builtinProfile('kvm-amd-6.12-distro-qemu-tcg');

interface Vmm {
  rec: KvmRecorder;
  kvm: Kvm;
  sys: number;
  vm: number;
  vcpus: number[];
  /** Moves the recorder's clock (and kvmsr's) on by ms. */
  sleep(ms: number): void;
  set(v: number, e: MsrEntry[]): number;
  get(v: number, idx: number[]): MsrEntry[];
}

/** A VMM session on kvmsr, recorded: a VM with the in-kernel irqchip and `n` vCPUs with the supported CPUID. */
function session(profile: HostProfile, body: (s: Vmm) => void, opts: { n?: number; cpuid?: boolean; irqchip?: boolean } = {}): ParsedCapture {
  let now = 5_000_000; // µs
  const kvm = new Kvm({ profile, now: () => now / 1000 });
  const rec = new KvmRecorder(kvm, () => undefined, { clock: () => now });
  const sys = kvm.open('/dev/kvm');
  const vm = rec.ioctl(sys, I.KVM_CREATE_VM, 0);
  if (opts.irqchip !== false) rec.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  const vcpus: number[] = [];
  for (let i = 0; i < (opts.n ?? 1); i++) {
    const v = rec.ioctl(vm, I.KVM_CREATE_VCPU, i);
    if (opts.cpuid !== false) rec.ioctl(v, I.KVM_SET_CPUID2, supportedCpuid(kvm, sys));
    vcpus.push(v);
  }
  const s: Vmm = {
    rec,
    kvm,
    sys,
    vm,
    vcpus,
    sleep: (ms) => void (now += ms * 1000),
    set: (v, e) => rec.ioctl(v, I.KVM_SET_MSRS, encodeMsrs(e)),
    get: (v, idx) => {
      const b = encodeMsrs(idx.map((index) => ({ index, data: 0n })));
      const n = rec.ioctl(v, I.KVM_GET_MSRS, b);
      return new Kvm({ profile }) && n >= 0 ? [...Array(n).keys()].map((i) => ({ index: idx[i]!, data: new DataView(b.buffer).getBigUint64(16 + 16 * i, true) })) : [];
    },
  };
  body(s);
  return parseCapture(rec.text(), 'c.jsonl');
}

function supportedCpuid(kvm: Kvm, sys: number): Uint8Array {
  const b = encodeCpuid2([], 256, 256);
  kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, b);
  // KVM reports the TSC-deadline timer through KVM_CAP_TSC_DEADLINE_TIMER, not in the supported
  // CPUID: a VMM sets CPUID.1:ECX[24] itself, as QEMU does.
  const entries = decodeCpuid2(b).entries.map((e) => (e.function === 1 ? { ...e, ecx: (e.ecx | (1 << 24)) >>> 0 } : e));
  return encodeCpuid2(entries);
}

const pick = (r: ReturnType<typeof checkCaptures>, kind: string) => r.findings.filter((f) => f.kind === kind).map((f) => ({ severity: f.severity, msr: f.msr, rule: f.rule }));
const LAPIC_DEADLINE = (lapic: Uint8Array, vec = 0xec): Uint8Array => {
  const b = lapic.slice();
  const dv = new DataView(b.buffer);
  // The LVT timer in TSC-deadline mode, unmasked; the APIC software-enabled (SPIV bit 8), as a guest leaves it.
  dv.setUint32(0x320, (2 << 17) | vec, true);
  dv.setUint32(0xf0, dv.getUint32(0xf0, true) | 0x1ff, true);
  return b;
};

describe('class 1: state the guest or the VMM set, never saved', () => {
  const save = (full: boolean) =>
    session(AMD(), (s) => {
      const v = s.vcpus[0]!;
      s.rec.ioctl(v, I.KVM_X86_SETUP_MCE, new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0]));
      // Standing for the guest: MTRRs, an MCE bank, KVM PV poll control.
      s.set(v, [{ index: 0x2ff, data: 0xc06n }, { index: 0x200, data: 0x6n }, { index: 0x400, data: 0xffffffffffffffffn }, { index: 0x4b564d05, data: 0n }]);
      const list = s.kvm.profile.msrIndexList;
      s.get(v, full ? [...list, ...familyIndices(4).filter((i) => (i >= 0x200 && i <= 0x2ff) || (i >= 0x17a && i <= 0x17b) || (i >= 0x400 && i < 0x410))] : list);
    });
  test('a save of KVM_GET_MSR_INDEX_LIST alone loses the MTRRs and MCE banks (cloud-hypervisor #7944, firecracker #3150)', () => {
    const r = checkCaptures(save(false));
    const ns = pick(r, 'not-saved').filter((f) => f.severity === 'error');
    expect(ns).toContainEqual({ severity: 'error', msr: '0x2ff MTRRdefType', rule: 'kvm_mtrr_set_msr' });
    expect(ns).toContainEqual({ severity: 'error', msr: '0x200', rule: 'kvm_mtrr_set_msr' });
    expect(ns).toContainEqual({ severity: 'error', msr: '0x400 IA32_MC0_CTL', rule: 'set_msr_mce (after KVM_X86_SETUP_MCE)' });
    // POLL_CONTROL is on the list: the list-only save read it.
    expect(ns.map((f) => f.msr)).not.toContain('0x4b564d05 KVM_POLL_CONTROL');
  });
  test('the same save with the MTRRs and banks read has none of those errors', () => {
    const r = checkCaptures(save(true));
    expect(pick(r, 'not-saved').filter((f) => f.severity === 'error')).toEqual([]);
  });
});

describe('class 2: a failed or partial KVM_GET_MSRS taken as success', () => {
  test('one batch of 256 or more fails whole with E2BIG; nothing was saved', () => {
    const sv = session(AMD(), (s) => {
      const idx = [...s.kvm.profile.msrIndexList];
      while (idx.length < 260) idx.push(0x200 + (idx.length % 16));
      s.get(s.vcpus[0]!, idx);
    });
    const f = checkCaptures(sv).findings.filter((x) => x.kind === 'failed-save');
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ severity: 'error', rule: 'msr_io' });
    expect(f[0]!.message).toContain('failed whole with E2BIG');
    expect(f[0]!.message).toContain('all 260 entries not saved');
  });
  test('a batch that stopped early, its count unchecked: the entries after the stop are lost', () => {
    const sv = session(AMD(), (s) => {
      const list = s.kvm.profile.msrIndexList;
      s.get(s.vcpus[0]!, [...list.slice(0, 3), 0x12345678, ...list.slice(3)]);
    });
    const r = checkCaptures(sv);
    expect(pick(r, 'partial')[0]).toMatchObject({ severity: 'error', msr: '0x12345678' });
    const lost = r.findings.find((x) => x.kind === 'failed-save')!;
    expect(lost.severity).toBe('error');
    expect(lost.message).toContain('never read the');
  });
  test('KVM_GET_MSRS on the VM fd: ENOTTY, and the VMM went on', () => {
    const sv = session(AMD(), (s) => {
      s.rec.ioctl(s.vm, I.KVM_GET_MSRS, encodeMsrs([{ index: 0x10, data: 0n }, { index: 0x277, data: 0n }]));
    });
    const f = checkCaptures(sv).findings.find((x) => x.kind === 'failed-save')!;
    expect(f).toMatchObject({ severity: 'error', msr: '0x10 IA32_TSC' });
    expect(f.message).toContain('ENOTTY');
  });
  test('a chunked save that checks its counts has none of these', () => {
    const sv = session(AMD(), (s) => {
      const list = s.kvm.profile.msrIndexList;
      for (let i = 0; i < list.length; i += 64) s.get(s.vcpus[0]!, list.slice(i, i + 64));
    });
    const r = checkCaptures(sv);
    expect(r.findings.filter((f) => f.kind === 'failed-save' || f.kind === 'partial')).toEqual([]);
  });
});

describe('class 3: restore order, replayed with the state ioctls', () => {
  const TSC = 0x10000000000n;
  const KHZ = BigInt(AMD().tscKhz);
  const save = session(AMD(), (s) => {
    const v = s.vcpus[0]!;
    const lapic = new Uint8Array(1024);
    s.kvm.ioctl(v, I.KVM_GET_LAPIC, lapic);
    s.rec.ioctl(v, I.KVM_SET_LAPIC, LAPIC_DEADLINE(lapic));
    s.set(v, [{ index: 0x10, data: TSC }, { index: 0x6e0, data: TSC + KHZ * 1000n }]);
    s.rec.ioctl(v, I.KVM_GET_LAPIC, new Uint8Array(1024));
    s.get(v, [0x10, 0x6e0]);
  });
  const lapicOf = (c: ParsedCapture): Uint8Array => c.records.filter((r) => r.request === I.KVM_GET_LAPIC).at(-1)!.out!;
  const restore = (order: 'good' | 'lapic-late' | 'tsc-late') =>
    session(AMD(), (s) => {
      const v = s.vcpus[0]!;
      const deadline = { index: 0x6e0, data: TSC + KHZ * 1000n };
      if (order !== 'lapic-late') s.rec.ioctl(v, I.KVM_SET_LAPIC, lapicOf(save).slice());
      if (order === 'tsc-late') {
        s.set(v, [deadline]);
        s.set(v, [{ index: 0x10, data: TSC }]);
      } else s.set(v, [{ index: 0x10, data: TSC }, deadline]);
      if (order === 'lapic-late') s.rec.ioctl(v, I.KVM_SET_LAPIC, lapicOf(save).slice());
      s.get(v, [0x6e0]);
    });
  test('MSRs before KVM_SET_LAPIC: KVM drops IA32_TSC_DEADLINE (kata-containers #13798)', () => {
    const f = pick(checkCaptures(save, restore('lapic-late')), 'restore-order');
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ severity: 'error', msr: '0x6e0 IA32_TSC_DEADLINE' });
    expect(f[0]!.rule).toContain('kvm_set_lapic_tscdeadline_msr');
  });
  test('IA32_TSC_DEADLINE before IA32_TSC: the timer is armed against the wrong TSC (firecracker #4099)', () => {
    const f = pick(checkCaptures(save, restore('tsc-late')), 'restore-order');
    expect(f).toEqual([{ severity: 'error', msr: '0x6e0 IA32_TSC_DEADLINE', rule: expect.stringContaining('start_sw_tscdeadline') }]);
  });
  test('the same restore in the order KVM needs: no order finding', () => {
    expect(pick(checkCaptures(save, restore('good')), 'restore-order')).toEqual([]);
  });
  test('SynIC MSRs before KVM_ENABLE_CAP(KVM_CAP_HYPERV_SYNIC) are refused (cloud-hypervisor #7491)', () => {
    const p = builtinProfile('kvm-amd-6.12-distro-qemu-tcg');
    const cap = new Uint8Array(104);
    new DataView(cap.buffer).setUint32(0, 123, true);
    const mk = (late: boolean) =>
      session(p, (s) => {
        const v = s.vcpus[0]!;
        if (!late) s.rec.ioctl(v, I.KVM_ENABLE_CAP, cap.slice());
        s.set(v, [{ index: 0x40000080, data: 1n }, { index: 0x40000083, data: 0x12345001n }]);
        if (late) s.rec.ioctl(v, I.KVM_ENABLE_CAP, cap.slice());
      });
    const f = pick(checkCaptures(save, mk(true), p), 'restore-order');
    expect(f.map((x) => x.msr)).toEqual(['0x40000080 HV_X64_MSR_SCONTROL', '0x40000083 HV_X64_MSR_SIMP']);
    expect(f[0]!.rule).toContain('synic_set_msr');
    expect(pick(checkCaptures(save, mk(false), p), 'restore-order')).toEqual([]);
  });
});

describe('class 3: VMX capability MSRs around KVM_SET_NESTED_STATE (by rule: kvmsr does not model nested state)', () => {
  const VMX = (): HostProfile => builtinProfile('kvm-intel-6.12-distro-bochs-skx');
  const save = session(VMX(), (s) => s.get(s.vcpus[0]!, [0x480, 0x10]));
  /** A restore with the VMX MSRs after (or before) a KVM_SET_NESTED_STATE whose vmxon_pa is set. */
  const restore = (capsLast: boolean): ParsedCapture => {
    const c = session(VMX(), (s) => {
      const v = s.vcpus[0]!;
      const nested = new Uint8Array(128);
      const dv = new DataView(nested.buffer);
      dv.setUint16(2, 0, true); // KVM_STATE_NESTED_FORMAT_VMX
      dv.setUint32(4, 128, true);
      dv.setBigUint64(8, 0x1000n, true); // hdr.vmx.vmxon_pa: in VMX operation
      if (!capsLast) s.set(v, [{ index: 0x480, data: 0xda04000000000en }]);
      s.rec.ioctl(v, I.KVM_SET_NESTED_STATE, nested);
      if (capsLast) s.set(v, [{ index: 0x480, data: 0xda04000000000en }]);
    });
    // kvmsr answers KVM_SET_NESTED_STATE ENOSYS; the kernel took it: the record says what the kernel said.
    for (const r of c.records) if (r.request === I.KVM_SET_NESTED_STATE) Object.assign(r, { ret: 0, errno: 0 });
    return c;
  };
  test('written after it, KVM refuses them with EBUSY (vmx_set_vmx_msr): an error, and a note that this is by rule', () => {
    const r = checkCaptures(save, restore(true));
    expect(pick(r, 'restore-order')).toEqual([{ severity: 'error', msr: '0x480 IA32_VMX_BASIC', rule: expect.stringContaining('vmx_set_vmx_msr') }]);
    expect(r.notes.join('\n')).toContain('kvmsr does not model KVM_SET_NESTED_STATE');
  });
  test('written before it: no finding', () => {
    expect(pick(checkCaptures(save, restore(false)), 'restore-order')).toEqual([]);
  });
});

describe('class 4: time', () => {
  const TSC = 0x10000000000n;
  const save = session(AMD(), (s) => {
    for (const v of s.vcpus) s.set(v, [{ index: 0x10, data: TSC }]);
    s.rec.ioctl(s.vm, I.KVM_GET_CLOCK, new Uint8Array(48));
    for (const v of s.vcpus) s.get(v, [0x10]);
  }, { n: 2 });
  const restore = (how: 'good' | 'spread' | 'twice' | 'noclock') =>
    session(AMD(), (s) => {
      if (how !== 'noclock') s.rec.ioctl(s.vm, I.KVM_SET_CLOCK, new Uint8Array(48));
      s.set(s.vcpus[0]!, [{ index: 0x10, data: TSC }]);
      if (how === 'spread') s.sleep(1500);
      if (how === 'twice') {
        s.sleep(200);
        s.set(s.vcpus[0]!, [{ index: 0x10, data: TSC }]);
      }
      s.set(s.vcpus[1]!, [{ index: 0x10, data: TSC }]);
      for (const v of s.vcpus) s.rec.ioctl(v, I.KVM_RUN, 0);
    }, { n: 2 });
  test('TSCs restored 1.5 s apart start a second TSC generation (cloud-hypervisor #8383)', () => {
    const f = pick(checkCaptures(save, restore('spread')), 'tsc-unsynchronized');
    expect(f).toEqual([{ severity: 'error', msr: '0x10 IA32_TSC', rule: expect.stringContaining('kvm_synchronize_tsc') }]);
  });
  test('on kvm_pvm, which ignores host TSC writes, the same is a warning', () => {
    const p = defaultProfile();
    const s2 = session(p, (s) => {
      s.set(s.vcpus[0]!, [{ index: 0x10, data: TSC }]);
      s.sleep(1500);
      s.set(s.vcpus[1]!, [{ index: 0x10, data: TSC }]);
    }, { n: 2 });
    expect(pick(checkCaptures(save, s2, p), 'tsc-unsynchronized').map((f) => f.severity)).toEqual(['warning']);
  });
  test('TSC offsets set through KVM_VCPU_TSC_OFFSET are said not judged, and a TSC write out of the window is still caught', () => {
    const r = session(AMD(), (s) => {
      const attr = new Uint8Array(24); // group KVM_VCPU_TSC_CTRL, attr KVM_VCPU_TSC_OFFSET, addr 0
      s.rec.ioctl(s.vcpus[1]!, I.KVM_SET_DEVICE_ATTR, attr);
      s.set(s.vcpus[0]!, [{ index: 0x10, data: TSC }]);
      s.sleep(1500);
      s.set(s.vcpus[1]!, [{ index: 0x10, data: TSC }]);
    }, { n: 2 });
    for (const x of r.records) if (x.request === I.KVM_SET_DEVICE_ATTR) Object.assign(x, { ret: 0, errno: 0 });
    const c = checkCaptures(save, r);
    expect(c.notes.join('\n')).toContain('TSC offsets set that way are not judged');
    expect(pick(c, 'tsc-unsynchronized').map((f) => f.severity)).toEqual(['error']);
  });
  test('IA32_TSC restored twice on one vCPU is a warning', () => {
    const r = checkCaptures(save, restore('twice'));
    expect(pick(r, 'tsc-restored-twice')).toEqual([{ severity: 'warning', msr: '0x10 IA32_TSC', rule: expect.stringContaining('kvm_synchronize_tsc') }]);
    expect(pick(r, 'tsc-unsynchronized')).toEqual([]);
  });
  test('kvmclock saved (KVM_GET_CLOCK) but the restore runs the guest without KVM_SET_CLOCK (cloud-hypervisor #2653)', () => {
    expect(pick(checkCaptures(save, restore('noclock')), 'kvmclock-not-restored')).toEqual([{ severity: 'error', msr: undefined, rule: expect.stringContaining('KVM_SET_CLOCK') }]);
    const good = checkCaptures(save, restore('good'));
    expect(good.findings.filter((f) => f.kind.startsWith('tsc') || f.kind === 'kvmclock-not-restored')).toEqual([]);
  });
  test('a zero TSC_DEADLINE saved while the LVT timer is in TSC-deadline mode and nothing is pending (firecracker #4618)', () => {
    const mk = (deadline: bigint) =>
      session(AMD(), (s) => {
        const v = s.vcpus[0]!;
        const lapic = new Uint8Array(1024);
        s.kvm.ioctl(v, I.KVM_GET_LAPIC, lapic);
        s.rec.ioctl(v, I.KVM_SET_LAPIC, LAPIC_DEADLINE(lapic));
        s.set(v, [{ index: 0x10, data: TSC }, { index: 0x6e0, data: deadline }]);
        s.rec.ioctl(v, I.KVM_GET_LAPIC, new Uint8Array(1024));
        s.get(v, [0x10, 0x6e0]);
      });
    expect(pick(checkCaptures(mk(0n)), 'deadline-lost')).toEqual([{ severity: 'error', msr: '0x6e0 IA32_TSC_DEADLINE', rule: expect.stringContaining('apic_timer_expired') }]);
    expect(pick(checkCaptures(mk(TSC + 1000n)), 'deadline-lost')).toEqual([]);
  });
});

describe('class 5: restored on another host or kernel (--on)', () => {
  test('a 6.18 PVM save restored on Debian 6.1 kvm_amd: what the destination refuses, changes or does not list', () => {
    const src = defaultProfile();
    const sv = session(src, (s) => s.get(s.vcpus[0]!, s.kvm.profile.msrIndexList));
    const same = checkCaptures(sv, undefined, { profile: src, destination: src });
    expect(same.findings.filter((f) => f.kind.startsWith('destination'))).toEqual([]);
    const r = checkCaptures(sv, undefined, { profile: src, destination: builtinProfile('kvm-amd-6.1-distro-qemu-tcg') });
    const dest = r.findings.filter((f) => f.kind.startsWith('destination'));
    expect(dest.length).toBeGreaterThan(0);
    expect(r.destination).toMatchObject({ vendorModule: 'kvm_amd', kernel: expect.stringContaining('6.1.') });
    expect(r.notes.join('\n')).toContain('a restore of exactly what was saved');
  });
});

describe('captures check has not seen', () => {
  test('any order or subset of a real VMM\'s records is judged without throwing', async () => {
    const fc = (await import('fast-check')).default;
    const { readFileSync } = await import('node:fs');
    const { gunzipSync } = await import('node:zlib');
    const { join } = await import('node:path');
    const read = (n: string) => parseCapture(gunzipSync(readFileSync(join(import.meta.dirname, 'fixtures', 'qemu', `${n}.jsonl.gz`))).toString('utf8'), n);
    const save = read('qemu-migrate-save');
    const load = read('qemu-migrate-load');
    fc.assert(
      fc.property(fc.array(fc.nat(load.records.length - 1), { maxLength: 60 }), fc.array(fc.nat(save.records.length - 1), { maxLength: 60 }), (li, si) => {
        const pick = (c: ParsedCapture, idx: number[]): ParsedCapture => ({ header: c.header, records: idx.map((i) => c.records[i]!) });
        const r = checkCaptures(pick(save, si), pick(load, li), { destination: builtinProfile('kvm-intel-6.1-distro-bochs-skx') });
        expect(Array.isArray(r.findings)).toBe(true);
      }),
      { numRuns: 12, seed: 2212 },
    );
  }, 120_000);
});
