// Restore order, replayed with the state that orders it. The restore capture is played on kvmsr in
// its own order (every state ioctl with its MSR batches, at the records' times), then once more for
// each ordering KVM depends on, with only that one thing moved where KVM needs it: a state ioctl
// before the vCPU's first KVM_SET_MSRS, KVM_RUN after its last, or an MSR before the MSRs that
// depend on it. Every MSR whose outcome (taken or refused, the value it reads back) the move
// changes is reported with the kernel rule behind it.
import { encodeMsrs } from '../abi/codecs.js';
import * as I from '../abi/kvm-ioctls.js';
import { msrLabel } from '../abi/msr-names.js';
import type { HostProfile } from '../kvm/profile.js';
import { MOVING_MSRS } from '../kvm/x86/moving-msrs.js';
import type { CaptureRecord, ParsedCapture } from '../capture/format.js';
import { hex, type Finding } from './findings.js';
import { tscOffsetHonored, vcpuKey, vmKey } from './machine.js';
import { batchEntries, isMsrBatch } from './msr-traffic.js';
import { play, type Op, type Outcomes } from './playback.js';

/** State ioctls a vCPU's MSRs depend on, with the kernel's reason. */
const STATE_RULES: { req: number; vmWide: boolean; rule: (rec: CaptureRecord) => string }[] = [
  { req: I.KVM_SET_CPUID2, vmWide: false, rule: () => 'kvm_set_cpuid: before KVM_SET_CPUID2 the vCPU has no CPUID, so guest_cpuid_has() is false and MSRs gated on a CPUID bit are refused (feature MSRs from 6.14: feature-msrs.need-cpuid)' },
  { req: I.KVM_ENABLE_CAP, vmWide: false, rule: capRule },
  { req: I.KVM_ENABLE_CAP, vmWide: true, rule: capRule },
  { req: I.KVM_X86_SETUP_MCE, vmWide: false, rule: () => 'set_msr_mce: MCG_CTL and the MCi bank MSRs exist only as KVM_X86_SETUP_MCE sets up mcg_cap' },
  { req: I.KVM_SET_LAPIC, vmWide: false, rule: () => 'kvm_set_lapic_tscdeadline_msr: IA32_TSC_DEADLINE is dropped unless the LVT timer is already in TSC-deadline mode, which KVM_SET_LAPIC (kvm_apic_set_state) restores' },
  { req: I.KVM_SET_SREGS, vmWide: false, rule: () => '__set_sregs_common: KVM_SET_SREGS writes EFER and the APIC base over what KVM_SET_MSRS set' },
  { req: I.KVM_SET_SREGS2, vmWide: false, rule: () => '__set_sregs_common: KVM_SET_SREGS2 writes EFER and the APIC base over what KVM_SET_MSRS set' },
  { req: I.KVM_SET_TSC_KHZ, vmWide: false, rule: () => 'kvm_set_tsc_khz: the TSC is scaled to the new frequency only for writes after it' },
  { req: I.KVM_SET_TSC_KHZ, vmWide: true, rule: () => 'kvm_arch_vm_ioctl KVM_SET_TSC_KHZ: the VM default frequency applies to vCPUs created after it' },
  { req: I.KVM_CREATE_IRQCHIP, vmWide: true, rule: () => 'lapic_in_kernel: without the in-kernel irqchip the APIC MSRs and IA32_TSC_DEADLINE are refused' },
];

function capRule(rec: CaptureRecord): string {
  const cap = rec.in && rec.in.length >= 4 ? new DataView(rec.in.buffer, rec.in.byteOffset).getUint32(0, true) : -1;
  if (cap === 123 || cap === 148) return 'synic_set_msr: the SynIC MSRs are refused until KVM_ENABLE_CAP(KVM_CAP_HYPERV_SYNIC) activates SynIC on the vCPU (kvm_hv_activate_synic)';
  return `KVM_ENABLE_CAP(${cap}) changes which MSRs KVM takes`;
}

/** MSRs whose writes depend on another MSR's value, with the kernel's reason. */
const MSR_PREREQS: { first: number; then: (i: number) => boolean; rule: string }[] = [
  { first: 0xce, then: (i) => i === 0x140, rule: 'kvm_set_msr_common (MSR_MISC_FEATURES_ENABLES): CPUID faulting is refused unless PLATFORM_INFO already offers it' },
  { first: 0x1b, then: (i) => i >= 0x800 && i <= 0x8ff, rule: 'kvm_x2apic_msr_write: the x2APIC MSRs are refused until the APIC base enables x2APIC' },
  { first: 0x40000000, then: (i) => i === 0x40000001, rule: 'kvm_hv_set_msr_pw (HV_X64_MSR_HYPERCALL): the hypercall page is enabled only once the guest OS ID is set' },
];

const TSC = 0x10;
const TSC_DEADLINE = 0x6e0;

export interface OrderResult {
  findings: Finding[];
  notes: string[];
}

