// The capture format: JSON Lines. Line 1 is a versioned header naming the kernel, host CPU and
// vendor module and the recorder; every further line is one ioctl with its full input and output
// bytes (hex). Parsing never throws anything but CaptureFormatError, which names the file, the line
// and the field; records read before a bad line are kept.
import { ioctlName } from '../abi/kvm-ioctls.js';
import { FileLineError } from '../util/file-error.js';

export const CAPTURE_FORMAT = 'kvmsr-capture';
export const CAPTURE_VERSION = 1;

export type FdKind = 'system' | 'vm' | 'vcpu';

export interface CaptureHeader {
  format: typeof CAPTURE_FORMAT;
  version: typeof CAPTURE_VERSION;
  kernel: string;
  cpuVendor: string;
  cpuModel: string;
  vendorModule: string;
  kvmsrVersion: string;
  recorder: string;
  createdAt: string;
  /**
   * The ioctl names the recorder records (extents.ts RECORDED_IOCTL_NAMES). Absent in older
   * captures, whose recorders kept no state getters: see recordsStateGetters.
   */
  recorded?: string[];
  /** A host profile (the JSON `kvmsr profile capture` writes), when the recorder embedded one. */
  profile?: unknown;
}

export interface CaptureRecord {
  seq: number;
  tid: number;
  /** CLOCK_MONOTONIC in whole microseconds, taken just before the call (absent in older captures). */
  monoUs?: number;
  fd: number;
  fdKind: FdKind;
  /** The vCPU id for vCPU fds (from the fd's anon-inode name or KVM_CREATE_VCPU). */
  vcpuId?: number;
  /** For VM and vCPU fds: an id that is the same for every fd of one VM (the VM fd number at creation). */
  vm?: number;
  request: number;
  name: string;
  /** The integer argument of integer-argument ioctls. */
  arg?: number;
  /** The bytes the ioctl read (struct and variable part), before the call. */
  in?: Uint8Array;
  /** The same range after the call. */
  out?: Uint8Array;
  /** Pointers embedded in the input (KVM_X86_SET_MSR_FILTER bitmaps): what they pointed at. */
  extra?: Uint8Array[];
  ret: number;
  errno: number;
  /** 'close' records end an fd's life (fd numbers are reused). */
  op?: 'ioctl' | 'close';
}

export class CaptureFormatError extends FileLineError {
  override name = 'CaptureFormatError';
}

export const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

export function headerLine(h: CaptureHeader): string {
  return JSON.stringify(h);
}

