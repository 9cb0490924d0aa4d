// How `kvmsr run` reaches a command's KVM calls: the LD_PRELOAD library (a dynamically linked
// program's libc calls) or seccomp user notification (every program: static binaries, raw syscalls).
// Unless told, a static ELF (no PT_INTERP, so no dynamic loader to preload anything) gets seccomp.
import { accessSync, closeSync, constants, openSync, readSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export type Intercept = 'seccomp' | 'preload';
export const INTERCEPTS: readonly Intercept[] = ['seccomp', 'preload'];

const PT_INTERP = 3;

/** The file execvp would run for `name` (a PATH search when it has no slash), or null. */
export function resolveCommand(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const runnable = (p: string): boolean => {
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (name.includes('/')) return runnable(name) ? name : null;
  for (const dir of (env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    const p = join(dir || '.', name);
    if (runnable(p)) return p;
  }
  return null;
}

function readAt(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  return b.subarray(0, readSync(fd, b, 0, len, pos));
}

/**
 * Whether `path` is an ELF executable with no PT_INTERP program header (linked static, or
 * static-pie); false for scripts, dynamic ELFs and what cannot be read.
 */
export function isStaticElf(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return false;
  }
  try {
    const h = readAt(fd, 0, 64);
    if (h.length < 52 || h.readUInt32BE(0) !== 0x7f454c46) return false;
    const is64 = h[4] === 2;
    const le = h[5] === 1;
    const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    if (is64 && h.length < 64) return false;
    // e_phoff, e_phentsize, e_phnum (ELF64 at 32, 54, 56; ELF32 at 28, 42, 44).
    const phoff = is64 ? Number(le ? h.readBigUInt64LE(32) : h.readBigUInt64BE(32)) : u32(h, 28);
    const entsize = u16(h, is64 ? 54 : 42);
    const phnum = u16(h, is64 ? 56 : 44);
    // PN_XNUM (0xffff) puts the count in section 0: not worth reading for a guess; preload then.
    if (phnum === 0xffff || entsize < 4 || phnum === 0) return false;
    const ph = readAt(fd, phoff, entsize * phnum);
    if (ph.length < entsize * phnum) return false;
    for (let i = 0; i < phnum; i++) if (u32(ph, i * entsize) === PT_INTERP) return false;
    return true;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/** What `kvmsr run` uses for `command` when not told: seccomp for a static ELF, else the library. */
export function chooseIntercept(command: readonly string[], env: NodeJS.ProcessEnv = process.env): Intercept {
  const file = command.length > 0 ? resolveCommand(command[0]!, env) : null;
  return file !== null && isStaticElf(file) ? 'seccomp' : 'preload';
}