export function restoreOrder(restore: ParsedCapture, profile: HostProfile): OrderResult {
  const findings: Finding[] = [];
  const notes: string[] = [];
  const ops: Op[] = restore.records.filter((r) => r.op !== 'close').map((rec) => ({ rec }));
  const base = play(profile, ops);
  const keyOf = (r: CaptureRecord): string => (r.fdKind === 'vcpu' ? vcpuKey(r) : vmKey(r));
  const vcpuKeys = [...new Set(ops.filter((o) => isMsrBatch(o.rec) && o.rec.request === I.KVM_SET_MSRS && o.rec.fdKind === 'vcpu').map((o) => vcpuKey(o.rec)))];
  const seen = new Set<string>();
  const report = (variant: Outcomes, rule: string, moved: string): void => {
    for (const [key, msrs] of base.outcomes) {
      for (const [index, a] of msrs) {
        const b = variant.get(key)?.get(index);
        if (!b || !b.taken) continue;
        const intended = base.lastWritten.get(key)?.get(index);
        const lostHere = !a.taken;
        const changed = a.taken && !MOVING_MSRS.has(index) && a.value !== b.value && b.value === intended;
        if (!lostHere && !changed) continue;
        const id = `${key} ${index} ${rule}`;
        if (seen.has(id)) continue;
        seen.add(id);
        findings.push({
          severity: 'error',
          kind: 'restore-order',
          vcpu: key,
          msr: msrLabel(index),
          rule,
          message: lostHere
            ? `${msrLabel(index)} is ${a.lost} in the restore's order, but taken when ${moved}: ${rule}`
            : `${msrLabel(index)} reads back ${a.value === null ? 'nothing' : hex(a.value)} after the restore, but ${intended === undefined ? 'the value written' : hex(intended)} when ${moved}: ${rule}`,
        });
      }
    }
  };

  const honored = tscOffsetHonored(profile);
  for (const key of vcpuKeys) {
    const vm = key.split('/')[0]!;
    const firstSet = ops.findIndex((o) => o.rec.fdKind === 'vcpu' && vcpuKey(o.rec) === key && o.rec.request === I.KVM_SET_MSRS);
    let lastSet = -1;
    ops.forEach((o, n) => {
      if (o.rec.fdKind === 'vcpu' && vcpuKey(o.rec) === key && o.rec.request === I.KVM_SET_MSRS) lastSet = n;
    });
    // A state ioctl after the vCPU's first MSR write, moved before it.
    for (const s of STATE_RULES) {
      const late = ops.filter((o, n) => n > firstSet && o.rec.request === s.req && (s.vmWide ? o.rec.fdKind === 'vm' && keyOf(o.rec) === vm : o.rec.fdKind === 'vcpu' && vcpuKey(o.rec) === key) && o.rec.ret >= 0);
      if (late.length === 0) continue;
      const rest = ops.filter((o) => !late.includes(o));
      const at = rest.indexOf(ops[firstSet]!);
      const variant = [...rest.slice(0, at), ...late, ...rest.slice(at)];
      report(play(profile, variant).outcomes, s.rule(late[0]!.rec), `${late[0]!.rec.name} comes before the vCPU's first KVM_SET_MSRS`);
    }
    // KVM_RUN before the vCPU's last MSR write, moved after it.
    const runs = ops.filter((o, n) => n < lastSet && o.rec.request === I.KVM_RUN && o.rec.fdKind === 'vcpu' && vcpuKey(o.rec) === key);
    if (runs.length > 0) {
      const rest = ops.filter((o) => !runs.includes(o));
      const at = rest.indexOf(ops[lastSet]!) + 1;
      report(
        play(profile, [...rest.slice(0, at), ...runs, ...rest.slice(at)]).outcomes,
        'kvm_vcpu_has_run: once the vCPU has run, KVM_SET_CPUID2 and the feature MSRs (VMX capabilities, ARCH_CAPABILITIES, PERF_CAPABILITIES, PLATFORM_INFO) take only their current value (do_set_msr: -EINVAL; feature-msrs.immutable-after-run)',
        'KVM_RUN comes after the last KVM_SET_MSRS',
      );
    }
    // An MSR another depends on, written after it: written first.
    for (const p of MSR_PREREQS) {
      const sets = ops.map((o, n) => ({ o, n })).filter(({ o }) => o.rec.request === I.KVM_SET_MSRS && o.rec.fdKind === 'vcpu' && vcpuKey(o.rec) === key && isMsrBatch(o.rec));
      const dep = sets.find(({ o }) => batchEntries(o.rec).some((e) => p.then(e.index)));
      const pre = [...sets].reverse().find(({ o }) => batchEntries(o.rec).some((e) => e.index === p.first));
      if (!dep || !pre) continue;
      const depPos = batchEntries(dep.o.rec).findIndex((e) => p.then(e.index));
      const preEntries = batchEntries(pre.o.rec);
      const prePos = preEntries.map((e) => e.index).lastIndexOf(p.first);
      if (pre.n < dep.n || (pre.n === dep.n && prePos < depPos)) continue;
      const synthetic: Op = { rec: { ...dep.o.rec, seq: -1 }, input: encodeMsrs([preEntries[prePos]!]) };
      const variant = [...ops.slice(0, dep.n), synthetic, ...ops.slice(dep.n)];
      report(play(profile, variant).outcomes, p.rule, `${msrLabel(p.first)} is written first`);
    }
    tscBeforeDeadline(ops, key, profile, honored, findings);
  }
  // VMX capability MSRs after KVM_SET_NESTED_STATE put the vCPU in VMX operation (kvmsr does not model nested state: by rule).
  findings.push(...vmxCapsAfterNested(ops));
  if (ops.some((o) => o.rec.request === I.KVM_SET_NESTED_STATE)) notes.push('kvmsr does not model KVM_SET_NESTED_STATE: VMX capability MSRs written after it are judged by vmx_set_vmx_msr\'s rule, not replayed');
  const diverged = base.diverged;
  if (diverged.length > 0) notes.push(`kvmsr answered ${diverged.length} of the restore's KVM_SET_MSRS differently from the recorded kernel (first: seq ${diverged[0]}): order findings rest on kvmsr's rules for this profile`);
  if (base.unmodeled.size > 0) notes.push(`the restore's order was replayed without the effects of ${[...base.unmodeled].join(', ')}, which kvmsr does not model`);
  notes.push('restore order: the restore was replayed on kvmsr in its own order and once per ordering KVM depends on (state ioctls before the MSRs, KVM_RUN after them, an MSR before the MSRs that depend on it)');
  return { findings, notes };
}

