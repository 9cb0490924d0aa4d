// KVM_RUN under `kvmsr run`: a vCPU whose guest is halted and never wakes (src/kvm/vcpu-run.ts, the
// wait in preload/kvmsr-run.c). test/c/run-kvm-run.c runs under kvmsr and, where /dev/kvm exists,
// on the real kernel, with a guest that halts at once so the two must print the same; QEMU 7.2
// runs without -S, stops, migrates, restores, runs again, stops and migrates again. The TypeScript
// API and the wire format are tested without a compiler.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { EFAULT, EINTR, EINVAL } from '../src/abi/errno.js';
import * as I from '../src/abi/kvm-ioctls.js';
import { KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_UNKNOWN, KVM_RUN_LAYOUT } from '../src/abi/layout.js';
import { parseCapture, type ParsedCapture } from '../src/capture/format.js';
import { replay } from '../src/capture/replay.js';
import { checkCaptures } from '../src/check/check.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { HostProfile } from '../src/kvm/profile.js';
import { captureProfile } from '../src/profile/capture.js';
import { defaultProfile } from '../src/profiles.js';
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse, OP_IOCTL, RESP_HEADER } from '../src/run/protocol.js';
import { runUnderKvmsr, type RunResult } from '../src/run/run-command.js';
import { RunSession } from '../src/run/session.js';

const haveCc = spawnSync('cc', ['--version']).status === 0;
const haveKvm = existsSync('/dev/kvm');
const QEMU = '/usr/bin/qemu-system-x86_64';
const haveQemu = existsSync(QEMU);
if (!haveCc) console.warn('KVM_RUN under kvmsr run: the C program is skipped: no C compiler (cc)');
if (!haveKvm) console.warn('KVM_RUN on the real kernel: skipped: this machine has no /dev/kvm');
if (!haveQemu) console.warn(`KVM_RUN with QEMU: skipped: ${QEMU} is not installed (apt-get install qemu-system-x86)`);

const dir = mkdtempSync(join(tmpdir(), 'kvmsr-run-kvm-run-'));

/**
 * What test/c/run-kvm-run.c prints on the real kernel (kvm_pvm 6.18.44 v1272, Intel; the same
 * under kvmsr with that host's profile and with the built-in default profile).
 */
const EXPECTED = `KVM_CAP_IMMEDIATE_EXIT 1
feature MSR found
KVM_RUN arg 1: ret -1 errno 22
immediate: ret -1 errno 4 exit_reason 0x77; not frozen (not run)
immediate post-run: if_flag 0 (RFLAGS.IF 0) cr8 0 (sregs 0, lapic tpr 0) apic_base 0xfee00900 (sregs 0xfee00900) ready_for_interrupt_injection 1 flags 0x0
pending: KVM_SET_SIGNAL_MASK(empty) ret 0 errno 0
pending: ret -1 errno 4 exit_reason 10, handler ran 0 time(s), at once yes; not frozen (not run)
pending: KVM_SET_SIGNAL_MASK(NULL) ret 0 errno 0
pending: handler ran 1 time(s) once the thread unblocked it
kick: ret -1 errno 4 exit_reason 10, handler ran 1 time(s), slept until the signal yes; frozen (has run)
kick: mp_state 3
kick post-run: if_flag 0 (RFLAGS.IF 0) cr8 0 (sregs 0, lapic tpr 0) apic_base 0xfee00900 (sregs 0xfee00900) ready_for_interrupt_injection 1 flags 0x0
after run: KVM_SET_CPUID2 with one entry fewer ret -1 errno 22
sigmask: KVM_SET_SIGNAL_MASK(SIGUSR1) ret 0 errno 0
sigmask: ret -1 errno 4 exit_reason 10; stayed in KVM_RUN through SIGUSR1 yes; SIGUSR2 handled 1, SIGUSR1 handled after 1
IF and TPR set: ret -1 errno 4
IF and TPR set post-run: if_flag 1 (RFLAGS.IF 1) cr8 5 (sregs 5, lapic tpr 5) apic_base 0xfee00900 (sregs 0xfee00900) ready_for_interrupt_injection 1 flags 0x0
ap: mp_state 1
ap immediate: ret -1 errno 4 exit_reason 0x77
ap kick: ret -1 errno 4 exit_reason 0xa, slept until the signal yes; not frozen (not run)
ap: mp_state 1 after
noirqchip: ret 0 errno 0 exit_reason 5; frozen (has run)
noirqchip post-run: if_flag 0 (RFLAGS.IF 0) cr8 3 (sregs 3, lapic tpr -1) apic_base 0xfee00900 (sregs 0xfee00900) ready_for_interrupt_injection 0 flags 0x0
noirqchip: run->cr8 0x10 ret -1 errno 22
KVM_SET_SIGNAL_MASK len 128: ret -1 errno 22
KVM_SET_SIGNAL_MASK bad pointer: ret -1 errno 14
KVM_SET_SIGNAL_MASK set unreadable: ret -1 errno 14
KVM_SET_SIGNAL_MASK len 7, set unreadable: ret -1 errno 22
KVM_SET_SIGNAL_MASK NULL: ret 0 errno 0
KVM_KVMCLOCK_CTRL fresh: ret -1 errno 22
KVM_SYSTEM_TIME_NEW 0x1001: 1
KVM_KVMCLOCK_CTRL: ret 0 errno 0
KVM_SYSTEM_TIME_NEW 0x1ff1 (crosses its page): 1
KVM_KVMCLOCK_CTRL still: ret 0 errno 0
KVM_SYSTEM_TIME_NEW 0x1000: 1
KVM_KVMCLOCK_CTRL disabled: ret -1 errno 22
KVM_SET_GUEST_DEBUG undefined bit: ret 0 errno 0
KVM_SET_GUEST_DEBUG NULL: ret -1 errno 14
KVM_SET_GUEST_DEBUG single-step: ret 0 errno 0, RFLAGS 0x2, after 0x2
KVM_SET_GUEST_DEBUG inject #DB: ret 0 errno 0, exception injected 1 nr 1 pending 1, again ret -1 errno 16, #BP ret -1 errno 16
`;

