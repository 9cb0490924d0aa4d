// The vendor-neutral MSR rules of arch/x86/kvm/x86.c: kvm_do_msr_access, __kvm_get_msr,
// __kvm_set_msr, do_get_msr/do_set_msr/do_get_feature_msr, kvm_get_msr_common and
// kvm_set_msr_common. Values move as (lo, hi) 32-bit halves; a value being written travels as
// int32 halves (a uint32 above 2^31 would be boxed at every call), and rules compare bits, not
// signs. Nothing here allocates per entry.
import { KVM_CAP } from '../../abi/kvm-ioctls.js';
import { CAP, capBitsOf } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_ERR, MSR_OK, type MsrValue } from './msr-ret.js';
import { hvCpuidFromSource } from './hyperv-cpuid.js';
import { HV_X64_MSR_TSC_INVARIANT_CONTROL, hvGetMsr, hvInitVcpu, hvSetMsr, isHvMsr, type HvEnv } from './hyperv.js';
import { decoupledMsrs } from './measured-rules.js';
import { buildFastClasses, buildFastSetRan } from './fast-classes.js';
import { DROPPED_WRITE_MSRS, isLegacyPmuMsr, ZERO_READ_MSRS } from './legacy-msrs.js';
import { MsrSet, SLOT_COUNT, slotOf } from './msr-slots.js';
import { xenWriteHypercallPage } from './xen.js';
import { commonDefaultGet, commonDefaultSet, msrsToSaveOf, unsupportedAccess } from './access.js';
import { setApicBase } from './apic-base.js';
import { canonicalizedHi, fixedAddrBits, noncanonicalHi, vcpuLa57 } from './canonical.js';
import { setHwcr } from './hwcr.js';
import { setXfd, setXss } from './xsave-msrs.js';
import { cetGate, cetSetCheck, isCetMsr } from './cet.js';
import { setEfer } from './efer.js';
import { getCapabilitiesMsr, isImmutableFeatureMsr, setArchCapabilities, setMiscFeaturesEnables, setPerfCapabilities, setPlatformInfo } from './feature-msrs.js';
import { DEFAULT_MCE_CAP, getMce, getMcgCtl, isMceBankMsr, KVM_MAX_MCE_BANKS, setMce, setMcgCtl } from './mce.js';
import { getMtrr, isMtrrRange, setMtrr } from './mtrr.js';
import { patValid } from './pat.js';
import { getPvMsr, isPvMsr, setPvMsr } from './pv.js';
import { releaseOf, type Release } from './release.js';
import { rulesFor, type X86Rules } from './rules.js';
import { setFlushCmd, setPredCmd } from './spec-ctrl.js';
import { getTscDeadline, getTscMsr, kvmSetTscKhz, setTscAdjust, setTscDeadline, setTscMsr, synchronizeTsc, tscTolerancePpm } from './tsc.js';
import type { CpuidEntry2 } from '../../abi/codecs.js';
import { findCpuid, type HostProfile } from '../profile.js';
import type { Vcpu } from '../vcpu.js';
import type { VendorOps } from '../vendor.js';
import { EFER_LMA, EFER_LME, EFER_NX, EFER_SCE } from './control-bits.js';

export interface X86Options {
  /** kvm.ignore_msrs: unhandled accesses succeed (reads give 0). */
  ignoreMsrs?: boolean;
  /** kvm.report_ignored_msrs: log what ignore_msrs swallowed (to `log`). */
  reportIgnoredMsrs?: boolean;
  log?: (line: string) => void;
  /** Clock in milliseconds for the TSC; performance.now by default. */
  now?: () => number;
  /** Serve simple MSRs from per-slot fast-path classes (default true); false sends every entry down the full path. */
  fastPath?: boolean;
}

/** MSR_IA32_MISC_ENABLE_PMU_RO_MASK (BTS_UNAVAIL | PEBS_UNAVAIL) and MSR_IA32_MISC_ENABLE_EMON. */
const MISC_ENABLE_PMU_RO_MASK = 0x1800;
const MISC_ENABLE_EMON = 0x80;
const EINVAL = 22;
/** Reset values the kernel sets itself (kvm_arch_vcpu_create, kvm_vcpu_reset). */
const RESET_DEFAULTS: ReadonlyArray<readonly [number, bigint]> = [
  [M.MSR_IA32_CR_PAT, 0x0007040600070406n],
  [M.MSR_IA32_MISC_ENABLE, 0x1800n], // PEBS_UNAVAIL | BTS_UNAVAIL
  [M.MSR_PLATFORM_INFO, 0x80000000n], // CPUID_FAULT, KVM_X86_QUIRK_STUFF_FEATURE_MSRS
  [M.MSR_KVM_POLL_CONTROL, 1n],
  [M.MSR_IA32_MCG_CAP, BigInt(KVM_MAX_MCE_BANKS)],
  [M.MSR_IA32_SMBASE, 0x30000n],
];

