// Interrupt sources a VMM wires to a VM: irqfds (virt/kvm/eventfd.c kvm_irqfd), MSIs sent from
// userspace (kvm_send_userspace_msi), and the PIT's reinjection switch (KVM_REINJECT_CONTROL).
// kvmsr runs no guest and sees no eventfd (the fds live in the caller's process), so an irqfd is
// kept by its fd number and GSI, and nothing is ever delivered through one; an MSI is delivered
// into the destination LAPIC's IRR, which is what KVM_GET_LAPIC then shows.
import { EBUSY, EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, ENXIO } from '../../abi/errno.js';
import * as I from '../../abi/kvm-ioctls.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vm } from '../vm.js';
import { copyIn as input } from './state-copy.js';
import { vcpuState } from './vcpu-state.js';

const KVM_IRQFD_FLAG_DEASSIGN = 1;
const KVM_IRQFD_FLAG_RESAMPLE = 2;
/** KVM_MSI_VALID_DEVID: the only flag kvm_send_userspace_msi takes. */
const KVM_MSI_VALID_DEVID = 1;
const EPERM_FROM_MINUS_ONE = 1;

const APIC_ID = 0x20;
const APIC_SPIV = 0xf0;
const APIC_IRR = 0x200;
const APIC_SPIV_APIC_ENABLED = 1 << 8;

/** KVM_IRQFD: kvm_irqfd, kvm_irqfd_assign, kvm_irqfd_deassign. */
export function irqfd(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 32);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const fd = dv.getUint32(0, true);
  const gsi = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  if ((flags & ~(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE)) !== 0) return -EINVAL;
  if ((flags & KVM_IRQFD_FLAG_DEASSIGN) !== 0) {
    // Every irqfd of that eventfd and GSI goes; none is not an error.
    if (vm.irqfds.get(fd) === gsi) vm.irqfds.delete(fd);
    return 0;
  }
  // kvm_arch_irqfd_allowed: a resampling irqfd needs the whole irqchip, any other the LAPICs.
  const resample = (flags & KVM_IRQFD_FLAG_RESAMPLE) !== 0;
  if (!(resample ? vm.fullIrqchip : vm.irqchip)) return -EINVAL;
  if (vm.irqfds.has(fd)) return -EBUSY; // this eventfd already raises another GSI
  vm.irqfds.set(fd, gsi);
  return 0;
}

/** KVM_REINJECT_CONTROL (kvm_vm_ioctl_reinject): the PIT must exist. */
export function reinjectControl(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 8);
  if (!b) return -EFAULT;
  if (!vm.pit2) return -ENXIO;
  vm.pitReinject = b[0] !== 0;
  return 0;
}

/**
 * KVM_SIGNAL_MSI: kvm_send_userspace_msi -> kvm_set_msi -> kvm_irq_delivery_to_apic. Returns how many
 * LAPICs accepted it, or -1 (which the ioctl passes on as is: errno EPERM) when none matched. Fixed
 * and lowest-priority MSIs to a physical APIC ID (or the broadcast 0xff) are delivered; other
 * modes are not modelled.
 */
export function signalMsi(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 32);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const addrLo = dv.getUint32(0, true);
  const addrHi = dv.getUint32(4, true);
  const data = dv.getUint32(8, true);
  if (!vm.irqchip || (dv.getUint32(12, true) & ~KVM_MSI_VALID_DEVID) !== 0) return -EINVAL;
  // kvm_msi_route_invalid: with 32-bit x2APIC IDs the high address bits must be clear.
  if (vm.caps.x2apicFormat && (addrHi & 0xff) !== 0) return -EINVAL;
  const logical = (addrLo & 4) !== 0;
  const mode = (data >>> 8) & 7;
  if (logical || (mode !== 0 && mode !== 1)) return k.unmodeledOr(I.KVM_SIGNAL_MSI, 'vm', -ENOSYS, new Set([I.KVM_SIGNAL_MSI]));
  const dest = (addrLo >>> 12) & 0xff;
  const vector = data & 0xff;
  let delivered = -1;
  for (const vcpu of vm.vcpus.values()) {
    const lapic = vcpuState(k, vcpu).lapic;
    if (!lapic) continue;
    const ldv = new DataView(lapic.buffer, lapic.byteOffset, lapic.byteLength);
    const id = ldv.getUint32(APIC_ID, true) >>> 24;
    if (dest !== 0xff && id !== dest) continue;
    if (delivered < 0) delivered = 0;
    // __apic_accept_irq: a software-disabled APIC takes nothing.
    if ((ldv.getUint32(APIC_SPIV, true) & APIC_SPIV_APIC_ENABLED) === 0) continue;
    const reg = APIC_IRR + 0x10 * (vector >>> 5);
    ldv.setUint32(reg, ldv.getUint32(reg, true) | (1 << (vector & 31)), true);
    delivered++;
  }
  return delivered < 0 ? -EPERM_FROM_MINUS_ONE : delivered;
}

const KVM_HYPERV_EVENTFD_DEASSIGN = 1;
/** KVM_HYPERV_CONN_ID_MASK. */
const HV_CONN_ID_MASK = 0x00ffffff;

/**
 * KVM_HYPERV_EVENTFD (hyperv.c kvm_vm_ioctl_hv_eventfd): an eventfd the guest's HvSignalEvent on a
 * connection id signals, one per id (EEXIST for a second); a deassign of an id with none is ENOENT.
 */
export function hypervEventfd(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 24);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const connId = dv.getUint32(0, true);
  const flags = dv.getUint32(8, true);
  if ((flags & ~KVM_HYPERV_EVENTFD_DEASSIGN) !== 0) return -EINVAL;
  if ((connId & ~HV_CONN_ID_MASK) !== 0) return -EINVAL;
  if ((flags & KVM_HYPERV_EVENTFD_DEASSIGN) !== 0) return vm.hvEventfds.delete(connId) ? 0 : -ENOENT;
  if (vm.hvEventfds.has(connId)) return -EEXIST;
  vm.hvEventfds.set(connId, dv.getInt32(4, true));
  return 0;
}
