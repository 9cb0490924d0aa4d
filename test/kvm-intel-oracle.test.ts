// The live kvm_intel oracle: Debian's 6.12 with Debian's KVM settings, kvm_intel nested under Bochs
// 2.7's VMX (scripts/kvm-intel-oracle.sh), judged on its stored harvest. The profile is compared
// with the built-in profile a user picks for Intel.
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { builtinProfile, INTEL_PROFILE_NAME } from '../src/profiles.js';
import { revalidated } from '../src/kvm/profile.js';
import { comparable, judgeInTurns, judgeStoredHarvest, loadHarvest, withOneBitFlipped, withoutLaterMeasurements } from './helpers.js';

const NAME = 'kvm-intel-6.12-distro-bochs-skx';
const checkedIn = () => builtinProfile(NAME);

describe('the distribution-config kvm_intel oracle (nested under Bochs, Hyper-V, Xen and SMM built in)', () => {
  // scripts/kvm-intel-oracle.sh on 2026-12-02: Debian's 6.12.117 with Debian's KVM settings and both
  // vendor modules built in, under Bochs 2.7 (cpu model corei7_skylake_x, VMX with EPT and VPID):
  // `kvmsr harvest plan --cases 300 --seed 1`, `kvmsr-probe --jobs 16` (2345 cases, the
  // profile.state case among them; Bochs ran 379 s in all at 10:00 UTC). The VMX capability MSRs
  // are what kvm_intel offers on Bochs's VMX.
  const DIR = join(import.meta.dirname, 'hosts', NAME, 'harvest');
  test('every case agrees, and its profile is the checked-in one', () => {
    const { report, profile } = judgeStoredHarvest(DIR, 2345);
    expect(report.setupFailed).toEqual([]);
    expect(profile.freshState).toBeDefined();
    // Bochs's corei7_skylake_x has no XSAVE: KVM_GET_XCRS gives nr_xcrs 0 (kvm_vcpu_ioctl_x86_get_xcrs).
    expect(profile.extensions.system[56]).toBeUndefined();
    expect([...profile.freshState!.xcrs]).toEqual(new Array(392).fill(0));
    expect(profile.host.vendorModule).toBe('kvm_intel');
    expect(profile.host.kernel).toBe('6.12.117');
    // kvm_intel's VMX capability MSRs are on the feature list, with nested=Y.
    for (let i = 0x480; i <= 0x491; i++) expect(profile.featureMsrs.map((m) => m.index)).toContain(i);
    expect(profile.featureMsrs.find((m) => m.index === 0x480)?.value).toBe(0xd8100011e57ed0n);
    // IA32_TSX_CTRL: a user-return MSR on Bochs, though ARCH_CAPABILITIES does not enumerate it.
    expect(profile.vcpuReset.find((m) => m.index === 0x122)?.value).toBe(0n);
    expect(profile.msrIndexList).not.toContain(0x122);
    expect(profile.msrIndexList).toContain(0x40000000);
    expect(comparable(profile)).toEqual(withoutLaterMeasurements(comparable(checkedIn())));
    expect(INTEL_PROFILE_NAME).toBe(NAME);
  });
  test('a VMX capability MSR answer changed by one bit is caught', async () => {
    const { plan, answers, profile } = loadHarvest(DIR);
    // A host read of IA32_VMX_PROCBASED_CTLS2 on a vCPU with the supported CPUID (what
    // vmx_vcpu_after_set_cpuid left of KVM's value).
    const { changed, step: k } = withOneBitFlipped(answers, 'rule.48b.cpuid');
    const found = await judgeInTurns(plan, changed, profile);
    expect(found.map((d) => [d.caseId, d.step])).toEqual([['rule.48b.cpuid', k]]);
  });
});