export class X86 {
  readonly advertised: MsrSet;
  /** msrs_to_save: the part of the index list before emulated_msrs (6.1's default-case exemption). */
  readonly msrsToSave: MsrSet;
  /**
   * MSRs a measured rule stores in the vendor's own field (measured-rules.ts), which KVM's
   * cross-MSR checks do not see unless a pair probe measured that they do (crossLoadLo).
   */
  readonly decoupled: MsrSet;
  /** The MSRs whose fresh-vCPU value the profile measured (vcpuReset): a vendor's reset keeps them. */
  readonly measuredReset: MsrSet;
  readonly featureList: MsrSet;
  /** Feature MSR values as read on /dev/kvm, by slot. */
  private readonly featureValues = new Uint32Array(SLOT_COUNT * 2);
  /** Initial values of a fresh vCPU's MSRs, by slot (from the profile). */
  readonly resetValues = new Uint32Array(SLOT_COUNT * 2);
  readonly ignoreMsrs: boolean;
  readonly reportIgnoredMsrs: boolean;
  /** max_host_virt_addr_bits(): 57 when KVM reports LA57, else 48. */
  readonly hostLa57: boolean;
  /** kvm_is_supported_user_return_msr(MSR_TSC_AUX): the host has RDTSCP or RDPID. */
  readonly tscAuxSupported: boolean;
  /** kvm_caps.supported_perf_cap (the PERF_CAPABILITIES feature value). */
  readonly supportedPerfCapLo: number;
  readonly supportedPerfCapHi: number;
  readonly tscKhz: number;
  /** The kernel's tsc_khz (profile.hostTscKhz, else tscKhz): the rate the hardware TSC runs at. */
  readonly hostTscKhz: number;
  /** kvm.tsc_tolerance_ppm: how far from tsc_khz a requested rate needs no scaling. */
  readonly tscTolerancePpm: number;
  /** The kernel release of profile.host.kernel (an unreadable one counts as the newest kvmsr knows). */
  readonly release: Release;
  /** The versioned rules that hold on that release (rules.ts), each a boolean the MSR code reads. */
  readonly rules: X86Rules;
  /** The host's TSC is unstable (profile.tscUnstable): a vCPU's TSC stands still between runs. */
  readonly tscUnstable: boolean;
  /** CONFIG_KVM_SMM: KVM_CAP_X86_SMM is non-zero. Without it IA32_SMBASE has no handler. */
  readonly smm: boolean;
  /** CONFIG_KVM_HYPERV: KVM_CAP_HYPERV is non-zero. Without it the Hyper-V MSRs have no handler. */
  readonly hyperv: boolean;
  /** kvm_amd: each VM exit sets the TPR from the guest's CR8 (hyperv.ts, hvSyncCr8ToTpr). */
  readonly cr8SyncedTpr: boolean;
  /** KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm: the profile's capture, else the source's table. */
  readonly hvCpuid: readonly CpuidEntry2[];
  /** kvm_cpu_cap VMX: a kvm_intel host with nested offers the enlightened VMCS. */
  readonly evmcs: boolean;
  /** The clocks and checks the Hyper-V MSRs need (hyperv.ts). */
  readonly hvEnv: HvEnv;
  /** copy_from_user's view of the VMM's memory (the Xen hypercall blob); set by Kvm. */
  userReadable: (addr: number, len: number) => boolean = () => false;
  /** The EFER bits set_efer accepts (the complement of efer_reserved_bits). */
  readonly eferAllowed: number;
  /** kvm_caps.supported_mce_cap (KVM_X86_GET_MCE_CAP_SUPPORTED). */
  readonly supportedMceCapLo: number;
  readonly supportedMceCapHi: number;
  /** The guest_cpu_cap_has bits KVM supports (from KVM_GET_SUPPORTED_CPUID). */
  readonly supportedCapBits: number;
  /** Where kvm.report_ignored_msrs lines go. */
  readonly logLine: (line: string) => void;
  readonly now: () => number;
  /** A scratch value for the MSR families' modules (never the caller's output). */
  readonly scratch: MsrValue = { lo: 0, hi: 0 };
  /** The vendor module's own host-wide state, built on first use. */
  vendorHost: unknown = undefined;
  /** A scratch value for vendor code (never the caller's output). */
  readonly scratchOut: MsrValue = { lo: 0, hi: 0 };

