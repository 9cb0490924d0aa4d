// Host profiles are data: what one host's KVM lists, reports and resets to. `kvmsr profile capture`
// writes one from a real /dev/kvm; the built-in default is such a file, checked in.
import { freshStateFromJson, freshStateToJson, type FreshState } from './state/fresh-state.js';
import { validStatsFile, type StatsLayout } from './state/binary-stats.js';
import type { CpuidEntry2 } from '../abi/codecs.js';
import { READ_KINDS, RULE_FIELDS, WRITE_KINDS, type MsrRule } from './x86/measured-rules.js';
import { slotOf } from './x86/msr-slots.js';

export type VendorModule = 'kvm_pvm' | 'kvm_intel' | 'kvm_amd';
export const VENDOR_MODULES: readonly VendorModule[] = ['kvm_pvm', 'kvm_intel', 'kvm_amd'];

export interface ProfileMsr {
  index: number;
  /** The value read; null when KVM_GET_MSRS refused the index (returned 0). */
  value: bigint | null;
}

export interface HostProfile {
  source: 'capture' | 'derived';
  notes: string;
  host: {
    kernel: string;
    vendorModule: VendorModule;
    cpuVendor: string;
    cpuModel: string;
    capturedAt: string;
    kvmsrVersion: string;
    /** Module parameters that change MSR answers, e.g. { 'kvm.ignore_msrs': 'N' }. */
    moduleParams: Record<string, string>;
  };
  apiVersion: number;
  vcpuMmapSize: number;
  tscKhz: number;
  /** KVM_CHECK_EXTENSION results, by capability number; absent means 0. */
  extensions: { system: Record<number, number>; vm: Record<number, number> };
  /** KVM_GET_MSR_INDEX_LIST in the kernel's order. */
  msrIndexList: number[];
  /** KVM_GET_MSR_FEATURE_INDEX_LIST in order, with the value KVM_GET_MSRS on /dev/kvm reads. */
  featureMsrs: ProfileMsr[];
  /** KVM_GET_SUPPORTED_CPUID. */
  supportedCpuid: CpuidEntry2[];
  /** KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm (CONFIG_KVM_HYPERV); absent: built from the source. */
  hvCpuid?: CpuidEntry2[];
  /** KVM_X86_GET_MCE_CAP_SUPPORTED, when recorded. */
  mceCapSupported?: bigint;
  /**
   * The host marked its TSC unstable (check_tsc_unstable): then kvm_arch_vcpu_load re-derives the
   * offset from last_guest_tsc on every vCPU ioctl, so a vCPU's TSC stands still between runs.
   * Measured by `profile capture` from how a host write of 0 joins the VM's TSC generation.
   */
  tscUnstable?: boolean;
  /**
   * The IA32_SPEC_CTRL bits the host CPU accepted, one at a time (kvm_spec_ctrl_test_value's trial
   * write), measured by `profile capture`; absent, the vendor derives them from CPUID.
   */
  specCtrlAccepted?: bigint;
  /**
   * The EFER bits a host write accepts, each written alone on a fresh vCPU: ~efer_reserved_bits
   * (set_efer checks only these for the host). Measured by `profile capture`; absent, the vendor
   * derives them from CPUID (kvm_enable_efer_bits), which kvm_pvm 6.18.44 does not follow for FFXSR.
   */
  eferAccepted?: bigint;
  /**
   * The host kernel's tsc_khz, the centre of kvm.tsc_tolerance_ppm in kvm_set_tsc_khz, when it is not
   * tscKhz (the rate a new vCPU gets: max_tsc_khz, fixed when kvm loaded, before the TSC calibration
   * was refined). Measured by `profile capture` on hosts without TSC scaling; absent: tscKhz.
   */
  hostTscKhz?: number;
  /** What each MSR reads on a fresh vCPU (no KVM_SET_CPUID2, no irqchip), one index per ioctl. */
  vcpuReset: ProfileMsr[];
  /**
   * MSRs whose vendor hook answers otherwise than kvmsr's source-derived model, as measured by
   * `profile capture` from the host and from a real-mode guest (measured-rules.ts), by index.
   */
  msrRules?: Record<number, MsrRule>;
  /**
   * What a fresh VM and vCPU answer to the state ioctls (KVM_GET_REGS, KVM_GET_SREGS2, KVM_GET_LAPIC,
   * KVM_GET_IRQCHIP, ...), captured by the `profile.state` case; absent: fresh-state.ts's defaults.
   */
  freshState?: FreshState;
  /**
   * The binary stats files (KVM_GET_STATS_FD) of a fresh VM and vCPU, as the host's build lays them
   * out (state/binary-stats.ts), captured by the `profile.stats` case; absent: KVM_GET_STATS_FD is
   * not modelled.
   */
  binaryStats?: StatsLayout;
  /**
   * The CR4 bits KVM_SET_SREGS takes on a fresh vCPU with no CPUID set, each set alone (the
   * `profile.cr4` case): what the host refuses of itself. Absent: derived from the supported CPUID
   * as __cr4_reserved_bits does (kvm_intel, kvm_amd); kvm_pvm's answer is only a measurement.
   */
  cr4Accepted?: number;
}

