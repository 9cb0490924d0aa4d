// The rest of a VM's state API (kvm_arch_vm_ioctl in arch/x86/kvm/x86.c, kvm_vm_ioctl in
// virt/kvm/kvm_main.c): the in-kernel PIC/IOAPIC and PIT state, kvmclock, IRQ routing and lines,
// ioeventfds, coalesced MMIO zones, dirty logs, and the TSS and identity-map addresses. Stored and
// returned as the kernel keeps them, from the host's fresh answers (fresh-state.ts). kvmsr delivers
// no interrupt and runs no timer: what depends on that is stated where it is answered.
import { EBUSY, EEXIST, EFAULT, EINVAL, ENODEV, ENOENT, ENXIO } from '../../abi/errno.js';
import * as I from '../../abi/kvm-ioctls.js';
import { STATE_SIZES } from './fresh-state.js';
import type { Kvm } from '../kvm.js';
import { copyIn as input, copyOut as out } from './state-copy.js';
import { maxMmuPages } from './vm-caps.js';
import { supportedXcr0 } from './vcpu-state.js';
import type { IoctlArg } from '../user-arg.js';
import type { Vm } from '../vm.js';

/** KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC. */
const KVM_CLOCK_VALID_FLAGS = 2 | 4 | 8;
const KVM_CLOCK_REALTIME = 4;
const KVM_MEM_LOG_DIRTY_PAGES = 1;
const KVM_USER_MEM_SLOTS = 32764;
const KVM_MAX_IRQ_ROUTES = 4096;
/** KVM_IOEVENTFD_VALID_FLAG_MASK: DATAMATCH | PIO | DEASSIGN | VIRTIO_CCW_NOTIFY (eventfd.c). */
const KVM_IOEVENTFD_VALID_FLAG_MASK = 0xf;

export interface IrqchipState {
  picMaster: Uint8Array;
  picSlave: Uint8Array;
  ioapic: Uint8Array;
}

