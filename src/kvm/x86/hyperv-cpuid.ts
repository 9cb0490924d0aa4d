// KVM_GET_SUPPORTED_HV_CPUID (kvm_get_hv_cpuid in arch/x86/kvm/hyperv.c), on /dev/kvm and on a
// vCPU fd: the ten Hyper-V CPUID leaves KVM can offer. A capture records the system fd's answer
// (profile.hvCpuid); without one kvmsr builds it from the source. The vCPU fd's answer drops what
// needs an in-kernel LAPIC when the VM has none, and the eVMCS version until the vCPU enabled
// KVM_CAP_HYPERV_ENLIGHTENED_VMCS.
import type { CpuidEntry2 } from '../../abi/codecs.js';

export const HV_CPUID_LEAVES = [0x40000000, 0x40000001, 0x40000002, 0x40000003, 0x40000004, 0x40000005, 0x40000080, 0x40000081, 0x40000082, 0x4000000a] as const;

const STIMER_DIRECT_MODE_AVAILABLE = 1 << 19; // 0x40000003 EDX
const CLUSTER_IPI_RECOMMENDED = 1 << 10; // 0x40000004 EAX
const ENLIGHTENED_VMCS_RECOMMENDED = 1 << 14; // 0x40000004 EAX
const NO_NONARCH_CORESHARING = 1 << 18; // 0x40000004 EAX
/** (KVM_EVMCS_VERSION << 8) | 1: the eVMCS versions a VMX host supports. */
export const EVMCS_VERSION = 0x101;

const sig = (s: string): [number, number, number] => {
  const b = Buffer.alloc(12);
  b.write(s, 'latin1');
  return [b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8)];
};

/**
 * The system fd's answer from the source: evmcs (a VMX host with nested: kvm_cpu_cap VMX),
 * smtPossible (cpu_smt_possible(): without it NO_NONARCH_CORESHARING is set) and the host's
 * KVM_MAX_VCPUS.
 */
export function hvCpuidFromSource(opts: { evmcs: boolean; smtPossible: boolean; maxVcpus: number }): CpuidEntry2[] {
  const e = (fn: number, eax = 0, ebx = 0, ecx = 0, edx = 0): CpuidEntry2 => ({ function: fn, index: 0, flags: 0, eax: eax >>> 0, ebx: ebx >>> 0, ecx: ecx >>> 0, edx: edx >>> 0 });
  const [kvm0, kvm1, kvm2] = sig('Linux KVM Hv');
  const evmcs = opts.evmcs ? EVMCS_VERSION : 0;
  // HYPERV_CPUID_FEATURES: VP_RUNTIME..REFERENCE_TSC (bits 0-7, 9), FREQUENCY (11), REENLIGHTENMENT (13), TSC_INVARIANT (15)
  const featEax = 0xff | (1 << 9) | (1 << 11) | (1 << 13) | (1 << 15);
  const featEbx = (1 << 4) | (1 << 5) | (1 << 20) | (1 << 11);
  const featEdx = (1 << 4) | (1 << 8) | (1 << 10) | (1 << 1) | (1 << 11) | (1 << 14) | STIMER_DIRECT_MODE_AVAILABLE;
  let enl = (1 << 2) | (1 << 3) | (1 << 5) | CLUSTER_IPI_RECOMMENDED | (1 << 11) | (1 << 9);
  if (evmcs) enl |= ENLIGHTENED_VMCS_RECOMMENDED;
  if (!opts.smtPossible) enl |= NO_NONARCH_CORESHARING;
  return [
    e(0x40000000, 0x40000082, kvm0, kvm1, kvm2),
    e(0x40000001, 0x31237648), // "Hv#1"
    e(0x40000002, 0x00003839, 0x000a0000),
    e(0x40000003, featEax, featEbx, 0, featEdx),
    e(0x40000004, enl, 0x00000fff),
    e(0x40000005, opts.maxVcpus, 64),
    e(0x40000080, 0, kvm0, kvm1, kvm2),
    e(0x40000081, sig('VS#1')[0]),
    e(0x40000082, 1 << 1), // HV_X64_SYNDBG_CAP_ALLOW_KERNEL_DEBUGGING
    e(0x4000000a, evmcs | (1 << 17) | (1 << 19), 1),
  ];
}

/** The vCPU fd's answer, from the system fd's. */
export function hvCpuidForVcpu(system: readonly CpuidEntry2[], lapicInKernel: boolean, evmcsEnabled: boolean): CpuidEntry2[] {
  return system.map((x) => {
    const y = { ...x };
    if (!lapicInKernel && y.function === 0x40000003) y.edx = (y.edx & ~STIMER_DIRECT_MODE_AVAILABLE) >>> 0;
    if (!lapicInKernel && y.function === 0x40000004) y.eax = (y.eax & ~CLUSTER_IPI_RECOMMENDED) >>> 0;
    if (!evmcsEnabled && y.function === 0x40000004) y.eax = (y.eax & ~ENLIGHTENED_VMCS_RECOMMENDED) >>> 0;
    if (!evmcsEnabled && y.function === 0x4000000a) y.eax = (y.eax & ~0xffff) >>> 0;
    return y;
  });
}
