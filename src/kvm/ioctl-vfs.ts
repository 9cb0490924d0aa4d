// do_vfs_ioctl (fs/ioctl.c): the requests the VFS answers for every file before KVM sees them.
// KVM's fds are anonymous inodes with no fasync, so FIOASYNC can only be turned off.
import { EFAULT, ENOTTY } from '../abi/errno.js';
import type { ArgResolver, IoctlArg } from './user-arg.js';

export const FIONBIO = 0x5421;
export const FIONCLEX = 0x5450;
export const FIOCLEX = 0x5451;
export const FIOASYNC = 0x5452;
export const FIOQSIZE = 0x5460;
export const FIGETBSZ = 0x2;

/** The anon_inode pseudo-filesystem's block size (PAGE_SIZE). */
const ANON_INODE_BLOCKSIZE = 4096;

/** The VFS's answer, or undefined when the request goes on to the file's own ioctl. */
export function vfsIoctl(a: ArgResolver, req: number, arg: IoctlArg): number | undefined {
  switch (req) {
    case FIOCLEX:
    case FIONCLEX:
      return 0;
    case FIONBIO:
      return a.resolve(arg) && a.avail >= 4 ? 0 : -EFAULT;
    case FIOASYNC:
      if (!a.resolve(arg) || a.avail < 4) return -EFAULT;
      return a.dv.getInt32(a.base, true) !== 0 ? -ENOTTY : 0;
    case FIOQSIZE:
      return -ENOTTY;
    case FIGETBSZ:
      if (!a.resolve(arg) || a.avail < 4) return -EFAULT;
      a.dv.setInt32(a.base, ANON_INODE_BLOCKSIZE, true);
      return 0;
    default:
      return undefined;
  }
}