export function recordLine(r: CaptureRecord): string {
  // seq and tid come first: `kvmsr run` rewrites the tid in place (session.ts).
  const o: Record<string, unknown> = { seq: r.seq, tid: r.tid };
  if (r.monoUs !== undefined) o['monoUs'] = r.monoUs;
  o['fd'] = r.fd;
  o['fdKind'] = r.fdKind;
  if (r.vcpuId !== undefined) o['vcpuId'] = r.vcpuId;
  if (r.vm !== undefined) o['vm'] = r.vm;
  if (r.op === 'close') {
    o['op'] = 'close';
  } else {
    o['request'] = '0x' + (r.request >>> 0).toString(16);
    o['name'] = r.name;
    if (r.arg !== undefined) o['arg'] = r.arg;
    if (r.in) o['in'] = toHex(r.in);
    if (r.out) o['out'] = toHex(r.out);
    if (r.extra && r.extra.length > 0) o['extra'] = r.extra.map(toHex);
  }
  o['ret'] = r.ret;
  o['errno'] = r.errno;
  return JSON.stringify(o);
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

class LineReader {
  constructor(
    readonly file: string,
    readonly line: number,
  ) {}
  fail(field: string, msg: string): never {
    throw new CaptureFormatError(this.file, this.line, field, msg);
  }
  object(text: string): { [k: string]: Json } {
    let j: Json;
    try {
      j = JSON.parse(text) as Json;
    } catch (e) {
      return this.fail('(line)', `not JSON (truncated or corrupted?): ${(e as Error).message}`);
    }
    if (j === null || typeof j !== 'object' || Array.isArray(j)) return this.fail('(line)', 'expected a JSON object');
    return j;
  }
  int(o: { [k: string]: Json }, k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(k, `expected an integer ${min}..${max}`);
    return v;
  }
  optInt(o: { [k: string]: Json }, k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
    return o[k] === undefined ? undefined : this.int(o, k, min, max);
  }
  str(o: { [k: string]: Json }, k: string): string {
    const v = o[k];
    if (typeof v !== 'string') this.fail(k, 'expected a string');
    return v;
  }
  hex(v: Json | undefined, field: string): Uint8Array {
    if (typeof v !== 'string' || v.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(v)) this.fail(field, 'expected hex bytes');
    return new Uint8Array(Buffer.from(v, 'hex'));
  }
}

export function parseHeader(text: string, file: string): CaptureHeader {
  const r = new LineReader(file, 1);
  const j = r.object(text);
  if (j['format'] !== CAPTURE_FORMAT) r.fail('format', `expected "${CAPTURE_FORMAT}": is this a kvmsr capture?`);
  if (j['version'] !== CAPTURE_VERSION) r.fail('version', `expected ${CAPTURE_VERSION}, got ${JSON.stringify(j['version'])}`);
  const h: CaptureHeader = {
    format: CAPTURE_FORMAT,
    version: CAPTURE_VERSION,
    kernel: r.str(j, 'kernel'),
    cpuVendor: r.str(j, 'cpuVendor'),
    cpuModel: r.str(j, 'cpuModel'),
    vendorModule: r.str(j, 'vendorModule'),
    kvmsrVersion: r.str(j, 'kvmsrVersion'),
    recorder: r.str(j, 'recorder'),
    createdAt: r.str(j, 'createdAt'),
  };
  const recorded = j['recorded'];
  if (recorded !== undefined) {
    if (!Array.isArray(recorded) || !recorded.every((x): x is string => typeof x === 'string')) return r.fail('recorded', 'expected an array of ioctl names');
    h.recorded = recorded;
  }
  if (j['profile'] !== undefined) h.profile = j['profile'];
  return h;
}

export function parseRecord(text: string, file: string, line: number): CaptureRecord {
  const r = new LineReader(file, line);
  const j = r.object(text);
  const kind = r.str(j, 'fdKind');
  const fdKind: FdKind = kind === 'system' || kind === 'vm' || kind === 'vcpu' ? kind : r.fail('fdKind', 'expected system, vm or vcpu');
  const rec: CaptureRecord = {
    seq: r.int(j, 'seq'),
    tid: r.int(j, 'tid'),
    fd: r.int(j, 'fd', 0, 0x7fffffff),
    fdKind,
    request: 0,
    name: '',
    ret: r.int(j, 'ret', -4095, 0x7fffffff),
    errno: r.int(j, 'errno', 0, 4095),
  };
  const monoUs = r.optInt(j, 'monoUs');
  if (monoUs !== undefined) rec.monoUs = monoUs;
  const vcpuId = r.optInt(j, 'vcpuId', 0, 0xffffffff);
  if (vcpuId !== undefined) rec.vcpuId = vcpuId;
  const vm = r.optInt(j, 'vm', 0, 0x7fffffff);
  if (vm !== undefined) rec.vm = vm;
  if (j['op'] === 'close') {
    rec.op = 'close';
    return rec;
  }
  if (j['op'] !== undefined && j['op'] !== 'ioctl') r.fail('op', 'expected "ioctl" or "close"');
  const req = r.str(j, 'request');
  if (!/^0x[0-9a-f]{1,8}$/i.test(req)) r.fail('request', 'expected a 32-bit hex number such as "0xc008ae88"');
  rec.request = Number(req);
  rec.name = typeof j['name'] === 'string' ? j['name'] : ioctlName(rec.request);
  const arg = j['arg'];
  if (arg !== undefined) {
    if (typeof arg !== 'number' || !Number.isSafeInteger(arg)) return r.fail('arg', 'expected an integer');
    rec.arg = arg;
  }
  if (j['in'] !== undefined) rec.in = r.hex(j['in'], 'in');
  if (j['out'] !== undefined) rec.out = r.hex(j['out'], 'out');
  if (rec.in && rec.out && rec.in.length !== rec.out.length) r.fail('out', `has ${rec.out.length} bytes where "in" has ${rec.in.length}`);
  const extra = j['extra'];
  if (extra !== undefined) {
    if (!Array.isArray(extra)) return r.fail('extra', 'expected an array of hex strings');
    rec.extra = extra.map((e, i) => r.hex(e, `extra[${i}]`));
  }
  if (rec.ret < 0 && rec.errno === 0) r.fail('errno', 'a negative ret needs an errno');
  return rec;
}

export interface ParsedCapture {
  header: CaptureHeader;
  records: CaptureRecord[];
  /** The first bad line, if any: records before it are kept. */
  error?: CaptureFormatError;
}

/** Parses a whole capture. A bad header throws; a bad record stops parsing and is reported in `error`. */
export function parseCapture(text: string, file: string): ParsedCapture {
  const lines = text.split('\n');
  if (lines.length === 0 || lines[0]!.trim() === '') throw new CaptureFormatError(file, 1, '(header)', 'the file is empty');
  const header = parseHeader(lines[0]!, file);
  const records: CaptureRecord[] = [];
  let lastSeq = -1;
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.trim() === '') continue;
    try {
      const rec = parseRecord(l, file, i + 1);
      if (rec.seq <= lastSeq) throw new CaptureFormatError(file, i + 1, 'seq', `goes backwards (${rec.seq} after ${lastSeq})`);
      lastSeq = rec.seq;
      records.push(rec);
    } catch (e) {
      if (e instanceof CaptureFormatError) return { header, records, error: e };
      throw e;
    }
  }
  return { header, records };
}
