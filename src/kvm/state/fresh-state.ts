// What a fresh VM and vCPU answer to the state ioctls (KVM_GET_REGS, KVM_GET_SREGS2, KVM_GET_FPU,
// KVM_GET_XSAVE, KVM_GET_XCRS, KVM_GET_LAPIC, KVM_GET_VCPU_EVENTS, KVM_GET_DEBUGREGS, and on the
// VM KVM_GET_IRQCHIP and KVM_GET_PIT2): kvm_vcpu_reset, kvm_lapic_reset, kvm_pic_reset,
// kvm_ioapic_reset and kvm_pit_reset as a host ran them. A profile captured with the `profile.state`
// case carries its host's own bytes (profile.freshState); without one, kvmsr uses the bytes below,
// measured on kvm_pvm 6.18.44-fc-v1045 (AMD EPYC) on 2026-12-02 with test/c/fresh-state.c. They
// are the architectural reset state, the same on every vendor but for what the vCPU id changes
// (the APIC ID and LINT0 of the BSP, applied in vcpu-state.ts).

/** The bytes of each fresh answer (the vCPU's as vCPU 0, the BSP, has them). */
export interface FreshState {
  regs: Uint8Array;
  /** struct kvm_sregs2 (its first 280 bytes are struct kvm_sregs's too). */
  sregs2: Uint8Array;
  fpu: Uint8Array;
  /** struct kvm_xsave, 4096 bytes (KVM_GET_XSAVE2 gives more only past 4096: AMX). */
  xsave: Uint8Array;
  xcrs: Uint8Array;
  lapic: Uint8Array;
  events: Uint8Array;
  debugregs: Uint8Array;
  /** The chip structs of KVM_GET_IRQCHIP: kvm_pic_state (16 bytes) x2, kvm_ioapic_state (216). */
  picMaster: Uint8Array;
  picSlave: Uint8Array;
  ioapic: Uint8Array;
  /** struct kvm_pit_state2 with every count_load_time 0 (kvmsr fills in its own clock). */
  pit2: Uint8Array;
  /** KVM_GET_CLOCK's flags (KVM_CLOCK_TSC_STABLE and company: the host's master clock). */
  clockFlags: number;
}

/** Sizes of the structs, as linux/kvm.h lays them out (test/abi-layout.test.ts checks them). */
export const STATE_SIZES = {
  regs: 144,
  sregs: 312,
  sregs2: 320,
  fpu: 416,
  xsave: 4096,
  xcrs: 392,
  lapic: 1024,
  events: 64,
  debugregs: 128,
  picMaster: 16,
  picSlave: 16,
  ioapic: 216,
  pit2: 112,
} as const;

type Sparse = readonly (readonly [number, string])[];

function bytes(size: number, runs: Sparse): Uint8Array {
  const b = new Uint8Array(size);
  for (const [off, hex] of runs) for (let i = 0; i < hex.length; i += 2) b[off + i / 2] = parseInt(hex.slice(i, i + 2), 16);
  return b;
}

const SEG = (at: number, type: string, s: string): [number, string][] => [
  [at + 8, 'ffff'],
  [at + 14, type],
  [at + 18, s],
];

