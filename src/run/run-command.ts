// `kvmsr run`: starts a command with the preload library, or under the seccomp broker
// (preload/kvmsr-seccomp.c), answers its KVM calls until it ends, and gives back its exit status.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostProfile } from '../kvm/profile.js';
import { chooseIntercept, resolveCommand, type Intercept } from './intercept.js';
import { preloadLibrary, seccompBroker } from './preload-lib.js';
import { RunServer } from './server.js';
import { RunSession, type VcpuHook } from './session.js';

export interface RunOptions {
  profile?: HostProfile;
  /** Write a capture of the MSR ioctls here (the format `kvmsr record` writes). */
  record?: string;
  /** The command's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** 'inherit' (default) or 'pipe': collect stdout and stderr into the result. */
  stdio?: 'inherit' | 'pipe';
  /** Where kvmsr's own lines go (default: stderr). */
  log?: (line: string) => void;
  /** How the command's KVM calls are reached (default: seccomp for a static ELF, else preload). */
  intercept?: Intercept;
  /** The preload library (default: dist/preload/libkvmsr-run.so, built when missing). */
  library?: string;
  /** The seccomp launcher and broker (default: dist/preload/kvmsr-seccomp, built when missing). */
  broker?: string;
  onVcpuIoctl?: VcpuHook;
  /** Log every KVM call and its answer. */
  trace?: boolean;
  /**
   * How long (µs) the server polls the command's lanes after a call, and the command's calls poll for
   * their answers, before either sleeps (docs/performance.md). 0: both always sleep and are woken.
   * Default: KVMSR_RUN_SPIN_US, else 500 for the server and 200 for a call where there is more
   * than one CPU, else 0.
   */
  spinUs?: number;
}

export interface RunResult {
  /** The command's exit status; 128 + the signal's number when a signal ended it. */
  status: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** How the command's KVM calls were reached. */
  intercept: Intercept;
  /** Requests kvmsr answered, connections dropped for malformed frames, wall time in ms. */
  requests: number;
  dropped: number;
  ms: number;
  /** The shared-memory lanes (src/run/lane.ts): made, requests through them, rings, WAKE frames. */
  lanes: { lanes: number; requests: number; rings: number; wakes: number };
}

/** /dev/shm when there is one (the kvm_run files are then memory, as KVM's page is). */
function scratchDir(): string {
  for (const base of ['/dev/shm', tmpdir()]) {
    try {
      accessSync(base, constants.W_OK);
      if (statSync(base).isDirectory()) return mkdtempSync(join(base, 'kvmsr-run-'));
    } catch {
      // try the next
    }
  }
  return mkdtempSync(join('/tmp', 'kvmsr-run-'));
}

/**
 * The profile's KVM module parameters as sysfs files (`<module>/parameters/<name>`, the value and a
 * newline), which the library serves for /sys/module/<module>/parameters/<name>: the command reads
 * the parameters of the host kvmsr answers as (the kernel's selftests read force_emulation_prefix
 * before anything else). Returns the directory.
 */
function writeModuleParams(root: string, profile: HostProfile): string {
  for (const [key, value] of Object.entries(profile.host.moduleParams)) {
    const dot = key.indexOf('.');
    const mod = key.slice(0, dot);
    const name = key.slice(dot + 1);
    if (dot <= 0 || !/^kvm(_intel|_amd|_pvm)?$/.test(mod) || !/^[\w-]+$/.test(name)) continue;
    mkdirSync(join(root, mod, 'parameters'), { recursive: true });
    writeFileSync(join(root, mod, 'parameters', name), `${value}\n`, { mode: 0o444 });
  }
  mkdirSync(root, { recursive: true });
  return root;
}

/** Signals that ask the command to end go to it; `kvmsr run` ends when it does. */
const FORWARDED: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGQUIT'];

export async function runUnderKvmsr(command: string[], opts: RunOptions = {}): Promise<RunResult> {
  if (command.length === 0) throw new Error('no command to run');
  const intercept = opts.intercept ?? chooseIntercept(command, opts.env ?? process.env);
  const seccomp = intercept === 'seccomp';
  // The broker would say so too, but as the command's status; spawn's error is kvmsr's own (2).
  if (seccomp && resolveCommand(command[0]!, opts.env ?? process.env) === null) throw new Error(`cannot run ${command[0]}: not found or not executable`);
  const native = seccomp ? (opts.broker ?? seccompBroker()) : (opts.library ?? preloadLibrary());
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const t0 = performance.now();
  const dir = scratchDir(); // mode 0700: only this user reaches the socket
  const session = new RunSession({
    dir,
    log,
    command,
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.record !== undefined ? { record: opts.record } : {}),
    ...(opts.onVcpuIoctl ? { onVcpuIoctl: opts.onVcpuIoctl } : {}),
    ...(opts.trace ? { trace: true } : {}),
  });
  const server = new RunServer(session, log, { laneDir: dir, ...(opts.spinUs !== undefined ? { spinUs: opts.spinUs } : {}) });
  const handlers = new Map<NodeJS.Signals, () => void>();
  try {
    const socket = join(dir, 'sock');
    await server.listen(socket);
    const env = { ...(opts.env ?? process.env) };
    if (!seccomp) env['LD_PRELOAD'] = env['LD_PRELOAD'] ? `${native}:${env['LD_PRELOAD']}` : native;
    env['KVMSR_RUN_SOCKET'] = socket;
    env['KVMSR_RUN_SYSFS'] = writeModuleParams(join(dir, 'sysfs'), session.kvm.profile);
    if (opts.spinUs !== undefined) env['KVMSR_RUN_SPIN_US'] = String(opts.spinUs);
    const pipe = opts.stdio === 'pipe';
    // The broker forks the command, and exits as it does (its code, or its signal).
    const [file, args] = seccomp ? [native, ['--', ...command]] : [command[0]!, command.slice(1)];
    const child = spawn(file, args, { env, stdio: pipe ? ['ignore', 'pipe', 'pipe'] : 'inherit' });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    // The terminal's ^C reaches the command itself; kvmsr must outlive it to answer its last calls.
    handlers.set('SIGINT', () => undefined);
    for (const s of FORWARDED) handlers.set(s, () => child.kill(s));
    for (const [s, h] of handlers) process.on(s, h);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', (e) => reject(new Error(`cannot run ${command[0]}: ${e.message}`)));
      child.once(pipe ? 'close' : 'exit', (c: number | null, s: NodeJS.Signals | null) => resolve([c, s]));
    });
    const status = code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1);
    return { status, signal, stdout, stderr, intercept, requests: session.requests, dropped: server.dropped, ms: performance.now() - t0, lanes: { ...server.laneStats } };
  } finally {
    for (const [s, h] of handlers) process.off(s, h);
    await server.close();
    session.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
