// kvm_vcpu_ioctl (virt/kvm/kvm_main.c) and kvm_arch_vcpu_ioctl (arch/x86/kvm/x86.c): a vCPU fd.
import { getTscOffset, setTscKhz, setTscOffset } from './x86/tsc.js';
import { oneReg, regList } from './x86/one-reg.js';
import { interrupt, nmi, setMce, smi } from './state/vcpu-inject.js';
import { nestedStateIoctl } from './state/nested-state.js';
import { statsFile, statsFileWithId } from './state/binary-stats.js';
import { preFaultMemory } from './state/vm-memory.js';
import { setupMce } from './x86/mce.js';
import { decodeCpuidEntries, decodeEnableCap } from '../abi/codecs.js';
import { E2BIG, EFAULT, EINVAL, ENOTTY, ENXIO } from '../abi/errno.js';
import { _IOC_TYPE } from '../abi/ioc.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_CAP, KVMIO } from '../abi/kvm-ioctls.js';
import { KVM_CPUID_ENTRY2_LAYOUT, KVM_CPUID2_LAYOUT, KVM_ENABLE_CAP_LAYOUT, KVM_MAX_CPUID_ENTRIES } from '../abi/layout.js';
import { capBitsOf, cpuidVendor, isAmdCompatibleVendor } from './x86/cpuid-caps.js';
import { hvActivateSynic, hvSetCpuid } from './x86/hyperv.js';
import { EVMCS_VERSION, hvCpuidForVcpu } from './x86/hyperv-cpuid.js';
import { supportedHvCpuid } from './ioctl-system.js';
import type { Kvm } from './kvm.js';
import { findCpuid } from './profile.js';
import type { IoctlArg } from './user-arg.js';
import type { Vcpu } from './vcpu.js';
import { vcpuStateIoctl } from './state/vcpu-state.js';
import { kernelSigmask, kvmRun } from './vcpu-run.js';


// KVM_GET_MSRS and KVM_SET_MSRS never reach this switch: Kvm.ioctl serves them first (kvm.ts).
export function vcpuIoctl(k: Kvm, vcpu: Vcpu, req: number, arg: IoctlArg): number {
  const a = k.args;
  switch (req) {
    case I.KVM_SET_CPUID2:
      return setCpuid2(k, vcpu, arg);
    case I.KVM_GET_CPUID2:
      return getCpuid2(k, vcpu, arg);
    case I.KVM_ENABLE_CAP:
      return enableCap(k, vcpu, req, arg);
    case I.KVM_GET_TSC_KHZ:
      return vcpu.virtualTscKhz;
    case I.KVM_GET_SUPPORTED_HV_CPUID:
      if (vcpu.hv === null) return -EINVAL;
      return supportedHvCpuid(k, arg, hvCpuidForVcpu(k.x86.hvCpuid, vcpu.vm.irqchip, vcpu.hv.evmcsEnabled));
    case I.KVM_SET_TSC_KHZ:
      return setTscKhz(k.x86, vcpu, a.intValue(arg));
    case I.KVM_X86_SETUP_MCE: {
      if (!a.resolve(arg) || a.avail < 8) return -EFAULT;
      return setupMce(k.x86, vcpu, a.dv.getInt32(a.base, true), a.dv.getInt32(a.base + 4, true));
    }
    case I.KVM_RUN:
      // The guest is halted and never wakes (vcpu-run.ts): no guest instruction runs.
      return kvmRun(k, vcpu, arg);
    case I.KVM_SET_SIGNAL_MASK:
      return setSignalMask(k, vcpu, arg);
    case I.KVM_GET_STATS_FD: {
      const stats = k.statsLayout?.layout;
      if (!stats) return k.unmodeledOr(req, 'vcpu', -EINVAL, VCPU_UNMODELED);
      return k.createPlainFile(statsFile(statsFileWithId(stats.vcpu, vcpu.statsId)));
    }
    case I.KVM_INTERRUPT:
      return interrupt(k, vcpu, arg);
    case I.KVM_NMI:
      return nmi(k, vcpu);
    case I.KVM_SMI:
      return smi(k, vcpu);
    case I.KVM_X86_SET_MCE:
      return setMce(k, vcpu, arg);
    case I.KVM_HAS_DEVICE_ATTR:
    case I.KVM_GET_DEVICE_ATTR:
    case I.KVM_SET_DEVICE_ATTR:
      return tscAttr(k, vcpu, req, arg);
    case I.KVM_GET_NESTED_STATE:
    case I.KVM_SET_NESTED_STATE:
      return nestedStateIoctl(k, vcpu, req, arg);
    case I.KVM_PRE_FAULT_MEMORY:
      return preFaultMemory(k, vcpu, arg);
    case I.KVM_GET_ONE_REG:
    case I.KVM_SET_ONE_REG:
      if ((k.profile.extensions.vm[KVM_CAP.ONE_REG] ?? k.profile.extensions.system[KVM_CAP.ONE_REG] ?? 0) === 0) return -EINVAL;
      return oneReg(k, vcpu, req === I.KVM_SET_ONE_REG, arg);
    case I.KVM_GET_REG_LIST:
      if ((k.profile.extensions.vm[KVM_CAP.ONE_REG] ?? k.profile.extensions.system[KVM_CAP.ONE_REG] ?? 0) === 0) return -EINVAL;
      return regList(k, arg);
    case I.KVM_KVMCLOCK_CTRL:
      // kvm_set_guest_paused: only once kvmclock's page is set up (its argument is not looked at).
      return vcpu.pvTimeActive ? 0 : -EINVAL;
    default: {
      // kvm_vcpu_ioctl refuses other ioctl types before it looks at the number.
      if (_IOC_TYPE(req) !== KVMIO) return -EINVAL;
      const r = vcpuStateIoctl(k, vcpu, req, arg);
      if (r !== undefined) return r;
      return k.unmodeledOr(req, 'vcpu', -EINVAL, VCPU_UNMODELED);
    }
  }
}

