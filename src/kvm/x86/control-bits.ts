// Architectural control-register and EFER bits (asm/processor-flags.h, asm/msr-index.h) that the
// MSR rules (x86.ts) and the vCPU state ioctls (vcpu-state.ts) both test.
export const CR0_PE = 1;
export const CR0_NW = 1 << 29;
export const CR0_CD = 1 << 30;
export const CR0_PG = 0x80000000;
export const CR4_PAE = 1 << 5;
export const EFER_SCE = 1 << 0;
export const EFER_LME = 1 << 8;
export const EFER_LMA = 1 << 10;
export const EFER_NX = 1 << 11;
