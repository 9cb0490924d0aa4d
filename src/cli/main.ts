#!/usr/bin/env node
// The kvmsr command line: list, get, decode, profile capture.
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SingleBar, Presets } from 'cli-progress';
import { decodeMsrList, decodeMsrs, encodeMsrList, encodeMsrs } from '../abi/codecs.js';
import { errnoName } from '../abi/errno.js';
import { recordCommand } from '../capture/recorder-lib.js';
import { embedProfile } from '../capture/embed-profile.js';
import { profileForCapture, replay } from '../capture/replay.js';
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel, msrName, parseMsr } from '../abi/msr-names.js';
import { Kvm } from '../kvm/kvm.js';
import { loadRealKvm, realKvmStatus } from '../native/real-kvm.js';
import { captureProfile } from '../profile/capture.js';
import { KVMSR_VERSION } from '../version.js';
import { CliError, print } from './common.js';
import { registerCheck } from './check.js';
import { registerConform } from './conform.js';
import { readCapture } from './read-capture.js';
import { registerHarvest } from './harvest.js';
import { registerRun } from './run.js';
import { registerProfile } from './profile.js';
import { KERNEL_HELP, loadProfile, PROFILE_HELP, profileFromOptions } from './profile-option.js';

const hex = (v: number | bigint): string => '0x' + v.toString(16);

function cmdList(opts: { json?: boolean; profile?: string; kernel?: string }): void {
  const kvm = new Kvm({ profile: profileFromOptions(opts) ?? loadProfile(undefined) });
  const sys = kvm.open('/dev/kvm');
  const read = (req: number): number[] => {
    const probe = encodeMsrList(0);
    kvm.ioctl(sys, req, probe);
    const buf = encodeMsrList(decodeMsrList(probe).nmsrs);
    kvm.ioctlOrThrow(sys, req, buf);
    return decodeMsrList(buf).indices;
  };
  const list = read(I.KVM_GET_MSR_INDEX_LIST);
  const features = read(I.KVM_GET_MSR_FEATURE_INDEX_LIST);
  const fbuf = encodeMsrs(features.map((index) => ({ index, data: 0n })));
  const got = kvm.ioctl(sys, I.KVM_GET_MSRS, fbuf);
  const fvals = decodeMsrs(fbuf).entries;
  const named = (i: number): { index: string; name: string | null } => ({ index: hex(i), name: msrName(i) ?? null });
  print(
    !!opts.json,
    {
      profile: kvm.profile.host,
      msrIndexList: list.map(named),
      featureMsrs: features.map((i, n) => ({ ...named(i), value: n < got ? hex(fvals[n]!.data) : null })),
    },
    () =>
      [
        `KVM_GET_MSR_INDEX_LIST: ${list.length} MSRs (${kvm.profile.host.vendorModule}, ${kvm.profile.host.kernel})`,
        ...list.map((i) => '  ' + msrLabel(i)),
        `KVM_GET_MSR_FEATURE_INDEX_LIST: ${features.length} MSRs`,
        ...features.map((i, n) => `  ${msrLabel(i).padEnd(32)} ${n < got ? hex(fvals[n]!.data) : '(read failed)'}`),
      ].join('\n'),
  );
}

function cmdGet(msrs: string[], opts: { json?: boolean; profile?: string; kernel?: string; all?: boolean }): number {
  const kvm = new Kvm({ profile: profileFromOptions(opts) ?? loadProfile(undefined) });
  const indices = opts.all ? [...kvm.profile.msrIndexList] : msrs.map(parseMsrArg);
  if (indices.length === 0) throw new CliError('name at least one MSR (a number or a name such as IA32_TSC), or use --all');
  const sys = kvm.open('/dev/kvm');
  const vm = kvm.ioctlOrThrow(sys, I.KVM_CREATE_VM, 0);
  const vcpu = kvm.ioctlOrThrow(vm, I.KVM_CREATE_VCPU, 0);
  // One ioctl per MSR, so one refused index does not hide the others.
  const rows = indices.map((index) => {
    const b = encodeMsrs([{ index, data: 0n }]);
    const r = kvm.ioctl(vcpu, I.KVM_GET_MSRS, b);
    return { index: hex(index), name: msrName(index) ?? null, ok: r === 1, value: r === 1 ? hex(decodeMsrs(b).entries[0]!.data) : null };
  });
  print(!!opts.json, rows, () =>
    rows.map((r) => `${msrLabel(Number(r.index)).padEnd(34)} ${r.ok ? r.value : 'KVM_GET_MSRS refused it (returned 0)'}`).join('\n'),
  );
  return rows.every((r) => r.ok) ? 0 : 1;
}