/** Real vCPU ioctls kvmsr does not model: the binary stats fd (kvmsr has no such file). */
const VCPU_UNMODELED = new Set<number>([I.KVM_GET_STATS_FD]);

/** KVM_VCPU_TSC_CTRL and its one attribute, KVM_VCPU_TSC_OFFSET. */
const KVM_VCPU_TSC_CTRL = 0;
const KVM_VCPU_TSC_OFFSET = 0;

/** kvm_vcpu_ioctl_device_attr: the TSC offset attribute (kvm_arch_tsc_has/get/set_attr). */
function tscAttr(k: Kvm, vcpu: Vcpu, req: number, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 24) return -EFAULT;
  const group = a.dv.getUint32(a.base + 4, true);
  const attr = a.dv.getBigUint64(a.base + 8, true);
  const addr = a.dv.getBigUint64(a.base + 16, true);
  if (group !== KVM_VCPU_TSC_CTRL) return -ENXIO;
  if (req === I.KVM_HAS_DEVICE_ATTR) return attr === BigInt(KVM_VCPU_TSC_OFFSET) ? 0 : -ENXIO;
  if (attr !== BigInt(KVM_VCPU_TSC_OFFSET)) return -ENXIO;
  if (req === I.KVM_GET_DEVICE_ATTR) {
    const v = { lo: 0, hi: 0 };
    getTscOffset(k.x86, vcpu, v);
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, v.lo >>> 0, true);
    dv.setUint32(4, v.hi >>> 0, true);
    return addr !== 0n && addr <= BigInt(Number.MAX_SAFE_INTEGER) && k.memory.write(Number(addr), b) ? 0 : -EFAULT;
  }
  const b = a.copyIn(addr, 8);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer, b.byteOffset, 8);
  setTscOffset(k.x86, vcpu, dv.getUint32(0, true), dv.getUint32(4, true));
  return 0;
}

/**
 * KVM_SET_SIGNAL_MASK (kvm_vcpu_ioctl): NULL clears the mask; else struct kvm_signal_mask's len must
 * be sizeof(sigset_t), 8 bytes, and the set follows it. Kept for KVM_RUN (kvm_vcpu_ioctl_set_sigmask).
 */
function setSignalMask(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  if (arg === 0 || arg === 0n) {
    vcpu.sigmask = null;
    return 0;
  }
  const a = k.args;
  if (!a.resolve(arg) || a.avail < 4) return -EFAULT;
  if (a.dv.getUint32(a.base, true) !== 8) return -EINVAL;
  if (a.avail < 12) return -EFAULT;
  vcpu.sigmask = kernelSigmask(a.dv.getBigUint64(a.base + 4, true));
  return 0;
}