  constructor(
    readonly profile: HostProfile,
    readonly vendor: VendorOps,
    opts: X86Options = {},
  ) {
    this.advertised = new MsrSet(profile.msrIndexList);
    this.msrsToSave = new MsrSet(msrsToSaveOf(profile.msrIndexList));
    this.decoupled = new MsrSet(decoupledMsrs(profile.msrRules));
    this.measuredReset = new MsrSet(profile.vcpuReset.filter((m) => m.value !== null).map((m) => m.index));
    this.featureList = new MsrSet(profile.featureMsrs.map((m) => m.index));
    for (const m of profile.featureMsrs) storeU64(this.featureValues, m.index, m.value ?? 0n);
    // What kvm_arch_vcpu_create and kvm_vcpu_reset give a new vCPU, then what the profile recorded.
    for (const [index, v] of RESET_DEFAULTS) storeU64(this.resetValues, index, v);
    for (const index of [M.MSR_IA32_ARCH_CAPABILITIES, M.MSR_IA32_PERF_CAPABILITIES]) {
      // KVM_X86_QUIRK_STUFF_FEATURE_MSRS: the vCPU starts with the feature values (hidden until
      // its CPUID allows reading them).
      const f = profile.featureMsrs.find((m) => m.index === index);
      if (f?.value != null) storeU64(this.resetValues, index, f.value);
    }
    for (const m of profile.vcpuReset) {
      const gated = m.index === M.MSR_IA32_ARCH_CAPABILITIES || m.index === M.MSR_IA32_PERF_CAPABILITIES;
      if (m.value !== null && !gated) storeU64(this.resetValues, m.index, m.value);
    }
    const yes = (k: string): boolean => ['Y', 'y', '1'].includes(profile.host.moduleParams[k] ?? 'N');
    this.ignoreMsrs = opts.ignoreMsrs ?? yes('kvm.ignore_msrs');
    this.reportIgnoredMsrs = opts.reportIgnoredMsrs ?? yes('kvm.report_ignored_msrs');
    this.logLine = opts.log ?? (() => undefined);
    this.now = opts.now ?? performanceNow;
    const l7 = findCpuid(profile.supportedCpuid, 7, 0);
    const x1 = findCpuid(profile.supportedCpuid, 0x80000001, 0);
    this.hostLa57 = l7 !== undefined && ((l7.ecx >>> 16) & 1) === 1;
    this.tscAuxSupported =
      vendor.tscAuxUserReturn ??
      ((x1 !== undefined && ((x1.edx >>> 27) & 1) === 1) || (l7 !== undefined && ((l7.ecx >>> 22) & 1) === 1));
    const pc = profile.featureMsrs.find((m) => m.index === M.MSR_IA32_PERF_CAPABILITIES)?.value ?? 0n;
    this.supportedPerfCapLo = Number(pc & 0xffffffffn);
    this.supportedPerfCapHi = Number(pc >> 32n);
    this.tscKhz = profile.tscKhz;
    this.hostTscKhz = profile.hostTscKhz ?? profile.tscKhz;
    this.tscTolerancePpm = tscTolerancePpm(profile.host.moduleParams);
    this.tscUnstable = profile.tscUnstable === true;
    this.smm = (profile.extensions.system[KVM_CAP.X86_SMM] ?? profile.extensions.vm[KVM_CAP.X86_SMM] ?? 0) > 0;
    this.hyperv = (profile.extensions.system[KVM_CAP_HYPERV] ?? 0) > 0;
    this.cr8SyncedTpr = profile.host.vendorModule === 'kvm_amd';
    const l1 = findCpuid(profile.supportedCpuid, 1, 0);
    this.evmcs = profile.host.vendorModule === 'kvm_intel' && l1 !== undefined && ((l1.ecx >>> 5) & 1) === 1;
    const maxVcpus = profile.extensions.system[KVM_CAP.MAX_VCPUS] ?? 1024;
    this.hvCpuid = profile.hvCpuid ?? hvCpuidFromSource({ evmcs: this.evmcs, smtPossible: true, maxVcpus });
    const started = this.now();
    this.hvEnv = {
      // get_kvmclock_ns: kvmclock starts at 0 when the VM is created (kvm_arch_init_vm).
      timeRef100ns: (vm) => (this.now() - vm.createdAt) * 10000,
      // The calling task's CPU time, which kvmsr cannot know: its own run time stands in for it.
      taskRuntime100ns: () => (this.now() - started) * 10000 + 1,
      xenHypercallEnabled: (vm) => (vm.xenHvmFlags & 2) !== 0,
      maxVcpus,
    };
    this.release = releaseOf(profile.host.kernel);
    this.rules = rulesFor(this.release);
    this.addrBits = fixedAddrBits(this);
    this.supportedCapBits = capBitsOf(profile.supportedCpuid);
    const mce = profile.mceCapSupported ?? vendor.supportedMceCap ?? DEFAULT_MCE_CAP;
    this.supportedMceCapLo = Number(mce & 0xffffffffn);
    this.supportedMceCapHi = Number(mce >> 32n);
    // ~efer_reserved_bits: measured by `profile capture` where it can be (host writes check only
    // these bits, in set_efer); otherwise what kvm_enable_efer_bits gives from CPUID.
    this.eferAllowed = profile.eferAccepted !== undefined ? Number(profile.eferAccepted & 0xffffffffn) | 0 : EFER_SCE | EFER_LME | EFER_LMA | EFER_NX | vendor.eferExtraBits(this);
    if (opts.fastPath !== false) {
      // The classes depend only on the profile and the vendor: build them once per pair.
      let byVendor = FAST_TABLES.get(profile);
      if (!byVendor) FAST_TABLES.set(profile, (byVendor = new WeakMap()));
      const cached = byVendor.get(vendor);
      if (cached) {
        this.fastGet = cached.fastGet;
        this.fastSet = cached.fastSet;
        this.fastSetRan = cached.fastSetRan;
        this.capMask = cached.capMask;
        this.pvBit = cached.pvBit;
      } else {
        buildFastClasses(this);
        buildFastSetRan(this);
        byVendor.set(vendor, { fastGet: this.fastGet, fastSet: this.fastSet, fastSetRan: this.fastSetRan, capMask: this.capMask, pvBit: this.pvBit });
      }
    }
  }

