// Finds (or builds) the LD_PRELOAD recorder and runs a command under it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KVMSR_VERSION } from '../version.js';

const ROOT = [resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')].find((d) =>
  existsSync(join(d, 'recorder', 'kvmsr-record.c')),
);

/** The recorder library's path, building it with cc when it is missing; throws with the reason. */
export function recorderLibrary(): string {
  if (!ROOT) throw new Error('the recorder source (recorder/kvmsr-record.c) is not installed with this kvmsr');
  const lib = join(ROOT, 'dist', 'recorder', 'libkvmsr-record.so');
  if (existsSync(lib)) return lib;
  mkdirSync(dirname(lib), { recursive: true });
  const cc = process.env['CC'] ?? 'cc';
  const r = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-o', lib, join(ROOT, 'recorder', 'kvmsr-record.c'), '-ldl', '-lpthread'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot build the recorder with ${cc}: ${r.error?.message ?? r.stderr.trim()}`);
  return lib;
}

/** Runs `command` with the recorder preloaded, appending to `file`. Returns the command's exit status. */
export function recordCommand(file: string, command: string[], env: NodeJS.ProcessEnv = process.env, systemPath?: string): number {
  const lib = recorderLibrary();
  const preload = env['LD_PRELOAD'] ? `${lib}:${env['LD_PRELOAD']}` : lib;
  const childEnv: NodeJS.ProcessEnv = { ...env, LD_PRELOAD: preload, KVMSR_RECORD_FILE: resolve(file), KVMSR_VERSION };
  if (systemPath) childEnv['KVMSR_RECORD_SYSTEM_PATH'] = systemPath;
  const r = spawnSync(command[0]!, command.slice(1), { stdio: 'inherit', env: childEnv });
  if (r.error) throw new Error(`cannot run ${command[0]}: ${r.error.message}`);
  return r.status ?? (r.signal ? 128 : 1);
}