async function underKvmsr(
  command: string[],
  opts: { profile?: HostProfile; record?: string; spinUs?: number } = {},
): Promise<{ status: number; stdout: string; log: string[]; lanes: RunResult['lanes'] }> {
  const log: string[] = [];
  const r = await runUnderKvmsr(command, {
    profile: opts.profile ?? defaultProfile(),
    ...(opts.record ? { record: opts.record } : {}),
    ...(opts.spinUs !== undefined ? { spinUs: opts.spinUs } : {}),
    stdio: 'pipe',
    log: (l) => log.push(l),
  });
  if (r.stderr) log.push(r.stderr);
  return { status: r.status, stdout: r.stdout ?? '', log, lanes: r.lanes };
}

const capture = (file: string): ParsedCapture => parseCapture(readFileSync(file, 'utf8'), file);

describe.skipIf(!haveCc)('test/c/run-kvm-run.c: KVM_RUN of a halted guest', () => {
  const bin = join(dir, 'run-kvm-run');
  beforeAll(() => {
    execFileSync('cc', ['-O1', '-Wall', '-Werror', '-o', bin, join(import.meta.dirname, 'c', 'run-kvm-run.c'), '-lpthread']);
  });

  test('under kvmsr run: immediate_exit, signals (pending, kicked, masked), post-run fields, the frozen feature MSRs, the AP, no irqchip', async () => {
    const record = join(dir, 'kvm-run.jsonl');
    const r = await underKvmsr([bin], { record });
    expect(r.status, r.log.join('\n')).toBe(0);
    expect(r.stdout).toBe(EXPECTED);
    expect(r.log).toEqual([]);
    // The capture's "has run" markers are the KVM_RUNs that entered a guest: the BSP's kick and the
    // VM without an irqchip; not the immediate exit, the pending signal, nor the AP waiting for INIT.
    const c = capture(record);
    expect(c.records.filter((x) => x.name === 'KVM_RUN').map((x) => [x.vcpuId, x.ret, x.errno])).toEqual([
      [0, -1, EINTR],
      [0, 0, 0],
    ]);
    expect(replay(c, { continueOnDivergence: true }).divergences).toEqual([]);
  }, 60_000);

  test('the same with no polling on either side of the lane (every call rings, every answer wakes its caller)', async () => {
    const r = await underKvmsr([bin], { spinUs: 0 });
    expect(r.status, r.log.join('\n')).toBe(0);
    expect(r.stdout).toBe(EXPECTED);
    expect(r.lanes.rings).toBe(r.lanes.requests);
  }, 60_000);

  test.skipIf(!haveKvm)('on the real kernel it prints the same, and under kvmsr with this host\'s profile too', async () => {
    const real = execFileSync(bin, { encoding: 'utf8', timeout: 30_000 });
    expect(real).toBe(EXPECTED);
    const r = await underKvmsr([bin], { profile: captureProfile() });
    expect(r.status, r.log.join('\n')).toBe(0);
    expect(r.stdout).toBe(real);
  }, 240_000);
});

