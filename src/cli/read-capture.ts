// Reads a capture file for a command (plain or gzipped JSON Lines); every failure is a CliError
// that names the file (and, from the parser, the line and field).
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { parseCapture, type ParsedCapture } from '../capture/format.js';
import { CliError } from './common.js';

export function readCapture(file: string): ParsedCapture {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    throw new CliError(`cannot read capture ${file}: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = (raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw).toString('utf8');
  } catch (e) {
    throw new CliError(`${file}: not a readable gzip file: ${(e as Error).message}`);
  }
  try {
    return parseCapture(text, file);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
}