/** The VM state ioctls; undefined for a request that is not one of them. */
export function vmStateIoctl(k: Kvm, vm: Vm, req: number, arg: IoctlArg): number | undefined {
  const a = k.args;
  switch (req) {
    case I.KVM_SET_TSS_ADDR: {
      // kvm_vm_ioctl_set_tss_addr: the three pages must fit below 4 GiB; past that, the vendor's
      // (vmx_set_tss_addr with unrestricted guests, svm_set_tss_addr) takes any address.
      const addr = a.intValue(arg);
      if (addr > 0xfffff000 - 2 * 4096) return -EINVAL; // (unsigned int)(-3 * PAGE_SIZE)
      vm.tssAddr = addr;
      return 0;
    }
    case I.KVM_SET_NR_MMU_PAGES: {
      // kvm_vm_ioctl_set_nr_mmu_pages: at least KVM_MIN_ALLOC_MMU_PAGES (64).
      const n = a.intValue(arg);
      if (n < 64) return -EINVAL;
      vm.caps.requestedMmuPages = n;
      return 0;
    }
    case I.KVM_GET_NR_MMU_PAGES:
      return k.x86.rules.getNrMmuPages ? maxMmuPages(vm) : undefined;
    case I.KVM_RESET_DIRTY_RINGS:
      // kvm_vm_ioctl_reset_dirty_pages: no guest writes memory, so no ring has entries to reset.
      return vm.caps.dirtyRingSize === 0 ? -EINVAL : 0;
    case I.KVM_CREATE_DEVICE:
      return createDevice(k, vm, arg);
    case I.KVM_SET_IDENTITY_MAP_ADDR: {
      if (vm.createdVcpus > 0) return -EINVAL;
      const b = input(k, arg, 8);
      if (!b) return -EFAULT;
      vm.identityMapAddr = new DataView(b.buffer).getBigUint64(0, true);
      return 0;
    }
    case I.KVM_GET_IRQCHIP:
    case I.KVM_SET_IRQCHIP:
      return irqchip(k, vm, arg, req === I.KVM_GET_IRQCHIP);
    case I.KVM_CREATE_PIT2: {
      if (!input(k, arg, 64)) return -EFAULT;
      if (vm.pit2) return -EEXIST;
      if (!vm.fullIrqchip) return -ENOENT; // pic_in_kernel
      vm.pit2 = k.freshState.pit2.slice();
      // kvm_pit_reset -> kvm_pit_load_count: channels 1 and 2 start counting now (ktime ns).
      for (const ch of [1, 2]) new DataView(vm.pit2.buffer).setBigInt64(24 * ch + 16, monotonicNs(k), true);
      return 0;
    }
    case I.KVM_GET_PIT2: {
      if (!vm.pit2) return -ENXIO;
      return out(k, arg, vm.pit2);
    }
    case I.KVM_SET_PIT2: {
      const b = input(k, arg, STATE_SIZES.pit2);
      if (!b) return -EFAULT;
      if (!vm.pit2) return -ENXIO;
      // kvm_vm_ioctl_set_pit2: the channels and flags; kvm_pit_load_count restarts each count now.
      vm.pit2.set(b.subarray(0, 76));
      for (const ch of [0, 1, 2]) new DataView(vm.pit2.buffer).setBigInt64(24 * ch + 16, monotonicNs(k), true);
      return 0;
    }
    case I.KVM_GET_CLOCK: {
      const b = new Uint8Array(48);
      const dv = new DataView(b.buffer);
      const flags = k.freshState.clockFlags;
      dv.setBigUint64(0, kvmclockNs(k, vm), true);
      dv.setUint32(8, flags, true);
      if ((flags & KVM_CLOCK_REALTIME) !== 0) dv.setBigUint64(16, BigInt(Date.now()) * 1000000n, true);
      return out(k, arg, b);
    }
    case I.KVM_SET_CLOCK: {
      const b = input(k, arg, 48);
      if (!b) return -EFAULT;
      const dv = new DataView(b.buffer);
      const flags = dv.getUint32(8, true);
      if ((flags & ~KVM_CLOCK_VALID_FLAGS) !== 0) return -EINVAL;
      let clock = dv.getBigUint64(0, true);
      if ((flags & KVM_CLOCK_REALTIME) !== 0) {
        const now = BigInt(Date.now()) * 1000000n;
        const real = dv.getBigUint64(16, true);
        if (now > real) clock += now - real;
      }
      // kvmclock_offset = clock - now: kvmclock (and Hyper-V's reference time) count from here.
      vm.createdAt = k.x86.now() - Number(clock) / 1e6;
      return 0;
    }
    case I.KVM_IRQ_LINE:
    case I.KVM_IRQ_LINE_STATUS: {
      const b = input(k, arg, 8);
      if (!b) return -EFAULT;
      if (!vm.irqchip) return -ENXIO;
      const dv = new DataView(b.buffer);
      const status = irqLine(k, vm, dv.getUint32(0, true), dv.getUint32(4, true));
      if (req === I.KVM_IRQ_LINE) return 0;
      dv.setInt32(0, status, true);
      return k.args.copyOut(0, b) ? 0 : -EFAULT;
    }
    case I.KVM_SET_GSI_ROUTING: {
      const head = input(k, arg, 8);
      if (!head) return -EFAULT;
      const dv = new DataView(head.buffer);
      const nr = dv.getUint32(0, true);
      if (!vm.irqchip) return -EINVAL; // irqchip_in_kernel (kvm_arch_can_set_irq_routing)
      if (nr >= KVM_MAX_IRQ_ROUTES || dv.getUint32(4, true) !== 0) return -EINVAL;
      if (nr > 0 && !input(k, arg, 8 + nr * 48)) return -EFAULT;
      vm.gsiRoutes = nr;
      return 0;
    }
    case I.KVM_IOEVENTFD: {
      const b = input(k, arg, 64);
      if (!b) return -EFAULT;
      const dv = new DataView(b.buffer);
      // struct kvm_ioeventfd: datamatch @0, addr @8, len @16, fd @20, flags @24.
      const flags = dv.getUint32(24, true);
      const len = dv.getUint32(16, true);
      // ioeventfd_check_collision: the same bus, address and length, and the same datamatch
      // (or none: a wildcard). (The eventfd itself lives in the caller's process, where kvmsr
      // cannot look, so every fd is taken.)
      const datamatch = (flags & 1) !== 0 ? dv.getBigUint64(0, true).toString(16) : '*';
      const key = `${flags & 2}:${dv.getBigUint64(8, true)}:${len}:${datamatch}`;
      // kvm_ioeventfd: a deassign only looks for its match (kvm_deassign_ioeventfd)...
      if ((flags & 4) !== 0) return vm.ioeventfds.delete(key) ? 0 : -ENOENT;
      // ...an assign wants known flags, and a length of 0, 1, 2, 4 or 8 (kvm_assign_ioeventfd).
      if ((flags & ~KVM_IOEVENTFD_VALID_FLAG_MASK) !== 0) return -EINVAL;
      if (![0, 1, 2, 4, 8].includes(len)) return -EINVAL;
      if (vm.ioeventfds.has(key)) return -EEXIST;
      vm.ioeventfds.add(key);
      return 0;
    }
    case I.KVM_REGISTER_COALESCED_MMIO:
    case I.KVM_UNREGISTER_COALESCED_MMIO: {
      const b = input(k, arg, 16);
      if (!b) return -EFAULT;
      const dv = new DataView(b.buffer);
      const key = `${dv.getUint32(12, true)}:${dv.getBigUint64(0, true)}:${dv.getUint32(8, true)}`;
      if (req === I.KVM_REGISTER_COALESCED_MMIO) {
        if (dv.getUint32(12, true) > 1) return -EINVAL; // pio must be 0 or 1
        vm.coalesced.add(key);
      } else {
        vm.coalesced.delete(key); // kvm_vm_ioctl_unregister_coalesced_mmio removes what it covers
      }
      return 0;
    }
    case I.KVM_GET_DIRTY_LOG:
      return getDirtyLog(k, vm, arg);
    case I.KVM_CLEAR_DIRTY_LOG:
      return clearDirtyLog(k, vm, arg);
    default:
      return undefined;
  }
}