function parseMsrArg(text: string): number {
  const v = parseMsr(text);
  if (v === undefined) throw new CliError(`not an MSR: '${text}' (give a number such as 0x10 or a name such as IA32_TSC)`);
  return v;
}

function readHexOrFile(input: string): Uint8Array {
  const fromHex = (t: string): Uint8Array => {
    const clean = t.replace(/^0x/i, '').replace(/[\s:]/g, '');
    if (clean.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(clean)) throw new CliError(`not hex bytes: '${t.slice(0, 40)}'`);
    return Uint8Array.from(clean.match(/../g) ?? [], (h) => parseInt(h, 16));
  };
  if (existsSync(input)) {
    const data = readFileSync(input);
    const text = data.toString('latin1');
    return /^[\s0-9a-fA-Fx:]*$/.test(text) ? fromHex(text) : new Uint8Array(data);
  }
  return fromHex(input);
}

function cmdDecode(input: string, opts: { json?: boolean; as?: string; seq?: string }): void {
  if (existsSync(input) && isCaptureFile(input)) return decodeCapture(input, opts);
  const bytes = readHexOrFile(input);
  const kind = opts.as ?? guessKind(bytes);
  if (kind === 'msrs') {
    if (bytes.length < 8) throw new CliError(`a kvm_msrs needs at least 8 bytes, got ${bytes.length}`);
    const d = decodeMsrs(bytes);
    const entries = d.entries.map((e) => ({ index: hex(e.index), name: msrName(e.index) ?? null, reserved: e.reserved, data: hex(e.data) }));
    print(!!opts.json, { struct: 'kvm_msrs', nmsrs: d.nmsrs, pad: d.pad, truncated: d.truncated, entries }, () =>
      [
        `kvm_msrs nmsrs=${d.nmsrs}${d.pad ? ` pad=${hex(d.pad)}` : ''}${d.truncated ? ` (buffer holds only ${d.entries.length})` : ''}`,
        ...d.entries.map((e, i) => `  [${i}] ${msrLabel(e.index).padEnd(34)} ${hex(e.data)}${e.reserved ? ` reserved=${hex(e.reserved)}` : ''}`),
      ].join('\n'),
    );
  } else if (kind === 'list') {
    if (bytes.length < 4) throw new CliError(`a kvm_msr_list needs at least 4 bytes, got ${bytes.length}`);
    const d = decodeMsrList(bytes);
    print(!!opts.json, { struct: 'kvm_msr_list', nmsrs: d.nmsrs, truncated: d.truncated, indices: d.indices.map((i) => ({ index: hex(i), name: msrName(i) ?? null })) }, () =>
      [`kvm_msr_list nmsrs=${d.nmsrs}${d.truncated ? ` (buffer holds only ${d.indices.length})` : ''}`, ...d.indices.map((i, n) => `  [${n}] ${msrLabel(i)}`)].join('\n'),
    );
  } else {
    throw new CliError(`--as takes msrs or list, not '${kind}'`);
  }
}

function isCaptureFile(file: string): boolean {
  const raw = readFileSync(file);
  if (raw[0] === 0x1f && raw[1] === 0x8b) return true;
  return raw.subarray(0, 64).toString('utf8').startsWith('{"format":"kvmsr-capture"');
}

