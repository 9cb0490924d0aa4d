// The file objects behind kvmsr's file descriptors.
import type { Vcpu } from './vcpu.js';
import type { Vm } from './vm.js';

export const FD_SYSTEM = 0;
export const FD_VM = 1;
export const FD_VCPU = 2;
/** A binary stats file (KVM_GET_STATS_FD): bytes to read, no ioctls. */
export const FD_STATS = 3;
export type FdKind = typeof FD_SYSTEM | typeof FD_VM | typeof FD_VCPU | typeof FD_STATS;

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
export interface StatsFile {
  readonly kind: typeof FD_STATS;
  readonly bytes: Uint8Array;
}
export type KvmFile = SystemFile | VmFile | VcpuFile | StatsFile;