/** The system fd's KVM_GET_DEVICE_ATTR / KVM_HAS_DEVICE_ATTR (kvm_x86_dev_get_attr). */
export function systemDeviceAttr(k: Kvm, arg: IoctlArg, get: boolean): number {
  const b = input(k, arg, 24);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  // group 0, attr KVM_X86_XCOMP_GUEST_SUPP (0): kvm_caps.supported_xcr0.
  if (dv.getUint32(4, true) !== 0 || dv.getBigUint64(8, true) !== 0n) return -ENXIO;
  if (!get) return 0;
  const v = new Uint8Array(8);
  new DataView(v.buffer).setBigUint64(0, supportedXcr0(k), true);
  const addr = dv.getBigUint64(16, true);
  return addr !== 0n && addr <= BigInt(Number.MAX_SAFE_INTEGER) && k.memory.write(Number(addr), v) ? 0 : -EFAULT;
}


function monotonicNs(k: Kvm): bigint {
  return BigInt(Math.round(k.x86.now() * 1e6));
}

/** KVM_DEV_TYPE_VFIO: the one device type x86 KVM has (CONFIG_KVM_VFIO). */
const KVM_DEV_TYPE_VFIO = 4;
const KVM_CREATE_DEVICE_TEST = 1;

/**
 * KVM_CREATE_DEVICE (kvm_ioctl_create_device): a type x86 has (VFIO's only; ENODEV for the rest);
 * with KVM_CREATE_DEVICE_TEST only whether it exists. kvm_vfio_create allows one per VM at a time
 * (EBUSY); the new fd goes into the struct's fd field, and the call returns 0.
 */
function createDevice(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 12);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const type = dv.getUint32(0, true);
  if (type !== KVM_DEV_TYPE_VFIO) return -ENODEV;
  if ((dv.getUint32(8, true) & KVM_CREATE_DEVICE_TEST) !== 0) return 0;
  if (vm.vfioDevice) return -EBUSY;
  const fd = k.createVfioDevice(vm);
  dv.setUint32(4, fd, true);
  return out(k, arg, b) === 0 ? 0 : -EFAULT;
}

/** get_kvmclock_ns: nanoseconds since the VM's kvmclock started (its creation, or KVM_SET_CLOCK). */
export function kvmclockNs(k: Kvm, vm: Vm): bigint {
  return BigInt(Math.max(0, Math.round((k.x86.now() - vm.createdAt) * 1e6)));
}

/** The in-kernel PIC and IOAPIC, from the host's fresh answers on first use. */
function chipsOf(k: Kvm, vm: Vm): IrqchipState {
  return vm.chips ?? (vm.chips = { picMaster: k.freshState.picMaster.slice(), picSlave: k.freshState.picSlave.slice(), ioapic: k.freshState.ioapic.slice() });
}

