// Shared helpers for tests: a fresh system/VM/vCPU on kvmsr, and buffer builders.
import { encodeMsrs, decodeMsrs, type MsrEntry } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm, type KvmOptions } from '../src/kvm/kvm.js';

export interface Machine {
  kvm: Kvm;
  sys: number;
  vm: number;
  vcpu: number;
}
export function machine(opts: KvmOptions = {}): Machine {
  const kvm = new Kvm(opts);
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  return { kvm, sys, vm, vcpu };
}
export const msrs = (entries: (number | [number, bigint])[]): Uint8Array =>
  encodeMsrs(entries.map((e): MsrEntry => (Array.isArray(e) ? { index: e[0], data: e[1] } : { index: e, data: 0n })));
export const datas = (buf: Uint8Array): bigint[] => decodeMsrs(buf).entries.map((e) => e.data);
export const hexdump = (b: Uint8Array): string => Buffer.from(b).toString('hex');
