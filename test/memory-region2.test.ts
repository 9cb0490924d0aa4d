// KVM_SET_USER_MEMORY_REGION2 (kvm_vm_ioctl: the same path as KVM_SET_USER_MEMORY_REGION with the
// longer struct), answered where the profile has KVM_CAP_USER_MEMORY2 and ENOTTY where it does not.
// The 6.18 answers below are what kvm_pvm 6.18.44 v1272 gave the same calls from C (2026-12-07).
import { describe, expect, test } from 'vitest';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm } from '../src/kvm/kvm.js';
import { builtinProfile, defaultProfile } from '../src/profiles.js';

function region(v2: boolean, slot: number, flags: number, gpa: bigint, size: bigint, hva: bigint): Uint8Array {
  const b = new Uint8Array(v2 ? 160 : 32);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, slot, true);
  dv.setUint32(4, flags, true);
  dv.setBigUint64(8, gpa, true);
  dv.setBigUint64(16, size, true);
  dv.setBigUint64(24, hva, true);
  return b;
}

describe('KVM_SET_USER_MEMORY_REGION2', () => {
  const vmOf = (kvm: Kvm): number => kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
  test('a 6.18 profile (KVM_CAP_USER_MEMORY2) takes it, with the same rules as the first version', () => {
    const kvm = new Kvm({ profile: defaultProfile() });
    expect(kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CHECK_EXTENSION, I.KVM_CAP.USER_MEMORY2)).toBe(1);
    const vm = vmOf(kvm);
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION2, region(true, 0, 0, 0n, 0x10000n, 0x7f0000000000n))).toBe(0);
    // The slots are one set: an overlapping slot through either ioctl is EEXIST, and v1 deletes a v2 slot.
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION, region(false, 1, 0, 0x8000n, 0x10000n, 0x7f0000100000n))).toBe(-17);
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION, region(false, 0, 0, 0n, 0n, 0x7f0000000000n))).toBe(0);
    // check_memory_region_flags: LOG_DIRTY_PAGES and READONLY; GUEST_MEMFD needs a VM with private memory.
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION2, region(true, 2, 3, 0x100000n, 0x1000n, 0x7f0000200000n))).toBe(0);
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION2, region(true, 3, 4, 0x200000n, 0x1000n, 0x7f0000300000n))).toBe(-22);
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION2, region(true, 3, 8, 0x200000n, 0x1000n, 0x7f0000300000n))).toBe(-22);
    // It copies all 160 bytes: a 32-byte buffer faults.
    expect(kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION2, region(false, 4, 0, 0x300000n, 0x1000n, 0x7f0000400000n))).toBe(-14);
  });
  test('Debian 6.1 (no KVM_CAP_USER_MEMORY2): ENOTTY', () => {
    const kvm = new Kvm({ profile: builtinProfile('kvm-intel-6.1-distro-bochs-skx') });
    expect(kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CHECK_EXTENSION, I.KVM_CAP.USER_MEMORY2)).toBe(0);
    expect(kvm.ioctl(vmOf(kvm), I.KVM_SET_USER_MEMORY_REGION2, region(true, 0, 0, 0n, 0x10000n, 0x7f0000000000n))).toBe(-25);
  });
});