function irqchip(k: Kvm, vm: Vm, arg: IoctlArg, get: boolean): number {
  const b = input(k, arg, 520);
  if (!b) return -EFAULT;
  if (!vm.fullIrqchip) return -ENXIO; // irqchip_kernel
  const chips = chipsOf(k, vm);
  const id = new DataView(b.buffer).getUint32(0, true);
  const chip = id === 0 ? chips.picMaster : id === 1 ? chips.picSlave : id === 2 ? chips.ioapic : null;
  if (!chip) return -EINVAL;
  if (get) {
    // kvm_vm_ioctl_get_irqchip fills the chip's part of the union; the rest goes back as it came.
    b.set(chip, 8);
    return k.args.copyOut(0, b) ? 0 : -EFAULT;
  }
  chip.set(b.subarray(8, 8 + chip.length));
  // kvm_set_ioapic: the IRR restarts empty (lines are re-raised by their sources).
  if (id === 2) new DataView(chip.buffer).setUint32(16, 0, true);
  return 0;
}

/**
 * kvm_set_irq's result with the default routing (PIC and IOAPIC for GSIs 0-15, IOAPIC for 16-23):
 * each route's answer summed, 1 for a lowered line, and, since kvmsr delivers no interrupt, a raised
 * line counts as coalesced (0) on the PIC and masked (-1) on the IOAPIC, as on a fresh VM.
 */
/**
 * kvm_set_irq for KVM_IRQ_LINE(_STATUS) on the default routing: a GSI below 16 goes to the PIC
 * (pic_set_irq1) and the IOAPIC (ioapic_set_irq), one up to 23 to the IOAPIC; the answer is the
 * sum of the chips' non-negative answers, -1 when none took it. The chips' IRR bits move as the
 * kernel moves them (KVM_GET_IRQCHIP shows them). An unmasked IOAPIC pin would deliver to a LAPIC:
 * kvmsr answers 0 for it (delivered to none) and delivers nothing.
 */
function irqLine(k: Kvm, vm: Vm, irq: number, level: number): number {
  const routes = vm.gsiRoutes === 0 ? 24 : vm.gsiRoutes;
  if (irq >= routes || irq >= 24) return -1;
  const chips = chipsOf(k, vm);
  let ret = -1;
  const add = (r: number): void => {
    if (r >= 0) ret = r + (ret < 0 ? 0 : ret);
  };
  if (irq < 16) add(picSetIrq(irq < 8 ? chips.picMaster : chips.picSlave, irq & 7, level !== 0));
  add(ioapicSetIrq(chips.ioapic, irq, level !== 0));
  return ret;
}

/** pic_set_irq1 on struct kvm_pic_state: last_irr @0, irr @1, imr @2, elcr @14. */
function picSetIrq(p: Uint8Array, pin: number, level: boolean): number {
  const mask = 1 << pin;
  let ret = 1;
  if ((p[14]! & mask) !== 0) {
    // level triggered
    if (level) {
      ret = (p[1]! & mask) === 0 ? 1 : 0;
      p[1]! |= mask;
      p[0]! |= mask;
    } else {
      p[1]! &= ~mask;
      p[0]! &= ~mask;
    }
  } else if (level) {
    // edge triggered: a new edge only
    if ((p[0]! & mask) === 0) {
      ret = (p[1]! & mask) === 0 ? 1 : 0;
      p[1]! |= mask;
    }
    p[0]! |= mask;
  } else {
    p[0]! &= ~mask;
  }
  return (p[2]! & mask) !== 0 ? -1 : ret;
}

/** ioapic_set_irq on struct kvm_ioapic_state: irr @16, redirtbl[24] (u64) @24. */
function ioapicSetIrq(io: Uint8Array, pin: number, level: boolean): number {
  const dv = new DataView(io.buffer, io.byteOffset, io.byteLength);
  const entry = dv.getUint32(24 + 8 * pin, true);
  const edge = (entry & (1 << 15)) === 0;
  const mask = 1 << pin;
  const irr = dv.getUint32(16, true);
  if (!level) {
    dv.setUint32(16, (irr & ~mask) >>> 0, true);
    return 1;
  }
  dv.setUint32(16, (irr | mask) >>> 0, true);
  if (edge && (irr & mask) !== 0) return 0; // coalesced
  // ioapic_service: a masked pin, or a level pin still awaiting its EOI, delivers nothing.
  if ((entry & (1 << 16)) !== 0 || (!edge && (entry & (1 << 14)) !== 0)) return -1;
  return 0;
}

