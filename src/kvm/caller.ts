// The calling process's capabilities, for the few KVM calls that ask capable() (KVM_CAP_VM_DISABLE_NX_HUGE_PAGES:
// CAP_SYS_BOOT). In process that is this process; under `kvmsr run`, the thread that made the call,
// whose id the request carries. Read from /proc/<tid>/status (CapEff); where that cannot be read,
// root counts as capable.
import { readFileSync } from 'node:fs';

export function threadCapable(tid: number | null, cap: number): boolean {
  try {
    const status = readFileSync(tid === null ? '/proc/self/status' : `/proc/${tid}/status`, 'utf8');
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    if (m) return ((BigInt('0x' + m[1]) >> BigInt(cap)) & 1n) === 1n;
  } catch {
    // gone, or another namespace's
  }
  return process.getuid?.() === 0;
}