function decodeCapture(file: string, opts: { json?: boolean; seq?: string }): void {
  const c = readCapture(file);
  const want = opts.seq === undefined ? undefined : Number(opts.seq);
  if (want !== undefined && !Number.isInteger(want)) throw new CliError(`--seq takes a record number, not '${opts.seq}'`);
  const recs = c.records.filter((r) => want === undefined || r.seq === want);
  const view = recs.map((r) => {
    const isMsrs = (r.request === I.KVM_GET_MSRS || r.request === I.KVM_SET_MSRS) && r.in && r.in.length >= 8;
    const entries = isMsrs ? decodeMsrs(r.in!).entries.map((e, i) => ({ index: hex(e.index), name: msrName(e.index) ?? null, in: hex(e.data), out: r.out ? hex(decodeMsrs(r.out).entries[i]?.data ?? 0n) : null })) : undefined;
    return { seq: r.seq, tid: r.tid, fd: r.fd, fdKind: r.fdKind, vcpuId: r.vcpuId, op: r.op ?? 'ioctl', name: r.name, arg: r.arg, ret: r.ret, errno: r.errno, entries };
  });
  print(!!opts.json, { header: c.header, records: view, formatError: c.error?.message ?? null }, () =>
    [
      `capture: ${c.header.recorder}; ${c.header.vendorModule} on ${c.header.kernel} (${c.header.cpuModel})`,
      ...view.flatMap((v) => [
        `#${v.seq} ${v.fdKind}${v.vcpuId !== undefined ? ` vcpu ${v.vcpuId}` : ''} fd ${v.fd}: ${v.op === 'close' ? 'close' : v.name}${v.arg !== undefined ? `(${v.arg})` : ''} = ${v.ret}${v.errno ? ` (${errnoName(v.errno)})` : ''}`,
        ...(v.entries ?? []).map((e, i) => `    [${i}] ${msrLabel(Number(e.index)).padEnd(34)} ${e.in} -> ${e.out}`),
      ]),
      ...(c.error ? [`warning: ${c.error.message}`] : []),
    ].join('\n'),
  );
}

/** A kvm_msrs buffer is 8 + 16n bytes with nmsrs = n; a kvm_msr_list is 4 + 4n. */
function guessKind(b: Uint8Array): string {
  if (b.length >= 8) {
    const n = new DataView(b.buffer, b.byteOffset).getUint32(0, true);
    if (b.length === 8 + 16 * n) return 'msrs';
    if (b.length === 4 + 4 * n) return 'list';
    if ((b.length - 8) % 16 === 0) return 'msrs';
  }
  return 'list';
}

function cmdReplay(file: string, opts: { json?: boolean; continue?: boolean; profile?: string; kernel?: string }): number {
  const c = readCapture(file);
  const total = c.records.length;
  const tty = !opts.json && process.stderr.isTTY === true && total > 2000;
  const bar = tty ? new SingleBar({ format: 'replay [{bar}] {value}/{total} records', stream: process.stderr }, Presets.shades_classic) : null;
  bar?.start(total, 0);
  const r = replay(c, {
    ...(() => {
      const p = profileFromOptions(opts, c.header.vendorModule, profileForCapture(c));
      return p ? { profile: p } : {};
    })(),
    continueOnDivergence: !!opts.continue,
    onProgress: (done) => bar?.update(done),
  });
  bar?.stop();
  const summary = {
    file,
    header: c.header,
    records: total,
    ioctls: r.ioctls,
    msrIoctls: r.msrIoctls,
    entries: r.entries,
    divergences: r.divergences,
    comparedByRule: r.byRule,
    adoptedUnknowable: r.adopted,
    stateReadsNotCompared: r.stateReads,
    unknowable: r.unknowable,
    rules: r.rules,
    formatError: c.error ? c.error.message : null,
    ms: Math.round(r.ms),
    ioctlsPerSecond: Math.round(r.ioctls / Math.max(r.ms / 1000, 1e-9)),
  };
  print(!!opts.json, summary, () => {
    const out: string[] = [];
    if (c.error) out.push(`warning: ${c.error.message} (replayed the ${total} records before it)`);
    for (const d of r.divergences) {
      out.push(`DIVERGENCE at seq ${d.seq}: ${d.name} on ${d.fdKind}${d.vcpuId !== undefined ? ` (vCPU ${d.vcpuId})` : ''}`);
      for (const w of d.what) out.push(`  ${w}`);
      if (d.entries.length > 0) {
        out.push(`  ${'entry'.padEnd(34)} ${'kernel'.padEnd(20)} kvmsr`);
        for (const e of d.entries) {
          const idx = e.expectedName ? ` (the kernel's bytes hold ${e.expectedName} here)` : '';
          out.push(`${e.differs ? '> ' : '  '}${e.name.padEnd(34)} ${e.expected.padEnd(20)} ${e.actual}${idx}`);
        }
      }
    }
    for (const u of r.rules) out.push(`note: ${u}`);
    if (r.unknowable.length > 0) out.push(`note: ${r.unknowable.length} ioctls kvmsr does not model, so their effects cannot be checked: ${[...new Set(r.unknowable.map((u) => u.name))].join(', ')}`);
    out.push(
      `${r.divergences.length === 0 ? 'OK' : 'DIVERGED'}: ${r.ioctls} ioctls (${r.msrIoctls} MSR ioctls, ${r.entries} entries), ` +
        `${r.divergences.length} divergences, ${r.byRule} compared by rule, ${r.adopted} values adopted as unknowable; ` +
        `${summary.ioctlsPerSecond} ioctls/s`,
    );
    return out.join('\n');
  });
  return r.divergences.length > 0 ? 1 : c.error ? 3 : 0;
}

