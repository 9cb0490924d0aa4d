// IA32_TSC_DEADLINE and the LVT timer mode (kvm_get/set_lapic_tscdeadline_msr, and the timer mode
// mask kvm_vcpu_after_set_cpuid sets from the guest's CPUID.1:ECX[24] itself, not KVM's caps).
// The APIC's software enable (SPIV) is not asked: measured on kvm_pvm 6.18.44 v1272 with SPIV 0xff.
import { describe, expect, test } from 'vitest';
import { decodeCpuid2, decodeMsrs, encodeCpuid2, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { builtinProfile } from '../src/profiles.js';

function deadlineAfter(deadlineBit: boolean): bigint {
  const kvm = new Kvm({ profile: builtinProfile('kvm-amd-6.12-distro-qemu-tcg') });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  const v = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  const b = encodeCpuid2([], 256, 256);
  kvm.ioctl(sys, I.KVM_GET_SUPPORTED_CPUID, b);
  const entries = decodeCpuid2(b).entries.map((e) => (e.function === 1 ? { ...e, ecx: deadlineBit ? (e.ecx | (1 << 24)) >>> 0 : e.ecx & ~(1 << 24) } : e));
  expect(kvm.ioctl(v, I.KVM_SET_CPUID2, encodeCpuid2(entries))).toBe(0);
  const l = new Uint8Array(1024);
  kvm.ioctl(v, I.KVM_GET_LAPIC, l);
  const dv = new DataView(l.buffer);
  expect(dv.getUint32(0xf0, true) & 0x100).toBe(0); // SPIV as at reset: software-disabled
  dv.setUint32(0x320, (2 << 17) | 0xec, true); // LVT timer: TSC-deadline mode
  expect(kvm.ioctl(v, I.KVM_SET_LAPIC, l)).toBe(0);
  expect(kvm.ioctl(v, I.KVM_SET_MSRS, encodeMsrs([{ index: 0x6e0, data: 0x123456789n }]))).toBe(1);
  const g = encodeMsrs([{ index: 0x6e0, data: 0n }]);
  kvm.ioctl(v, I.KVM_GET_MSRS, g);
  return decodeMsrs(g).entries[0]!.data;
}

describe('IA32_TSC_DEADLINE against the LVT timer mode', () => {
  test('kept with the guest CPUID bit, though KVM_GET_SUPPORTED_CPUID reports it clear and SPIV is 0xff', () => {
    expect(deadlineAfter(true)).toBe(0x123456789n);
  });
  test('dropped without the bit: the mode mask is one bit, so TSC-deadline mode cannot be set', () => {
    expect(deadlineAfter(false)).toBe(0n);
  });
});
