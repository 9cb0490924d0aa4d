// The file objects behind kvmsr's file descriptors.
import type { Vcpu } from './vcpu.js';
import type { Vm } from './vm.js';

export const FD_SYSTEM = 0;
export const FD_VM = 1;
export const FD_VCPU = 2;
/** A plain file a KVM call hands out (KVM_GET_STATS_FD's stats, KVM_CREATE_GUEST_MEMFD's memory): no ioctls. */
export const FD_FILE = 3;
/** A KVM device (KVM_CREATE_DEVICE; x86 has the KVM-VFIO one only). */
export const FD_DEVICE = 4;
export type FdKind = typeof FD_SYSTEM | typeof FD_VM | typeof FD_VCPU | typeof FD_FILE | typeof FD_DEVICE;

export interface SystemFile {
  readonly kind: typeof FD_SYSTEM;
}
export interface VmFile {
  readonly kind: typeof FD_VM;
  readonly vm: Vm;
}
export interface VcpuFile {
  readonly kind: typeof FD_VCPU;
  readonly vm: Vm;
  readonly vcpu: Vcpu;
}
export interface PlainFile {
  readonly kind: typeof FD_FILE;
  /** What it holds: bytes (a stats file, read-only), or a size of zeros (guest memory, read-write). */
  readonly bytes: Uint8Array | null;
  readonly size: number;
  readonly writable: boolean;
  /** Whether the fd is close-on-exec (anon_inode_getfd's O_CLOEXEC, or get_unused_fd_flags(0)). */
  readonly cloexec: boolean;
}
export interface DeviceFile {
  readonly kind: typeof FD_DEVICE;
  readonly vm: Vm;
  /** KVM_DEV_VFIO_FILE_ADD's files, by the caller's fd number. */
  readonly files: Set<number>;
}
export type KvmFile = SystemFile | VmFile | VcpuFile | PlainFile | DeviceFile;

