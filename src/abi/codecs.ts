// Codecs for the KVM UAPI structs, with DataView over ArrayBuffer, little-endian always.
// u64 fields are bigint here at the API edge.
import {
  KVM_CPUID2_LAYOUT,
  KVM_CPUID_ENTRY2_LAYOUT,
  KVM_ENABLE_CAP_LAYOUT,
  KVM_MSR_ENTRY_LAYOUT,
  KVM_MSR_FILTER_LAYOUT,
  KVM_MSR_FILTER_MAX_RANGES,
  KVM_MSR_FILTER_RANGE_LAYOUT,
  KVM_MSR_LIST_LAYOUT,
  KVM_MSRS_LAYOUT,
} from './layout.js';

export interface MsrEntry {
  index: number;
  reserved?: number;
  data: bigint;
}
export interface MsrsStruct {
  nmsrs: number;
  pad?: number;
  entries: MsrEntry[];
}
export interface MsrFilterRange {
  flags: number;
  nmsrs: number;
  base: number;
  /** User address of the bitmap (resolved through the emulated user memory). */
  bitmap: bigint;
}
export interface MsrFilter {
  flags: number;
  ranges: MsrFilterRange[];
}
export interface CpuidEntry2 {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}
export interface EnableCap {
  cap: number;
  flags: number;
  args: [bigint, bigint, bigint, bigint];
}

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

// ---- kvm_msrs / kvm_msr_entry ----
export function encodeMsrs(m: MsrsStruct | MsrEntry[], capacity?: number): Uint8Array {
  const s: MsrsStruct = Array.isArray(m) ? { nmsrs: m.length, entries: m } : m;
  const slots = Math.max(capacity ?? 0, s.entries.length);
  const out = new Uint8Array(KVM_MSRS_LAYOUT.size + slots * KVM_MSR_ENTRY_LAYOUT.size);
  const dv = view(out);
  dv.setUint32(KVM_MSRS_LAYOUT.nmsrs, s.nmsrs >>> 0, true);
  dv.setUint32(KVM_MSRS_LAYOUT.pad, (s.pad ?? 0) >>> 0, true);
  s.entries.forEach((e, i) => writeMsrEntry(dv, KVM_MSRS_LAYOUT.entries + i * KVM_MSR_ENTRY_LAYOUT.size, e));
  return out;
}
export function writeMsrEntry(dv: DataView, off: number, e: MsrEntry): void {
  dv.setUint32(off + KVM_MSR_ENTRY_LAYOUT.index, e.index >>> 0, true);
  dv.setUint32(off + KVM_MSR_ENTRY_LAYOUT.reserved, (e.reserved ?? 0) >>> 0, true);
  dv.setBigUint64(off + KVM_MSR_ENTRY_LAYOUT.data, BigInt.asUintN(64, e.data), true);
}
export function readMsrEntry(dv: DataView, off: number): Required<MsrEntry> {
  return {
    index: dv.getUint32(off + KVM_MSR_ENTRY_LAYOUT.index, true),
    reserved: dv.getUint32(off + KVM_MSR_ENTRY_LAYOUT.reserved, true),
    data: dv.getBigUint64(off + KVM_MSR_ENTRY_LAYOUT.data, true),
  };
}
/**
 * Decodes a kvm_msrs buffer. Entries are read up to `count` (default: nmsrs, limited to what the
 * buffer holds); `truncated` says the buffer held fewer entries than nmsrs.
 */
export function decodeMsrs(
  buf: Uint8Array,
  count?: number,
): { nmsrs: number; pad: number; entries: Required<MsrEntry>[]; truncated: boolean } {
  if (buf.length < KVM_MSRS_LAYOUT.size) throw new RangeError(`kvm_msrs needs ${KVM_MSRS_LAYOUT.size} bytes, got ${buf.length}`);
  const dv = view(buf);
  const nmsrs = dv.getUint32(KVM_MSRS_LAYOUT.nmsrs, true);
  const fit = Math.floor((buf.length - KVM_MSRS_LAYOUT.size) / KVM_MSR_ENTRY_LAYOUT.size);
  const want = count ?? nmsrs;
  const n = Math.min(want, fit);
  const entries: Required<MsrEntry>[] = [];
  for (let i = 0; i < n; i++) entries.push(readMsrEntry(dv, KVM_MSRS_LAYOUT.entries + i * KVM_MSR_ENTRY_LAYOUT.size));
  return { nmsrs, pad: dv.getUint32(KVM_MSRS_LAYOUT.pad, true), entries, truncated: n < want };
}