/** kvm_vcpu_ioctl_set_cpuid2 and kvm_set_cpuid. */
function setCpuid2(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_CPUID2_LAYOUT.size) return -EFAULT;
  const nent = a.dv.getUint32(a.base, true);
  if (nent > KVM_MAX_CPUID_ENTRIES) return -E2BIG;
  const len = nent * KVM_CPUID_ENTRY2_LAYOUT.size;
  if (a.avail - KVM_CPUID2_LAYOUT.size < len) return -EFAULT;
  const raw = new Uint8Array(a.dv.buffer, a.base + KVM_CPUID2_LAYOUT.entries, len).slice();
  if (vcpu.hasRun) {
    // kvm_cpuid_check_equal: after KVM_RUN_LAYOUT only the same CPUID may be set again.
    const same = nent === vcpu.cpuidNent && raw.every((b, i) => b === vcpu.cpuidBytes[i]);
    return same ? 0 : -EINVAL;
  }
  const entries = decodeCpuidEntries(raw);
  vcpu.cpuidBytes = raw;
  vcpu.cpuid = entries;
  vcpu.cpuidNent = nent;
  vcpu.cpuidSet = true;
  vcpu.capBits = capBitsOf(entries) & k.x86.supportedCapBits;
  vcpu.amdCompatible = isAmdCompatibleVendor(cpuidVendor(entries));
  vcpu.intelVendor = cpuidVendor(entries) === 'GenuineIntel';
  const addr = findCpuid(entries, 0x80000008, 0);
  vcpu.maxPhyAddr = addr ? addr.eax & 0xff : 36;
  // kvm_get_hypervisor_cpuid(vcpu, KVM_SIGNATURE): the first base from 0x40000000 up, in steps
  // of 0x100, with KVM's signature (QEMU puts KVM's at 0x40000100 when Hyper-V's is at the
  // first); the PV features leaf follows it.
  let pv = 0;
  for (let base = 0x40000000; base < 0x40010000; base += 0x100) {
    const sig = findCpuid(entries, base, 0);
    if (sig !== undefined && sig.ebx === 0x4b4d564b && sig.ecx === 0x564b4d56 && sig.edx === 0x4d) {
      pv = findCpuid(entries, base | 1, 0)?.eax ?? 0;
      break;
    }
  }
  vcpu.pvFeatures = pv;
  // kvm_hv_set_cpuid: Hyper-V is on for the guest when its interface leaf says "Hv#1".
  if (vcpu.hv !== null) hvSetCpuid(vcpu, (leaf) => findCpuid(entries, leaf, 0));
  k.x86.afterSetCpuid(vcpu);
  return 0;
}

/** kvm_vcpu_ioctl_get_cpuid2. */
function getCpuid2(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_CPUID2_LAYOUT.size) return -EFAULT;
  const nent = a.dv.getUint32(a.base, true);
  if (nent < vcpu.cpuidNent) return -E2BIG;
  if (!a.copyOut(KVM_CPUID2_LAYOUT.entries, vcpu.cpuidBytes)) return -EFAULT;
  a.dv.setUint32(a.base, vcpu.cpuidNent, true);
  return 0;
}

/** kvm_vcpu_ioctl_enable_cap. */
function enableCap(k: Kvm, vcpu: Vcpu, req: number, arg: IoctlArg): number {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < KVM_ENABLE_CAP_LAYOUT.size) return -EFAULT;
  const cap = decodeEnableCap(new Uint8Array(a.dv.buffer, a.base, KVM_ENABLE_CAP_LAYOUT.size));
  if (cap.flags !== 0) return -EINVAL;
  switch (cap.cap) {
    case KVM_CAP.ENFORCE_PV_FEATURE_CPUID:
      vcpu.enforcePvCpuid = cap.args[0] !== 0n;
      return 0;
    case KVM_CAP.HYPERV_SYNIC2:
    case KVM_CAP.HYPERV_SYNIC:
      if (vcpu.hv === null) return -EINVAL;
      if (cap.cap === KVM_CAP.HYPERV_SYNIC2 && cap.args[0] !== 0n) return -EINVAL;
      if (!vcpu.vm.irqchip) return -EINVAL;
      hvActivateSynic(vcpu, cap.cap === KVM_CAP.HYPERV_SYNIC2);
      return 0;
    case KVM_CAP.HYPERV_ENLIGHTENED_VMCS: {
      if (vcpu.hv === null) return -EINVAL;
      // nested_enable_evmcs (VMX only): the supported versions go to the u16 at args[0].
      if (k.profile.host.vendorModule !== 'kvm_intel') return -ENOTTY;
      vcpu.hv.evmcsEnabled = true;
      const v = new Uint8Array(2);
      new DataView(v.buffer).setUint16(0, k.x86.evmcs ? EVMCS_VERSION : 0, true);
      return k.memory.write(Number(cap.args[0]), v) ? 0 : -EFAULT;
    }
    case KVM_CAP.HYPERV_DIRECT_TLBFLUSH:
      if (vcpu.hv === null) return -EINVAL;
      return k.unmodeledCap(req, 'vcpu', cap.cap);
    case KVM_CAP.HYPERV_ENFORCE_CPUID:
      if (vcpu.hv === null) return -EINVAL;
      vcpu.hv.enforceCpuid = cap.args[0] !== 0n;
      return 0;
    default:
      return -EINVAL;
  }
}
