// u64 helpers for the API edge. Inside the emulator a u64 moves as two u32 halves (lo, hi).

export const U64_MASK = (1n << 64n) - 1n;

export function toU64(v: bigint | number): bigint {
  return BigInt.asUintN(64, typeof v === 'number' ? BigInt(v) : v);
}
export function hiOf(v: bigint): number {
  return Number((v >> 32n) & 0xffffffffn);
}
export function loOf(v: bigint): number {
  return Number(v & 0xffffffffn);
}
export function fromHalves(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}
export function hex(v: bigint | number, width = 0): string {
  const s = (typeof v === 'number' ? v >>> 0 : v).toString(16);
  return '0x' + (width > 0 ? s.padStart(width, '0') : s);
}
/** Parses 0x-prefixed hex or decimal into a u64; throws on anything else. */
export function parseU64(text: string): bigint {
  const t = text.trim();
  if (!/^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(t)) throw new SyntaxError(`not a number: '${text}'`);
  const v = BigInt(t);
  if (v > U64_MASK) throw new RangeError(`more than 64 bits: '${text}'`);
  return v;
}
export function parseU32(text: string): number {
  const v = parseU64(text);
  if (v > 0xffffffffn) throw new RangeError(`more than 32 bits: '${text}'`);
  return Number(v);
}