// ---- kvm_msr_list ----
/** A kvm_msr_list with room for `capacity` indices, nmsrs set to `nmsrs` (default: capacity). */
export function encodeMsrList(capacity: number, nmsrs = capacity): Uint8Array {
  const out = new Uint8Array(KVM_MSR_LIST_LAYOUT.size + capacity * 4);
  view(out).setUint32(KVM_MSR_LIST_LAYOUT.nmsrs, nmsrs >>> 0, true);
  return out;
}
export function decodeMsrList(buf: Uint8Array): { nmsrs: number; indices: number[]; truncated: boolean } {
  if (buf.length < KVM_MSR_LIST_LAYOUT.size) throw new RangeError(`kvm_msr_list needs 4 bytes, got ${buf.length}`);
  const dv = view(buf);
  const nmsrs = dv.getUint32(0, true);
  const fit = Math.floor((buf.length - KVM_MSR_LIST_LAYOUT.size) / 4);
  const n = Math.min(nmsrs, fit);
  const indices: number[] = [];
  for (let i = 0; i < n; i++) indices.push(dv.getUint32(KVM_MSR_LIST_LAYOUT.indices + i * 4, true));
  return { nmsrs, indices, truncated: n < nmsrs };
}

// ---- kvm_msr_filter ----
export function encodeMsrFilter(f: MsrFilter): Uint8Array {
  if (f.ranges.length > KVM_MSR_FILTER_MAX_RANGES) throw new RangeError('at most 16 filter ranges');
  const out = new Uint8Array(KVM_MSR_FILTER_LAYOUT.size);
  const dv = view(out);
  dv.setUint32(KVM_MSR_FILTER_LAYOUT.flags, f.flags >>> 0, true);
  f.ranges.forEach((r, i) => {
    const o = KVM_MSR_FILTER_LAYOUT.ranges + i * KVM_MSR_FILTER_RANGE_LAYOUT.size;
    dv.setUint32(o + KVM_MSR_FILTER_RANGE_LAYOUT.flags, r.flags >>> 0, true);
    dv.setUint32(o + KVM_MSR_FILTER_RANGE_LAYOUT.nmsrs, r.nmsrs >>> 0, true);
    dv.setUint32(o + KVM_MSR_FILTER_RANGE_LAYOUT.base, r.base >>> 0, true);
    dv.setBigUint64(o + KVM_MSR_FILTER_RANGE_LAYOUT.bitmap, BigInt.asUintN(64, r.bitmap), true);
  });
  return out;
}
export function decodeMsrFilter(buf: Uint8Array): MsrFilter {
  if (buf.length < KVM_MSR_FILTER_LAYOUT.size) throw new RangeError(`kvm_msr_filter needs 392 bytes, got ${buf.length}`);
  const dv = view(buf);
  const ranges: MsrFilterRange[] = [];
  for (let i = 0; i < KVM_MSR_FILTER_MAX_RANGES; i++) {
    const o = KVM_MSR_FILTER_LAYOUT.ranges + i * KVM_MSR_FILTER_RANGE_LAYOUT.size;
    ranges.push({
      flags: dv.getUint32(o + KVM_MSR_FILTER_RANGE_LAYOUT.flags, true),
      nmsrs: dv.getUint32(o + KVM_MSR_FILTER_RANGE_LAYOUT.nmsrs, true),
      base: dv.getUint32(o + KVM_MSR_FILTER_RANGE_LAYOUT.base, true),
      bitmap: dv.getBigUint64(o + KVM_MSR_FILTER_RANGE_LAYOUT.bitmap, true),
    });
  }
  return { flags: dv.getUint32(KVM_MSR_FILTER_LAYOUT.flags, true), ranges };
}

