// `kvmsr run --intercept seccomp`: programs the preload library never reaches (a static musl C
// program, a Go program making raw syscalls) have their /dev/kvm answered by kvmsr through seccomp
// user notification. The broker never opens a real /dev/kvm: every answer checked here is the
// profile's (a kvm_pvm host), whatever this machine has; the CLI test also runs with /dev/kvm hidden.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { decodeMsrList, decodeMsrs, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { parseCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { builtinProfile } from '../src/profiles.js';
import { chooseIntercept, isStaticElf } from '../src/run/intercept.js';
import { SECCOMP_SOURCES, seccompBroker } from '../src/run/preload-lib.js';
import { runUnderKvmsr, type RunOptions } from '../src/run/run-command.js';

const has = (cmd: string, args: string[]): boolean => spawnSync(cmd, args).status === 0;
const cc = has('cc', ['--version']);
const musl = has('musl-gcc', ['--version']);
const go = has('go', ['version']);

/** Whether this kernel lets the broker work (a listener, SECCOMP_ADDFD_FLAG_SEND), and why not. */
function probe(): string {
  if (!cc) return 'no C compiler (cc) to build the seccomp broker';
  try {
    const r = spawnSync(seccompBroker(), ['--probe'], { encoding: 'utf8', timeout: 10_000 });
    return r.status === 0 ? '' : `the seccomp probe failed: ${r.stderr.trim() || `status ${r.status}`}`;
  } catch (e) {
    return (e as Error).message;
  }
}
const why = probe();
const whyMusl = why || (musl ? '' : 'musl-gcc is not installed (apt-get install musl-tools; .ci/run installs it)');
// musl ships no kernel headers: test/c/run-kvm-run.c (linux/kvm.h) builds against the system's.
const asmDir = ['/usr/include/x86_64-linux-gnu/asm', '/usr/include/asm'].find((d) => existsSync(join(d, 'kvm.h')));
const kernelHeaders = existsSync('/usr/include/linux/kvm.h') && existsSync('/usr/include/asm-generic') && asmDir !== undefined;
const whyMuslKvmRun = whyMusl || (kernelHeaders ? '' : 'no kernel headers for musl-gcc (apt-get install linux-libc-dev)');
const whyGo = why || (go ? '' : 'go is not installed (apt-get install golang-go; .ci/run installs it)');
for (const w of new Set([why, whyMusl, whyGo])) if (w) console.warn(`kvmsr run --intercept seccomp: skipped: ${w}`);
const skipNote = (w: string): string => (w ? ` (skipped: ${w})` : '');

const PROFILE = 'pvm-amd-epyc-6.18.44-v669';
const profile = (): HostProfile => builtinProfile(PROFILE);
const hex = (v: number | bigint): string => '0x' + v.toString(16);
const KVM_GET_REGS = 0x8090ae81;

/**
 * What test/c/run-static.c and test/go/run-raw/main.go print: the same calls asked of an in-process
 * Kvm with the profile, formatted as they format them; then a pipe's answers from the kernel.
 */