  /** Fast-path class of a host read, per slot (fast-path.ts). */
  readonly fastGet: Uint8Array = new Uint8Array(SLOT_COUNT);
  /** Fast-path class of a host write, per slot, including __kvm_set_msr's checks. */
  readonly fastSet: Uint8Array = new Uint8Array(SLOT_COUNT);

  /** Per slot: the capability bit GET_LOAD_IF_CAP tests. */
  readonly capMask: Uint32Array = new Uint32Array(SLOT_COUNT);
  /** Per slot: the PV feature bit GET_PV_LOAD/SET_PV_STORE test. */
  readonly pvBit: Uint8Array = new Uint8Array(SLOT_COUNT);

  /**
   * fastSet for a vCPU that has run: immutable feature MSRs then take only their current value
   * (do_set_msr), so their writes go down the full path.
   */
  readonly fastSetRan: Uint8Array = new Uint8Array(SLOT_COUNT);

  /** kvm_vcpu_after_set_cpuid: the vendor's part (the common part is in the KVM_SET_CPUID2 handler). */
  afterSetCpuid(vcpu: Vcpu): void {
    this.vendor.vcpuAfterSetCpuid(this, vcpu);
  }

  // ---- kvm_arch_vcpu_create / kvm_vcpu_reset / kvm_arch_vcpu_postcreate ----
  initVcpu(vcpu: Vcpu): void {
    this.clockMs = NaN;
    vcpu.msrs.set(this.resetValues);
    // kvm_lapic_reset: the APIC is enabled at its default base; the BSP (kvm_vcpu_is_reset_bsp:
    // bsp_vcpu_id, 0 unless KVM_SET_BOOT_CPU_ID) has the BSP flag.
    this.store(vcpu, M.MSR_IA32_APICBASE, APIC_DEFAULT_PHYS_BASE | APICBASE_ENABLE | (vcpu.id === vcpu.vm.caps.bspVcpuId ? APICBASE_BSP : 0), 0);
    // kvm_arch_vcpu_create: kvm_set_tsc_khz(vcpu, kvm->arch.default_tsc_khz), result ignored. The
    // vCPU starts with l1_tsc_scaling_ratio 0 and keeps it if that call writes no multiplier: on a
    // host without TSC scaling whose max_tsc_khz lies outside the tolerance band of the refined
    // tsc_khz, the TSC then reads its offset alone and stands still (seen live on kvm_amd 6.12).
    vcpu.tscKhz = 0;
    kvmSetTscKhz(this, vcpu, vcpu.vm.defaultTscKhz === 0 ? this.tscKhz : vcpu.vm.defaultTscKhz);
    this.vendor.vcpuCreate(this, vcpu);
    if (this.hyperv) hvInitVcpu(vcpu);
    // kvm_synchronize_tsc(vcpu, NULL) writes 0, which always synchronizes: a new vCPU joins the
    // VM's TSC generation, and the first one starts it at 0.
    synchronizeTsc(this, vcpu, 0, 0, false);
  }