describe('the same kvm_intel under Bochs with cpu model corei7_icelake_u', () => {
  // The same plan and kernel, `--cpu corei7_icelake_u` (2026-12-02 10:40 UTC, 2345 cases, Bochs ran
  // 311 s). Bochs gives this model no XSAVE either: no XCRs. Its CPUID has
  // SPEC_CTRL, STIBP, SSBD and FLUSH_L1D, so vmx_vcpu_after_set_cpuid passes PRED_CMD and FLUSH_CMD
  // writes through, and SPEC_CTRL after its first non-zero write: a guest write of a reserved bit
  // is the CPU's #GP, with no userspace exit.
  const DIR = join(import.meta.dirname, 'hosts', 'kvm-intel-6.12-distro-bochs-icl', 'harvest');
  test('every case agrees', () => {
    const { profile } = judgeStoredHarvest(DIR, 2345);
    expect(profile.host.vendorModule).toBe('kvm_intel');
    expect(profile.specCtrlAccepted).toBe(7n);
    expect(profile.extensions.system[56]).toBeUndefined(); // KVM_CAP_XCRS 0
    expect([...profile.freshState!.xcrs]).toEqual(new Array(392).fill(0));
  });
});

describe('kvm_intel on other Debian kernels (scripts/kvm-intel-oracle.sh with ORACLE_KERNEL)', () => {
  // Debian's 6.12.118 (the current linux-source-6.12), 2026-12-07: `kvmsr harvest plan --cases 300
  // --seed 612003` (pair probes included), `ORACLE_KERNEL=6.12 bash scripts/kvm-intel-oracle.sh
  // --jobs 16` (Bochs ran 415 s), judged by this commit.
  test('6.12.118: every case agrees, and a sublevel on, the lists and rules are 6.12.117\'s', () => {
    const dir = join(import.meta.dirname, 'hosts', 'kvm-intel-6.12.118-distro-bochs-skx', 'harvest');
    const { profile } = judgeStoredHarvest(dir, 2361);
    expect(profile.host.kernel).toBe('6.12.118');
    const old = checkedIn();
    expect(profile.msrIndexList).toEqual(old.msrIndexList);
    expect(profile.featureMsrs).toEqual(old.featureMsrs);
    expect(profile.msrRules).toEqual(old.msrRules);
    expect(profile.supportedCpuid).toEqual(old.supportedCpuid);
  });
});

describe('kvm_intel on Debian 12\'s 6.1.192 (ORACLE_KERNEL=6.1)', () => {
  // `kvmsr harvest plan --cases 300 --seed 610004`, `ORACLE_KERNEL=6.1 bash
  // scripts/kvm-intel-oracle.sh --jobs 16` (Bochs ran 481 s), 2026-12-07.
  const dir = join(import.meta.dirname, 'hosts', 'kvm-intel-6.1.192-distro-bochs-skx', 'harvest');
  test('every case agrees, with the 6.1 rules and no measured rule, and its profile is the built-in one', () => {
    const { profile } = judgeStoredHarvest(dir, 2361);
    expect(profile.host.kernel).toBe('6.1.192');
    expect(profile.msrRules).toBeUndefined(); // 6.1's rules are kvmsr's own, not measured stand-ins
    expect(comparable(profile)).toEqual(withoutLaterMeasurements(comparable(builtinProfile('kvm-intel-6.1-distro-bochs-skx'))));
    // What 6.1 lists otherwise than 6.12: no DEBUGCTL/LBR, no Hyper-V TSC_INVARIANT_CONTROL, and
    // PERF_GLOBAL_OVF_CTRL among the PMU MSRs.
    for (const i of [0x1d9, 0x1db, 0x40000118]) expect(profile.msrIndexList).not.toContain(i);
    expect(profile.msrIndexList).toContain(0x390);
    expect(profile.extensions.system[213]).toBe(0x7f); // KVM_CAP_DISABLE_QUIRKS2: quirks 0-6
  });
  test('a refused read that kept the VMM\'s data on 6.1 is caught if kvmsr zeroes it', async () => {
    const { plan, answers, profile } = loadHarvest(dir);
    const on612 = { ...profile, host: { ...profile.host, kernel: '6.12.118' } };
    const found = await judgeInTurns(plan, answers, revalidated(on612));
    expect(found.some((d) => d.what.startsWith('KVM_GET_MSRS entry 0 0x480'))).toBe(true);
  });
});
