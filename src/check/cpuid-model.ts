// The CPUID a VMM gave one vCPU of a capture, as the guest reads it: which families of MSRs its
// guest is told to use (msr-families.ts), and the MCE banks KVM_X86_SETUP_MCE gave it.
import { decodeCpuid2, type CpuidEntry2 as CpuidEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import type { CaptureRecord } from '../capture/format.js';
import { cpuidVendor } from '../kvm/x86/cpuid-caps.js';

export const bit = (v: number | undefined, b: number): boolean => v !== undefined && ((v >>> b) & 1) === 1;

/** The CPUID a VMM set on one vCPU, as the guest reads it. */
export class CpuidModel {
  constructor(readonly entries: readonly CpuidEntry[]) {}
  get(fn: number, index = 0): CpuidEntry | undefined {
    // KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1): only then does the subleaf have to match.
    return this.entries.find((e) => e.function === fn && (e.index === index || (e.flags & 1) === 0));
  }
  /** The hypervisor leaves' base whose signature is `sig` (KVM moves to 0x40000100 beside Hyper-V). */
  hypervisorBase(sig: string): number | undefined {
    for (const base of [0x40000000, 0x40000100]) {
      const e = this.get(base);
      if (!e) continue;
      const b = Buffer.alloc(12);
      b.writeUInt32LE(e.ebx >>> 0, 0);
      b.writeUInt32LE(e.ecx >>> 0, 4);
      b.writeUInt32LE(e.edx >>> 0, 8);
      if (b.toString('latin1').replace(/\0+$/, '') === sig) return base;
    }
    return undefined;
  }
  vendor(): string {
    return cpuidVendor(this.entries);
  }
  kvmFeature(b: number): boolean {
    const base = this.hypervisorBase('KVMKVMKVM');
    return base !== undefined && bit(this.get(base + 1)?.eax, b);
  }
  hyperv(reg: 'eax' | 'edx', b: number): boolean {
    return this.hypervisorBase('Microsoft Hv') !== undefined && bit(this.get(0x40000003)?.[reg], b);
  }
}

/** The CPUID and MCE bank count a capture set on one vCPU before its first KVM_RUN. */
export function vcpuModel(records: readonly CaptureRecord[], key: string, keyOf: (r: CaptureRecord) => string): { cpuid: CpuidModel; banks: number } {
  let cpuid: CpuidEntry[] = [];
  let banks = 0;
  for (const r of records) {
    if (r.fdKind !== 'vcpu' || keyOf(r) !== key || r.ret < 0) continue;
    if (r.request === I.KVM_RUN) break;
    if (r.request === I.KVM_SET_CPUID2 && r.in && r.in.length >= 8) cpuid = decodeCpuid2(r.in).entries;
    if (r.request === I.KVM_X86_SETUP_MCE && r.in && r.in.length >= 8) banks = r.in[0]!;
  }
  return { cpuid: new CpuidModel(cpuid), banks };
}
