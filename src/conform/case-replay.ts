// Replays a conformance case file (what `kvmsr conform` saves for a disagreement) on kvmsr alone,
// so a disagreement found on one host stays a regression test everywhere. The case holds the
// setup, the ioctls and the bytes the real kernel wrote back; the profile must be that host's.
import { encodeCpuid2 } from '../abi/codecs.js';
import { withHypervLeaves } from '../harvest/on-kvmsr.js';
import * as I from '../abi/kvm-ioctls.js';
import { Kvm } from '../kvm/kvm.js';
import type { HostProfile } from '../kvm/profile.js';

export class CaseFileError extends Error {
  constructor(file: string, field: string, msg: string) {
    super(`${file}: ${field}: ${msg}`);
    this.name = 'CaseFileError';
  }
}

export interface CaseResult {
  /** The bytes the real kernel wrote back at the last step, hex. */
  expected: string;
  /** What kvmsr wrote back, hex. */
  actual: string;
  /** The real kernel's return value at the last step, when the case file says it (null: not recorded). */
  expectedRet: number | null;
  /** kvmsr's return value at the last step (-errno on failure). */
  actualRet: number;
}

/**
 * The kernel's return value at the last step: `expected.ret` in case files written since it was
 * recorded, else the "return value: real N" difference older files carry; null when neither says.
 */
function expectedReturn(json: Record<string, Json>): number | null {
  const e = json['expected'];
  if (isObj(e) && typeof e['ret'] === 'number') return e['ret'];
  const diffs = json['differences'];
  if (Array.isArray(diffs)) {
    for (const d of diffs) {
      const m = typeof d === 'string' ? /^return value: real (-?\d+), kvmsr/.exec(d) : null;
      if (m) return Number(m[1]);
    }
  }
  return null;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isObj = (v: unknown): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function replayConformCase(json: unknown, profile: HostProfile, file = 'case'): CaseResult {
  const fail = (field: string, msg: string): never => {
    throw new CaseFileError(file, field, msg);
  };
  if (!isObj(json) || json['format'] !== 'kvmsr-conform-case') return fail('format', 'expected "kvmsr-conform-case"');
  const setup = json['setup'];
  if (!isObj(setup)) return fail('setup', 'expected an object');
  const vcpuCount = setup['vcpus'];
  if (typeof vcpuCount !== 'number' || !Number.isInteger(vcpuCount) || vcpuCount < 0 || vcpuCount > 64) return fail('setup.vcpus', 'expected 0 to 64');
  const steps = json['steps'];
  if (!Array.isArray(steps) || steps.length === 0) return fail('steps', 'expected a non-empty array');
  const expected = isObj(json['expected']) ? json['expected']['bytes'] : undefined;
  if (typeof expected !== 'string' || !/^([0-9a-f]{2})*$/.test(expected)) return fail('expected.bytes', 'expected hex bytes');

  const kvm = new Kvm({ profile });
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  if (setup['irqchip'] === true) kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
  const vcpus: number[] = [];
  // A Hyper-V setup's CPUID is laid out as conform and kvmsr-probe lay it out (withHypervLeaves).
  const cpuid = encodeCpuid2(setup['hv'] === true ? withHypervLeaves(profile.supportedCpuid, kvm.x86.hvCpuid) : profile.supportedCpuid);
  for (let i = 0; i < vcpuCount; i++) {
    const v = kvm.ioctl(vm, I.KVM_CREATE_VCPU, i);
    if (setup['cpuid'] === true) kvm.ioctl(v, I.KVM_SET_CPUID2, cpuid.slice());
    vcpus.push(v);
  }
  let last: Uint8Array | null = null;
  let ret = 0;
  for (let n = 0; n < steps.length; n++) {
    const s: Json = steps[n] as Json;
    if (!isObj(s)) return fail(`steps[${n}]`, 'expected an object');
    const on = s['on'];
    const fd = on === 'system' ? sys : on === 'vm' ? vm : typeof on === 'number' && vcpus.length > 0 ? vcpus[on % vcpus.length]! : fail(`steps[${n}].on`, 'expected "system", "vm" or a vCPU number');
    const req = typeof s['request'] === 'string' ? Number(s['request']) : NaN;
    if (!Number.isInteger(req)) return fail(`steps[${n}].request`, 'expected a hex request number');
    let arg: Uint8Array | number;
    if (s['writeBack'] === true) arg = last ?? fail(`steps[${n}].writeBack`, 'no earlier buffer to write back');
    else if (typeof s['arg'] === 'string' && /^([0-9a-f]{2})*$/.test(s['arg'])) arg = new Uint8Array(Buffer.from(s['arg'], 'hex'));
    else if (typeof s['arg'] === 'number') arg = s['arg'];
    else return fail(`steps[${n}].arg`, 'expected hex bytes or a number');
    ret = kvm.ioctl(fd, req, arg);
    last = arg instanceof Uint8Array ? arg : null;
  }
  return { expected, actual: last ? Buffer.from(last).toString('hex') : '', expectedRet: expectedReturn(json), actualRet: ret };
}
