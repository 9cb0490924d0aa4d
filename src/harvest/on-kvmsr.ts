// Runs a plan case on kvmsr with the same setup kvmsr-probe gives it on the host (probe/kvmsr-probe.c),
// and answers in the same form, so judge compares like with like.
import { encodeCpuid2, encodeEnableCap, type CpuidEntry2 } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { KVM_RUN_LAYOUT } from '../abi/layout.js';
import type { GuestMsrResult } from '../kvm/x86/guest-msr.js';
import { Kvm, type KvmOptions } from '../kvm/kvm.js';
import type { HostProfile } from '../kvm/profile.js';
import type { CaseAnswer, PlanCase, StepAnswer } from './format.js';

const GUEST_MEM = 0x10000;

function guestAnswer(kvm: Kvm, vcpu: number, r: GuestMsrResult, written?: bigint): StepAnswer {
  switch (r.kind) {
    case 'ok':
      return { op: 'g', kind: 'ok', value: written ?? r.value };
    case 'gp':
      return { op: 'g', kind: 'gp' };
    case 'exit': {
      // The probe completes every MSR exit with msr.error = 1: the guest takes #GP.
      kvm.runPage(vcpu)![KVM_RUN_LAYOUT.msrError] = 1;
      kvm.completeMsrExit(vcpu);
      return { op: 'g', kind: 'exit', exitReason: r.exitReason, reason: r.reason, index: r.index, data: r.data };
    }
    case 'vmexit':
      // The probe reports an exit it did not expect as "fail exit REASON" and ends the case.
      return { op: 'g', kind: 'fail', what: 'exit', errno: r.exitReason };
    default:
      return { op: 'g', kind: 'fail', what: 'KVM_RUN', errno: r.errno };
  }
}

/**
 * The CPUID of a cpuid=2 case, as kvmsr-probe builds it: KVM's leaves (0x400000xx) moved up by
 * 0x100, then KVM_GET_SUPPORTED_HV_CPUID's leaves.
 */
export function withHypervLeaves(supported: readonly CpuidEntry2[], hv: readonly CpuidEntry2[]): CpuidEntry2[] {
  const moved = supported.map((e) => {
    if ((e.function & 0xffffff00) !== 0x40000000) return e;
    const eax = e.function === 0x40000000 && e.eax >= 0x40000000 && e.eax < 0x40000100 ? e.eax + 0x100 : e.eax;
    return { ...e, function: e.function + 0x100, eax };
  });
  return [...moved, ...hv];
}

/** One case on a fresh kvmsr: its answers, step by step, as the probe writes them. */
export function runOnKvmsr(profile: HostProfile, c: PlanCase, opts: Omit<KvmOptions, 'profile'> = {}): CaseAnswer {
  const kvm = new Kvm({ ...opts, profile });
  const fail = (what: string, r: number): CaseAnswer => ({ id: c.id, setupFail: { what, errno: -r }, steps: [] });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  if (vm < 0) return fail('KVM_CREATE_VM', vm);
  const s = c.setup;
  if (s.usermsr !== 0) {
    const r = kvm.ioctl(vm, I.KVM_ENABLE_CAP, encodeEnableCap(I.KVM_CAP.X86_USER_SPACE_MSR, [BigInt(s.usermsr)]));
    if (r < 0) return fail('KVM_ENABLE_CAP', r);
  }
  if (s.irqchip) {
    const r = kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
    if (r < 0) return fail('KVM_CREATE_IRQCHIP', r);
  }
  if (s.guest) {
    const region = new Uint8Array(32);
    new DataView(region.buffer).setBigUint64(16, BigInt(GUEST_MEM), true); // slot 0, GPA 0
    const r = kvm.ioctl(vm, I.KVM_SET_USER_MEMORY_REGION, region);
    if (r < 0) return fail('KVM_SET_USER_MEMORY_REGION', r);
  }
  const vcpus: number[] = [];
  const cpuid = s.cpuid ? encodeCpuid2(s.hv === true ? withHypervLeaves(profile.supportedCpuid, kvm.x86.hvCpuid) : profile.supportedCpuid) : null;
  for (let i = 0; i < s.vcpus; i++) {
    const v = kvm.ioctl(vm, I.KVM_CREATE_VCPU, i);
    if (v < 0) return fail('KVM_CREATE_VCPU', v);
    if (cpuid) {
      const r = kvm.ioctl(v, I.KVM_SET_CPUID2, cpuid.slice());
      if (r < 0) return fail('KVM_SET_CPUID2', r);
    }
    vcpus.push(v);
  }
  const steps: StepAnswer[] = [];
  let previous: Uint8Array | null = null;
  let ran = false;
  for (const st of c.steps) {
    switch (st.op) {
      case 'io': {
        const fd = st.on === 'sys' ? sys : st.on === 'vm' ? vm : vcpus[st.on]!;
        const arg: Uint8Array | number = st.arg === 'wb' ? (previous ?? new Uint8Array(0)).slice() : typeof st.arg === 'number' ? st.arg : st.arg.slice();
        const r = kvm.ioctl(fd, st.request, arg);
        if (arg instanceof Uint8Array) previous = arg;
        steps.push({ op: 'io', ret: r < 0 ? -1 : r, errno: r < 0 ? -r : 0, out: arg instanceof Uint8Array ? arg : null });
        break;
      }
      case 'rd':
      case 'wr': {
        const v = vcpus[st.vcpu]!;
        if (!ran) kvm.markRan(v); // the first KVM_RUN
        ran = true;
        const g = st.op === 'rd' ? guestAnswer(kvm, v, kvm.rdmsr(v, st.index)) : guestAnswer(kvm, v, kvm.wrmsr(v, st.index, st.value), BigInt.asUintN(64, st.value));
        steps.push(g);
        if (g.op === 'g' && g.kind === 'fail') return { id: c.id, steps }; // the probe ends the case there
        break;
      }
      case 'sleep':
        if (st.ms <= 1000) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, st.ms);
        steps.push({ op: 'sleep' });
        break;
      case 'stats': {
        const fd = kvm.ioctl(st.on === 'vm' ? vm : vcpus[st.on]!, I.KVM_GET_STATS_FD, 0);
        const bytes = fd >= 0 ? (kvm.statsFile(fd) ?? null) : null;
        if (fd >= 0) kvm.close(fd);
        steps.push(fd >= 0 ? { op: 'stats', ret: 0, errno: 0, bytes } : { op: 'stats', ret: -1, errno: -fd, bytes: null });
        break;
      }
      case 'tsckhz-floor': {
        const v = vcpus[st.on]!;
        let { lo, hi } = st;
        if (kvm.ioctl(v, I.KVM_SET_TSC_KHZ, lo) >= 0 || kvm.ioctl(v, I.KVM_SET_TSC_KHZ, hi) !== 0) {
          steps.push({ op: 'tsckhz', value: -1 });
          break;
        }
        while (hi - lo > 1) {
          const mid = Math.floor((lo + hi) / 2);
          if (kvm.ioctl(v, I.KVM_SET_TSC_KHZ, mid) === 0) hi = mid;
          else lo = mid;
        }
        steps.push({ op: 'tsckhz', value: hi });
        break;
      }
    }
  }
  return { id: c.id, steps };
}
