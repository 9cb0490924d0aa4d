// The host-visible expectations of the kernel's own selftests
// (tools/testing/selftests/kvm/x86_64 in linux-source-6.12), run against kvmsr on the PVM profile.
import { describe, expect, test } from 'vitest';
import { decodeMsrList, encodeEnableCap, encodeMsrList } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_CAP } from '../src/abi/kvm-ioctls.js';
import { datas, machine, msrs } from './helpers.js';

describe('hwcr_msr_test.c', () => {
  test('each HWCR bit: ignored bits and McStatusWrEn/TscFreqSel are taken, only the valid ones read back', () => {
    const m = machine();
    const ignored = (1n << 3n) | (1n << 6n) | (1n << 8n);
    const valid = (1n << 18n) | (1n << 24n);
    for (let bit = 0n; bit < 64n; bit++) {
      const val = 1n << bit;
      const r = m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0xc0010015, val]]));
      expect(r, `bit ${bit}`).toBe(val & ~(ignored | valid) ? 0 : 1);
      const b = msrs([0xc0010015]);
      m.kvm.ioctlOrThrow(m.vcpu, I.KVM_GET_MSRS, b);
      expect(datas(b)[0], `bit ${bit}`).toBe(val & valid);
      m.kvm.ioctlOrThrow(m.vcpu, I.KVM_SET_MSRS, msrs([[0xc0010015, 0n]]));
    }
  });
});

describe('kvm_pv_test.c', () => {
  const PV_MSRS = [0x12, 0x4b564d01, 0x11, 0x4b564d00, 0x4b564d02, 0x4b564d03, 0x4b564d04, 0x4b564d05, 0x4b564d06, 0x4b564d07];
  test('with KVM_CAP_ENFORCE_PV_FEATURE_CPUID and no PV features, every PV MSR is #GP for the guest', () => {
    const m = machine();
    m.kvm.ioctlOrThrow(m.vcpu, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.ENFORCE_PV_FEATURE_CPUID, [1n]));
    for (const msr of PV_MSRS) {
      expect(m.kvm.rdmsr(m.vcpu, msr), `rdmsr 0x${msr.toString(16)}`).toEqual({ kind: 'gp' });
      expect(m.kvm.wrmsr(m.vcpu, msr, 0n), `wrmsr 0x${msr.toString(16)}`).toEqual({ kind: 'gp' });
    }
  });
});

describe('platform_info_test.c', () => {
  test('the host sets MAX_TURBO_RATIO; the guest reads it only while KVM_CAP_MSR_PLATFORM_INFO is on', () => {
    const m = machine();
    const b = msrs([0xce]);
    m.kvm.ioctlOrThrow(m.vcpu, I.KVM_GET_MSRS, b);
    const orig = datas(b)[0]!;
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0xce, orig | 0xff00n]]))).toBe(1);
    m.kvm.ioctlOrThrow(m.vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.MSR_PLATFORM_INFO, [1n]));
    const r = m.kvm.rdmsr(m.vcpu, 0xce);
    expect(r.kind === 'ok' && (r.value & 0xff00n) === 0xff00n).toBe(true);
    m.kvm.ioctlOrThrow(m.vm, I.KVM_ENABLE_CAP, encodeEnableCap(KVM_CAP.MSR_PLATFORM_INFO, [0n]));
    expect(m.kvm.rdmsr(m.vcpu, 0xce)).toEqual({ kind: 'gp' });
    expect(m.kvm.ioctl(m.vcpu, I.KVM_SET_MSRS, msrs([[0xce, orig]]))).toBe(1);
  });
});

describe('get_msr_index_features.c', () => {
  test('the feature list is non-empty and every feature MSR reads on /dev/kvm', () => {
    const m = machine();
    const probe = encodeMsrList(0);
    m.kvm.ioctl(m.sys, I.KVM_GET_MSR_FEATURE_INDEX_LIST, probe);
    const n = decodeMsrList(probe).nmsrs;
    expect(n).toBeGreaterThan(0);
    const list = encodeMsrList(n);
    m.kvm.ioctlOrThrow(m.sys, I.KVM_GET_MSR_FEATURE_INDEX_LIST, list);
    for (const i of decodeMsrList(list).indices) expect(m.kvm.ioctl(m.sys, I.KVM_GET_MSRS, msrs([i])), `0x${i.toString(16)}`).toBe(1);
    // And the normal list is at least as long as what it says.
    const l0 = encodeMsrList(0);
    m.kvm.ioctl(m.sys, I.KVM_GET_MSR_INDEX_LIST, l0);
    expect(decodeMsrList(l0).nmsrs).toBe(m.kvm.profile.msrIndexList.length);
  });
});
