// `kvmsr run` under faults, and its shared-memory lanes (src/run/lane.ts): vCPU threads kicked out
// of KVM_RUN over and over, an fd closed under a sleeping KVM_RUN, a command killed in the middle
// of a call, a server that dies under a command (its calls get EIO, nothing hangs), a malformed
// lane frame; and after each, nothing left behind: the server's fds, the session's directory,
// child processes, the command's own fds. test/c/run-faults.c runs under kvmsr and, where
// /dev/kvm exists, on the real kernel, which must print the same.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, writeSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { KVM_GET_REGS } from '../src/abi/kvm-ioctls.js';
import { builtinProfile } from '../src/profiles.js';
import { encodeRequest, OP_IOCTL, OP_LANE, OP_RING, RESP_HEADER } from '../src/run/protocol.js';
import { runUnderKvmsr, type RunOptions } from '../src/run/run-command.js';
import { RunServer } from '../src/run/server.js';
import { RunSession } from '../src/run/session.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..');
const cc = spawnSync('cc', ['--version']).status === 0;
const haveKvm = existsSync('/dev/kvm');
const whyNoCc = cc ? '' : 'no C compiler (cc)';
if (!cc) console.warn('kvmsr run faults: skipped: no C compiler (cc)');
if (!haveKvm) console.warn('kvmsr run faults on the real kernel: skipped: this machine has no /dev/kvm');

const dir = mkdtempSync(join(tmpdir(), 'kvmsr-run-faults-'));
const bin = (n: string): string => join(dir, n);
if (cc) {
  execFileSync('cc', ['-O1', '-Wall', '-Werror', '-o', bin('run-faults'), join(here, 'c', 'run-faults.c'), '-lpthread']);
  execFileSync('cc', ['-O1', '-Wall', '-Werror', '-o', bin('run-die'), join(here, 'c', 'run-die.c'), '-lpthread']);
  execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', bin('round_trip'), join(ROOT, 'bench', 'c', 'round_trip.c')]);
}
const profile = builtinProfile('pvm-intel-6.18.44-v1272');
const stall = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * What kvmsr could leave in the test process: fds on sockets, on its files and on anonymous
 * inodes (as "fd -> target"), its session directories, child processes.
 */
function holdings(): { fds: string[]; sessions: string[]; children: string[] } {
  const fds = readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return `${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`;
      } catch {
        return ''; // the directory's own fd, gone by now
      }
    })
    .filter((l) => /-> (socket:|anon_inode:|memfd:|.*kvmsr-run-)/.test(l) && !l.includes('kvmsr-run-faults'));
  const sessions = ['/dev/shm', tmpdir()].filter(existsSync).flatMap((d) => readdirSync(d).filter((n) => /^kvmsr-run-[^f]/.test(n)));
  const children = readdirSync(`/proc/${process.pid}/task`)
    .flatMap((t) => readFileSync(`/proc/${process.pid}/task/${t}/children`, 'utf8').trim().split(' '))
    .filter((s) => s !== '');
  return { fds, sessions, children };
}

async function run(command: string[], opts: RunOptions = {}): Promise<Awaited<ReturnType<typeof runUnderKvmsr>>> {
  const before = holdings();
  const r = await runUnderKvmsr(command, { profile, stdio: 'pipe', log: () => undefined, ...opts });
  // Whatever the command did, kvmsr leaves nothing behind that was not there before.
  const after = holdings();
  expect(after.fds.filter((f) => !before.fds.includes(f))).toEqual([]);
  expect(after.sessions.filter((f) => !before.sessions.includes(f))).toEqual([]);
  expect(after.children).toEqual([]);
  return r;
}

