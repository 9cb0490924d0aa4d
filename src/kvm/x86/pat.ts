// IA32_CR_PAT (arch/x86/kvm/x86.c kvm_pat_valid, via kvm_set_msr_common and the vendors' set_msr).

/** kvm_pat_valid: each byte a valid memory type (0, 1, 4, 5, 6, 7). */
export function patValid(lo: number, hi: number): boolean {
  return patHalfValid(lo) && patHalfValid(hi);
}
function patHalfValid(h: number): boolean {
  // Bits 7:3 of each byte are reserved; types 2 and 3 (bit 1 set without bit 2) are invalid.
  if ((h & 0xf8f8f8f8) !== 0) return false;
  return ((h | ((h & 0x02020202) << 1)) >>> 0) === h >>> 0;
}
