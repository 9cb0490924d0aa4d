// KVM_GET_ONE_REG, KVM_SET_ONE_REG and KVM_GET_REG_LIST on an x86 vCPU (6.18: KVM_CAP_ONE_REG). An
// MSR register (KVM_X86_REG_TYPE_MSR) is read and written as a one-entry KVM_GET_MSRS/KVM_SET_MSRS
// would (the host-initiated path, every rule of msr-io.ts), and a refused one is EINVAL. The KVM
// type (KVM_REG_GUEST_SSP) needs CET shadow stacks in the guest, which kvmsr's vCPUs do not have:
// measured on kvm_pvm 6.18.44 v1272, the list is empty and SSP is EINVAL. Only where the profile
// reports KVM_CAP_ONE_REG; elsewhere these are the vCPU's unknown ioctls (EINVAL).
import { E2BIG, EFAULT, EINVAL } from '../../abi/errno.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vcpu } from '../vcpu.js';
import { MSR_IO_GET, MSR_IO_SET, msrIo } from './msr-io.js';
import type { MsrValue } from './msr-ret.js';

/** KVM_REG_X86 (arch bits 63:56) and KVM_REG_SIZE_U64 (size bits 55:52). */
const KVM_REG_ARCH_MASK = 0xff00000000000000n;
const KVM_REG_X86 = 0x2000000000000000n;
const KVM_REG_SIZE_MASK = 0x00f0000000000000n;
const KVM_REG_SIZE_U64 = 0x0030000000000000n;
const KVM_X86_REG_TYPE_MSR = 2n;

/** A one-entry struct kvm_msrs, for the MSR path. */
const BUF = new Uint8Array(24);
const DV = new DataView(BUF.buffer);
const U32 = new Uint32Array(BUF.buffer);
const I32 = new Int32Array(BUF.buffer);
const OUT: MsrValue = { lo: 0, hi: 0 };

export function oneReg(k: Kvm, vcpu: Vcpu, set: boolean, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 16) return -EFAULT;
  const id = a.dv.getBigUint64(a.base, true);
  const addr = a.dv.getBigUint64(a.base + 8, true);
  if ((id & KVM_REG_ARCH_MASK) !== KVM_REG_X86 || (id & KVM_REG_SIZE_MASK) !== KVM_REG_SIZE_U64) return -EINVAL;
  if (((id >> 32n) & 0xffn) !== KVM_X86_REG_TYPE_MSR || ((id >> 40n) & 0xfffn) !== 0n) return -EINVAL;
  const index = Number(id & 0xffffffffn);
  DV.setUint32(0, 1, true);
  DV.setUint32(4, 0, true);
  DV.setUint32(8, index, true);
  DV.setUint32(12, 0, true);
  if (set) {
    const value = a.copyIn(addr, 8);
    if (!value) return -EFAULT;
    BUF.set(value, 16);
    return msrIo(k.x86, vcpu, DV, U32, I32, 0, BUF.length, MSR_IO_SET, OUT) === 1 ? 0 : -EINVAL;
  }
  if (msrIo(k.x86, vcpu, DV, U32, I32, 0, BUF.length, MSR_IO_GET, OUT) !== 1) return -EINVAL;
  return addr !== 0n && k.memory.write(Number(addr), BUF.subarray(16, 24)) ? 0 : -EFAULT;
}

/** KVM_GET_REG_LIST: no register beyond the MSRs (which are not listed), so n becomes 0. */
export function regList(k: Kvm, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 8) return -EFAULT;
  const count = 0n;
  const n = a.dv.getBigUint64(a.base, true);
  a.dv.setBigUint64(a.base, count, true);
  return n < count ? -E2BIG : 0;
}