describe.skipIf(!cc)(`kvmsr run faults${whyNoCc ? ` (skipped: ${whyNoCc})` : ''}`, () => {
  const KICKS = `8 threads kicked 50 times each: every thread left KVM_RUN at least 51 times with EINTR and KVM_EXIT_INTR, 0 other returns
KVM_GET_API_VERSION after: 12; fds left open after closing all: 0
`;
  const CLOSE = `close while in KVM_RUN: 0
KVM_CREATE_VCPU 0 again: ret -1 errno 17
KVM_RUN on the closed fd: ret -1 errno 4 exit_reason 10
KVM_CREATE_VCPU 1: ok
fds left open after closing all: 0
`;

  test('8 vCPU threads in KVM_RUN kicked 50 times each: every kick an EINTR with KVM_EXIT_INTR; every fd closed after', async () => {
    const r = await run([bin('run-faults'), 'kicks', '50']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(KICKS);
    expect(r.status).toBe(0);
  });

  test('an fd closed under a sleeping KVM_RUN: the call ends at the kick, the vCPU lives on with its VM', async () => {
    const r = await run([bin('run-faults'), 'close-in-run']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(CLOSE);
    expect(r.status).toBe(0);
  });

  test.skipIf(!haveKvm)(`the real kernel prints the same${haveKvm ? '' : ' (skipped: no /dev/kvm)'}`, () => {
    const opts = { encoding: 'utf8' as const, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };
    expect(execFileSync(bin('run-faults'), ['kicks', '50'], opts)).toBe(KICKS);
    expect(execFileSync(bin('run-faults'), ['close-in-run'], opts)).toBe(CLOSE);
  });

  test('a command killed in the middle of a call (the library, a lane): the server goes on and ends with it', async () => {
    const opts: RunOptions = {
      onVcpuIoctl: (_kvm, _fd, req, phase) => {
        if (req === KVM_GET_REGS && phase === 'before') stall(1000); // another thread kills it at 200 ms
      },
    };
    const child = await run([bin('run-die'), 'child'], opts);
    expect(child.stdout).toBe('child killed by 9\nparent set 1 get 1 0x7f00000000aa\n');
    expect(child.status).toBe(0);
    expect(child.dropped).toBe(0);
    expect(child.lanes.lanes).toBeGreaterThanOrEqual(2); // the parent's and the child's connection
    const self = await run([bin('run-die'), 'self'], opts);
    expect(self.signal).toBe('SIGKILL');
    expect(self.stdout).toBe('');
  });

  for (const intercept of ['preload', 'seccomp'] as const) {
    test(`the server killed under a command (${intercept}): its calls fail with EIO at once, and it ends`, async () => {
      if (intercept === 'seccomp' && spawnSync(join(ROOT, 'dist', 'preload', 'kvmsr-seccomp'), ['--probe']).status !== 0) {
        console.warn('kvmsr run faults: the seccomp case is skipped: this kernel refuses the broker');
        return;
      }
      const cli = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'run', '--intercept', intercept, '--', bin('run-faults'), 'calls'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      const ended = new Promise<void>((resolve) => cli.stdout.on('end', resolve)); // every writer gone: the command too
      cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve) =>
        cli.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready\n')) resolve();
        }),
      );
      cli.kill('SIGKILL');
      await ended;
      expect(out).toBe('ready\nKVM_GET_MSRS failed: ret -1 errno 5 (Input/output error); once more: ret -1 errno 5\n');
      expect(err).toContain('lost the kvmsr server');
    });
  }

  test('lanes with polling off on both sides: every call rings, answers wake the caller, and the answers are the same', async () => {
    const r = await run([bin('round_trip'), '2', '50'], { spinUs: 0 });
    expect(r.status).toBe(0);
    expect(Object.keys(JSON.parse(r.stdout) as object)).toEqual(['medianNs', 'minNs', 'batches', 'per']);
    expect(r.lanes.lanes).toBe(1);
    expect(r.lanes.requests).toBeGreaterThanOrEqual(150); // 3 batches of 50 and the setup
    expect(r.lanes.rings).toBe(r.lanes.requests);
    expect(r.lanes.wakes).toBeGreaterThan(0);
    const polled = await run([bin('round_trip'), '2', '50']);
    expect(polled.status).toBe(0);
    expect(polled.lanes.requests).toBe(r.lanes.requests);
  });
});

describe('a lane through the wire format alone', () => {
  /** A connection to a server, with its bytes as they come. */
  async function connect(path: string): Promise<{ s: Socket; got: () => Buffer; closed: Promise<void> }> {
    const s = createConnection(path);
    await new Promise<void>((resolve) => s.once('connect', () => resolve()));
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    return { s, got: () => buf, closed };
  }
  const frame = (op: number, kfd = -1): Buffer => encodeRequest({ op, kfd, request: 0, tid: 1, arg: 0n, pointer: false, argBytes: new Uint8Array(0), regions: [] });
  const until = async (f: () => boolean): Promise<void> => {
    for (let i = 0; i < 500 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
  };

  test('a malformed frame in a lane drops that connection only; the lane file goes with it', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvmsr-lane-'));
    const session = new RunSession({ dir: d, profile });
    const server = new RunServer(session, () => undefined, { laneDir: d, spinUs: 0 });
    const sock = join(d, 'sock');
    await server.listen(sock);
    try {
      const bad = await connect(sock);
      const good = await connect(sock);
      bad.s.write(frame(OP_LANE));
      await until(() => bad.got().length >= RESP_HEADER);
      const resp = bad.got();
      expect(resp.readInt32LE(8)).toBe(0);
      const path = resp.subarray(RESP_HEADER, RESP_HEADER + resp.readUInt32LE(20)).toString('utf8');
      expect(existsSync(path)).toBe(true);
      // A frame whose magic is wrong, marked as waiting, and the ring that says so.
      const fd = openSync(path, 'r+');
      writeSync(fd, Buffer.from('not a kvmsr frame at all, but long enough for a header..'), 0, 56, 4096);
      const state = Buffer.alloc(4);
      state.writeUInt32LE(1);
      writeSync(fd, state, 0, 4, 4096 - 8);
      closeSync(fd);
      bad.s.write(frame(OP_RING));
      await bad.closed;
      expect(server.dropped).toBe(1);
      expect(existsSync(path)).toBe(false);
      // The other connection is served as before, through the socket.
      good.s.write(frame(OP_IOCTL, 99));
      await until(() => good.got().length >= RESP_HEADER);
      expect(good.got().readInt32LE(8)).toBe(-9); // EBADF: no such kvmsr fd
      good.s.destroy();
    } finally {
      await server.close();
      session.close();
    }
  });

  test('a ring on a connection without a lane is malformed', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvmsr-lane-'));
    const session = new RunSession({ dir: d, profile });
    const server = new RunServer(session, () => undefined, { laneDir: d });
    await server.listen(join(d, 'sock'));
    try {
      const c = await connect(join(d, 'sock'));
      c.s.write(frame(OP_RING));
      await c.closed;
      expect(server.dropped).toBe(1);
    } finally {
      await server.close();
      session.close();
    }
  });
});