function cmdRecord(command: string[], opts: { output: string; profile?: boolean }): number {
  if (command.length === 0) throw new CliError('give the command to record after --, e.g. kvmsr record -o qemu.jsonl -- qemu-system-x86_64 ...');
  let status: number;
  try {
    status = recordCommand(opts.output, command);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  if (opts.profile !== false) {
    // The host's profile goes into the header, so replay runs on this host's rules by default.
    const st = realKvmStatus();
    const real = st.ok ? loadRealKvm() : null;
    if (!real) process.stderr.write(`kvmsr record: no host profile embedded: ${st.ok ? 'the FFI did not load' : st.reason}\n`);
    else {
      try {
        const p = captureProfile();
        if (embedProfile(opts.output, p, { capturedHere: true })) process.stderr.write(`kvmsr record: embedded the host profile (${p.host.vendorModule} ${p.host.kernel}) in ${opts.output}\n`);
      } catch (e) {
        process.stderr.write(`kvmsr record: no host profile embedded: ${(e as Error).message}\n`);
      }
    }
  }
  return status;
}


export function main(argv: string[]): number {
  let status = 0;
  const program = new Command();
  program.name('kvmsr').description('A byte-exact emulator of the Linux KVM x86 MSR ioctl ABI').version(KVMSR_VERSION).exitOverride();
  program
    .command('list')
    .description('the MSR index list and feature MSR list, with names')
    .option('--json', 'machine-readable output')
    .option('--profile <file>', PROFILE_HELP)
    .option('--kernel <release>', KERNEL_HELP)
    .action((o) => cmdList(o));
  program
    .command('get')
    .description('read MSRs on a fresh vCPU')
    .argument('[msr...]', 'MSR numbers (0x10) or names (IA32_TSC)')
    .option('--all', 'every MSR on the index list')
    .option('--json', 'machine-readable output')
    .option('--profile <file>', PROFILE_HELP)
    .option('--kernel <release>', KERNEL_HELP)
    .action((m: string[], o) => {
      status = cmdGet(m, o);
    });
  program
    .command('decode')
    .description('pretty-print a kvm_msrs or kvm_msr_list buffer')
    .argument('<hex-or-file>', 'hex bytes, or a file of hex or raw bytes')
    .option('--as <kind>', 'msrs or list (default: guessed from the size)', (v) => {
      if (v !== 'msrs' && v !== 'list') throw new InvalidArgumentError('msrs or list');
      return v;
    })
    .option('--seq <n>', 'for a capture file: only the record with this sequence number')
    .option('--json', 'machine-readable output')
    .action((i: string, o) => cmdDecode(i, o));
  program
    .command('replay')
    .description('replay a capture on kvmsr and compare every return value and byte with the recorded kernel')
    .argument('<capture>', 'a capture file (JSON Lines, optionally gzipped)')
    .option('--profile <file>', 'replay on this host profile (default: the one in the capture, else the built-in one)')
    .option('--kernel <release>', KERNEL_HELP)
    .option('--continue', 'report every divergence, not just the first')
    .option('--json', 'machine-readable output')
    .action((f: string, o) => {
      status = cmdReplay(f, o);
    });
  registerCheck(program, (s) => {
    status = s;
  });
  program
    .command('record')
    .description("run a command (a VMM) with the LD_PRELOAD recorder and write its MSR ioctls to a capture")
    .requiredOption('-o, --output <file>', 'the capture file to append to')
    .option('--no-profile', "do not embed the host's profile in the capture header when the command ends")
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .action((c: string[], o: { output: string; profile?: boolean }) => {
      status = cmdRecord(c, o);
    });
  registerConform(program, (s) => {
    status = s;
  });
  registerHarvest(program, (s) => {
    status = s;
  });
  registerRun(program);
  registerProfile(program);
  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version end well; every usage error (commander already printed it) is status 2.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version' ? 0 : 2;
    }
    process.stderr.write(`kvmsr: ${(e as Error).message}\n`);
    return 2;
  }
  return status;
}

/** Run only when executed (directly or through the npm bin link), not when imported by tests. */
function isEntryPoint(): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return realpathSync(argv1) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}
if (isEntryPoint()) process.exitCode = main(process.argv.slice(2));