/** An error in a profile, naming the file (when known) and the field. */
export class ProfileError extends Error {
  constructor(
    readonly file: string,
    readonly field: string,
    message: string,
  ) {
    super(`${file}: ${field}: ${message}`);
    this.name = 'ProfileError';
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

class Reader {
  constructor(readonly file: string) {}
  fail(field: string, msg: string): never {
    throw new ProfileError(this.file, field, msg);
  }
  obj(v: Json | undefined, field: string): { [k: string]: Json } {
    if (v === null || v === undefined || typeof v !== 'object' || Array.isArray(v)) this.fail(field, 'expected an object');
    return v;
  }
  arr(v: Json | undefined, field: string): Json[] {
    if (!Array.isArray(v)) this.fail(field, 'expected an array');
    return v;
  }
  str(v: Json | undefined, field: string): string {
    if (typeof v !== 'string') this.fail(field, 'expected a string');
    return v;
  }
  int(v: Json | undefined, field: string, max = 0xffffffff): number {
    if (typeof v === 'string' && /^0x[0-9a-f]+$/i.test(v)) v = Number(v);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) this.fail(field, `expected an integer 0..${max}`);
    return v;
  }
  u64(v: Json | undefined, field: string): bigint {
    if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/i.test(v)) this.fail(field, 'expected a hex string like "0x1f" (at most 64 bits)');
    return BigInt(v);
  }
  msrIndex(v: Json | undefined, field: string): number {
    const i = this.int(v, field);
    if (slotOf(i) < 0) this.fail(field, `MSR 0x${i.toString(16)} is outside the ranges kvmsr models`);
    return i;
  }
  /** A list of {index, value}; an index outside kvmsr's ranges is allowed only with value null. */
  msrs(v: Json | undefined, field: string): ProfileMsr[] {
    return this.arr(v, field).map((e, i) => {
      const o = this.obj(e, `${field}[${i}]`);
      const value = o['value'] === null ? null : this.u64(o['value'], `${field}[${i}].value`);
      const index = value === null ? this.int(o['index'], `${field}[${i}].index`) : this.msrIndex(o['index'], `${field}[${i}].index`);
      return { index, value };
    });
  }
  intMap(v: Json | undefined, field: string): Record<number, number> {
    const o = this.obj(v, field);
    const out: Record<number, number> = {};
    for (const [k, val] of Object.entries(o)) {
      if (!/^[0-9]+$/.test(k)) this.fail(`${field}.${k}`, 'keys are capability numbers');
      out[Number(k)] = this.int(val, `${field}.${k}`, 0x7fffffff);
    }
    return out;
  }
}

const validated = new WeakSet<object>();
/** True for profiles that parseProfile produced (and so were validated). */
export function isValidatedProfile(p: object): boolean {
  return validated.has(p);
}

/** A changed copy of a profile (a spread with other fields), validated as a file would be. */
export function revalidated(p: HostProfile, file = '<profile>'): HostProfile {
  return parseProfile(JSON.parse(JSON.stringify(profileToJson(p))), file);
}

/** Validates parsed JSON as a profile; every error names the file and the field. */
export function parseProfile(json: unknown, file = '<profile>'): HostProfile {
  const p = parseProfileFields(json, file);
  validated.add(p);
  return p;
}

