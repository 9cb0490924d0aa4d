// The VM and vCPU calls beyond the MSRs that the capabilities advertise, in process (the C walk in
// caps-walk.test.ts checks them against the real kernel): each kept where the kernel keeps it, so
// the calls that read it answer as the kernel's do, and the release rule that belongs to 6.4.
import { describe, expect, test } from 'vitest';
import { encodeCpuid2, encodeEnableCap, type CpuidEntry2 } from '../src/abi/codecs.js';
import { EBUSY, EEXIST, EINVAL, ENOENT, ENOTTY, ENXIO } from '../src/abi/errno.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { parseProfile, profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { builtinProfile } from '../src/profiles.js';
import { msrs, datas } from './helpers.js';

function vmOn(profile: HostProfile): { kvm: Kvm; sys: number; vm: number } {
  const kvm = new Kvm({ profile });
  const sys = kvm.open('/dev/kvm');
  return { kvm, sys, vm: kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0) };
}
const PVM = (): HostProfile => builtinProfile('pvm-intel-6.18.44-v1272');
const enable = (cap: number, a0: bigint): Uint8Array => encodeEnableCap(cap, [a0]);
const u32 = (v: number): Uint8Array => new Uint8Array(new Uint32Array([v]).buffer);

describe('VM capabilities kept by KVM_ENABLE_CAP', () => {
  test('a split irqchip: the LAPICs are in, the PIC is not (KVM_CREATE_IRQCHIP EEXIST, KVM_INTERRUPT queues one ExtINT)', () => {
    const { kvm, vm } = vmOn(PVM());
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.SPLIT_IRQCHIP, 49n))).toBe(-EINVAL); // > 48 reserved pins
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.SPLIT_IRQCHIP, 24n))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0)).toBe(-EEXIST);
    expect(kvm.ioctl(vm, I.KVM_GET_IRQCHIP, new Uint8Array(520))).toBe(-ENXIO); // no PIC or IOAPIC of the kernel's
    const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    expect(kvm.ioctl(vcpu, I.KVM_GET_LAPIC, new Uint8Array(1024))).toBe(0);
    expect(kvm.ioctl(vcpu, I.KVM_INTERRUPT, u32(0x30))).toBe(0);
    expect(kvm.ioctl(vcpu, I.KVM_INTERRUPT, u32(0x31))).toBe(-EEXIST);
  });

  test('dirty rings: a power of two of a page or more, once, before vCPUs; then KVM_RESET_DIRTY_RINGS', () => {
    const { kvm, vm } = vmOn(PVM());
    expect(kvm.ioctl(vm, I.KVM_RESET_DIRTY_RINGS, 0)).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DIRTY_LOG_RING, 1000n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DIRTY_LOG_RING, 1n << 21n))).toBe(-7); // E2BIG
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DIRTY_LOG_RING, 65536n))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DIRTY_LOG_RING, 65536n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_RESET_DIRTY_RINGS, 0)).toBe(0);
  });

  test('quirks, exits, halt polling, hypercall exits: the host\'s valid bits, else EINVAL', () => {
    const { kvm, vm } = vmOn(PVM());
    const supported = BigInt(PVM().extensions.vm[KVM_CAP.DISABLE_QUIRKS2]!);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DISABLE_QUIRKS2, supported))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DISABLE_QUIRKS2, supported | (1n << 40n)))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.DISABLE_QUIRKS, 1n << 40n))).toBe(0); // the old one ignores the rest
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.X86_DISABLE_EXITS, 1n << 9n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.HALT_POLL, 1n << 32n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.EXIT_HYPERCALL, 1n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.X86_APIC_BUS_CYCLES_NS, 2n))).toBe(-ENXIO); // no irqchip
  });
});

