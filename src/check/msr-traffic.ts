// One capture's KVM_GET/SET_MSRS traffic per vCPU: what the VMM read successfully (its save), what
// it wrote and KVM took, and every index it touched. Entries past a batch's return value were
// never processed, whatever the VMM's buffer holds there.
import { decodeMsrs, type MsrEntry } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { vcpuKey } from './machine.js';

export const isMsrBatch = (r: CaptureRecord): boolean =>
  (r.request === I.KVM_GET_MSRS || r.request === I.KVM_SET_MSRS) && r.in !== undefined && r.in.length >= 8 && r.op !== 'close';

/** The entries a batch asked for (at most nmsrs, at most what was recorded). */
export function batchEntries(r: CaptureRecord, bytes: Uint8Array | undefined = r.in): MsrEntry[] {
  if (!bytes || bytes.length < 8) return [];
  const d = decodeMsrs(bytes);
  return d.entries.slice(0, d.nmsrs);
}

export interface VcpuTraffic {
  key: string;
  id: number;
  /** Last successful read of each MSR: its value and the record's seq. */
  saved: Map<number, { data: bigint; seq: number }>;
  /** Last accepted write of each MSR. */
  written: Map<number, { data: bigint; seq: number }>;
  /** Reads of an MSR after this capture wrote it: its read-back. */
  readBack: Map<number, { data: bigint; seq: number }>;
  /** Every index read or written, accepted or not. */
  touched: Set<number>;
  /** Indices KVM processed (before the batch's return value). */
  accepted: Set<number>;
}

export function msrTraffic(c: ParsedCapture): Map<string, VcpuTraffic> {
  const out = new Map<string, VcpuTraffic>();
  for (const r of c.records) {
    if (!isMsrBatch(r) || r.fdKind !== 'vcpu' || r.ret < 0) continue;
    const key = vcpuKey(r);
    let t = out.get(key);
    if (!t) out.set(key, (t = { key, id: r.vcpuId ?? 0, saved: new Map(), written: new Map(), readBack: new Map(), touched: new Set(), accepted: new Set() }));
    const ins = batchEntries(r);
    const outs = r.out ? batchEntries(r, r.out) : ins;
    for (const e of ins) t.touched.add(e.index);
    const n = Math.min(r.ret, ins.length);
    for (let i = 0; i < n; i++) {
      t.accepted.add(ins[i]!.index);
      if (r.request === I.KVM_GET_MSRS) {
        t.saved.set(outs[i]!.index, { data: outs[i]!.data, seq: r.seq });
        if (t.written.has(outs[i]!.index)) t.readBack.set(outs[i]!.index, { data: outs[i]!.data, seq: r.seq });
      }
      else t.written.set(ins[i]!.index, { data: ins[i]!.data, seq: r.seq });
    }
  }
  return out;
}
