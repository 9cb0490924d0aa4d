// Events a VMM injects into a vCPU (x86.c kvm_arch_vcpu_ioctl: KVM_INTERRUPT, KVM_NMI, KVM_SMI,
// KVM_X86_SET_MCE). They go where the kernel queues them, so KVM_GET_VCPU_EVENTS (and the MCE MSRs)
// show them: no guest ever takes them.
import { EEXIST, EFAULT, EINVAL, ENOTTY, ENXIO } from '../../abi/errno.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vcpu } from '../vcpu.js';
import { injectMce } from '../x86/mce.js';
import { copyIn as input } from './state-copy.js';
import { cr4Lo, vcpuState } from './vcpu-state.js';

/** KVM_NR_INTERRUPTS. */
const NR_INTERRUPTS = 256;
const MC_VECTOR = 18;

// struct kvm_vcpu_events offsets (vcpu-state.ts keeps the bytes).
const EV_EXC_INJECTED = 0;
const EV_EXC_NR = 1;
const EV_EXC_HAS_ERROR = 2;
const EV_EXC_PENDING = 3;
const EV_IRQ_INJECTED = 8;
const EV_IRQ_NR = 9;
const EV_IRQ_SOFT = 10;
const EV_NMI_PENDING = 13;
const EV_SMI_PENDING = 25;
const EV_TRIPLE_FAULT = 28;

/** KVM_INTERRUPT: kvm_vcpu_ioctl_interrupt. */
export function interrupt(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, 4);
  if (!b) return -EFAULT;
  const irq = new DataView(b.buffer).getUint32(0, true);
  if (irq >= NR_INTERRUPTS) return -EINVAL;
  const s = vcpuState(k, vcpu);
  if (!vcpu.vm.irqchip) {
    // kvm_queue_interrupt: the vector is injected at the next entry.
    s.events[EV_IRQ_INJECTED] = 1;
    s.events[EV_IRQ_NR] = irq;
    s.events[EV_IRQ_SOFT] = 0;
    return 0;
  }
  // With the LAPICs in the kernel only an ExtINT from a userspace PIC comes this way.
  if (vcpu.vm.fullIrqchip) return -ENXIO;
  if (s.pendingExternalVector !== -1) return -EEXIST;
  s.pendingExternalVector = irq;
  return 0;
}

/** KVM_NMI: kvm_inject_nmi; process_nmi makes it the pending NMI KVM_GET_VCPU_EVENTS reports. */
export function nmi(k: Kvm, vcpu: Vcpu): number {
  vcpuState(k, vcpu).events[EV_NMI_PENDING] = 1;
  return 0;
}

/** KVM_SMI: kvm_inject_smi, -ENOTTY without CONFIG_KVM_SMM. */
export function smi(k: Kvm, vcpu: Vcpu): number {
  if (!k.x86.smm) return -ENOTTY;
  vcpuState(k, vcpu).events[EV_SMI_PENDING] = 1;
  return 0;
}

/** KVM_X86_SET_MCE: kvm_vcpu_ioctl_x86_set_mce, then what it queues (#MC, or a triple fault). */
export function setMce(k: Kvm, vcpu: Vcpu, arg: IoctlArg): number {
  const b = input(k, arg, 64);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const r = injectMce(
    k.x86,
    vcpu,
    {
      statusLo: dv.getInt32(0, true),
      statusHi: dv.getInt32(4, true),
      addrLo: dv.getInt32(8, true),
      addrHi: dv.getInt32(12, true),
      miscLo: dv.getInt32(16, true),
      miscHi: dv.getInt32(20, true),
      mcgStatusLo: dv.getInt32(24, true),
      mcgStatusHi: dv.getInt32(28, true),
      bank: dv.getUint8(32),
    },
    cr4Lo(vcpu),
  );
  if (r.effect === 'machine-check') {
    // kvm_queue_exception(vcpu, MC_VECTOR): pending, no error code.
    const e = vcpuState(k, vcpu).events;
    e[EV_EXC_PENDING] = 1;
    e[EV_EXC_INJECTED] = 0;
    e[EV_EXC_NR] = MC_VECTOR;
    e[EV_EXC_HAS_ERROR] = 0;
  } else if (r.effect === 'triple-fault') {
    vcpuState(k, vcpu).events[EV_TRIPLE_FAULT] = 1; // KVM_REQ_TRIPLE_FAULT
  }
  return r.ret;
}