// QEMU without -S: its vCPU threads sit in KVM_RUN (the BSP halted, the AP waiting for INIT) until
// `stop` kicks them (SIG_IPI, immediate_exit); a second QEMU restores, runs, stops and migrates again.
const QEMU_ARGS = `${QEMU} -accel kvm -nodefaults -nographic -machine pc -m 128 -smp 2 -monitor stdio`;
const save = (state: string): string[] => [
  'sh',
  '-c',
  `{ echo 'info status'; sleep 0.5; printf 'info status\\nstop\\ninfo status\\ninfo registers\\nmigrate "exec:cat > ${state}.part && mv ${state}.part ${state}"\\ninfo migrate\\nquit\\n'; } | ${QEMU_ARGS}`,
];
// As test/run-vmm.test.ts's: `info status` until the incoming migration is over (a quit while QEMU
// loads the stream makes QEMU 7.2 abort), then cont, stop and the second migration.
const load = (state: string, again: string): string[] => [
  'sh',
  '-c',
  `mon=${state}.monitor; : > $mon; { i=0; while [ $i -lt 600 ]; do echo 'info status'; sleep 0.1; ` +
    `last=$(grep 'VM status' $mon | tail -n 1); case "$last" in ''|*inmigrate*) ;; *) break ;; esac; i=$((i+1)); done; ` +
    `printf 'cont\\ninfo status\\n'; sleep 0.5; printf 'stop\\ninfo status\\ninfo registers\\nmigrate "exec:cat > ${again}.part && mv ${again}.part ${again}"\\ninfo migrate\\nquit\\n'; } ` +
    `| ${QEMU_ARGS} -incoming "exec:cat ${state}" > $mon; s=$?; cat $mon; exit $s`,
];
async function waitFor(file: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
}

describe.skipIf(!haveQemu)('QEMU 7.2 without -S under kvmsr run --record', () => {
  let saveOut = '';
  let loadOut = '';
  let saveCap: ParsedCapture;
  let loadCap: ParsedCapture;
  const state = join(dir, 'qemu-run.state');
  const again = join(dir, 'qemu-run-again.state');
  beforeAll(async () => {
    const s = await underKvmsr(save(state), { record: join(dir, 'qemu-run-save.jsonl') });
    expect(s.status, s.log.join('\n')).toBe(0);
    saveOut = s.stdout;
    await waitFor(state);
    const l = await underKvmsr(load(state, again), { record: join(dir, 'qemu-run-load.jsonl') });
    expect(l.status, l.log.join('\n')).toBe(0);
    loadOut = l.stdout;
    await waitFor(again);
    saveCap = capture(join(dir, 'qemu-run-save.jsonl'));
    loadCap = capture(join(dir, 'qemu-run-load.jsonl'));
  }, 180_000);

  test('it runs (not "paused (internal-error)"), stops, migrates; the restore runs, stops and migrates again', () => {
    const statuses = (out: string): string[] => [...out.matchAll(/VM status: ([^\r\n]*)/g)].map((m) => m[1]!.trim());
    expect(statuses(saveOut)).toEqual(['running', 'running', 'paused']);
    expect(saveOut).not.toContain('internal-error');
    expect(saveOut).toContain('Migration status: completed');
    // The BSP halted (KVM_GET_MP_STATE says KVM_MP_STATE_HALTED), and no guest instruction ran.
    expect(saveOut).toMatch(/EIP=0000fff0 EFL=00000002 .*HLT=1/);
    const after = statuses(loadOut).filter((x) => !x.includes('inmigrate'));
    expect(after.slice(-3)).toEqual(['paused', 'running', 'paused']);
    expect(loadOut).not.toContain('internal-error');
    expect(loadOut).toContain('Migration status: completed');
    expect(existsSync(again)).toBe(true);
  });

  test('kvmsr check on the pair: no error', () => {
    const r = checkCaptures(saveCap, loadCap);
    expect(r.findings.filter((f) => f.severity === 'error')).toEqual([]);
    // The save's BSP entered its guest (the "has run" marker); its AP, waiting for INIT, never did.
    // The restored BSP is halted, so its KVM_RUN entered no guest either: no marker in the restore.
    expect(saveCap.records.filter((x) => x.name === 'KVM_RUN').map((x) => x.vcpuId)).toEqual([0]);
    expect(loadCap.records.filter((x) => x.name === 'KVM_RUN')).toEqual([]);
    expect(replay(saveCap, { continueOnDivergence: true }).divergences).toEqual([]);
    expect(replay(loadCap, { continueOnDivergence: true }).divergences).toEqual([]);
  });
});