// ---- kvm_cpuid2 / kvm_cpuid_entry2 ----
export function encodeCpuid2(entries: CpuidEntry2[], capacity = entries.length, nent = entries.length): Uint8Array {
  const slots = Math.max(capacity, entries.length);
  const out = new Uint8Array(KVM_CPUID2_LAYOUT.size + slots * KVM_CPUID_ENTRY2_LAYOUT.size);
  const dv = view(out);
  dv.setUint32(KVM_CPUID2_LAYOUT.nent, nent >>> 0, true);
  entries.forEach((e, i) => {
    const o = KVM_CPUID2_LAYOUT.entries + i * KVM_CPUID_ENTRY2_LAYOUT.size;
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.function, e.function >>> 0, true);
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.index, e.index >>> 0, true);
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.flags, e.flags >>> 0, true);
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.eax, e.eax >>> 0, true);
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.ebx, e.ebx >>> 0, true);
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.ecx, e.ecx >>> 0, true);
    dv.setUint32(o + KVM_CPUID_ENTRY2_LAYOUT.edx, e.edx >>> 0, true);
  });
  return out;
}
export function decodeCpuid2(buf: Uint8Array): { nent: number; entries: CpuidEntry2[] } {
  if (buf.length < KVM_CPUID2_LAYOUT.size) throw new RangeError(`kvm_cpuid2 needs 8 bytes, got ${buf.length}`);
  const nent = view(buf).getUint32(KVM_CPUID2_LAYOUT.nent, true);
  return { nent, entries: decodeCpuidEntries(buf.subarray(KVM_CPUID2_LAYOUT.entries), nent) };
}
/** An array of kvm_cpuid_entry2 (what follows the kvm_cpuid2 header), up to `max` entries. */
export function decodeCpuidEntries(bytes: Uint8Array, max = Infinity): CpuidEntry2[] {
  const dv = view(bytes);
  const n = Math.min(max, Math.floor(bytes.length / KVM_CPUID_ENTRY2_LAYOUT.size));
  const entries: CpuidEntry2[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * KVM_CPUID_ENTRY2_LAYOUT.size;
    entries.push({
      function: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.function, true),
      index: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.index, true),
      flags: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.flags, true),
      eax: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.eax, true),
      ebx: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.ebx, true),
      ecx: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.ecx, true),
      edx: dv.getUint32(o + KVM_CPUID_ENTRY2_LAYOUT.edx, true),
    });
  }
  return entries;
}

// ---- kvm_enable_cap ----
export function encodeEnableCap(cap: number, args: (bigint | number)[] = [], flags = 0): Uint8Array {
  const out = new Uint8Array(KVM_ENABLE_CAP_LAYOUT.size);
  const dv = view(out);
  dv.setUint32(KVM_ENABLE_CAP_LAYOUT.cap, cap >>> 0, true);
  dv.setUint32(KVM_ENABLE_CAP_LAYOUT.flags, flags >>> 0, true);
  for (let i = 0; i < 4; i++) {
    dv.setBigUint64(KVM_ENABLE_CAP_LAYOUT.args + i * 8, BigInt.asUintN(64, BigInt(args[i] ?? 0)), true);
  }
  return out;
}
export function decodeEnableCap(buf: Uint8Array): EnableCap {
  if (buf.length < KVM_ENABLE_CAP_LAYOUT.size) throw new RangeError(`kvm_enable_cap needs 104 bytes, got ${buf.length}`);
  const dv = view(buf);
  const a = (i: number): bigint => dv.getBigUint64(KVM_ENABLE_CAP_LAYOUT.args + i * 8, true);
  return {
    cap: dv.getUint32(KVM_ENABLE_CAP_LAYOUT.cap, true),
    flags: dv.getUint32(KVM_ENABLE_CAP_LAYOUT.flags, true),
    args: [a(0), a(1), a(2), a(3)],
  };
}

/** struct kvm_xen_hvm_config (56 bytes): flags, msr, blob_addr_32, blob_addr_64, blob_size_32, blob_size_64, pad. */
export interface XenHvmConfig {
  flags: number;
  msr: number;
  blobAddr32?: bigint;
  blobAddr64?: bigint;
  blobSize32?: number;
  blobSize64?: number;
}
export const KVM_XEN_HVM_CONFIG_SIZE = 56;
export function encodeXenHvmConfig(c: XenHvmConfig): Uint8Array {
  const b = new Uint8Array(KVM_XEN_HVM_CONFIG_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, c.flags >>> 0, true);
  dv.setUint32(4, c.msr >>> 0, true);
  dv.setBigUint64(8, c.blobAddr32 ?? 0n, true);
  dv.setBigUint64(16, c.blobAddr64 ?? 0n, true);
  b[24] = c.blobSize32 ?? 0;
  b[25] = c.blobSize64 ?? 0;
  return b;
}