/**
 * kvm_set_lapic_tscdeadline_msr → start_sw_tscdeadline arms the host timer for the deadline minus
 * the guest TSC at the moment of the write: a deadline restored before IA32_TSC is measured against
 * the new vCPU's TSC and fires at the wrong time (firecracker #4099, fixed by #4666).
 */
function tscBeforeDeadline(ops: Op[], key: string, profile: HostProfile, honored: boolean, findings: Finding[]): void {
  let deadlineAt: { seq: number; data: bigint } | undefined;
  let tscFirst = false;
  for (const { rec } of ops) {
    if (rec.request !== I.KVM_SET_MSRS || rec.fdKind !== 'vcpu' || vcpuKey(rec) !== key || !isMsrBatch(rec)) continue;
    const es = batchEntries(rec).slice(0, Math.max(0, rec.ret));
    for (const e of es) {
      if (e.index === TSC && deadlineAt === undefined) tscFirst = true;
      if (e.index === TSC_DEADLINE && e.data !== 0n && deadlineAt === undefined && !tscFirst) deadlineAt = { seq: rec.seq, data: e.data };
      if (e.index === TSC && deadlineAt !== undefined) {
        findings.push({
          severity: honored ? 'error' : 'warning',
          kind: 'restore-order',
          vcpu: key,
          msr: msrLabel(TSC_DEADLINE),
          rule: 'kvm_set_lapic_tscdeadline_msr (start_sw_tscdeadline): the timer is armed for the deadline minus the guest TSC at the write',
          message:
            `${msrLabel(TSC_DEADLINE)} = ${hex(deadlineAt.data)} was restored (seq ${deadlineAt.seq}) before IA32_TSC (seq ${rec.seq}): KVM armed the timer against the new vCPU's TSC, so it fires at the wrong time` +
            (honored ? '' : `; ${profile.host.vendorModule} ignores host writes of IA32_TSC, so it is harmless on this host, but not on kvm_intel or kvm_amd`),
        });
        return;
      }
    }
  }
}

function vmxCapsAfterNested(ops: Op[]): Finding[] {
  const out: Finding[] = [];
  const vmxOn = new Set<string>();
  for (const { rec } of ops) {
    if (rec.fdKind !== 'vcpu') continue;
    const key = vcpuKey(rec);
    if (rec.request === I.KVM_SET_NESTED_STATE && rec.ret >= 0 && rec.in && rec.in.length >= 16) {
      const dv = new DataView(rec.in.buffer, rec.in.byteOffset, rec.in.byteLength);
      // struct kvm_nested_state: format 0 is VMX; hdr.vmx.vmxon_pa of -1 means not in VMX operation.
      if (dv.getUint16(2, true) === 0 && dv.getBigUint64(8, true) !== 0xffffffffffffffffn) vmxOn.add(key);
    }
    if (rec.request === I.KVM_SET_MSRS && vmxOn.has(key) && isMsrBatch(rec)) {
      const caps = batchEntries(rec).filter((e) => e.index >= 0x480 && e.index <= 0x491);
      if (caps.length === 0) continue;
      out.push({
        severity: 'error',
        kind: 'restore-order',
        vcpu: key,
        msr: msrLabel(caps[0]!.index),
        rule: 'vmx_set_vmx_msr: the VMX capability MSRs cannot change while the vCPU is in VMX operation (-EBUSY)',
        message: `${caps.length} VMX capability MSRs were written (seq ${rec.seq}) after KVM_SET_NESTED_STATE put the vCPU in VMX operation: KVM refuses them with EBUSY, so the nested guest keeps the default capabilities; write them before KVM_SET_NESTED_STATE`,
      });
      vmxOn.delete(key);
    }
  }
  return out;
}

