// copy_from_user / copy_to_user of a whole fixed-size struct, for the state ioctls (vcpu-state.ts,
// vm-state.ts): the kernel copies the whole struct in (EFAULT if any byte is unmapped) and out
// (EFAULT after writing what is mapped).
import { EFAULT } from '../../abi/errno.js';
import type { Kvm } from '../kvm.js';
import type { IoctlArg } from '../user-arg.js';

/** A copy of the `size` bytes at the argument, or null (EFAULT) when they are not all there. */
export function copyIn(k: Kvm, arg: IoctlArg, size: number): Uint8Array | null {
  const a = k.args;
  if (!a.resolve(arg) || a.avail < size) return null;
  return a.u8.slice(a.base, a.base + size);
}

/** Writes `b` at the argument: 0, or -EFAULT when not all of it could be written. */
export function copyOut(k: Kvm, arg: IoctlArg, b: Uint8Array): number {
  const a = k.args;
  if (!a.resolve(arg)) return -EFAULT;
  return a.copyOut(0, b) ? 0 : -EFAULT;
}