function parseProfileFields(json: unknown, file: string): HostProfile {
  const r = new Reader(file);
  const top = r.obj(json as Json, '(top)');
  if (top['format'] !== 'kvmsr-profile') r.fail('format', 'expected "kvmsr-profile"');
  if (top['version'] !== 1) r.fail('version', 'expected 1');
  const source = r.str(top['source'], 'source') as HostProfile['source'];
  if (source !== 'capture' && source !== 'derived') r.fail('source', 'expected "capture" or "derived"');
  const h = r.obj(top['host'], 'host');
  const vendorModule = r.str(h['vendorModule'], 'host.vendorModule');
  if (!(VENDOR_MODULES as readonly string[]).includes(vendorModule)) {
    r.fail('host.vendorModule', `expected one of ${VENDOR_MODULES.join(', ')}`);
  }
  const params = r.obj(h['moduleParams'], 'host.moduleParams');
  const moduleParams: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) moduleParams[k] = r.str(v, `host.moduleParams.${k}`);
  const ext = r.obj(top['extensions'], 'extensions');
  const list = r.arr(top['msrIndexList'], 'msrIndexList').map((v, i) => r.msrIndex(v, `msrIndexList[${i}]`));
  const cpuidList = (v: Json | undefined, field: string): CpuidEntry2[] =>
    r.arr(v, field).map((e, i) => {
      const o = r.obj(e, `${field}[${i}]`);
      const f = (k: string): number => r.int(o[k], `${field}[${i}].${k}`);
      return { function: f('function'), index: f('index'), flags: f('flags'), eax: f('eax'), ebx: f('ebx'), ecx: f('ecx'), edx: f('edx') };
    });
  const cpuid = cpuidList(top['supportedCpuid'], 'supportedCpuid');
  const p: HostProfile = {
    source,
    notes: typeof top['notes'] === 'string' ? top['notes'] : '',
    host: {
      kernel: r.str(h['kernel'], 'host.kernel'),
      vendorModule: vendorModule as VendorModule,
      cpuVendor: r.str(h['cpuVendor'], 'host.cpuVendor'),
      cpuModel: r.str(h['cpuModel'], 'host.cpuModel'),
      capturedAt: r.str(h['capturedAt'], 'host.capturedAt'),
      kvmsrVersion: r.str(h['kvmsrVersion'], 'host.kvmsrVersion'),
      moduleParams,
    },
    apiVersion: r.int(top['apiVersion'], 'apiVersion'),
    vcpuMmapSize: r.int(top['vcpuMmapSize'], 'vcpuMmapSize'),
    tscKhz: r.int(top['tscKhz'], 'tscKhz'),
    extensions: { system: r.intMap(ext['system'], 'extensions.system'), vm: r.intMap(ext['vm'], 'extensions.vm') },
    msrIndexList: list,
    featureMsrs: r.msrs(top['featureMsrs'], 'featureMsrs'),
    supportedCpuid: cpuid,
    vcpuReset: r.msrs(top['vcpuReset'], 'vcpuReset'),
  };
  if (top['hvCpuid'] !== undefined) p.hvCpuid = cpuidList(top['hvCpuid'], 'hvCpuid');
  if (top['mceCapSupported'] !== undefined) p.mceCapSupported = r.u64(top['mceCapSupported'], 'mceCapSupported');
  const unstable = top['tscUnstable'];
  if (typeof unstable === 'boolean') p.tscUnstable = unstable;
  else if (unstable !== undefined) r.fail('tscUnstable', 'expected true or false');
  if (top['specCtrlAccepted'] !== undefined) p.specCtrlAccepted = r.u64(top['specCtrlAccepted'], 'specCtrlAccepted');
  if (top['eferAccepted'] !== undefined) p.eferAccepted = r.u64(top['eferAccepted'], 'eferAccepted');
  if (top['hostTscKhz'] !== undefined) p.hostTscKhz = r.int(top['hostTscKhz'], 'hostTscKhz');
  if (top['cr4Accepted'] !== undefined) p.cr4Accepted = Number(r.u64(top['cr4Accepted'], 'cr4Accepted') & 0xffffffffn);
  if (top['binaryStats'] !== undefined) {
    const b = r.obj(top['binaryStats'], 'binaryStats');
    const file = (k: 'vm' | 'vcpu'): Uint8Array => {
      const h = r.str(b[k], `binaryStats.${k}`);
      if (!/^([0-9a-f]{2})+$/i.test(h)) r.fail(`binaryStats.${k}`, 'expected the file as hex');
      const bytes = Uint8Array.from(Buffer.from(h, 'hex'));
      if (!validStatsFile(bytes)) r.fail(`binaryStats.${k}`, 'not a binary stats file (header, id, descriptors, data)');
      return bytes;
    };
    p.binaryStats = { vm: file('vm'), vcpu: file('vcpu') };
  }
  if (top['freshState'] !== undefined) {
    try {
      p.freshState = freshStateFromJson(top['freshState'], 'freshState');
    } catch (e) {
      const m = /^(freshState[^:]*): (.*)$/.exec((e as Error).message);
      r.fail(m?.[1] ?? 'freshState', m?.[2] ?? (e as Error).message);
    }
  }
  if (top['msrRules'] !== undefined) {
    const rules: Record<number, MsrRule> = {};
    for (const [k, v] of Object.entries(r.obj(top['msrRules'], 'msrRules'))) {
      const field = `msrRules.${k}`;
      const index = r.msrIndex(k, field);
      const o = r.obj(v, field);
      const rule: MsrRule = {};
      for (const [name, kind] of Object.entries(o)) {
        if (!(RULE_FIELDS as readonly string[]).includes(name)) r.fail(`${field}.${name}`, `expected only ${RULE_FIELDS.join(', ')}`);
        if (name === 'hostKeep' || name === 'guestKeep') {
          rule[name] = r.u64(kind, `${field}.${name}`);
          continue;
        }
        if (name === 'coupled') {
          if (typeof kind !== 'boolean') r.fail(`${field}.${name}`, 'expected true or false');
          rule.coupled = kind === true;
          continue;
        }
        const allowed: readonly string[] = name.endsWith('Read') ? READ_KINDS : WRITE_KINDS;
        if (typeof kind !== 'string' || !allowed.includes(kind)) r.fail(`${field}.${name}`, `expected one of ${allowed.join(', ')}`);
        (rule as Record<string, string>)[name] = kind as string;
      }
      rules[index] = rule;
    }
    p.msrRules = rules;
  }
  return p;
}

