// `kvmsr run`: C programs of our own run with the preload library, their /dev/kvm answered by kvmsr
// in this process. None needs /dev/kvm, and none may reach one: test 4 puts a second preload library
// between kvmsr's and libc that logs every open kvmsr passes on.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { decodeMsrList, decodeMsrs, encodeMsrs } from '../src/abi/codecs.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { RECORDED_IOCTL_NAMES } from '../src/capture/extents.js';
import { parseCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { checkCaptures } from '../src/check/check.js';
import type { GuestMsrResult } from '../src/kvm/x86/guest-msr.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { builtinProfile } from '../src/profiles.js';
import { preloadLibrary } from '../src/run/preload-lib.js';
import { runUnderKvmsr, type RunOptions } from '../src/run/run-command.js';

const cc = spawnSync('cc', ['--version']).status === 0;
const why = cc ? '' : 'no C compiler (cc) to build the preload library and the test programs';
if (why) console.warn(`kvmsr run: skipped: ${why}`);

const PROFILE = 'pvm-amd-epyc-6.18.44-v669';
const profile = (): HostProfile => builtinProfile(PROFILE);
const hex = (v: number | bigint): string => '0x' + v.toString(16);

interface Built {
  dir: string;
  lib: string;
  bin: (name: string) => string;
  sentinel: string;
}

function build(): Built {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-run-test-'));
  const lib = preloadLibrary();
  const src = (n: string): string => join(__dirname, 'c', `${n}.c`);
  for (const n of ['run-basic', 'run-threads', 'run-opens', 'run-malformed', 'run-exit', 'run-fork']) {
    execFileSync('cc', ['-O1', '-Wall', '-o', join(dir, n), src(n), '-lpthread']);
  }
  const sentinel = join(dir, 'sentinel.so');
  execFileSync('cc', ['-shared', '-fPIC', '-O1', '-o', sentinel, src('run-open-sentinel'), '-ldl']);
  return { dir, lib, bin: (n) => join(dir, n), sentinel };
}

async function run(command: string[], opts: RunOptions = {}): Promise<Awaited<ReturnType<typeof runUnderKvmsr>> & { log: string[] }> {
  const log: string[] = [];
  const r = await runUnderKvmsr(command, { profile: profile(), stdio: 'pipe', log: (l) => log.push(l), ...opts });
  return { ...r, log };
}

/**
 * What test/c/run-basic.c must print: its ioctls asked of kvmsr's TypeScript API in the same order
 * and formatted as the program formats them; its file operations as the kernel answers them for a
 * KVM fd (anon inodes with no poll and no mmap of their own).
 */
function expectedBasic(p: HostProfile): string {
  const kvm = new Kvm({ profile: p });
  const out: string[] = [];
  const res = (r: number): string => (r < 0 ? `ret -1 errno ${-r}` : `ret ${r} errno 0`);
  const msrs = (what: string, r: number, buf: Uint8Array): void => {
    out.push(`${what} ${res(r)}:` + decodeMsrs(buf).entries.map((e) => ` ${hex(e.index)}=${hex(e.data)}`).join(''));
  };
  const sys = kvm.open('/dev/kvm');
  out.push('open ok');
  out.push(`api ${kvm.ioctl(sys, I.KVM_GET_API_VERSION, 0)}`);
  out.push(`check_extension 188 = ${kvm.ioctl(sys, I.KVM_CHECK_EXTENSION, 188)}`);
  const vm = kvm.ioctl(sys, I.KVM_CREATE_VM, 0);
  out.push(`create_vm ${vm >= 0 ? 'ok' : vm}`);
  const vcpu = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
  out.push(`create_vcpu ${vcpu >= 0 ? 'ok' : vcpu}`);
  out.push(`mmap_size ${kvm.ioctl(sys, I.KVM_GET_VCPU_MMAP_SIZE, 0)}`);
  const page = kvm.runPage(vcpu)!;
  out.push(`mmap ok exit_reason ${new DataView(page.buffer, page.byteOffset).getUint32(8, true)}`);
  for (const [req, what] of [
    [I.KVM_GET_MSR_INDEX_LIST, 'index_list'],
    [I.KVM_GET_MSR_FEATURE_INDEX_LIST, 'feature_list'],
  ] as const) {
    const buf = new Uint8Array(4 + 4 * 1024);
    const dv = new DataView(buf.buffer);
    const probe = kvm.ioctl(sys, req, buf);
    out.push(`${what} probe ${res(probe)} nmsrs ${dv.getUint32(0, true)}`);
    dv.setUint32(0, 1024, true);
    const r = kvm.ioctl(sys, req, buf);
    const l = decodeMsrList(buf.subarray(0, 4 + 4 * Math.min(1024, dv.getUint32(0, true))));
    out.push(`${what} ret ${r} nmsrs ${l.nmsrs}:` + l.indices.map((i) => ` ${hex(i)}`).join(''));
  }
  const zeros = (idx: number[]): Uint8Array => encodeMsrs(idx.map((index) => ({ index, data: 0n })));
  const f = zeros([0x10a, 0x345, 0xc0011029]);
  msrs('feature_msrs', kvm.ioctl(sys, I.KVM_GET_MSRS, f), f);
  const get = [0x174, 0x277, 0xc0000080, 0xc0000081, 0x1a0, 0x12345678, 0xc0000082];
  let g = zeros(get);
  msrs('get_msrs', kvm.ioctl(vcpu, I.KVM_GET_MSRS, g), g);
  const s = encodeMsrs([
    { index: 0xc0000082, data: 0x7f0000001234n },
    { index: 0xc0000081, data: 0x0023001000000000n },
    { index: 0x12345678, data: 1n },
    { index: 0x174, data: 0x10n },
  ]);
  msrs('set_msrs', kvm.ioctl(vcpu, I.KVM_SET_MSRS, s), s);
  g = zeros(get);
  msrs('get_msrs', kvm.ioctl(vcpu, I.KVM_GET_MSRS, g), g);
  out.push(`run ${res(kvm.ioctl(vcpu, I.KVM_RUN, 0))}`);
  out.push('dup ok', 'close vcpu 0');
  let l = zeros([0xc0000082]);
  msrs('get_msrs via dup', kvm.ioctl(vcpu, I.KVM_GET_MSRS, l), l);
  // anon_inode_getfile keeps only O_ACCMODE | O_NONBLOCK of O_RDWR | O_CLOEXEC; dup clears FD_CLOEXEC.
  out.push('fcntl F_GETFL vcpu 0x2 vm 0x2', 'fcntl F_GETFD dup 0x0', 'F_DUPFD_CLOEXEC ok F_GETFD 0x1');
  l = zeros([0xc0000082]);
  msrs('get_msrs via F_DUPFD_CLOEXEC', kvm.ioctl(vcpu, I.KVM_GET_MSRS, l), l);
  out.push('close F_DUPFD_CLOEXEC 0');
  // kvm_vcpu_fops has no .poll: vfs_poll gives DEFAULT_POLLMASK (POLLIN | POLLOUT here).
  out.push('poll ret 1 revents 0x5', 'select ret 2', 'close dup 0');
  out.push('ioctl after close ret -1 errno 9', 'close vm 0 close sys 0');
  return out.join('\n') + '\n';
}

describe.skipIf(why !== '')(`kvmsr run${why ? ` (skipped: ${why})` : ''}`, () => {
  let b: Built;
  beforeAll(() => {
    b = build();
  });

  test('1. a small VMM sees what kvmsr\'s own API answers, and its fds behave as files', async () => {
    const r = await run([b.bin('run-basic')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(expectedBasic(profile()));
    // Nothing unmodelled: KVM_RUN (without an in-kernel LAPIC) returns the guest's halt, KVM_EXIT_HLT.
    expect(r.log).toEqual([]);
  });

  test('2. two threads, each with its own vCPU, 10,000 KVM_SET_MSRS + KVM_GET_MSRS each: all right', async () => {
    const t0 = performance.now();
    const r = await run([b.bin('run-threads'), '2', '10000']);
    const ms = performance.now() - t0;
    expect(r.stdout).toBe('thread 0 ok 10000 bad 0\nthread 1 ok 10000 bad 0\n');
    expect(r.status).toBe(0);
    // open, CREATE_VM, 2 x CREATE_VCPU, 2 x 20,000 MSR ioctls, 2 closes.
    expect(r.requests).toBe(40006);
    console.log(`kvmsr run: 40,006 requests from two threads in ${Math.round(ms)} ms (${Math.round((ms * 1000) / 40006)} µs per ioctl)`);
  }, 120_000);

  test('3. --record writes a capture that kvmsr check reads and kvmsr replay replays with 0 divergences', async () => {
    const file = join(b.dir, 'basic.jsonl');
    const r = await run([b.bin('run-basic')], { record: file });
    expect(r.status).toBe(0);
    const c = parseCapture(readFileSync(file, 'utf8'), file);
    expect(c.error).toBeUndefined();
    expect(c.header.recorder).toContain(' run ');
    expect((c.header.profile as { host: { vendorModule: string } }).host.vendorModule).toBe('kvm_pvm');
    const ioctls = c.records.filter((x) => x.op !== 'close');
    // KVM_CREATE_VM, KVM_CREATE_VCPU, 2 + 2 list ioctls, 1 feature and 5 vCPU KVM_GET/SET_MSRS, KVM_RUN.
    expect(ioctls.map((x) => x.name)).toEqual([
      'KVM_CREATE_VM',
      'KVM_CREATE_VCPU',
      'KVM_GET_MSR_INDEX_LIST',
      'KVM_GET_MSR_INDEX_LIST',
      'KVM_GET_MSR_FEATURE_INDEX_LIST',
      'KVM_GET_MSR_FEATURE_INDEX_LIST',
      'KVM_GET_MSRS',
      'KVM_GET_MSRS',
      'KVM_SET_MSRS',
      'KVM_GET_MSRS',
      'KVM_RUN',
      'KVM_GET_MSRS',
      'KVM_GET_MSRS',
    ]);
    expect(c.records.filter((x) => x.op === 'close')).toHaveLength(3); // the vCPU once, when its last fd went
    expect(new Set(c.records.map((x) => x.tid)).size).toBe(1);
    expect(c.records[0]!.tid).toBeGreaterThan(0);
    // The thread is put into each line ahead of its timestamp; the header keeps the recorded list.
    expect(c.records.every((x) => x.tid === c.records[0]!.tid && Number.isSafeInteger(x.monoUs))).toBe(true);
    expect(c.header.recorded).toEqual([...RECORDED_IOCTL_NAMES]);
    const rep = replay(c, { continueOnDivergence: true });
    expect(rep.divergences).toEqual([]);
    expect(rep.msrIoctls).toBe(10);
    // kvmsr check reads it: the program's deliberate stops at 0x12345678 are its partial findings.
    const chk = checkCaptures(c);
    expect(chk.findings.filter((x) => x.kind === 'partial').map((x) => x.message.match(/stopped at (0x[0-9a-f]+)/)![1])).toEqual([
      '0xc0011029',
      '0x12345678',
      '0x12345678',
      '0x12345678',
    ]);

    // From two threads: each record carries its thread, and the capture replays.
    const tfile = join(b.dir, 'threads.jsonl');
    const t = await run([b.bin('run-threads'), '2', '300'], { record: tfile });
    expect(t.status).toBe(0);
    const tc = parseCapture(readFileSync(tfile, 'utf8'), tfile);
    expect(new Set(tc.records.filter((x) => x.name === 'KVM_SET_MSRS').map((x) => x.tid)).size).toBe(2);
    expect(replay(tc, { continueOnDivergence: true }).divergences).toEqual([]);
  });

  test('4. every way of naming /dev/kvm is answered by kvmsr; no open of it reaches libc', async () => {
    const log = join(b.dir, 'opens.log');
    const link = join(b.dir, 'kvm-link');
    const devLink = join(b.dir, 'dev-link');
    symlinkSync('/dev/kvm', link); // dangling here: there is no /dev/kvm
    symlinkSync('/dev', devLink);
    const paths = [link, `${devLink}/kvm`, `${devLink}/../dev/kvm`, `${devLink}/nothing`];
    const r = await run([b.bin('run-opens'), ...paths], {
      env: { ...process.env, LD_PRELOAD: b.sentinel, KVMSR_SENTINEL_LOG: log },
    });
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const kvmOpens = lines.filter((l) => l.endsWith(': api 12'));
    expect(kvmOpens.map((l) => l.slice(0, -': api 12'.length))).toEqual([
      'open',
      'open64',
      'openat AT_FDCWD',
      'openat /dev fd',
      'openat64 /dev fd',
      '__open_2',
      '__open64_2',
      '__openat_2',
      '__openat64_2',
      '//dev/./kvm',
      '/dev/../dev/kvm',
      link,
      `${devLink}/kvm`,
      `${devLink}/../dev/kvm`,
      'relative after chdir',
    ]);
    expect(lines).toContain(`${devLink}/nothing: open failed errno 2`); // not KVM: libc's answer
    expect(lines).toContain('O_CREAT|O_EXCL: open failed errno 17'); // the device exists
    expect(lines).toContain('ordinary openat ok');
    // What reached libc (through the sentinel): kvmsr's /dev/null for each KVM fd it handed out, and
    // the program's own non-KVM opens. Resolved as the kernel would, none is /dev/kvm.
    const reached = readFileSync(log, 'utf8').trimEnd().split('\n').map((l) => l.split('\t') as [string, string]);
    const named = reached.map(([d, p]) => (d ? `${d}/${p}` : p));
    expect(named.filter((p) => p === '/dev/null')).toHaveLength(kvmOpens.length);
    expect(named.filter((p) => p !== '/dev/null')).toEqual(['/dev', `${devLink}/nothing`, '/proc/self', expect.stringMatching(/^\/proc\/\d+\/status$/), '/etc/hostname']);
    for (const p of named) expect(resolve(p.replace(devLink, '/dev'))).not.toBe('/dev/kvm');
  });

  test('5. malformed requests get the kernel\'s errnos and never stop the server', async () => {
    const r = await run([b.bin('run-malformed')]);
    expect(r.status).toBe(0);
    const kvm = new Kvm({ profile: profile() });
    const v = kvm.ioctl(kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0), I.KVM_CREATE_VCPU, 0);
    const unknown = -kvm.ioctl(v, 0xdeadbeef, new Uint8Array(64));
    const pat = encodeMsrs([{ index: 0x277, data: 0n }]);
    kvm.ioctl(v, I.KVM_GET_MSRS, pat);
    expect(r.stdout).toBe(
      [
        'GET_MSRS nmsrs 0xffffffff, 8-byte buffer: ret -1 errno 7', // msr_io: nmsrs >= MAX_IO_MSRS
        'GET_MSRS nmsrs 200, room for 1: ret -1 errno 14', // memdup_user of the entries faults
        'SET_MSRS nmsrs 1 at the end of the page: ret 1 errno 0',
        'GET_MSRS NULL: ret -1 errno 14',
        'SET_MSRS unreadable: ret -1 errno 14',
        'GET_MSRS non-canonical pointer: ret -1 errno 14',
        'GET_MSRS nmsrs 300 on /dev/kvm: ret -1 errno 7',
        `GET_MSR_INDEX_LIST nmsrs 1000, room for 1: ret -1 errno 14 nmsrs ${kvm.profile.msrIndexList.length}`, // the count is written first
        'SET_MSR_FILTER bitmap unreadable: ret -1 errno 14', // kvm_add_msr_filter's memdup_user
        'SET_MSR_FILTER bitmap NULL: ret -1 errno 14',
        'SET_MSR_FILTER bitmap half readable: ret -1 errno 14',
        'SET_CPUID2 nent 0xffffffff: ret -1 errno 7', // nent > KVM_MAX_CPUID_ENTRIES
        'SET_CPUID2 nent 3, room for 0: ret -1 errno 14',
        `request 0xdeadbeef: ret -1 errno ${unknown}`, // kvm_vcpu_ioctl: not KVMIO
        'KVMIO nr 0xff, _IOC_SIZE 16383: ret -1 errno 22',
        `GET_MSRS PAT afterwards: ret 1 ${hex(decodeMsrs(pat).entries[0]!.data)}`,
      ].join('\n') + '\n',
    );
    expect(r.dropped).toBe(0);
  });

  test('6. the kvm_run page is shared: exits kvmsr writes are seen, answers the program writes are read', async () => {
    let runs = 0;
    const guest: (GuestMsrResult | null)[] = [];
    const r = await run([b.bin('run-exit')], {
      // kvmsr runs no guest code: the test is the guest, doing a WRMSR then a RDMSR of SYSENTER_CS.
      onVcpuIoctl: (kvm, fd, req, phase) => {
        if (req !== I.KVM_RUN) return;
        if (phase === 'before') {
          if (runs > 0) guest.push(kvm.completeMsrExit(fd));
          return;
        }
        runs++;
        if (runs === 1) guest.push(kvm.wrmsr(fd, 0x174, 0x1234n));
        if (runs === 2) guest.push(kvm.rdmsr(fd, 0x174));
      },
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      [
        'enable_cap user_space_msr: ret 0',
        'set_msr_filter: ret 0 errno 0',
        'run 1: ret 0 errno 0 exit_reason 30 msr reason 4 index 0x174 data 0x1234', // KVM_EXIT_X86_WRMSR, KVM_MSR_EXIT_REASON_FILTER
        'run 2: ret 0 errno 0 exit_reason 29 msr reason 4 index 0x174 data 0x0', // KVM_EXIT_X86_RDMSR
        // The RDMSR retired with 0xabcd; then the guest halts, and without an in-kernel LAPIC a
        // halt is userspace's: KVM_EXIT_HLT.
        'run 3: ret 0 errno 0 exit_reason 5',
      ].join('\n') + '\n',
    );
    expect(guest).toEqual([
      { kind: 'exit', exitReason: 30, reason: 4, index: 0x174, data: 0x1234n },
      { kind: 'gp' }, // the program wrote run->msr.error = 1
      { kind: 'exit', exitReason: 29, reason: 4, index: 0x174, data: 0n },
      { kind: 'ok', value: 0xabcdn }, // and here run->msr.data
    ]);
  });

  test('7. a forked child: EIO on the inherited VM and vCPU, /dev/kvm its own, its close leaves the parent\'s vCPU', async () => {
    const r = await run([b.bin('run-fork')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      [
        'parent set ret 1',
        'child vcpu GET_MSRS ret -1 errno 5', // kvm_vcpu_ioctl: vcpu->kvm->mm != current->mm
        'child vm CREATE_VCPU ret -1 errno 5', // kvm_vm_ioctl: kvm->mm != current->mm
        'child sys API_VERSION 12',
        'child own vcpu GET_MSRS ret 1 0x0',
        'child close inherited vcpu 0',
        'parent after child GET_MSRS ret 1 0x7f00000000aa',
      ].join('\n') + '\n',
    );
  });

  // The command line, through the built bin (npm run build): run in a child process, its status is
  // the command's; main() itself returns before the command ends.
  const bin = join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
  const root = join(__dirname, '..');
  const sources = ['src/cli/main.ts', 'src/cli/run.ts', ...readdirSync(join(root, 'src', 'run')).map((f) => `src/run/${f}`)];
  const fresh = sources.every((f) => {
    const js = join(root, 'dist', f.replace(/\.ts$/, '.js'));
    return existsSync(js) && statSync(js).mtimeMs >= statSync(join(root, f)).mtimeMs;
  });
  const whyCli = fresh ? '' : 'dist/ is not built or is older than src/run (npm run build)';
  if (whyCli) console.warn(`kvmsr run CLI: skipped: ${whyCli}`);
  test.skipIf(!fresh)(`the CLI: status, --profile, --record, then kvmsr replay and check${whyCli ? ` (skipped: ${whyCli})` : ''}`, () => {
    const cli = (args: string[]): { status: number | null; out: string; err: string } => {
      const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
      return { status: r.status, out: r.stdout, err: r.stderr };
    };
    expect(cli(['run', '--', 'sh', '-c', 'exit 7']).status).toBe(7);
    expect(cli(['run', '--', 'sh', '-c', 'kill -TERM $$']).status).toBe(128 + 15);
    const bad = cli(['run', '--profile', 'builtin:nope', '--', 'true']);
    expect(bad.status).toBe(2);
    expect(bad.err).toContain("no built-in profile 'nope'");
    const missing = cli(['run', '--', join(b.dir, 'no-such-program')]);
    expect(missing.status).toBe(2);
    expect(missing.err).toContain('cannot run');
    const file = join(b.dir, 'cli.jsonl');
    const r = cli(['run', '--profile', `builtin:${PROFILE}`, '--record', file, '--', b.bin('run-basic')]);
    expect(r.status).toBe(0);
    expect(r.out).toBe(expectedBasic(profile()));
    expect(r.err).toBe('');
    const traced = cli(['run', '--trace', '--', b.bin('run-basic')]);
    expect(traced.err).toMatch(/^kvmsr run: \[\d+\] system 3: KVM_GET_API_VERSION\(0\) = 12$/m);
    expect(traced.err).toMatch(/vcpu 5: KVM_RUN\(0\) = 0$/m);
    const rep = cli(['replay', file]);
    expect(rep.status).toBe(0);
    expect(rep.out).toContain('OK: 13 ioctls (10 MSR ioctls, 23 entries), 0 divergences');
    const chk = cli(['check', file, '--json']);
    expect(chk.status).toBe(1); // the program's deliberate partial batches are error findings
    expect(JSON.parse(chk.out)).toHaveProperty('findings');
  });
});