  // ---- helpers on the vCPU's typed array ----
  load(vcpu: Vcpu, index: number, out: MsrValue): number {
    const s = slotOf(index) * 2;
    out.lo = vcpu.msrs[s]!;
    out.hi = vcpu.msrs[s + 1]!;
    return MSR_OK;
  }
  /**
   * A vendor's reset value (vmx_vcpu_reset, svm_vcpu_reset), where the profile did not measure the
   * MSR on a fresh vCPU: what a build's configuration decides (the SGX launch-enclave hash is 0
   * without CONFIG_X86_SGX_KVM, Intel's hash with it) comes from the host's answer.
   */
  storeReset(vcpu: Vcpu, index: number, lo: number, hi: number): void {
    if (!this.measuredReset.has(index)) this.store(vcpu, index, lo, hi);
  }
  store(vcpu: Vcpu, index: number, lo: number, hi: number): number {
    const s = slotOf(index) * 2;
    vcpu.msrs[s] = lo;
    vcpu.msrs[s + 1] = hi;
    return MSR_OK;
  }
  /** guest_cpu_cap_has(X86_FEATURE_OSVW): CPUID 0x80000001 ECX[9], in the vCPU's CPUID and KVM's. */
  hasOsvw(vcpu: Vcpu): boolean {
    const bit = (l: readonly CpuidEntry2[]): boolean => (((findCpuid(l, 0x80000001, 0)?.ecx ?? 0) >>> 9) & 1) === 1;
    return bit(vcpu.cpuid) && bit(this.profile.supportedCpuid);
  }

  hasCap(vcpu: Vcpu, cap: number): boolean {
    return (vcpu.capBits & cap) !== 0;
  }
  /** guest_pv_has: every PV feature counts as present unless enforcement was enabled. */
  guestPvHas(vcpu: Vcpu, feature: number): boolean {
    return !vcpu.enforcePvCpuid || ((vcpu.pvFeatures >>> feature) & 1) === 1;
  }
  /** A Hyper-V MSR that hyperv.c answers on this kernel (CONFIG_KVM_HYPERV, and the release's set). */
  isHv(index: number): boolean {
    return this.hyperv && isHvMsr(index) && (index !== HV_X64_MSR_TSC_INVARIANT_CONTROL || this.rules.hvTscInvariantControl);
  }

  /** 57 or 48 where the release checks against the host (canonical.ts), 0 where the vCPU's CR4 decides. */
  readonly addrBits: number;
  /** Whether canonical checks on this vCPU use 57 bits. */
  private la57(vcpu: Vcpu): boolean {
    const bits = this.addrBits;
    return bits === 57 || (bits === 0 && vcpuLa57(vcpu));
  }
  /** is_noncanonical(_msr)_address for this release (canonical.ts). */
  isNoncanonical(vcpu: Vcpu, hi: number): boolean {
    return noncanonicalHi(this.la57(vcpu), hi);
  }
  /** __canonical_address(hi) for this release (canonical.ts). */
  canonicalHi(vcpu: Vcpu, hi: number): number {
    return canonicalizedHi(this.la57(vcpu), hi);
  }

  // ---- the guest TSC (kvm_get_msr_common MSR_IA32_TSC, kvm_synchronize_tsc) ----
  /**
   * The clock reading for the current ioctl (NaN: not read yet). Reading a clock costs more than
   * an entry, so all TSC entries of one KVM_GET_MSRS share one reading.
   */
  clockMs = NaN;
  clock(): number {
    let t = this.clockMs;
    if (t !== t) t = this.clockMs = this.now();
    return t;
  }

  // ---- __kvm_get_msr / __kvm_set_msr ----
  getMsr(vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    if (index === M.MSR_TSC_AUX) {
      if (!this.tscAuxSupported) return MSR_ERR;
      if (!host && !this.hasCap(vcpu, CAP.RDTSCP) && !this.hasCap(vcpu, CAP.RDPID)) return MSR_ERR;
    } else if (isCetMsr(index)) {
      const r = cetGate(this, vcpu, index, host);
      if (r !== MSR_OK) return r;
    }
    return this.vendor.getMsr(this, vcpu, index, host, out);
  }