function expectedStatic(p: HostProfile): string {
  const kvm = new Kvm({ profile: p });
  const out: string[] = [];
  const idx = [0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x174, 0x175, 0x176, 0x277];
  const msrs = (what: string, vcpu: number, req: number, values: bigint[]): bigint[] => {
    const buf = encodeMsrs(idx.map((index, i) => ({ index, data: values[i]! })));
    const r = kvm.ioctl(vcpu, req, buf);
    const got = decodeMsrs(buf).entries.map((e) => e.data);
    out.push(`${what} ret ${r}:` + idx.map((x, i) => ` ${hex(x)}=${hex(got[i]!)}`).join(''));
    return got;
  };
  const zeros = idx.map(() => 0n);
  const sys = kvm.open('/dev/kvm');
  out.push('open ok', `api ${kvm.ioctl(sys, I.KVM_GET_API_VERSION, 0)}`);
  const vcpuOf = (): number => {
    const vcpu = kvm.ioctl(kvm.ioctl(sys, I.KVM_CREATE_VM, 0), I.KVM_CREATE_VCPU, 0);
    out.push('create_vm ok create_vcpu ok');
    return vcpu;
  };
  const vcpu = vcpuOf();
  const page = kvm.runPage(vcpu)!;
  out.push(`mmap_size ${kvm.ioctl(sys, I.KVM_GET_VCPU_MMAP_SIZE, 0)} exit_reason ${new DataView(page.buffer, page.byteOffset).getUint32(8, true)}`);
  const list = new Uint8Array(4 * (1 + 4096));
  const dv = new DataView(list.buffer);
  const probe = kvm.ioctl(sys, I.KVM_GET_MSR_INDEX_LIST, list);
  out.push(`index_list probe ret ${probe} nmsrs ${dv.getUint32(0, true)}`);
  dv.setUint32(0, 4096, true);
  const r = kvm.ioctl(sys, I.KVM_GET_MSR_INDEX_LIST, list);
  const l = decodeMsrList(list.subarray(0, 4 + 4 * dv.getUint32(0, true)));
  out.push(`index_list ret ${r} nmsrs ${l.nmsrs}:` + l.indices.map((i) => ` ${hex(i)}`).join(''));
  const guest = [0x0023001000000000n, 0xffffffff81a00080n, 0xffffffff81a01000n, 0x47700n, 0xffff888003a00000n, 0x10n, 0xfffffe0000003000n, 0xffffffff81a01200n, 0x0007010600070106n];
  msrs('set_msrs', vcpu, I.KVM_SET_MSRS, guest);
  const saved = msrs('save get_msrs', vcpu, I.KVM_GET_MSRS, zeros);
  const vcpu2 = vcpuOf();
  msrs('fresh get_msrs', vcpu2, I.KVM_GET_MSRS, zeros);
  msrs('restore set_msrs', vcpu2, I.KVM_SET_MSRS, saved);
  const back = msrs('restored get_msrs', vcpu2, I.KVM_GET_MSRS, zeros);
  out.push(`restored ${back.every((v, i) => v === saved[i]) ? 'same' : 'differs'}`);
  // Not kvmsr's: the kernel's FIONREAD, and pipe_ioctl's ENOTTY for a KVM request.
  out.push('pipe FIONREAD ret 0 n 5', 'pipe KVM_GET_API_VERSION ret -25', 'preload library mapped 0');
  return out.join('\n') + '\n';
}

interface Built {
  dir: string;
  bin: (name: string) => string;
}

function build(): Built {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-seccomp-test-'));
  const c = (n: string): string => join(__dirname, 'c', `${n}.c`);
  execFileSync('cc', ['-O1', '-Wall', '-o', join(dir, 'run-static-dynamic'), c('run-static')]);
  for (const n of ['run-die', 'run-basic', 'run-threads', 'run-fork', 'run-files', 'run-kvm-run-many']) execFileSync('cc', ['-O1', '-Wall', '-o', join(dir, n), c(n), '-lpthread']);
  if (musl) execFileSync('musl-gcc', ['-static', '-O1', '-Wall', '-o', join(dir, 'run-static'), c('run-static')]);
  if (musl && kernelHeaders) {
    const inc = join(dir, 'kernel-headers');
    mkdirSync(inc);
    symlinkSync('/usr/include/linux', join(inc, 'linux'));
    symlinkSync('/usr/include/asm-generic', join(inc, 'asm-generic'));
    symlinkSync(asmDir!, join(inc, 'asm'));
    execFileSync('musl-gcc', ['-static', '-O1', '-Wall', '-isystem', inc, '-o', join(dir, 'run-kvm-run-static'), c('run-kvm-run'), '-lpthread']);
    execFileSync('cc', ['-O1', '-Wall', '-o', join(dir, 'run-kvm-run'), c('run-kvm-run'), '-lpthread']);
  }
  if (go) {
    const cache = join(tmpdir(), 'kvmsr-go-cache');
    execFileSync('go', ['build', '-o', join(dir, 'run-raw'), 'main.go'], {
      cwd: join(__dirname, 'go', 'run-raw'),
      env: { ...process.env, CGO_ENABLED: '0', GO111MODULE: 'off', GOCACHE: join(cache, 'build'), GOPATH: join(cache, 'path'), GOFLAGS: '' },
    });
  }
  return { dir, bin: (n) => join(dir, n) };
}

async function run(command: string[], opts: RunOptions = {}): Promise<Awaited<ReturnType<typeof runUnderKvmsr>> & { log: string[] }> {
  const log: string[] = [];
  const r = await runUnderKvmsr(command, { profile: profile(), stdio: 'pipe', log: (l) => log.push(l), ...opts });
  return { ...r, log };
}