describe('KVM_SET_BOOT_CPU_ID', () => {
  test('the BSP it names gets the BSP flag and runs; the others wait for INIT; no change once vCPUs exist', () => {
    const { kvm, vm } = vmOn(PVM());
    kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
    expect(kvm.ioctl(vm, I.KVM_SET_BOOT_CPU_ID, 1)).toBe(0);
    const v0 = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const v1 = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 1);
    const base = (v: number): bigint => {
      const b = msrs([0x1b]);
      kvm.ioctlOrThrow(v, I.KVM_GET_MSRS, b);
      return datas(b)[0]!;
    };
    expect([base(v0), base(v1)]).toEqual([0xfee00800n, 0xfee00900n]);
    const mp = (v: number): number => {
      const b = new Uint8Array(4);
      kvm.ioctlOrThrow(v, I.KVM_GET_MP_STATE, b);
      return b[0]!;
    };
    expect([mp(v0), mp(v1)]).toEqual([1, 0]); // UNINITIALIZED, RUNNABLE
    expect(kvm.ioctl(vm, I.KVM_SET_BOOT_CPU_ID, 0)).toBe(-EBUSY);
  });

  test('an id past KVM_MAX_VCPU_IDS: refused from 6.4, taken on 6.1 (vm-caps.boot-cpu-id-checked)', () => {
    expect(vmOn(PVM()).kvm.ioctl(vmOn(PVM()).vm, I.KVM_SET_BOOT_CPU_ID, 5000)).toBe(-EINVAL);
    const old = vmOn(builtinProfile('kvm-intel-6.1-distro-bochs-skx'));
    expect(old.kvm.ioctl(old.vm, I.KVM_SET_BOOT_CPU_ID, 5000)).toBe(0);
    // and KVM_CAP_MAX_VCPU_ID below the BSP: refused where the rule holds
    const now = vmOn(PVM());
    expect(now.kvm.ioctl(now.vm, I.KVM_SET_BOOT_CPU_ID, 8)).toBe(0);
    expect(now.kvm.ioctl(now.vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.MAX_VCPU_ID, 4n))).toBe(-EINVAL);
    const then = vmOn(builtinProfile('kvm-intel-6.1-distro-bochs-skx'));
    expect(then.kvm.ioctl(then.vm, I.KVM_SET_BOOT_CPU_ID, 8)).toBe(0);
    expect(then.kvm.ioctl(then.vm, I.KVM_ENABLE_CAP, enable(KVM_CAP.MAX_VCPU_ID, 4n))).toBe(0);
  });
});

describe('events injected into a vCPU', () => {
  test('KVM_NMI pends an NMI; KVM_INTERRUPT without an irqchip injects the vector; with the full irqchip ENXIO', () => {
    const { kvm, vm } = vmOn(PVM());
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    expect(kvm.ioctl(v, I.KVM_NMI, 0)).toBe(0);
    expect(kvm.ioctl(v, I.KVM_INTERRUPT, u32(0x20))).toBe(0);
    expect(kvm.ioctl(v, I.KVM_INTERRUPT, u32(256))).toBe(-EINVAL);
    const ev = new Uint8Array(64);
    kvm.ioctlOrThrow(v, I.KVM_GET_VCPU_EVENTS, ev);
    expect([ev[8], ev[9], ev[13]]).toEqual([1, 0x20, 1]); // interrupt injected 0x20, NMI pending
    const full = vmOn(PVM());
    full.kvm.ioctlOrThrow(full.vm, I.KVM_CREATE_IRQCHIP, 0);
    const fv = full.kvm.ioctlOrThrow(full.vm, I.KVM_CREATE_VCPU, 0);
    expect(full.kvm.ioctl(fv, I.KVM_INTERRUPT, u32(0x20))).toBe(-ENXIO);
    expect(full.kvm.ioctl(fv, I.KVM_SMI, 0)).toBe(-ENOTTY); // this host has no SMM
  });

  test('KVM_X86_SET_MCE: a corrected error lands in its bank, an uncorrected one with CR4.MCE clear shuts down', () => {
    const { kvm, vm } = vmOn(PVM());
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const setup = new Uint8Array(8);
    new DataView(setup.buffer).setBigUint64(0, 0x1000100n | 10n, true);
    kvm.ioctlOrThrow(v, I.KVM_X86_SETUP_MCE, setup);
    const mce = (bank: number, status: bigint, mcg = 0n): Uint8Array => {
      const b = new Uint8Array(64);
      const dv = new DataView(b.buffer);
      dv.setBigUint64(0, status, true);
      dv.setBigUint64(8, 0x1234000n, true);
      dv.setBigUint64(24, mcg, true);
      b[32] = bank;
      return b;
    };
    expect(kvm.ioctl(v, I.KVM_X86_SET_MCE, mce(10, 1n << 63n))).toBe(-EINVAL); // no such bank
    expect(kvm.ioctl(v, I.KVM_X86_SET_MCE, mce(2, 1n << 60n))).toBe(-EINVAL); // not VAL
    expect(kvm.ioctl(v, I.KVM_X86_SET_MCE, mce(2, 1n << 63n))).toBe(0);
    const b = msrs([0x409, 0x40a]); // MC2_STATUS, MC2_ADDR
    kvm.ioctlOrThrow(v, I.KVM_GET_MSRS, b);
    expect(datas(b)).toEqual([1n << 63n, 0x1234000n]);
    expect(kvm.ioctl(v, I.KVM_X86_SET_MCE, mce(1, 0xbe00000000800400n, 5n))).toBe(0);
    const after = msrs([0x405]);
    kvm.ioctlOrThrow(v, I.KVM_GET_MSRS, after);
    expect(datas(after)).toEqual([0n]); // the triple fault took it, not the bank
  });
});