  setMsr(vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    switch (index) {
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_CSTAR:
      case M.MSR_LSTAR:
        if (this.isNoncanonical(vcpu, hi)) return MSR_ERR;
        break;
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
        hi = this.canonicalHi(vcpu, hi);
        break;
      case M.MSR_TSC_AUX:
        if (!this.tscAuxSupported) return MSR_ERR;
        if (!host && !this.hasCap(vcpu, CAP.RDTSCP) && !this.hasCap(vcpu, CAP.RDPID)) return MSR_ERR;
        if (hi !== 0 && (this.rules.tscAuxHighBitsUnlessAmd ? !vcpu.amdCompatible : vcpu.intelVendor)) return MSR_ERR;
        hi = 0;
        break;
      default:
        if (isCetMsr(index)) {
          const r = cetSetCheck(this, vcpu, index, host, lo, hi);
          if (r !== MSR_OK) return r;
        }
    }
    return this.vendor.setMsr(this, vcpu, index, host, lo, hi);
  }

  // ---- kvm_do_msr_access ----
  /** Read access; on failure out is zeroed. */
  accessRead(vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    const ret = this.getMsr(vcpu, index, host, out);
    if (ret === MSR_OK) return ret;
    out.lo = 0;
    out.hi = 0;
    return unsupportedAccess(this, ret, index, host, 0, 0, 'rdmsr');
  }
  accessWrite(vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    const ret = this.setMsr(vcpu, index, host, lo, hi);
    if (ret === MSR_OK) return ret;
    return unsupportedAccess(this, ret, index, host, lo, hi, 'wrmsr');
  }
  // ---- do_get_msr / do_set_msr / do_get_feature_msr (the KVM_GET/SET_MSRS entry points) ----
  doGetMsr(vcpu: Vcpu, index: number, out: MsrValue): number {
    return this.accessRead(vcpu, index, true, out);
  }

  doSetMsr(vcpu: Vcpu, index: number, lo: number, hi: number): number {
    // Writes to immutable feature MSRs after KVM_RUN must match the current value.
    if (vcpu.hasRun && isImmutableFeatureMsr(this, index)) {
      const cur = this.scratch;
      if (this.doGetMsr(vcpu, index, cur) !== MSR_OK || (cur.lo | 0) !== (lo | 0) || (cur.hi | 0) !== (hi | 0)) return -EINVAL;
      return MSR_OK;
    }
    return this.accessWrite(vcpu, index, true, lo, hi);
  }

  /** kvm_get_feature_msr through kvm_do_msr_access, with no vCPU. */
  doGetFeatureMsr(index: number, out: MsrValue): number {
    let ret: number;
    if (this.featureList.has(index)) {
      const s = slotOf(index) * 2;
      out.lo = this.featureValues[s]!;
      out.hi = this.featureValues[s + 1]!;
      ret = MSR_OK;
    } else {
      ret = this.vendor.getFeatureMsr(this, index, out);
    }
    if (ret === MSR_OK) return ret;
    out.lo = 0;
    out.hi = 0;
    return unsupportedAccess(this, ret, index, true, 0, 0, 'rdmsr');
  }

