// The performance issue's targets, judged on one bench run's rows: kvmsr against the real kernel
// (entries per second at 255 entries, ioctls per second at 1), against the JS baseline at every
// batch size, and against the C loop. A target whose peer did not run is "not measured", with why.

export interface BenchRow {
  suite: string;
  entries: number;
  peer: string;
  opsPerSec: number;
  nsPerOp: number;
  entriesPerSec: number;
  /** The peer's ops per second over kvmsr's, in the same suite. */
  ratioToKvmsr: number;
  /** The C loop only: its two timings around kvmsr's suite. */
  cBeforeNs?: number;
  cAfterNs?: number;
}

export interface Target {
  target: string;
  /** kvmsr's speed over the peer's (entries or ioctls per second), or null when not measured. */
  reached: number | null;
  status: 'met' | 'not met' | 'not measured';
  why?: string;
}

export const KERNEL = 'real kernel';
export const JS_BASELINE = 'JS baseline';
export const C_LOOP = 'C loop (gcc -O2)';
/** The round trip from a native program: its suite, and the peer that serves it through `kvmsr run`. */
export const RUN_SUITE = 'KVM_GET_MSRS x1 from a native program';
export const KVMSR_RUN = 'kvmsr run';

/** @param missing why the kernel, the C peer and the round trip did not run, should they be absent from rows */
export function evaluateTargets(rows: readonly BenchRow[], sizes: readonly number[], missing: { kernel: string; c: string; run?: string }): Target[] {
  const over = (suite: string, peer: string): number | null => {
    const r = rows.find((x) => x.suite === suite && x.peer === peer);
    return r && r.ratioToKvmsr > 0 ? 1 / r.ratioToKvmsr : null;
  };
  const judge = (target: string, reached: number | null, ok: (x: number) => boolean, why: string): Target =>
    reached === null ? { target, reached, status: 'not measured', why } : { target, reached, status: ok(reached) ? 'met' : 'not met' };
  return [
    judge('KVM_GET_MSRS x255: >= 10x the kernel', over('KVM_GET_MSRS x255', KERNEL), (x) => x >= 10, missing.kernel),
    judge('KVM_SET_MSRS x255: >= 5x the kernel', over('KVM_SET_MSRS x255', KERNEL), (x) => x >= 5, missing.kernel),
    judge('KVM_GET_MSRS x1: >= 20x the kernel', over('KVM_GET_MSRS x1', KERNEL), (x) => x >= 20, missing.kernel),
    ...sizes.flatMap((n) =>
      (['GET', 'SET'] as const).map((op) =>
        judge(`KVM_${op}_MSRS x${n}: >= 8x the JS baseline`, over(`KVM_${op}_MSRS x${n}`, JS_BASELINE), (x) => x >= 8, 'the JS baseline did not run'),
      ),
    ),
    // Within 4x of the C loop: kvmsr at least a quarter of C's speed.
    judge('KVM_GET_MSRS x255: within 4x of the C loop', over('KVM_GET_MSRS x255', C_LOOP), (x) => x >= 0.25, missing.c),
    // kvmsr run's round trip within 3x of the kernel's: at least a third of its calls per second.
    judge('KVM_GET_MSRS x1 under kvmsr run: within 3x of the kernel', over(RUN_SUITE, KERNEL), (x) => x >= 1 / 3, missing.run ?? missing.kernel),
  ];
}

export function targetTable(targets: readonly Target[]): string {
  const lines = ['| target | kvmsr reached | status |', '|---|---:|---|'];
  for (const t of targets) {
    const reached = t.reached === null ? '-' : t.reached >= 1 ? `${t.reached.toFixed(1)}x` : `1/${(1 / t.reached).toFixed(1)}`;
    lines.push(`| ${t.target} | ${reached} | ${t.status}${t.why ? ` (${t.why})` : ''} |`);
  }
  return lines.join('\n');
}
