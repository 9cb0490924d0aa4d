// What KVM_GET_MSR_INDEX_LIST lists by release (arch/x86/kvm/x86.c msrs_to_save_base,
// msrs_to_save_pmu, emulated_msrs_all, kvm_probe_msr_to_save). A captured profile carries its own
// host's list; these entries say how that list moves when `--kernel` asks for another release
// (profile/for-release.ts), each only where the host has what the kernel probes for.
import type { CpuidEntry2 } from '../../abi/codecs.js';
import { findCpuid, type HostProfile } from '../profile.js';
import { versioned, type VersionedRule } from './release.js';

export interface ListedByRelease {
  rule: VersionedRule;
  msrs: readonly number[];
  /** Whether kvm_probe_msr_to_save (or the emulated list's filter) keeps them on this host. */
  hostHas: (p: HostProfile) => boolean;
  /** Where they go in the list: after this MSR (the last of the part they join). */
  after: number;
}

const bit = (c: readonly CpuidEntry2[], leaf: number, sub: number, reg: 'eax' | 'ebx' | 'ecx' | 'edx', b: number): boolean =>
  (((findCpuid(c, leaf, sub)?.[reg] ?? 0) >>> b) & 1) === 1;
const listed = (p: HostProfile, i: number): boolean => p.msrIndexList.includes(i);
const featureValue = (p: HostProfile, i: number): bigint => p.featureMsrs.find((m) => m.index === i)?.value ?? 0n;

export const LISTED_BY_RELEASE: readonly ListedByRelease[] = [
  {
    rule: versioned({
      id: 'index-list.debugctl-lbr',
      family: 'index-list',
      kernel: 'msrs_to_save_base',
      holds: 'DEBUGCTL and the four LBR MSRs (0x1d9, 0x1db-0x1de) are listed',
      otherwise: 'they are not listed',
      where: { since: '6.19', backports: ['6.12.114'] },
      note: '"KVM: SVM: Add missing save/restore handling of LBR MSRs" (6.12.114); its mainline release and a 6.18.y backport not checked',
    }),
    msrs: [0x1d9, 0x1db, 0x1dc, 0x1dd, 0x1de],
    hostHas: () => true,
    after: 0x48,
  },
  {
    rule: versioned({
      id: 'index-list.perf-global-ovf-ctrl',
      family: 'index-list',
      kernel: 'msrs_to_save_pmu',
      holds: 'MSR_CORE_PERF_GLOBAL_OVF_CTRL (0x390) is listed with the Intel vPMU',
      otherwise: 'it is not listed',
      where: { until: '6.12' },
      note: 'in 6.1.192, gone by 6.12.0; the release between them not checked',
    }),
    msrs: [0x390],
    hostHas: (p) => listed(p, 0x38f) || listed(p, 0x390),
    after: 0x38f,
  },
  {
    rule: versioned({
      id: 'index-list.amd-perfmon-v2',
      family: 'index-list',
      kernel: 'msrs_to_save_pmu, kvm_probe_msr_to_save (PERFMON_V2)',
      holds: 'AMD PerfMonV2 GLOBAL_STATUS/CTL/STATUS_CLR (0xc0000300-0xc0000303) are listed where KVM has PERFMON_V2',
      otherwise: 'they are not listed',
      where: { since: '6.12' },
      note: 'absent from 6.1.192, present in 6.12.0; the release between them not checked',
    }),
    msrs: [0xc0000300, 0xc0000301, 0xc0000302, 0xc0000303],
    hostHas: (p) => bit(p.supportedCpuid, 0x80000022, 0, 'eax', 0),
    after: 0xc0010007,
  },
  {
    rule: versioned({
      id: 'index-list.amd-perf-global-status-set',
      family: 'index-list',
      kernel: 'msrs_to_save_pmu (MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET)',
      holds: '0xc0000304 is listed where KVM has PERFMON_V2',
      otherwise: 'it is not listed',
      where: { since: '6.13', backports: ['6.12.54'] },
      note: '"KVM: SVM: Emulate PERF_CNTR_GLOBAL_STATUS_SET for PerfMonV2" (6.12.54); its mainline release assumed',
    }),
    msrs: [0xc0000304],
    hostHas: (p) => bit(p.supportedCpuid, 0x80000022, 0, 'eax', 0),
    after: 0xc0000303,
  },
  {
    rule: versioned({
      id: 'index-list.tsx-ctrl',
      family: 'index-list',
      kernel: 'emulated_msrs_all, kvm_is_supported_user_return_msr (MSR_IA32_TSX_CTRL)',
      holds: 'TSX_CTRL (0x122) is listed where ARCH_CAPABILITIES reports TSX_CTRL',
      otherwise: 'it is not listed',
      where: { since: '6.12' },
      note: 'absent from 6.1.192, present in 6.12.0; the release between them not checked',
    }),
    msrs: [0x122],
    hostHas: (p) => (featureValue(p, 0x10a) & (1n << 7n)) !== 0n,
    after: 0x345,
  },
  {
    rule: versioned({
      id: 'index-list.hv-tsc-invariant-control',
      family: 'index-list',
      kernel: 'emulated_msrs_all (HV_X64_MSR_TSC_INVARIANT_CONTROL)',
      holds: "Hyper-V's TSC_INVARIANT_CONTROL (0x40000118) is listed where KVM has Hyper-V",
      otherwise: 'it is not listed',
      where: { since: '6.12' },
      note: 'absent from 6.1.192, present in 6.12.0; the release between them not checked',
    }),
    msrs: [0x40000118],
    hostHas: (p) => listed(p, 0x40000108),
    after: 0x40000108,
  },
  {
    rule: versioned({
      id: 'index-list.xss',
      family: 'index-list',
      kernel: 'msrs_to_save_base, kvm_probe_msr_to_save (XSAVES)',
      holds: 'IA32_XSS (0xda0) is listed with XSAVES',
      otherwise: 'it is not listed',
      where: { since: '6.18' },
      note: "the CET MSRs listed with it on 6.18 are not derived here: each has its own probe (SHSTK, IBT, LM), which only a 6.18 capture shows",
    }),
    msrs: [0xda0],
    hostHas: (p) => bit(p.supportedCpuid, 0xd, 1, 'eax', 3),
    after: 0x48,
  },
];