  // ---- kvm_get_msr_common ----
  getMsrCommon(vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    if (this.isHv(index)) return hvGetMsr(this.hvEnv, vcpu, index, host, out);
    // Legacy PMU MSRs the vPMU does not own (enable_pmu=N on the hosts kvmsr models) read 0.
    if (isLegacyPmuMsr(index) || ZERO_READ_MSRS.has(index)) return zero(out);
    if (isMceBankMsr(index)) return getMce(this, vcpu, index, host, out);
    if (isMtrrRange(index)) return getMtrr(this, vcpu, index, out);
    if (isPvMsr(index)) return getPvMsr(this, vcpu, index, out);
    switch (index) {
      case M.MSR_IA32_APICBASE:
        return this.load(vcpu, index, out);
      case M.MSR_IA32_SMBASE:
        // Readable by the host only, and only in a kernel built with CONFIG_KVM_SMM, which
        // KVM_CAP_X86_SMM tells; whether it is listed is the vendor's call.
        if (!host || !this.smm) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_IA32_P5_MC_ADDR:
      case M.MSR_IA32_P5_MC_TYPE:
        return zero(out);
      case M.MSR_IA32_MCG_CAP:
        return this.load(vcpu, index, out);
      case M.MSR_IA32_TSC:
        return getTscMsr(this, vcpu, host, out);
      case M.MSR_IA32_UCODE_REV:
      case M.MSR_IA32_CR_PAT:
      case M.MSR_IA32_TSC_ADJUST:
      case M.MSR_IA32_MISC_ENABLE:
      case M.MSR_SMI_COUNT:
      case M.MSR_IA32_POWER_CTL:
      case M.MSR_MISC_FEATURES_ENABLES:
      case M.MSR_K7_HWCR:
      case M.MSR_IA32_MCG_STATUS:
        return this.load(vcpu, index, out);
      case M.MSR_VM_HSAVE_PA:
      case M.MSR_IA32_LASTBRANCHFROMIP:
      case M.MSR_IA32_LASTBRANCHTOIP:
      case M.MSR_IA32_LASTINTFROMIP:
      case M.MSR_IA32_LASTINTTOIP:
        return zero(out);
      case M.MSR_IA32_PERF_STATUS:
        // "TSC increment by tick" 1000, CPU multiplier 4 at bit 40.
        out.lo = 1000;
        out.hi = 4 << 8;
        return MSR_OK;
      case M.MSR_K7_CLK_CTL:
        out.lo = 0x20000000; // the ramp-up count old K7 guests expect
        out.hi = 0;
        return MSR_OK;
      case M.MSR_IA32_BBL_CR_CTL3:
        out.lo = 0xbe702111; // "L2 cache control register 3", as winxp reads it
        out.hi = 0;
        return MSR_OK;
      case M.MSR_AMD64_OSVW_ID_LENGTH:
      case M.MSR_AMD64_OSVW_STATUS:
        // The host too needs the OSVW bit in the vCPU's CPUID.
        if (!this.hasOsvw(vcpu)) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_IA32_ARCH_CAPABILITIES:
      case M.MSR_IA32_PERF_CAPABILITIES:
        return getCapabilitiesMsr(this, vcpu, index, host, out);
      case M.MSR_IA32_TSC_DEADLINE:
        return getTscDeadline(this, vcpu, out);
      case M.MSR_IA32_MCG_CTL:
        return getMcgCtl(this, vcpu, host, out);
      case M.MSR_PLATFORM_INFO:
        if (!host && !vcpu.vm.guestCanReadPlatformInfo) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_EFER:
        return this.load(vcpu, index, out);
      case M.MSR_IA32_XSS:
        if (!host && !this.hasCap(vcpu, CAP.XSAVES)) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_IA32_XFD:
      case M.MSR_IA32_XFD_ERR:
        if (!host && !this.hasCap(vcpu, CAP.XFD)) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_IA32_U_CET:
      case M.MSR_IA32_PL0_SSP:
      case M.MSR_IA32_PL0_SSP + 1:
      case M.MSR_IA32_PL0_SSP + 2:
      case M.MSR_IA32_PL3_SSP:
        return this.load(vcpu, index, out);
      default:
        return commonDefaultGet(this, index, host, out);
    }
  }

