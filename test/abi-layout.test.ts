// Compares kvmsr's ioctl numbers, struct sizes and offsets with the system's UAPI headers, through a
// small C program compiled with gcc against /usr/include/linux/kvm.h.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STATE_SIZES } from '../src/kvm/state/fresh-state.js';
import { describe, expect, test } from 'vitest';
import * as L from '../src/abi/layout.js';
import { KVM_CAP, KVM_IOCTLS } from '../src/abi/kvm-ioctls.js';

const gcc = spawnSync('gcc', ['--version']).status === 0;
const header = existsSync('/usr/include/linux/kvm.h');
const why = !gcc ? 'gcc is not installed' : !header ? '/usr/include/linux/kvm.h is absent (linux-libc-dev)' : '';
if (why) console.warn(`abi-layout: skipped: ${why}`);

function facts(): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'kvmsr-abi-'));
  const exe = join(dir, 'kvm-abi');
  execFileSync('gcc', ['-o', exe, join(__dirname, 'c', 'kvm-abi.c')]);
  const out = execFileSync(exe, { encoding: 'utf8' });
  return new Map(out.trim().split('\n').map((l) => {
    const [kind, name, v] = l.split(' ');
    return [`${kind} ${name}`, Number(v)] as const;
  }));
}

describe.skipIf(why !== '')(`UAPI layout against /usr/include/linux/kvm.h${why ? ` (skipped: ${why})` : ''}`, () => {
  const f = why ? new Map<string, number>() : facts();
  const get = (k: string): number => {
    const v = f.get(k);
    if (v === undefined) throw new Error(`the C program printed no '${k}'`);
    return v;
  };

  test('every ioctl number', () => {
    for (const [name, num] of Object.entries(KVM_IOCTLS)) expect(num, name).toBe(get(`ioctl ${name}`));
  });

  const structs: [string, Record<string, number>, Record<string, string>][] = [
    ['kvm_msr_entry', L.KVM_MSR_ENTRY_LAYOUT, { index: 'index', reserved: 'reserved', data: 'data' }],
    ['kvm_msrs', L.KVM_MSRS_LAYOUT, { nmsrs: 'nmsrs', pad: 'pad', entries: 'entries' }],
    ['kvm_msr_list', L.KVM_MSR_LIST_LAYOUT, { nmsrs: 'nmsrs', indices: 'indices' }],
    ['kvm_msr_filter_range', L.KVM_MSR_FILTER_RANGE_LAYOUT, { flags: 'flags', nmsrs: 'nmsrs', base: 'base', bitmap: 'bitmap' }],
    ['kvm_msr_filter', L.KVM_MSR_FILTER_LAYOUT, { flags: 'flags', ranges: 'ranges' }],
    ['kvm_cpuid_entry2', L.KVM_CPUID_ENTRY2_LAYOUT, { function: 'function', index: 'index', flags: 'flags', eax: 'eax', ebx: 'ebx', ecx: 'ecx', edx: 'edx', padding: 'padding' }],
    ['kvm_cpuid2', L.KVM_CPUID2_LAYOUT, { nent: 'nent', padding: 'padding', entries: 'entries' }],
    ['kvm_enable_cap', L.KVM_ENABLE_CAP_LAYOUT, { cap: 'cap', flags: 'flags', args: 'args', pad: 'pad' }],
  ];
  test.each(structs)('struct %s: size and field offsets', (name, layout, fields) => {
    expect(layout['size'], `${name} size`).toBe(get(`size ${name}`));
    for (const [ours, theirs] of Object.entries(fields)) expect(layout[ours], `${name}.${theirs}`).toBe(get(`offset ${name}.${theirs}`));
  });

  test('struct kvm_sregs: the fields that carry MSR state', () => {
    expect(L.KVM_SREGS_LAYOUT.size).toBe(get('size kvm_sregs'));
    expect(L.KVM_SREGS_LAYOUT.fs).toBe(get('offset kvm_sregs.fs'));
    expect(L.KVM_SREGS_LAYOUT.gs).toBe(get('offset kvm_sregs.gs'));
    expect(L.KVM_SREGS_LAYOUT.efer).toBe(get('offset kvm_sregs.efer'));
    expect(L.KVM_SREGS_LAYOUT.apicBase).toBe(get('offset kvm_sregs.apic_base'));
    expect(get('offset kvm_segment.base')).toBe(0);
  });

  test('the state structs kvmsr run stores (fresh-state.ts, vcpu-state.ts, vm-state.ts)', () => {
    const sizes: Record<string, number> = {
      kvm_regs: STATE_SIZES.regs, kvm_sregs2: STATE_SIZES.sregs2, kvm_fpu: STATE_SIZES.fpu, kvm_xsave: STATE_SIZES.xsave,
      kvm_xcrs: STATE_SIZES.xcrs, kvm_lapic_state: STATE_SIZES.lapic, kvm_vcpu_events: STATE_SIZES.events,
      kvm_debugregs: STATE_SIZES.debugregs, kvm_pic_state: STATE_SIZES.picMaster, kvm_ioapic_state: STATE_SIZES.ioapic,
      kvm_pit_state2: STATE_SIZES.pit2, kvm_clock_data: 48, kvm_irqchip: 520, kvm_ioeventfd: 64, kvm_irq_routing_entry: 48,
      kvm_dirty_log: 16, kvm_clear_dirty_log: 24, kvm_device_attr: 24,
    };
    for (const [name, size] of Object.entries(sizes)) expect(size, name).toBe(get(`size ${name}`));
    expect(get('offset kvm_ioeventfd.flags')).toBe(24);
    expect(get('offset kvm_vcpu_events.flags')).toBe(20);
    expect(get('offset kvm_vcpu_events.exception_payload')).toBe(56);
    expect(get('offset kvm_debugregs.flags')).toBe(48);
    expect(get('offset kvm_pit_state2.flags')).toBe(72);
    expect(get('offset kvm_pit_channel_state.count_load_time')).toBe(16);
    expect(get('offset kvm_clock_data.realtime')).toBe(16);
  });

  test('struct kvm_run: the MSR exit fields', () => {
    expect(L.KVM_RUN_LAYOUT.exitReason).toBe(get('offset kvm_run.exit_reason'));
    expect(L.KVM_RUN_LAYOUT.msrError).toBe(get('offset kvm_run.msr.error'));
    expect(L.KVM_RUN_LAYOUT.msrReason).toBe(get('offset kvm_run.msr.reason'));
    expect(L.KVM_RUN_LAYOUT.msrIndex).toBe(get('offset kvm_run.msr.index'));
    expect(L.KVM_RUN_LAYOUT.msrData).toBe(get('offset kvm_run.msr.data'));
  });

  test('struct kvm_run: what KVM_RUN reads and post_kvm_run_save writes; kvm_guest_debug; their constants', () => {
    const R = L.KVM_RUN_LAYOUT;
    const fields: [number, string][] = [
      [R.requestInterruptWindow, 'request_interrupt_window'],
      [R.immediateExit, 'immediate_exit'],
      [R.readyForInterruptInjection, 'ready_for_interrupt_injection'],
      [R.ifFlag, 'if_flag'],
      [R.flags, 'flags'],
      [R.cr8, 'cr8'],
      [R.apicBase, 'apic_base'],
      [R.kvmValidRegs, 'kvm_valid_regs'],
      [R.kvmDirtyRegs, 'kvm_dirty_regs'],
      [R.syncRegs, 's.regs.regs'],
      [R.syncSregs, 's.regs.sregs'],
      [R.syncEvents, 's.regs.events'],
    ];
    for (const [off, name] of fields) expect(off, name).toBe(get(`offset kvm_run.${name}`));
    expect(L.KVM_GUEST_DEBUG_LAYOUT.size).toBe(get('size kvm_guest_debug'));
    expect(L.KVM_GUEST_DEBUG_LAYOUT.control).toBe(get('offset kvm_guest_debug.control'));
    expect(L.KVM_GUEST_DEBUG_LAYOUT.debugreg).toBe(get('offset kvm_guest_debug.arch.debugreg'));
    const values: [number, string][] = [
      [L.KVM_EXIT_UNKNOWN, 'KVM_EXIT_UNKNOWN'],
      [L.KVM_EXIT_HLT, 'KVM_EXIT_HLT'],
      [L.KVM_EXIT_INTR, 'KVM_EXIT_INTR'],
      [L.KVM_RUN_X86_SMM, 'KVM_RUN_X86_SMM'],
      [L.KVM_SYNC_X86_VALID_FIELDS, 'KVM_SYNC_X86_VALID_FIELDS'],
      [L.KVM_GUESTDBG_ENABLE, 'KVM_GUESTDBG_ENABLE'],
      [L.KVM_GUESTDBG_SINGLESTEP, 'KVM_GUESTDBG_SINGLESTEP'],
      [L.KVM_GUESTDBG_USE_SW_BP, 'KVM_GUESTDBG_USE_SW_BP'],
      [L.KVM_GUESTDBG_USE_HW_BP, 'KVM_GUESTDBG_USE_HW_BP'],
      [L.KVM_GUESTDBG_INJECT_DB, 'KVM_GUESTDBG_INJECT_DB'],
      [L.KVM_GUESTDBG_INJECT_BP, 'KVM_GUESTDBG_INJECT_BP'],
      [L.KVM_GUESTDBG_BLOCKIRQ, 'KVM_GUESTDBG_BLOCKIRQ'],
    ];
    for (const [v, name] of values) expect(v, name).toBe(get(`value ${name}`));
  });

  test('capability numbers and constants', () => {
    // Every capability kvmsr names is KVM_CAP_<its name> in the header.
    const caps = Object.fromEntries(Object.keys(KVM_CAP).map((k) => [k, `KVM_CAP_${k}`]));
    for (const [ours, theirs] of Object.entries(caps)) expect(KVM_CAP[ours as keyof typeof KVM_CAP], theirs).toBe(get(`cap ${theirs}`));
    expect(L.KVM_API_VERSION).toBe(get('value KVM_API_VERSION'));
    expect(L.KVM_MSR_FILTER_MAX_RANGES).toBe(get('value KVM_MSR_FILTER_MAX_RANGES'));
    expect(L.KVM_MSR_FILTER_MAX_BITMAP_SIZE).toBe(get('value KVM_MSR_FILTER_MAX_BITMAP_SIZE'));
    expect(L.KVM_MSR_FILTER_READ).toBe(get('value KVM_MSR_FILTER_READ'));
    expect(L.KVM_MSR_FILTER_WRITE).toBe(get('value KVM_MSR_FILTER_WRITE'));
    expect(L.KVM_MSR_FILTER_DEFAULT_DENY).toBe(get('value KVM_MSR_FILTER_DEFAULT_DENY'));
    expect(L.KVM_MSR_EXIT_REASON_INVAL).toBe(get('value KVM_MSR_EXIT_REASON_INVAL'));
    expect(L.KVM_MSR_EXIT_REASON_UNKNOWN).toBe(get('value KVM_MSR_EXIT_REASON_UNKNOWN'));
    expect(L.KVM_MSR_EXIT_REASON_FILTER).toBe(get('value KVM_MSR_EXIT_REASON_FILTER'));
  });
});