describe('KVM_RUN through the TypeScript API (no thread to wait: a signal comes at once)', () => {
  const machine = (irqchip: boolean): { kvm: Kvm; vcpu: number; run: DataView } => {
    const kvm = new Kvm();
    const vm = kvm.ioctl(kvm.open('/dev/kvm'), I.KVM_CREATE_VM, 0);
    if (irqchip) kvm.ioctl(vm, I.KVM_CREATE_IRQCHIP, 0);
    const vcpu = kvm.ioctl(vm, I.KVM_CREATE_VCPU, 0);
    const page = kvm.runPage(vcpu)!;
    return { kvm, vcpu, run: new DataView(page.buffer, page.byteOffset, page.byteLength) };
  };

  test('immediate_exit: -EINTR, exit_reason untouched, not run; otherwise KVM_EXIT_INTR after the halt, run', () => {
    const { kvm, vcpu, run } = machine(true);
    run.setUint32(KVM_RUN_LAYOUT.exitReason, 0x77, true);
    run.setUint8(KVM_RUN_LAYOUT.immediateExit, 1);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(run.getUint32(KVM_RUN_LAYOUT.exitReason, true)).toBe(0x77);
    expect(kvm.vcpuOf(vcpu)!.hasRun).toBe(false);
    run.setUint8(KVM_RUN_LAYOUT.immediateExit, 0);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(run.getUint32(KVM_RUN_LAYOUT.exitReason, true)).toBe(KVM_EXIT_INTR);
    expect(kvm.vcpuOf(vcpu)!.hasRun).toBe(true);
    expect(run.getUint8(KVM_RUN_LAYOUT.readyForInterruptInjection)).toBe(1); // pic_in_kernel
    expect(run.getBigUint64(KVM_RUN_LAYOUT.apicBase, true)).toBe(0xfee00900n);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 1)).toBe(-EINVAL);
  });

  test('with the thread\'s signals (kvmsr run): the wait, its mask, and a signal already pending', () => {
    const { kvm, vcpu, run } = machine(true);
    kvm.runSignals = { blocked: 1n << 9n, pending: 0n }; // SIGUSR1 blocked by the thread
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(kvm.runWait).toBe(1n << 9n); // no KVM_SET_SIGNAL_MASK: the thread's own mask
    expect(run.getUint32(KVM_RUN_LAYOUT.exitReason, true)).toBe(KVM_EXIT_UNKNOWN); // the library writes KVM_EXIT_INTR
    const mask = new Uint8Array(12);
    new DataView(mask.buffer).setUint32(0, 8, true);
    new DataView(mask.buffer).setBigUint64(4, 0xffffffffffffffffn, true);
    expect(kvm.ioctl(vcpu, I.KVM_SET_SIGNAL_MASK, mask)).toBe(0);
    expect(kvm.vcpuOf(vcpu)!.sigmask).toBe(0xfffffffffffbfeffn); // never SIGKILL nor SIGSTOP
    kvm.runSignals = { blocked: 0n, pending: 1n << 9n };
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(kvm.runWait).toBe(0xfffffffffffbfeffn); // SIGUSR1 pending, but the vCPU's mask blocks it
    expect(kvm.ioctl(vcpu, I.KVM_SET_SIGNAL_MASK, 0)).toBe(0);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(kvm.runWait).toBeNull(); // pending and not blocked: at once
    expect(run.getUint32(KVM_RUN_LAYOUT.exitReason, true)).toBe(KVM_EXIT_INTR);
    new DataView(mask.buffer).setUint32(0, 16, true);
    expect(kvm.ioctl(vcpu, I.KVM_SET_SIGNAL_MASK, mask)).toBe(-EINVAL);
    expect(kvm.ioctl(vcpu, I.KVM_SET_SIGNAL_MASK, mask.subarray(0, 2))).toBe(-EFAULT);
  });

  test('without an in-kernel LAPIC the halt is userspace\'s (KVM_EXIT_HLT); run->cr8 is taken, reserved bits refused', () => {
    const { kvm, vcpu, run } = machine(false);
    run.setBigUint64(KVM_RUN_LAYOUT.cr8, 7n, true);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(0);
    expect(run.getUint32(KVM_RUN_LAYOUT.exitReason, true)).toBe(KVM_EXIT_HLT);
    const sregs = new Uint8Array(312);
    expect(kvm.ioctl(vcpu, I.KVM_GET_SREGS, sregs)).toBe(0);
    expect(new DataView(sregs.buffer).getBigUint64(256, true)).toBe(7n);
    run.setBigUint64(KVM_RUN_LAYOUT.cr8, 16n, true);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINVAL);
  });

  test('sync regs: kvm_valid_regs filled on return, kvm_dirty_regs taken before, unknown bits EINVAL', () => {
    const { kvm, vcpu, run } = machine(true);
    run.setUint8(KVM_RUN_LAYOUT.immediateExit, 1);
    run.setBigUint64(KVM_RUN_LAYOUT.kvmValidRegs, 8n, true);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINVAL);
    run.setBigUint64(KVM_RUN_LAYOUT.kvmValidRegs, 1n, true);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(run.getBigUint64(KVM_RUN_LAYOUT.syncRegs + 128, true)).toBe(0xfff0n); // rip
    run.setBigUint64(KVM_RUN_LAYOUT.syncRegs + 128, 0x1234n, true);
    run.setBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, 1n, true);
    expect(kvm.ioctl(vcpu, I.KVM_RUN, 0)).toBe(-EINTR);
    expect(run.getBigUint64(KVM_RUN_LAYOUT.kvmDirtyRegs, true)).toBe(0n);
    const regs = new Uint8Array(144);
    kvm.ioctl(vcpu, I.KVM_GET_REGS, regs);
    expect(new DataView(regs.buffer).getBigUint64(128, true)).toBe(0x1234n);
  });
});