describe('interrupt sources and filters', () => {
  test('irqfds need the LAPICs (resampling ones the whole irqchip); one GSI per eventfd', () => {
    const { kvm, vm } = vmOn(PVM());
    const irqfd = (fd: number, gsi: number, flags = 0): Uint8Array => new Uint8Array(new Uint32Array([fd, gsi, flags, 0, 0, 0, 0, 0]).buffer);
    expect(kvm.ioctl(vm, I.KVM_IRQFD, irqfd(5, 4))).toBe(-EINVAL);
    kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
    expect(kvm.ioctl(vm, I.KVM_IRQFD, irqfd(5, 4))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_IRQFD, irqfd(5, 6))).toBe(-EBUSY);
    expect(kvm.ioctl(vm, I.KVM_IRQFD, irqfd(5, 4, 1))).toBe(0); // deassign
    expect(kvm.ioctl(vm, I.KVM_IRQFD, irqfd(5, 6))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_IRQFD, irqfd(5, 6, 4))).toBe(-EINVAL); // unknown flag
  });

  test('KVM_IRQ_LINE_STATUS: the answers of the PIC and the IOAPIC summed, a masked pin left out', () => {
    const { kvm, vm } = vmOn(PVM());
    kvm.ioctlOrThrow(vm, I.KVM_CREATE_IRQCHIP, 0);
    const line = (irq: number, level: number): number => {
      const b = new Uint8Array(new Uint32Array([irq, level]).buffer);
      kvm.ioctlOrThrow(vm, I.KVM_IRQ_LINE_STATUS, b);
      return new DataView(b.buffer).getInt32(0, true);
    };
    // pic_set_irq1 answers 1 for a line already high too (its edge was taken); the IOAPIC pin is masked.
    expect([line(4, 1), line(4, 1), line(4, 0), line(20, 1)]).toEqual([1, 1, 2, -1]);
  });

  test('KVM_SET_PMU_EVENT_FILTER: allow or deny, at most 300 events, masked events only where the host has them', () => {
    const { kvm, vm } = vmOn(PVM());
    const filter = (action: number, n: number, flags = 0): Uint8Array => {
      const b = new Uint8Array(32 + 8 * n);
      const dv = new DataView(b.buffer);
      dv.setUint32(0, action, true);
      dv.setUint32(4, n, true);
      dv.setUint32(12, flags, true);
      return b;
    };
    expect(kvm.ioctl(vm, I.KVM_SET_PMU_EVENT_FILTER, filter(1, 2))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_SET_PMU_EVENT_FILTER, filter(2, 2))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_SET_PMU_EVENT_FILTER, filter(0, 301))).toBe(-7); // E2BIG
    expect(kvm.ioctl(vm, I.KVM_SET_PMU_EVENT_FILTER, filter(0, 1, 1))).toBe(0); // masked: 6.18 has them
    const old = vmOn(builtinProfile('kvm-intel-6.1-distro-bochs-skx'));
    expect(old.kvm.ioctl(old.vm, I.KVM_SET_PMU_EVENT_FILTER, filter(0, 1, 1))).toBe(-EINVAL);
  });

  test('KVM_IOEVENTFD: a deassign only looks for its match', () => {
    const { kvm, vm } = vmOn(PVM());
    const io = (len: number, flags: number): Uint8Array => {
      const b = new Uint8Array(64);
      const dv = new DataView(b.buffer);
      dv.setBigUint64(8, 0xfe000000n, true);
      dv.setUint32(16, len, true);
      dv.setUint32(24, flags, true);
      return b;
    };
    expect(kvm.ioctl(vm, I.KVM_IOEVENTFD, io(3, 0))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_IOEVENTFD, io(3, 4))).toBe(-ENOENT);
  });
});