  // ---- kvm_set_msr_common ----
  setMsrCommon(vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    // KVM_XEN_HVM_CONFIG's MSR comes before every other rule (the index may be a Hyper-V one).
    const xen = vcpu.vm.xenHvmMsr;
    if (xen !== 0 && index >>> 0 === xen >>> 0) {
      const longMode = (vcpu.msrs[slotOf(M.MSR_EFER) * 2]! & EFER_LMA) !== 0;
      return xenWriteHypercallPage(vcpu.vm, lo, hi, longMode, this.userReadable);
    }
    if (this.isHv(index)) return hvSetMsr(this.hvEnv, vcpu, index, host, lo, hi);
    // Legacy PMU MSRs the vPMU does not own accept every value and drop it, as do these.
    if (isLegacyPmuMsr(index) || DROPPED_WRITE_MSRS.has(index)) return MSR_OK;
    if (isMceBankMsr(index)) return setMce(this, vcpu, index, host, lo, hi);
    if (isMtrrRange(index)) return setMtrr(this, vcpu, index, lo, hi);
    if (isPvMsr(index)) return setPvMsr(this, vcpu, index, lo, hi);
    switch (index) {
      case M.MSR_IA32_APICBASE:
        return setApicBase(this, vcpu, host, lo, hi);
      case M.MSR_IA32_PRED_CMD:
        return setPredCmd(this, vcpu, host, lo, hi);
      case M.MSR_IA32_FLUSH_CMD:
        return setFlushCmd(this, vcpu, host, lo, hi);
      case M.MSR_IA32_SMBASE:
        if (!host || !this.smm) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_EFER:
        return setEfer(this, vcpu, host, lo, hi);
      case M.MSR_IA32_XSS:
        return setXss(this, vcpu, host, lo, hi);
      case M.MSR_IA32_XFD:
      case M.MSR_IA32_XFD_ERR:
        return setXfd(this, vcpu, index, host, lo, hi);
      case M.MSR_IA32_U_CET:
      case M.MSR_IA32_PL0_SSP:
      case M.MSR_IA32_PL0_SSP + 1:
      case M.MSR_IA32_PL0_SSP + 2:
      case M.MSR_IA32_PL3_SSP:
        // XSAVE-managed state (kvm_set_xstate_msr): the checks ran in __kvm_set_msr.
        return this.store(vcpu, index, lo, hi);
      case M.MSR_VM_HSAVE_PA:
        return MSR_OK; // accepted and dropped
      case M.MSR_FAM10H_MMIO_CONF_BASE:
        return lo === 0 && hi === 0 ? MSR_OK : MSR_ERR;
      case M.MSR_AMD64_OSVW_ID_LENGTH:
      case M.MSR_AMD64_OSVW_STATUS:
        if (!this.hasOsvw(vcpu)) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_UCODE_REV:
        if (host) this.store(vcpu, index, lo, hi);
        return MSR_OK;
      case M.MSR_IA32_ARCH_CAPABILITIES:
        return setArchCapabilities(this, vcpu, host, lo, hi);
      case M.MSR_IA32_PERF_CAPABILITIES:
        return setPerfCapabilities(this, vcpu, host, lo, hi);
      case M.MSR_K7_HWCR:
        return setHwcr(this, vcpu, lo, hi);
      case M.MSR_IA32_CR_PAT:
        if (!patValid(lo, hi)) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_TSC_DEADLINE:
        return setTscDeadline(this, vcpu, lo, hi);
      case M.MSR_IA32_TSC_ADJUST:
        return setTscAdjust(this, vcpu, host, lo, hi);
      case M.MSR_IA32_MISC_ENABLE:
        if (!host) {
          // kvm_set_msr_common: the guest may not change BTS/PEBS_UNAVAIL (PMU_RO_MASK), and its
          // writes to EMON (bit 7) are ignored.
          const old = this.scratch;
          this.load(vcpu, index, old);
          if (((old.lo ^ lo) & MISC_ENABLE_PMU_RO_MASK) !== 0) return MSR_ERR;
          lo = (lo & ~MISC_ENABLE_EMON) | (old.lo & MISC_ENABLE_EMON);
        }
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_POWER_CTL:
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_TSC:
        return setTscMsr(this, vcpu, host, lo, hi);
      case M.MSR_SMI_COUNT:
        if (!host) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_MCG_STATUS:
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_MCG_CTL:
        return setMcgCtl(this, vcpu, host, lo, hi);
      case M.MSR_PLATFORM_INFO:
        return setPlatformInfo(this, vcpu, host, lo, hi);
      case M.MSR_MISC_FEATURES_ENABLES:
        return setMiscFeaturesEnables(this, vcpu, lo, hi);
      default:
        return commonDefaultSet(this, index, host, lo, hi);
    }
  }

  /**
   * The low half of another MSR as KVM's cross-MSR checks see it (PLATFORM_INFO against
   * MISC_FEATURES_ENABLES, MCi_STATUS against HWCR). An MSR whose vendor hook a host profile
   * measured as storing keeps its value in the vendor's own field, which KVM's common checks
   * never read unless a pair probe measured that they do (measured-rules.ts): they then see KVM's
   * own field, still its reset value.
   */
  crossLoadLo(vcpu: Vcpu, index: number): number {
    const s = slotOf(index) * 2;
    return this.decoupled.has(index) ? this.resetValues[s]! : vcpu.msrs[s]!;
  }

  /** One register of (guest CPUID leaf.sub) & (KVM's supported leaf.sub); 0 if either lacks the leaf. */
  guestSupported(vcpu: Vcpu, leaf: number, sub: number, reg: 'eax' | 'ecx' | 'edx'): number {
    const g = findCpuid(vcpu.cpuid, leaf, sub);
    const k = findCpuid(this.profile.supportedCpuid, leaf, sub);
    return g && k ? g[reg] & k[reg] : 0;
  }
}

const KVM_CAP_HYPERV = 44;
const APIC_DEFAULT_PHYS_BASE = 0xfee00000 | 0;
const APICBASE_BSP = 1 << 8;
const APICBASE_ENABLE = 1 << 11;

interface FastTables {
  fastGet: Uint8Array;
  fastSet: Uint8Array;
  fastSetRan: Uint8Array;
  capMask: Uint32Array;
  pvBit: Uint8Array;
}
const FAST_TABLES = new WeakMap<HostProfile, WeakMap<VendorOps, FastTables>>();

function performanceNow(): number {
  return performance.now();
}

export function zero(out: MsrValue): number {
  out.lo = 0;
  out.hi = 0;
  return MSR_OK;
}

function storeU64(arr: Uint32Array, index: number, v: bigint): void {
  const s = slotOf(index) * 2;
  arr[s] = Number(v & 0xffffffffn);
  arr[s + 1] = Number((v >> 32n) & 0xffffffffn);
}