describe('the wire format of a KVM_RUN that waits', () => {
  test('the request carries the thread\'s signals; the response says to wait, and under which mask', () => {
    const q = { op: OP_IOCTL, kfd: 5, request: I.KVM_RUN, tid: 7, arg: 0n, pointer: false, argBytes: new Uint8Array(0), regions: [], signals: { blocked: 0x200n, pending: 0x400n } };
    const d = decodeRequest(encodeRequest(q));
    expect({ ...d, argBytes: [...d.argBytes] }).toEqual({ ...q, argBytes: [] });
    expect(decodeRequest(encodeRequest({ ...q, signals: undefined })).signals).toBeUndefined();
    const r = encodeResponse({ ret: -EINTR, argBytes: new Uint8Array(0), regions: [], path: '', newKind: 0, wait: 0xfffffffffffbfeffn });
    expect(r.length).toBe(RESP_HEADER + 8);
    expect(decodeResponse(r, [])).toMatchObject({ ret: -EINTR, regions: [], path: '', newKind: 0, wait: 0xfffffffffffbfeffn });
    expect(decodeResponse(encodeResponse({ ret: 0, argBytes: new Uint8Array(0), regions: [], path: '', newKind: 0 }), []).wait).toBeUndefined();
  });

  test('the session: the vCPU sleeps under the thread\'s mask; the server answers at once', () => {
    const s = new RunSession({ dir: mkdtempSync(join(tmpdir(), 'kvmsr-run-wait-')), log: () => undefined });
    const req = (kfd: number, request: number, extra: object = {}) => s.handle({ op: OP_IOCTL, kfd, request, tid: 1, arg: 0n, pointer: false, argBytes: new Uint8Array(0), regions: [], ...extra });
    const sys = s.handle({ op: 1, kfd: -1, request: 0, tid: 1, arg: 0n, pointer: false, argBytes: new Uint8Array(0), regions: [] }).ret;
    const vm = req(sys, I.KVM_CREATE_VM).ret;
    expect(req(vm, I.KVM_CREATE_IRQCHIP).ret).toBe(0);
    const vcpu = req(vm, I.KVM_CREATE_VCPU).ret;
    const r = req(vcpu, I.KVM_RUN, { signals: { blocked: 0x1234n, pending: 0n } });
    expect(r.ret).toBe(-EINTR);
    expect(r.wait).toBe(0x1234n);
    expect(s.kvm.runSignals).toBeNull();
    s.close();
  });
});