describe('the TSC offset attribute and nested state', () => {
  test('PVM cannot offset the TSC: the offset reads 0 and a write is taken and ignored (measured on v1272)', () => {
    const { kvm, vm } = vmOn(PVM());
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const val = new Uint8Array(8);
    kvm.memory.map(0x10000, val);
    const attr = (attr: number, group = 0): Uint8Array => {
      const b = new Uint8Array(24);
      const dv = new DataView(b.buffer);
      dv.setUint32(4, group, true);
      dv.setBigUint64(8, BigInt(attr), true);
      dv.setBigUint64(16, 0x10000n, true);
      return b;
    };
    expect(kvm.ioctl(v, I.KVM_HAS_DEVICE_ATTR, attr(0))).toBe(0);
    expect(kvm.ioctl(v, I.KVM_HAS_DEVICE_ATTR, attr(1))).toBe(-ENXIO);
    expect(kvm.ioctl(v, I.KVM_HAS_DEVICE_ATTR, attr(0, 1))).toBe(-ENXIO);
    new DataView(val.buffer).setBigUint64(0, 3_000_000_000n, true);
    expect(kvm.ioctl(v, I.KVM_SET_DEVICE_ATTR, attr(0))).toBe(0);
    expect(kvm.ioctl(v, I.KVM_GET_DEVICE_ATTR, attr(0))).toBe(0);
    expect(new DataView(val.buffer).getBigUint64(0, true)).toBe(0n);
  });

  test('kvm_intel: an offset set is the offset read back, and IA32_TSC moves by it', () => {
    const { kvm, vm } = vmOn(builtinProfile('kvm-intel-6.12-distro-bochs-skx'));
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const val = new Uint8Array(8);
    kvm.memory.map(0x10000, val);
    const attr = new Uint8Array(24);
    new DataView(attr.buffer).setBigUint64(16, 0x10000n, true);
    kvm.ioctlOrThrow(v, I.KVM_GET_DEVICE_ATTR, attr);
    const before = new DataView(val.buffer).getBigUint64(0, true);
    const offset = BigInt.asUintN(64, before + (1n << 40n));
    new DataView(val.buffer).setBigUint64(0, offset, true);
    kvm.ioctlOrThrow(v, I.KVM_SET_DEVICE_ATTR, attr);
    kvm.ioctlOrThrow(v, I.KVM_GET_DEVICE_ATTR, attr);
    const back = new DataView(val.buffer).getBigUint64(0, true);
    expect(Number(BigInt.asIntN(64, back - offset))).toBeLessThan(1e7); // a few ms of host TSC at most
    expect(Number(BigInt.asIntN(64, back - offset))).toBeGreaterThanOrEqual(-1e7);
    const tsc = msrs([0x10]);
    kvm.ioctlOrThrow(v, I.KVM_GET_MSRS, tsc);
    expect(datas(tsc)[0]! > 1n << 40n).toBe(true);
  });

  test('KVM_GET/SET_NESTED_STATE on kvm_intel: the header of a vCPU outside VMX operation, and back', () => {
    const { kvm, vm } = vmOn(builtinProfile('kvm-intel-6.12-distro-bochs-skx'));
    const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
    const small = new Uint8Array(128);
    new DataView(small.buffer).setUint32(4, 64, true);
    expect(kvm.ioctl(v, I.KVM_GET_NESTED_STATE, small)).toBe(-7); // E2BIG, size 128 said
    expect(new DataView(small.buffer).getUint32(4, true)).toBe(128);
    const h = new Uint8Array(128);
    new DataView(h.buffer).setUint32(4, 128, true);
    expect(kvm.ioctl(v, I.KVM_GET_NESTED_STATE, h)).toBe(0);
    const dv = new DataView(h.buffer);
    expect([dv.getUint16(0, true), dv.getUint16(2, true), dv.getBigInt64(8, true), dv.getBigInt64(16, true)]).toEqual([0, 0, -1n, -1n]);
    expect(kvm.ioctl(v, I.KVM_SET_NESTED_STATE, h)).toBe(0);
    dv.setUint32(4, 64, true);
    expect(kvm.ioctl(v, I.KVM_SET_NESTED_STATE, h)).toBe(-EINVAL);
    expect(vmOn(PVM()).kvm.ioctl(3, I.KVM_GET_NESTED_STATE, h)).toBeLessThan(0); // no such vCPU fd here
  });
});