/** A memslot's dirty bitmap: ALIGN(npages, 64) / 8 bytes (kvm_dirty_bitmap_bytes). */
export function dirtyBitmapBytes(size: number): number {
  const pages = Math.floor(size / 4096);
  return Math.ceil(pages / 64) * 8;
}

/** kvm_prepare_memory_region: logging on allocates the bitmap, set all when INITIALLY_SET is on. */
export function updateDirtyBitmap(vm: Vm, slot: number, flags: number, size: number): void {
  if ((flags & KVM_MEM_LOG_DIRTY_PAGES) === 0 || size === 0) {
    vm.dirty.delete(slot);
    return;
  }
  if (vm.dirty.has(slot)) return;
  const bm = new Uint8Array(dirtyBitmapBytes(size));
  if ((vm.manualDirtyLog & 2) !== 0) {
    const pages = Math.floor(size / 4096);
    for (let p = 0; p < pages; p++) bm[p >> 3]! |= 1 << (p & 7);
  }
  vm.dirty.set(slot, bm);
}

/**
 * kvm_arch_nr_memslot_as_ids: two address spaces (normal and SMM) where KVM_SMM is built, which
 * KVM_CAP_MULTI_ADDRESS_SPACE reports; one otherwise.
 */
export function memslotAddressSpaces(k: Kvm): number {
  const ext = k.profile.extensions;
  return Math.max(1, ext.vm[I.KVM_CAP.MULTI_ADDRESS_SPACE] ?? ext.system[I.KVM_CAP.MULTI_ADDRESS_SPACE] ?? 1);
}

/** A memslot as userspace names it (as_id << 16 | id), or -1 where the kernel's check refuses it. */
export function memslotKey(k: Kvm, slot: number): number {
  const asId = slot >>> 16;
  const id = slot & 0xffff;
  return asId >= memslotAddressSpaces(k) || id >= KVM_USER_MEM_SLOTS ? -1 : slot >>> 0;
}

function getDirtyLog(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 16);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  // kvm_get_dirty_log: as_id and id checked, then the slot must log dirty pages.
  const id = memslotKey(k, dv.getUint32(0, true));
  if (id < 0) return -EINVAL;
  const bm = vm.dirty.get(id);
  if (!bm) return -ENOENT;
  const addr = dv.getBigUint64(8, true);
  if (addr === 0n || addr > BigInt(Number.MAX_SAFE_INTEGER) || !k.memory.write(Number(addr), bm)) return -EFAULT;
  // Without manual protection the read also clears (and write-protects) what it returned.
  if ((vm.manualDirtyLog & 1) === 0) bm.fill(0);
  return 0;
}

function clearDirtyLog(k: Kvm, vm: Vm, arg: IoctlArg): number {
  const b = input(k, arg, 24);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const id = memslotKey(k, dv.getUint32(0, true));
  const num = dv.getUint32(4, true);
  const first = dv.getBigUint64(8, true);
  if (id < 0) return -EINVAL;
  if ((first & 63n) !== 0n) return -EINVAL;
  const bm = vm.dirty.get(id);
  const slot = vm.memSlots.find((s) => s.slot === id);
  if (!bm || !slot) return -ENOENT;
  const npages = BigInt(Math.floor(slot.size / 4096));
  if (first > npages || BigInt(num) > npages - first || (BigInt(num) < npages - first && (num & 63) !== 0)) return -EINVAL;
  const n = Math.ceil(num / 64) * 8;
  const addr = dv.getBigUint64(16, true);
  const src = n === 0 ? new Uint8Array(0) : addr === 0n || addr > BigInt(Number.MAX_SAFE_INTEGER) ? null : k.memory.read(Number(addr), n);
  if (!src) return -EFAULT;
  const base = Number(first) >> 3;
  for (let i = 0; i < src.length && base + i < bm.length; i++) bm[base + i]! &= ~src[i]!;
  return 0;
}