const hex = (v: number | bigint): string => '0x' + v.toString(16);
const cpuidJson = (e: CpuidEntry2): Record<string, unknown> => ({
  function: hex(e.function), index: e.index, flags: e.flags,
  eax: hex(e.eax), ebx: hex(e.ebx), ecx: hex(e.ecx), edx: hex(e.edx),
});

/** The JSON form of a profile (u64 values as hex strings). */
export function profileToJson(p: HostProfile): Record<string, unknown> {
  const msrs = (l: ProfileMsr[]): unknown[] => l.map((m) => ({ index: hex(m.index), value: m.value === null ? null : hex(m.value) }));
  return {
    format: 'kvmsr-profile',
    version: 1,
    source: p.source,
    notes: p.notes,
    host: p.host,
    apiVersion: p.apiVersion,
    vcpuMmapSize: p.vcpuMmapSize,
    tscKhz: p.tscKhz,
    extensions: p.extensions,
    msrIndexList: p.msrIndexList.map(hex),
    featureMsrs: msrs(p.featureMsrs),
    supportedCpuid: p.supportedCpuid.map(cpuidJson),
    ...(p.hvCpuid !== undefined ? { hvCpuid: p.hvCpuid.map(cpuidJson) } : {}),
    vcpuReset: msrs(p.vcpuReset),
    ...(p.mceCapSupported !== undefined ? { mceCapSupported: hex(p.mceCapSupported) } : {}),
    ...(p.tscUnstable !== undefined ? { tscUnstable: p.tscUnstable } : {}),
    ...(p.specCtrlAccepted !== undefined ? { specCtrlAccepted: hex(p.specCtrlAccepted) } : {}),
    ...(p.eferAccepted !== undefined ? { eferAccepted: hex(p.eferAccepted) } : {}),
    ...(p.hostTscKhz !== undefined ? { hostTscKhz: p.hostTscKhz } : {}),
    ...(p.freshState !== undefined ? { freshState: freshStateToJson(p.freshState) } : {}),
    ...(p.cr4Accepted !== undefined ? { cr4Accepted: hex(p.cr4Accepted) } : {}),
    ...(p.binaryStats !== undefined ? { binaryStats: { vm: Buffer.from(p.binaryStats.vm).toString('hex'), vcpu: Buffer.from(p.binaryStats.vcpu).toString('hex') } } : {}),
    ...(p.msrRules !== undefined
      ? {
          msrRules: Object.fromEntries(
            Object.entries(p.msrRules)
              .sort(([a], [b]) => Number(a) - Number(b))
              .map(([k, v]) => [hex(Number(k)), Object.fromEntries(Object.entries(v).map(([f, x]) => [f, typeof x === 'bigint' ? hex(x) : x]))]),
          ),
        }
      : {}),
  };
}

/** Finds a CPUID leaf in a list of entries (function/index match as kvm_find_cpuid_entry_index). */
export function findCpuid(entries: readonly CpuidEntry2[], fn: number, index = 0): CpuidEntry2 | undefined {
  // KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1): only then does the index have to match.
  for (const e of entries) {
    if (e.function === fn && ((e.flags & 1) === 0 || e.index === index)) return e;
  }
  return undefined;
}
