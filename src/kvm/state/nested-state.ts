// KVM_GET_NESTED_STATE and KVM_SET_NESTED_STATE (x86.c kvm_arch_vcpu_ioctl; vmx/nested.c
// vmx_get/set_nested_state, svm/nested.c svm_get/set_nested_state) for a vCPU that has never been in
// VMX operation or SVM guest mode, which is every kvmsr vCPU: no guest runs to enter it. GET gives
// the 128-byte header the kernel gives then; SET takes a header that leaves nested virtualization
// (what a VMM restores for a guest that never used it). Restoring a guest that was in VMX operation
// or guest mode (vmcs12, the L2 state) is not modelled: ENOSYS, with a line naming the call. Only
// where the host reports KVM_CAP_NESTED_STATE (the vendor has nested_ops); else EINVAL.
import { E2BIG, EFAULT, EINVAL, ENOSYS } from '../../abi/errno.js';
import * as I from '../../abi/kvm-ioctls.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vcpu } from '../vcpu.js';
import { M } from '../x86/msr-index.js';

const KVM_CAP_NESTED_STATE = 157;
const HEADER = 128;
const FORMAT_VMX = 0;
const FORMAT_SVM = 1;
const NESTED_GUEST_MODE = 0x1;
const NESTED_RUN_PENDING = 0x2;
const NESTED_EVMCS = 0x4;
const NESTED_MTF_PENDING = 0x8;
const NESTED_GIF_SET = 0x100;
const EFER_SVME = 1 << 12;

const isSvm = (k: Kvm): boolean => k.profile.host.vendorModule === 'kvm_amd';

export function nestedStateIoctl(k: Kvm, vcpu: Vcpu, req: number, arg: IoctlArg): number {
  if ((k.profile.extensions.system[KVM_CAP_NESTED_STATE] ?? k.profile.extensions.vm[KVM_CAP_NESTED_STATE] ?? 0) === 0) return -EINVAL;
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 8) return -EFAULT;
  const dv = a.dv;
  const b = a.base;
  if (req === I.KVM_GET_NESTED_STATE) {
    const userSize = dv.getUint32(b + 4, true);
    // vmx/svm_get_nested_state: the header alone (size 128), copied out whatever the caller's size
    // said; a smaller size is then E2BIG (the header says what it takes).
    if (a.avail < HEADER) return -EFAULT;
    const h = new Uint8Array(HEADER);
    const hv = new DataView(h.buffer);
    hv.setUint32(4, HEADER, true);
    if (isSvm(k)) {
      hv.setUint16(0, NESTED_GIF_SET, true); // a fresh vCPU's GIF is set (enable_gif)
      hv.setUint16(2, FORMAT_SVM, true);
    } else {
      hv.setUint16(2, FORMAT_VMX, true);
      hv.setBigInt64(8, -1n, true); // vmxon_pa: INVALID_GPA
      hv.setBigInt64(16, -1n, true); // vmcs12_pa: INVALID_GPA
    }
    if (!a.copyOut(0, h)) return -EFAULT;
    return userSize < HEADER ? -E2BIG : 0;
  }
  if (a.avail < HEADER) return -EFAULT;
  const flags = dv.getUint16(b, true);
  const format = dv.getUint16(b + 2, true);
  const size = dv.getUint32(b + 4, true);
  if (size < HEADER) return -EINVAL;
  if ((flags & ~(NESTED_RUN_PENDING | NESTED_GUEST_MODE | NESTED_EVMCS | NESTED_MTF_PENDING | NESTED_GIF_SET)) !== 0) return -EINVAL;
  if ((flags & NESTED_RUN_PENDING) !== 0 && (flags & NESTED_GUEST_MODE) === 0) return -EINVAL;
  const unmodelled = (): number => k.unmodeledOr(I.KVM_SET_NESTED_STATE, 'vcpu', -ENOSYS, new Set([I.KVM_SET_NESTED_STATE]));
  if (isSvm(k)) {
    if (format !== FORMAT_SVM) return -EINVAL;
    if ((flags & ~(NESTED_GUEST_MODE | NESTED_RUN_PENDING | NESTED_GIF_SET)) !== 0) return -EINVAL;
    // Without EFER.SVME: GIF set and no guest mode is all there can be.
    if ((k.x86.crossLoadLo(vcpu, M.MSR_EFER) & EFER_SVME) === 0 && flags !== NESTED_GIF_SET) return -EINVAL;
    if ((flags & NESTED_GUEST_MODE) !== 0) return unmodelled();
    return 0; // svm_leave_nested, GIF as the flag says
  }
  if (format !== FORMAT_VMX) return -EINVAL;
  const vmxonPa = dv.getBigInt64(b + 8, true);
  if (vmxonPa !== -1n) return unmodelled();
  // INVALID_GPA: no VMXON region, so no vmcs12, no SMM state, no flag but eVMCS.
  if (dv.getUint16(b + 24, true) !== 0 || dv.getBigInt64(b + 16, true) !== -1n || (flags & ~NESTED_EVMCS) !== 0) return -EINVAL;
  if ((flags & NESTED_EVMCS) !== 0 && !(vcpu.hv?.evmcsEnabled ?? false)) return -EINVAL;
  return 0; // vmx_leave_nested
}