/** Holds the server (and so the call) for ms, as a slow answer would. */
const stall = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

describe.skipIf(why !== '')(`kvmsr run --intercept seccomp${skipNote(why)}`, () => {
  let b: Built;
  beforeAll(() => {
    b = build();
  }, 180_000);

  test('its C sources build with -Wall -Werror', () => {
    const src = (f: string): string => join(__dirname, '..', 'preload', f);
    execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', join(b.dir, 'broker'), ...SECCOMP_SOURCES.map(src), '-lpthread']);
    execFileSync('cc', ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-o', join(b.dir, 'lib.so'), src('kvmsr-run.c'), '-ldl', '-lpthread']);
  });

  test('static ELFs (no PT_INTERP) get seccomp by default; dynamic ones, scripts and missing files the library', () => {
    expect(isStaticElf(b.bin('run-static-dynamic'))).toBe(false);
    expect(chooseIntercept([b.bin('run-static-dynamic')])).toBe('preload');
    expect(chooseIntercept(['sh', '-c', 'true'])).toBe('preload');
    const script = join(b.dir, 'script.sh');
    writeFileSync(script, '#!/bin/sh\nexit 0\n');
    chmodSync(script, 0o755);
    expect(chooseIntercept([script])).toBe('preload');
    expect(chooseIntercept([join(b.dir, 'missing')])).toBe('preload');
    if (musl) expect(chooseIntercept([b.bin('run-static')])).toBe('seccomp');
    if (go) expect(chooseIntercept([b.bin('run-raw')])).toBe('seccomp');
  });

  test.skipIf(!musl)(`a static musl save/restore gets the profile's answers, chosen by itself${skipNote(whyMusl)}`, async () => {
    const r = await run([b.bin('run-static')]);
    expect(r.intercept).toBe('seccomp');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(expectedStatic(profile()));
    expect(r.status).toBe(0);
    expect(r.log).toEqual([]);
    // open, 2 x (CREATE_VM, CREATE_VCPU), MMAP_SIZE, API_VERSION, 2 lists, 5 MSR ioctls: no closes seen.
    expect(r.requests).toBe(14);
  });

  test.skipIf(!go)(`a Go program's raw syscalls (CGO_ENABLED=0, static) get the same answers${skipNote(whyGo)}`, async () => {
    const r = await run([b.bin('run-raw')]);
    expect(r.intercept).toBe('seccomp');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(expectedStatic(profile()));
    expect(r.status).toBe(0);
  });

  test('a dynamic program under seccomp: no preload library anywhere, the same answers', async () => {
    const env = { ...process.env };
    delete env['LD_PRELOAD'];
    const r = await run([b.bin('run-static-dynamic')], { intercept: 'seccomp', library: '/nonexistent/libkvmsr-run.so', env });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(expectedStatic(profile()));
    expect(r.status).toBe(0);
  });

  test('run-basic answers under seccomp what it answers under the library, its fds used as files', async () => {
    const pre = await run([b.bin('run-basic')], { intercept: 'preload' });
    const sec = await run([b.bin('run-basic')], { intercept: 'seccomp' });
    expect(sec.status).toBe(0);
    expect(sec.stderr).toBe(pre.stderr);
    expect(sec.log).toEqual(pre.log);
    // The one difference: the fds are memfds and tmpfs files, which the kernel opens O_LARGEFILE.
    expect(sec.stdout).toBe(pre.stdout.replace('fcntl F_GETFL vcpu 0x2 vm 0x2', 'fcntl F_GETFL vcpu 0x8002 vm 0x8002'));
    expect(sec.requests).toBe(pre.requests - 3); // close() is not seen: no OP_CLOSE
  });

  test('the files that stand for /dev/kvm, a VM and a vCPU, and the kernel\'s answers to opening the device', async () => {
    const r = await run([b.bin('run-files')], { intercept: 'seccomp' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(
        '^' +
          [
            'O_PATH ok', // /dev/null, read-only: seccomp cannot install an O_PATH file
            'O_CREAT\\|O_EXCL ret -1 errno 17',
            'O_DIRECTORY ret -1 errno 20',
            // The memfds are named for the kvmsr fd; the program's flags kept (O_RDONLY | O_NONBLOCK).
            'sys /memfd:kvmsr-sys-3 \\(deleted\\) F_GETFD 0 F_GETFL 0x8800',
            'vm /memfd:kvmsr-vm-4 \\(deleted\\) F_GETFD 1 F_GETFL 0x8002', // anon_inode_getfd(..., O_RDWR | O_CLOEXEC)
            'vcpu /(dev/shm|tmp)/kvmsr-run-[^/]+/vcpu-1 \\(deleted\\) F_GETFD 1 F_GETFL 0x8002', // the server's kvm_run file
            'FIONBIO ret 0 F_GETFL 0x8802',
            'vcpu 0 again ret -1 errno 17', // kvm_vm_ioctl_create_vcpu: the id is taken
            'openat /dev fd: api 12',
            'relative: api 12',
            'ordinary open ok',
          ].join('\\n') +
          '\\n$',
      ),
    );
  });

  test('a forked child: what it gets under the library (EIO on the inherited VM and vCPU)', async () => {
    const pre = await run([b.bin('run-fork')], { intercept: 'preload' });
    const sec = await run([b.bin('run-fork')], { intercept: 'seccomp' });
    expect(sec.status).toBe(0);
    expect(sec.stdout).toContain('child vcpu GET_MSRS ret -1 errno 5');
    expect(sec.stdout).toBe(pre.stdout);
  });

  test('two threads, each with its own vCPU: every round right', async () => {
    const t0 = performance.now();
    const r = await run([b.bin('run-threads'), '2', '2000'], { intercept: 'seccomp' });
    const ms = performance.now() - t0;
    expect(r.stdout).toBe('thread 0 ok 2000 bad 0\nthread 1 ok 2000 bad 0\n');
    expect(r.status).toBe(0);
    expect(r.requests).toBe(4 + 2 * 2 * 2000);
    console.log(`kvmsr run --intercept seccomp: ${r.requests} requests from two threads in ${Math.round(ms)} ms (${Math.round((ms * 1000) / r.requests)} µs per ioctl)`);
  }, 120_000);

  test('--record: the capture names each call\'s thread and replays with 0 divergences', async () => {
    const file = join(b.dir, 'seccomp.jsonl');
    const r = await run([b.bin('run-static-dynamic')], { intercept: 'seccomp', record: file });
    expect(r.status).toBe(0);
    const c = parseCapture(readFileSync(file, 'utf8'), file);
    expect(c.error).toBeUndefined();
    expect(c.records.filter((x) => x.name === 'KVM_SET_MSRS')).toHaveLength(2);
    expect(new Set(c.records.map((x) => x.tid)).size).toBe(1);
    expect(c.records[0]!.tid).toBeGreaterThan(0);
    expect(replay(c, { continueOnDivergence: true }).divergences).toEqual([]);
  });

  test('a target killed in the middle of an ioctl: the broker and the server go on, and end with the command', async () => {
    const opts: RunOptions = {
      intercept: 'seccomp',
      onVcpuIoctl: (_kvm, _fd, req, phase) => {
        if (req === KVM_GET_REGS && phase === 'before') stall(1000); // another thread kills it at 200 ms
      },
    };
    const child = await run([b.bin('run-die'), 'child'], opts);
    expect(child.stdout).toBe('child killed by 9\nparent set 1 get 1 0x7f00000000aa\n');
    expect(child.status).toBe(0);
    expect(child.stderr).toBe('');
    expect(child.dropped).toBe(0);
    const self = await run([b.bin('run-die'), 'self'], opts);
    expect(self.signal).toBe('SIGKILL');
    expect(self.status).toBe(128 + 9);
    expect(self.stdout).toBe('');
    expect(self.stderr).toBe('');
    expect(self.ms).toBeLessThan(10_000);
  });

  // The broker holds a sleeping vCPU's notification and polls the thread's signals (kvmsr-broker.c):
  // immediate_exit, a signal already pending, another thread's kick (SA_RESTART handler), the
  // KVM_SET_SIGNAL_MASK mask, the AP: what the library answers (test/run-kvm-run.test.ts).
  test.skipIf(whyMuslKvmRun !== '')(`KVM_RUN of a halted guest, static musl: EINTR and KVM_EXIT_INTR as under the library${skipNote(whyMuslKvmRun)}`, async () => {
    const pre = await run([b.bin('run-kvm-run')], { intercept: 'preload' });
    expect(pre.status, pre.log.join('\n')).toBe(0);
    const sec = await run([b.bin('run-kvm-run-static')]);
    expect(sec.intercept).toBe('seccomp');
    expect(sec.stderr).toBe('');
    expect(sec.log).toEqual([]);
    expect(sec.status).toBe(0);
    expect(sec.stdout).toContain('\nimmediate: ret -1 errno 4 exit_reason 0x77;');
    expect(sec.stdout).toContain('\nkick: ret -1 errno 4 exit_reason 10, handler ran 1 time(s), slept until the signal yes;');
    expect(sec.stdout).toContain('\nsigmask: ret -1 errno 4 exit_reason 10; stayed in KVM_RUN through SIGUSR1 yes;');
    expect(sec.stdout).toBe(pre.stdout);
  }, 60_000);

  test('80 vCPU threads asleep in KVM_RUN at once (more than the broker\'s 64 workers): other calls still answered, each kick an EINTR', async () => {
    const r = await run([b.bin('run-kvm-run-many')], { intercept: 'seccomp' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(
      '80 threads in KVM_RUN, 80 still there; KVM_GET_API_VERSION meanwhile 12, at once yes\n' +
        'after the signals: EINTR 80, exit_reason KVM_EXIT_INTR 80, handler ran 80 time(s)\n',
    );
    expect(r.status).toBe(0);
  }, 60_000);

  test('a command that cannot run is said so, as under the library', async () => {
    await expect(run([join(b.dir, 'no-such-program')], { intercept: 'seccomp' })).rejects.toThrow(/cannot run/);
  });

  // The command line, through the built bin (npm run build), as in run.test.ts.
  const root = join(__dirname, '..');
  const bin = join(root, 'dist', 'src', 'cli', 'main.js');
  const sources = ['src/cli/main.ts', 'src/cli/run.ts', ...readdirSync(join(root, 'src', 'run')).map((f) => `src/run/${f}`)];
  const fresh = sources.every((f) => {
    const js = join(root, 'dist', f.replace(/\.ts$/, '.js'));
    return existsSync(js) && statSync(js).mtimeMs >= statSync(join(root, f)).mtimeMs;
  });
  const whyCli = fresh ? whyMusl : 'dist/ is not built or is older than src/run (npm run build)';
  const canHide = spawnSync('unshare', ['-m', 'true']).status === 0;
  test.skipIf(whyCli !== '')(`the CLI: --intercept, and with /dev/kvm hidden where unshare -m is permitted${skipNote(whyCli)}`, () => {
    const cli = (args: string[]): { status: number | null; out: string; err: string } => {
      const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
      return { status: r.status, out: r.stdout, err: r.stderr };
    };
    const bad = cli(['run', '--intercept', 'ptrace', '--', 'true']);
    expect(bad.status).not.toBe(0);
    expect(bad.err).toContain('Allowed choices are seccomp, preload');
    expect(cli(['run', '--intercept', 'seccomp', '--', 'sh', '-c', 'exit 7']).status).toBe(7);
    expect(cli(['run', '--intercept', 'seccomp', '--', 'sh', '-c', 'kill -TERM $$']).status).toBe(128 + 15);
    const r = cli(['run', '--profile', `builtin:${PROFILE}`, '--intercept', 'seccomp', '--', b.bin('run-static')]);
    expect(r.err).toBe('');
    expect(r.out).toBe(expectedStatic(profile()));
    expect(r.status).toBe(0);
    if (!canHide) {
      console.warn('kvmsr run --intercept seccomp with /dev/kvm hidden: skipped: unshare -m is not permitted here (it needs root)');
      return;
    }
    const hide = join(__dirname, 'hide-dev-kvm.sh');
    const h = spawnSync('unshare', ['-m', 'sh', hide, 'sh', '-c', 'test ! -e /dev/kvm && exec "$@"', 'sh', process.execPath, bin, 'run', '--profile', `builtin:${PROFILE}`, '--', b.bin('run-static')], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(h.stderr).toBe('');
    expect(h.stdout).toBe(expectedStatic(profile()));
    expect(h.status).toBe(0);
  });
});
