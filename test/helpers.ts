// Shared helpers for tests: a fresh system/VM/vCPU on kvmsr, and buffer builders.
import { encodeMsrs, decodeMsrs, type MsrEntry } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { Kvm, type KvmOptions } from '../src/kvm/kvm.js';
import { profileToJson, type HostProfile } from '../src/kvm/profile.js';
import { builtinProfile } from '../src/profiles.js';

export interface Machine {
  kvm: Kvm;
  sys: number;
  vm: number;
  vcpu: number;
}
/**
 * The profile unit tests of the source-derived rules run on: kvm_pvm's hooks with no measured rule
 * in front, so x86.c's common rules answer (the built-in default is a capture whose measured rules
 * override some of them, as its host does).
 */
export const sourceProfile = (): HostProfile => builtinProfile('pvm-amd-epyc-6.18.44-v782-derived');

export function machine(opts: KvmOptions = {}): Machine {
  const kvm = new Kvm({ profile: sourceProfile(), ...opts });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  return { kvm, sys, vm, vcpu };
}
export const msrs = (entries: (number | [number, bigint])[]): Uint8Array =>
  encodeMsrs(entries.map((e): MsrEntry => (Array.isArray(e) ? { index: e[0], data: e[1] } : { index: e, data: 0n })));
export const datas = (buf: Uint8Array): bigint[] => decodeMsrs(buf).entries.map((e) => e.data);
export const hexdump = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** One MSR by KVM_GET_MSRS on the machine's vCPU: its value, or null when refused. */
export const getMsr = (m: Machine, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.vcpu, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};
/** One MSR by KVM_SET_MSRS on the machine's vCPU: whether it was accepted. */
export const setMsr = (m: Machine, index: number, v: bigint): boolean => m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[index, v]])) === 1;
/** One feature MSR by KVM_GET_MSRS on /dev/kvm: its value, or null when refused. */
export const getFeatureMsr = (m: Machine, index: number): bigint | null => {
  const b = msrs([index]);
  return m.kvm.ioctl(m.sys, I.KVM_GET_MSRS, b) === 1 ? datas(b)[0]! : null;
};

/** A profile's JSON without what differs between two captures of one host: when, and the moving TSC. */
export function comparable(p: HostProfile): Record<string, unknown> {
  const j = profileToJson(p) as Record<string, unknown> & { host: Record<string, unknown>; vcpuReset: { index: string; value: string | null }[] };
  return { ...j, notes: '', host: { ...j.host, capturedAt: '' }, vcpuReset: j.vcpuReset.map((m) => (m.index === '0x10' ? { ...m, value: 'moves' } : m)) };
}

