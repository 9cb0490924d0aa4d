// What every CLI command shares: its error type and its output.

/** A usage or input error: one line on stderr, status 2. */
export class CliError extends Error {}

/** JSON with byte buffers as hex strings (as the capture format writes them) and u64s as "0x..". */
export function toJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) => {
      if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
      if (typeof v === 'bigint') return '0x' + v.toString(16);
      return v;
    },
    2,
  );
}

export function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? toJson(value) + '\n' : text() + '\n');
}
