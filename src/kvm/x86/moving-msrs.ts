// MSRs whose value moves with time, so that the kernel and kvmsr, reading at different moments,
// cannot agree byte for byte: IA32_TSC, Hyper-V's reference counter (kvmclock in 100 ns units)
// and VP_RUNTIME (the calling task's CPU time, which kvmsr cannot know). Comparisons say which
// rule they applied instead.
export const MSR_IA32_TSC = 0x10;
export const HV_TIME_REF_COUNT = 0x40000020;
export const HV_VP_RUNTIME = 0x40000010;

export const MOVING_MSRS: ReadonlySet<number> = new Set([MSR_IA32_TSC, HV_TIME_REF_COUNT, HV_VP_RUNTIME]);

/** How a moving MSR's two readings are compared where kvmsr and the host read at different times. */
export function movingRule(index: number): string | null {
  switch (index >>> 0) {
    case MSR_IA32_TSC:
      return 'IA32_TSC compared by rule, since the host and kvmsr read it at different times: equal, or both non-zero';
    case HV_TIME_REF_COUNT:
      return 'HV_X64_MSR_TIME_REF_COUNT (the VM clock in 100 ns) compared by rule: equal, or both non-zero';
    case HV_VP_RUNTIME:
      return "HV_X64_MSR_VP_RUNTIME not compared: it counts the calling task's CPU time, which kvmsr cannot know";
    default:
      return null;
  }
}

/** Whether two readings of a moving MSR agree by its rule. */
export function movingAgree(index: number, host: bigint, emu: bigint): boolean {
  if (host === emu) return true;
  if ((index >>> 0) === HV_VP_RUNTIME) return true;
  return host !== 0n && emu !== 0n;
}