describe('the CR4 bits KVM_SET_SREGS takes', () => {
  /** Which of CR4's 32 bits a fresh vCPU's SET_SREGS refuses, each set alone. */
  function refused(profile: HostProfile, cpuid?: (k: Kvm, v: number) => void): number[] {
    const out: number[] = [];
    for (let bit = 0; bit < 32; bit++) {
      const { kvm, vm } = vmOn(profile);
      const v = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
      cpuid?.(kvm, v);
      const s = new Uint8Array(312);
      kvm.ioctlOrThrow(v, I.KVM_GET_SREGS, s);
      new DataView(s.buffer).setUint32(248, (1 << bit) >>> 0, true);
      if (kvm.ioctl(v, I.KVM_SET_SREGS, s) !== 0) out.push(bit);
    }
    return out;
  }
  const withCpuid = (edit: (e: CpuidEntry2[]) => CpuidEntry2[]) => (k: Kvm, v: number): void => {
    k.ioctlOrThrow(v, I.KVM_SET_CPUID2, encodeCpuid2(edit(k.profile.supportedCpuid.map((e) => ({ ...e })))));
  };

  test('kvm_pvm v1272: what the host refuses, measured (LA57, VMXE, SMXE, PCIDE among them), with or without CPUID', () => {
    const measured = [12, 13, 14, 15, 17, 19, 23, 24, 25, 26, 27, 28, 29, 30, 31];
    expect(refused(PVM())).toEqual(measured);
    expect(refused(PVM(), withCpuid((e) => e))).toEqual(measured);
  });

  test.each(['kvm-amd-6.1-distro-qemu-tcg', 'kvm-amd-6.12-distro-qemu-tcg', 'kvm-intel-6.1-distro-bochs-skx', 'kvm-intel-6.12-distro-bochs-skx'])(
    '%s: the bits derived from the supported CPUID are the ones the oracle measured (cr4Accepted)',
    (name) => {
      const measured = builtinProfile(name);
      const { cr4Accepted, ...rest } = profileToJson(measured) as Record<string, unknown>;
      expect(cr4Accepted).toBeDefined();
      const derived = parseProfile(JSON.parse(JSON.stringify(rest)) as Parameters<typeof parseProfile>[0], name);
      const accepted = (p: HostProfile): number => refused(p).reduce((m, b) => m & ~(1 << b), 0xffffffff) >>> 0;
      expect(derived.cr4Accepted).toBeUndefined();
      expect('0x' + accepted(derived).toString(16)).toBe(cr4Accepted);
      expect('0x' + accepted(measured).toString(16)).toBe(cr4Accepted);
    },
  );

  test('kvm_intel: the supported CPUID decides, then the guest CPUID once set (SMEP refused where the guest lacks it)', () => {
    const vmx = builtinProfile('kvm-intel-6.12-distro-bochs-skx');
    const fresh = refused(vmx);
    expect(fresh).toContain(14); // SMXE: never the guest's
    expect(fresh).not.toContain(20); // SMEP: this host has it
    const noSmep = withCpuid((e) => e.map((x) => (x.function === 7 && x.index === 0 ? { ...x, ebx: x.ebx & ~(1 << 7) } : x)));
    expect(refused(vmx, noSmep)).toEqual([...fresh, 20].sort((a, b) => a - b));
  });
});

describe('KVM_CREATE_GUEST_MEMFD', () => {
  test('where the host builds it (KVM_CAP_GUEST_MEMFD): a read-write file of whole pages, not close-on-exec; else ENOTTY', () => {
    const { kvm, vm } = vmOn(builtinProfile('kvm-amd-6.12-distro-qemu-tcg'));
    const req = (size: bigint, flags = 0n): Uint8Array => {
      const b = new Uint8Array(64);
      new DataView(b.buffer).setBigInt64(0, size, true);
      new DataView(b.buffer).setBigUint64(8, flags, true);
      return b;
    };
    const fd = kvm.ioctl(vm, I.KVM_CREATE_GUEST_MEMFD, req(0x200000n));
    expect(fd).toBeGreaterThan(0);
    expect(kvm.plainFile(fd)).toMatchObject({ bytes: null, size: 0x200000, writable: true, cloexec: false });
    expect(kvm.ioctl(fd, I.KVM_GET_MSRS, new Uint8Array(8))).toBe(-ENOTTY); // no ioctls on it
    expect(kvm.ioctl(vm, I.KVM_CREATE_GUEST_MEMFD, req(0x1001n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_CREATE_GUEST_MEMFD, req(0n))).toBe(-EINVAL);
    expect(kvm.ioctl(vm, I.KVM_CREATE_GUEST_MEMFD, req(0x1000n, 1n))).toBe(-EINVAL); // no flags before 6.18
    const pvm = vmOn(PVM());
    expect(pvm.kvm.ioctl(pvm.vm, I.KVM_CREATE_GUEST_MEMFD, req(0x1000n))).toBe(-ENOTTY);
  });
});