/** The fresh state measured on kvm_pvm 6.18.44-fc-v1045 (see the top of this file). */
export const DEFAULT_FRESH_STATE: FreshState = {
  // rdx = 0x600 (no CPUID yet), rip = 0xfff0, rflags = 0x2.
  regs: bytes(144, [[25, '06'], [128, 'f0ff'], [136, '02']]),
  // CS 0xf000 base 0xffff0000; data segments type 3, present; TR busy 16-bit TSS; LDT; GDT/IDT
  // limit 0xffff; CR0 0x60000010; APIC base 0xfee00900 (enabled, BSP).
  sregs2: bytes(320, [
    [2, 'ffff'], [8, 'ffff'], [13, 'f00b01'], [18, '01'],
    ...SEG(24, '0301', '01'), ...SEG(48, '0301', '01'), ...SEG(72, '0301', '01'), ...SEG(96, '0301', '01'), ...SEG(120, '0301', '01'),
    [152, 'ffff'], [158, '0b01'], [176, 'ffff'], [182, '0201'], [200, 'ffff'], [216, 'ffff'],
    [224, '10'], [227, '60'], [273, '09e0fe'],
  ]),
  fpu: bytes(416, [[128, '7f03']]),
  xsave: bytes(4096, [[0, '7f03'], [24, '801f'], [28, 'ffff02'], [464, '07']]),
  xcrs: bytes(392, [[0, '01'], [16, '01']]),
  // Version 0x50014 (6 LVT entries), DFR all ones, SPIV 0xff, every LVT masked but LINT0 (ExtINT on the BSP).
  lapic: bytes(1024, [[48, '140005'], [224, 'ffffffff'], [240, 'ff'], [802, '01'], [818, '01'], [834, '01'], [849, '07'], [866, '01'], [882, '01']]),
  // flags: NMI_PENDING | SHADOW | SMM.
  events: bytes(64, [[20, '0d']]),
  debugregs: bytes(128, [[32, 'f00fffff'], [41, '04']]),
  picMaster: bytes(16, [[15, 'f8']]),
  picSlave: bytes(16, [[15, 'de']]),
  ioapic: bytes(216, [[2, 'c0fe'], ...Array.from({ length: 24 }, (_, i) => [26 + 8 * i, '01'] as [number, string])]),
  pit2: bytes(112, [[2, '01'], [13, 'ff'], [15, '01'], [26, '01'], [37, 'ff'], [39, '01'], [50, '01'], [61, 'ff']]),
  clockFlags: 0,
};

/** Hex of each fresh answer, as a profile's JSON keeps it. */
export type FreshStateJson = Record<Exclude<keyof FreshState, 'clockFlags'>, string> & { clockFlags: number };

export function freshStateToJson(s: FreshState): FreshStateJson {
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
  return {
    regs: hex(s.regs), sregs2: hex(s.sregs2), fpu: hex(s.fpu), xsave: hex(s.xsave), xcrs: hex(s.xcrs), lapic: hex(s.lapic),
    events: hex(s.events), debugregs: hex(s.debugregs), picMaster: hex(s.picMaster), picSlave: hex(s.picSlave),
    ioapic: hex(s.ioapic), pit2: hex(s.pit2), clockFlags: s.clockFlags,
  };
}

/** Parses a profile's freshState; throws with the field's name when it is malformed. */
export function freshStateFromJson(j: unknown, where: string): FreshState {
  if (typeof j !== 'object' || j === null) throw new Error(`${where}: expected an object`);
  const o = j as Record<string, unknown>;
  const field = (name: keyof typeof STATE_SIZES): Uint8Array => {
    const v = o[name];
    const size = name === 'sregs' ? STATE_SIZES.sregs2 : STATE_SIZES[name];
    if (typeof v !== 'string' || !/^([0-9a-f]{2})*$/.test(v) || v.length !== size * 2) {
      throw new Error(`${where}.${name}: expected ${size} bytes as lowercase hex`);
    }
    return Uint8Array.from(Buffer.from(v, 'hex'));
  };
  const flags = o['clockFlags'];
  if (typeof flags !== 'number' || !Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) {
    throw new Error(`${where}.clockFlags: expected a u32`);
  }
  return {
    regs: field('regs'), sregs2: field('sregs2'), fpu: field('fpu'), xsave: field('xsave'), xcrs: field('xcrs'),
    lapic: field('lapic'), events: field('events'), debugregs: field('debugregs'), picMaster: field('picMaster'),
    picSlave: field('picSlave'), ioapic: field('ioapic'), pit2: field('pit2'), clockFlags: flags,
  };
}
