// The canonical-address checks of MSR writes (arch/x86/kvm/x86.c __kvm_set_msr; x86.h
// is_noncanonical_msr_address, max_host_virt_addr_bits; 6.1: is_noncanonical_address against
// vcpu_virt_addr_bits): FS/GS/KERNEL_GS_BASE, LSTAR and CSTAR must be canonical, and
// SYSENTER_EIP/ESP are made canonical.
import { versioned, type VersionedRule } from './release.js';
import { cr4Lo } from '../state/vcpu-state.js';
import type { Vcpu } from '../vcpu.js';
import type { X86 } from './x86.js';

export const CANONICAL_BY_HOST_LA57: VersionedRule = versioned({
  id: 'canonical.host-la57',
  family: 'canonical',
  kernel: '__kvm_set_msr, is_noncanonical_msr_address, max_host_virt_addr_bits',
  holds: 'MSR addresses are canonical against 57 bits when KVM supports LA57 (the host), whatever the vCPU',
  otherwise: "against the vCPU's own CR4.LA57 (vcpu_virt_addr_bits): 48 bits on a fresh vCPU",
  where: { since: '6.13', backports: ['6.12.41'] },
});

/**
 * The virtual-address width the checks use, fixed for the host where the release checks against
 * max_host_virt_addr_bits (57 or 48), or 0: the vCPU's own CR4.LA57 decides (vcpuLa57).
 */
export function fixedAddrBits(x: X86): number {
  return x.rules.canonicalByHostLa57 ? (x.hostLa57 ? 57 : 48) : 0;
}

/** CR4.LA57 (bit 12) of the vCPU's stored state, as vcpu_virt_addr_bits reads it. */
export function vcpuLa57(vcpu: Vcpu): boolean {
  return (cr4Lo(vcpu) & (1 << 12)) !== 0;
}

/** is_noncanonical(_msr)_address for the upper half of an address. */
export function noncanonicalHi(la57: boolean, hi: number): boolean {
  if (la57) {
    const top = hi >>> 24;
    return top !== 0 && top !== 0xff;
  }
  const top = hi >>> 15;
  return top !== 0 && top !== 0x1ffff;
}

/** __canonical_address(hi) for the upper half: sign-extends from bit 47 (or 56); an int32. */
export function canonicalizedHi(la57: boolean, hi: number): number {
  return la57 ? (hi << 7) >> 7 : (hi << 16) >> 16;
}
