// The KVM-VFIO device's fd (virt/kvm/vfio.c; kvm_main.c kvm_device_ioctl): KVM_HAS_DEVICE_ATTR and
// KVM_SET_DEVICE_ATTR in group KVM_DEV_VFIO_FILE (ADD, DEL: an int fd at addr); there is no
// get_attr (EPERM), other groups and attributes are ENXIO, other ioctls ENOTTY. The VFIO file the
// caller names lives in its process, where kvmsr cannot look: every fd is taken as one (the kernel
// refuses a file that is not VFIO's with EINVAL), and nothing reaches a device.
import { EEXIST, EFAULT, ENOENT, ENOTTY, ENXIO, EPERM } from '../../abi/errno.js';
import * as I from '../../abi/kvm-ioctls.js';
import type { DeviceFile } from '../files.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';
import { copyIn as input } from './state-copy.js';

const KVM_DEV_VFIO_FILE = 1;
const KVM_DEV_VFIO_FILE_ADD = 1n;
const KVM_DEV_VFIO_FILE_DEL = 2n;

export function vfioDeviceIoctl(k: Kvm, dev: DeviceFile, req: number, arg: IoctlArg): number {
  if (req !== I.KVM_HAS_DEVICE_ATTR && req !== I.KVM_SET_DEVICE_ATTR && req !== I.KVM_GET_DEVICE_ATTR) return -ENOTTY;
  const b = input(k, arg, 24);
  if (!b) return -EFAULT;
  const dv = new DataView(b.buffer);
  const group = dv.getUint32(4, true);
  const attr = dv.getBigUint64(8, true);
  const addr = dv.getBigUint64(16, true);
  if (req === I.KVM_GET_DEVICE_ATTR) return -EPERM; // kvm_vfio_ops has no get_attr
  const known = group === KVM_DEV_VFIO_FILE && (attr === KVM_DEV_VFIO_FILE_ADD || attr === KVM_DEV_VFIO_FILE_DEL);
  if (req === I.KVM_HAS_DEVICE_ATTR) return known ? 0 : -ENXIO;
  if (!known) return -ENXIO;
  // kvm_vfio_set_file: get_user(fd, (int32_t __user *)attr->addr).
  const v = addr === 0n ? null : k.args.copyIn(addr, 4);
  if (!v) return -EFAULT;
  const fd = new DataView(v.buffer, v.byteOffset, 4).getInt32(0, true);
  if (attr === KVM_DEV_VFIO_FILE_ADD) {
    if (dev.files.has(fd)) return -EEXIST;
    dev.files.add(fd);
    return 0;
  }
  return dev.files.delete(fd) ? 0 : -ENOENT;
}
