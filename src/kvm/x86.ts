// The vendor-neutral MSR rules of arch/x86/kvm/x86.c: kvm_do_msr_access, __kvm_get_msr,
// __kvm_set_msr, do_get_msr/do_set_msr/do_get_feature_msr, kvm_get_msr_common and
// kvm_set_msr_common. Values move as (lo, hi) 32-bit halves; a value being written travels as
// int32 halves (a uint32 above 2^31 would be boxed at every call), and rules compare bits, not
// signs. Nothing here allocates per entry.
import { uptime } from 'node:os';
import { KVM_CAP } from '../abi/kvm-ioctls.js';
import { CAP, capBitsOf } from './cpuid-caps.js';
import { M } from './msr-index.js';
import { MSR_ERR, MSR_OK, MSR_UNSUPPORTED, type MsrValue } from './msr-ret.js';
import {
  FAST_SLOW,
  GATED_CAP,
  GATED_PV,
  GET_LOAD,
  GET_LOAD_IF_CAP,
  GET_PV_LOAD,
  GET_PV_WALL_CLOCK,
  GET_PV_ZERO,
  GET_TSC,
  GET_TSC_DEADLINE,
  SET_TSC_DEADLINE,
  GET_ZERO,
  PV_PARAM,
  SET_PV_STORE_KVMCLOCK,
  SET_CANONICAL,
  SET_CANONICALIZE,
  SET_DROP,
  SET_PAT,
  SET_PV_STORE,
  SET_PV_WALL_CLOCK,
  SET_PV_ZERO_ONLY,
  SET_PV_ZERO_STORE,
  SET_STORE,
  SET_ZERO_ONLY,
  SET_ZERO_STORE,
  SET_STORE_IF_CAP_ELSE_DROP,
  SET_STORE_IF_CAP_ELSE_ZERO_ONLY,
  SET_PV_BIT0_STORE,
  SET_PV_BYTE_STORE_IF_IRQCHIP,
  SET_PLATFORM_INFO,
  SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY,
  CAP_PARAM,
  UNHANDLED,
} from './fast-path.js';
import { hvCpuidFromSource } from './hyperv-cpuid.js';
import { hvGetMsr, hvInitVcpu, hvSetMsr, isHvMsr, type HvEnv } from './hyperv.js';
import { indexOfSlot, MsrSet, SLOT_COUNT, slotOf } from './msr-slots.js';
import { xenWriteHypercallPage } from './xen.js';
import type { CpuidEntry2 } from '../abi/codecs.js';
import { findCpuid, type HostProfile } from './profile.js';
import type { Vcpu } from './vcpu.js';
import type { VendorOps } from './vendor.js';
import { tscDeadlineArmed } from './vcpu-state.js';
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

/**
 * Legacy and model-specific MSRs kvm_get_msr_common reads as 0 with no CPUID check, so that old
 * guests boot (the RAPL ones also hide the host's energy counters). Writes to some are dropped
 * (kvm_set_msr_common), to the rest unsupported. Found handled but unlisted by the harvest's rule
 * probes on kvm_pvm 6.18.44; the rules are x86.c's.
 */
const ZERO_READ_MSRS: ReadonlySet<number> = new Set([
  M.MSR_IA32_PLATFORM_ID, M.MSR_IA32_EBL_CR_POWERON, M.MSR_AMD64_SYSCFG, M.MSR_K8_TSEG_ADDR, M.MSR_K8_TSEG_MASK,
  M.MSR_K8_INT_PENDING_MSG, M.MSR_AMD64_NB_CFG, M.MSR_FAM10H_MMIO_CONF_BASE, M.MSR_AMD64_BU_CFG2, M.MSR_IA32_PERF_CTL,
  M.MSR_AMD64_DC_CFG, M.MSR_AMD64_TW_CFG, M.MSR_F15H_EX_CFG, M.MSR_RAPL_POWER_UNIT, M.MSR_PP0_ENERGY_STATUS,
  M.MSR_PP1_ENERGY_STATUS, M.MSR_PKG_ENERGY_STATUS, M.MSR_DRAM_ENERGY_STATUS,
]);

/** MSRs whose writes kvm_set_msr_common accepts and drops (microcode loading, AMD config, K7 clock). */
const DROPPED_WRITE_MSRS: ReadonlySet<number> = new Set([
  M.MSR_AMD64_NB_CFG, M.MSR_IA32_UCODE_WRITE, M.MSR_AMD64_PATCH_LOADER, M.MSR_AMD64_BU_CFG2, M.MSR_AMD64_DC_CFG,
  M.MSR_AMD64_TW_CFG, M.MSR_F15H_EX_CFG, M.MSR_K7_CLK_CTL, M.MSR_IA32_BBL_CR_CTL3,
]);

/** MSR_IA32_MISC_ENABLE_PMU_RO_MASK (BTS_UNAVAIL | PEBS_UNAVAIL) and MSR_IA32_MISC_ENABLE_EMON. */
const MISC_ENABLE_PMU_RO_MASK = 0x1800;
const MISC_ENABLE_EMON = 0x80;
const EINVAL = 22;
const TWO32 = 4294967296;
const TWO64 = TWO32 * TWO32;
/** x modulo 2^64, for a double within one wrap of [0, 2^64) (precise to the double's 53 bits). */
const wrap64 = (x: number): number => (x >= TWO64 ? x - TWO64 : x < 0 ? x + TWO64 : x);
/** (hi:lo) + cycles modulo 2^64, into out; cycles is an integer, possibly negative. */
function addCycles(lo: number, hi: number, cycles: number, out: MsrValue): void {
  const addHi = Math.floor(cycles / TWO32);
  const sum = lo + (cycles - addHi * TWO32);
  out.lo = sum >>> 0;
  out.hi = (hi + addHi + (sum >= TWO32 ? 1 : 0)) >>> 0;
}
/** How long before performance.now()'s origin this machine booted, in ms. */
const HOST_BOOT_AGO_MS = Math.max(0, uptime() * 1000 - performance.now());
/** KVM_MAX_MCE_BANKS: a new vCPU's MCG_CAP until KVM_X86_SETUP_MCE. */
const KVM_MAX_MCE_BANKS = 32;
const MCG_CTL_P = 1 << 8;
/** kvm_caps.supported_mce_cap before the vendor adds to it: MCG_CTL_P | MCG_SER_P. */
const DEFAULT_MCE_CAP = 0x1000100n;
const MCG_CMCI_P = 1 << 10;
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
  /**
   * The kernel's major*100+minor (612, 618) from profile.host.kernel: the rules that changed between
   * the generations kvmsr knows follow it (see kernelGeneration).
   */
  readonly kernel: number;
  /**
   * 6.14 on: ARCH_CAPABILITIES and PERF_CAPABILITIES are unsupported, for the host too, unless the
   * vCPU model has the CPUID bit. 6.12: the host always reads and writes them.
   */
  readonly featureMsrsNeedCpuid: boolean;
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
  private readonly log: (line: string) => void;
  readonly now: () => number;
  private readonly scratch: MsrValue = { lo: 0, hi: 0 };
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
    this.log = opts.log ?? (() => undefined);
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
    this.kernel = kernelGeneration(profile.host.kernel);
    this.featureMsrsNeedCpuid = this.kernel >= 614;
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
        this.buildFastClasses();
        this.buildFastSetRan();
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

  private buildFastClasses(): void {
    for (let s = 0; s < SLOT_COUNT; s++) {
      const index = indexOfSlot(s);
      // CET MSRs pass the gates of __kvm_get/set_msr first: always the full path.
      if (isCetMsr(index)) continue;
      const advertised = this.advertised.has(index);
      const g = this.vendor.fastGetClass(this, index);
      switch (g & 0xff) {
        case UNHANDLED:
          this.fastGet[s] = advertised ? GET_ZERO : FAST_SLOW;
          break;
        case GATED_CAP:
          if (advertised) {
            this.fastGet[s] = GET_LOAD_IF_CAP;
            this.capMask[s] = 2 ** (g >>> 8);
          }
          break;
        case GATED_PV:
          this.fastGet[s] = GET_PV_LOAD;
          this.pvBit[s] = g >>> 8;
          break;
        default:
          this.fastGet[s] = g & 0x7f;
          if ((g & PV_PARAM) !== 0) this.pvBit[s] = g >>> 8;
      }
      const v = this.vendor.fastSetClass(this, index);
      switch (index) {
        case M.MSR_FS_BASE:
        case M.MSR_GS_BASE:
        case M.MSR_KERNEL_GS_BASE:
        case M.MSR_CSTAR:
        case M.MSR_LSTAR:
          this.fastSet[s] = v === SET_STORE ? SET_CANONICAL : FAST_SLOW;
          break;
        case M.MSR_IA32_SYSENTER_EIP:
        case M.MSR_IA32_SYSENTER_ESP:
          this.fastSet[s] = v === SET_STORE ? SET_CANONICALIZE : FAST_SLOW;
          break;
        case M.MSR_TSC_AUX:
          break;
        default:
          if ((v & 0xff) === UNHANDLED) {
            this.fastSet[s] = advertised ? SET_ZERO_ONLY : FAST_SLOW;
          } else if ((v & 0xff) === GATED_CAP) {
            if (advertised) {
              this.fastSet[s] = SET_STORE_IF_CAP_ELSE_ZERO_ONLY;
              this.capMask[s] = 2 ** (v >>> 8);
            }
          } else if ((v & CAP_PARAM) !== 0 && (v & 0xc0) === 0) {
            this.fastSet[s] = v & 0x1f;
            this.capMask[s] = 2 ** (v >>> 8);
          } else if ((v & 0xff) === GATED_PV) {
            this.fastSet[s] = SET_PV_STORE;
            this.pvBit[s] = v >>> 8;
          } else {
            this.fastSet[s] = v & 0x7f;
            if ((v & PV_PARAM) !== 0) this.pvBit[s] = v >>> 8;
          }
      }
    }
  }

  /**
   * fastSet for a vCPU that has run: immutable feature MSRs then take only their current value
   * (do_set_msr), so their writes go down the full path.
   */
  readonly fastSetRan: Uint8Array = new Uint8Array(SLOT_COUNT);

  private buildFastSetRan(): void {
    this.fastSetRan.set(this.fastSet);
    for (let s = 0; s < SLOT_COUNT; s++) if (isImmutableFeatureMsr(indexOfSlot(s))) this.fastSetRan[s] = FAST_SLOW;
  }

  /** Fast-path read classes of what kvm_get_msr_common does for the host. */
  commonFastGetClass(index: number): number {
    if (this.hyperv && isHvMsr(index)) return FAST_SLOW;
    if (isLegacyPmuMsr(index) || ZERO_READ_MSRS.has(index)) return GET_ZERO;
    if (isMceBankMsr(index) || isMtrrRange(index)) return FAST_SLOW;
    switch (index) {
      case M.MSR_IA32_APICBASE:
        return GET_LOAD;
      case M.MSR_IA32_SMBASE:
        return this.smm ? GET_LOAD : FAST_SLOW;
      case M.MSR_IA32_MCG_CAP:
        return GET_LOAD;
      case M.MSR_IA32_P5_MC_ADDR:
      case M.MSR_IA32_P5_MC_TYPE:
        return GET_ZERO;
      case M.MSR_IA32_UCODE_REV:
      case M.MSR_IA32_CR_PAT:
      case M.MSR_IA32_TSC_ADJUST:
      case M.MSR_IA32_MISC_ENABLE:
      case M.MSR_SMI_COUNT:
      case M.MSR_IA32_POWER_CTL:
      case M.MSR_MISC_FEATURES_ENABLES:
      case M.MSR_K7_HWCR:
      case M.MSR_IA32_MCG_STATUS:
      case M.MSR_IA32_MCG_CTL:
      case M.MSR_EFER:
        return GET_LOAD;
      case M.MSR_VM_HSAVE_PA:
      case M.MSR_IA32_LASTBRANCHFROMIP:
      case M.MSR_IA32_LASTBRANCHTOIP:
      case M.MSR_IA32_LASTINTFROMIP:
      case M.MSR_IA32_LASTINTTOIP:
        return GET_ZERO;
      case M.MSR_IA32_TSC_DEADLINE:
        return GET_TSC_DEADLINE; // the LAPIC timer mode decides (vcpu-state.ts)
      case M.MSR_IA32_PERF_STATUS:
      case M.MSR_K7_CLK_CTL:
      case M.MSR_IA32_BBL_CR_CTL3:
      case M.MSR_AMD64_OSVW_ID_LENGTH:
      case M.MSR_AMD64_OSVW_STATUS:
        return FAST_SLOW;
      case M.MSR_IA32_ARCH_CAPABILITIES:
        if (!this.featureMsrsNeedCpuid) return FAST_SLOW;
        return GATED_CAP | (capIndex(CAP.ARCH_CAPABILITIES) << 8);
      case M.MSR_IA32_PERF_CAPABILITIES:
        if (!this.featureMsrsNeedCpuid) return FAST_SLOW;
        return GATED_CAP | (capIndex(CAP.PDCM) << 8);
      case M.MSR_KVM_SYSTEM_TIME:
      case M.MSR_KVM_SYSTEM_TIME_NEW:
      case M.MSR_KVM_ASYNC_PF_EN:
      case M.MSR_KVM_ASYNC_PF_INT:
      case M.MSR_KVM_STEAL_TIME:
      case M.MSR_KVM_PV_EOI_EN:
      case M.MSR_KVM_POLL_CONTROL:
        return GATED_PV | (pvFeatureOf(index) << 8);
      case M.MSR_PLATFORM_INFO:
        return GET_LOAD; // host reads are never gated
      case M.MSR_KVM_ASYNC_PF_ACK:
        return GET_PV_ZERO | PV_PARAM | (M.KVM_FEATURE_ASYNC_PF_INT << 8);
      case M.MSR_KVM_WALL_CLOCK:
        return GET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE << 8);
      case M.MSR_KVM_WALL_CLOCK_NEW:
        return GET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE2 << 8);
      case M.MSR_IA32_TSC:
        return GET_TSC;
      case M.MSR_IA32_XSS:
      case M.MSR_IA32_XFD:
      case M.MSR_IA32_XFD_ERR:
        return FAST_SLOW;
      default:
        return UNHANDLED;
    }
  }

  /** Fast-path write classes of what kvm_set_msr_common does for the host. */
  commonFastSetClass(index: number): number {
    if (this.hyperv && isHvMsr(index)) return FAST_SLOW;
    if (isLegacyPmuMsr(index) || DROPPED_WRITE_MSRS.has(index)) return SET_DROP;
    if (isMceBankMsr(index) || isMtrrRange(index)) return FAST_SLOW;
    switch (index) {
      case M.MSR_IA32_APICBASE:
      case M.MSR_IA32_PRED_CMD:
      case M.MSR_IA32_FLUSH_CMD:
        return FAST_SLOW;
      case M.MSR_IA32_SMBASE:
        return this.smm ? SET_STORE : FAST_SLOW;
      case M.MSR_IA32_MISC_ENABLE:
      case M.MSR_IA32_POWER_CTL:
      case M.MSR_IA32_MCG_STATUS:
      case M.MSR_SMI_COUNT:
      case M.MSR_IA32_UCODE_REV:
        return SET_STORE;
      case M.MSR_VM_HSAVE_PA:
        return SET_DROP;
      case M.MSR_IA32_TSC_DEADLINE:
        return SET_TSC_DEADLINE;
      case M.MSR_FAM10H_MMIO_CONF_BASE:
      case M.MSR_AMD64_OSVW_ID_LENGTH:
      case M.MSR_AMD64_OSVW_STATUS:
        return FAST_SLOW;
      case M.MSR_IA32_CR_PAT:
        return SET_PAT;
      case M.MSR_KVM_SYSTEM_TIME:
      case M.MSR_KVM_SYSTEM_TIME_NEW:
        return SET_PV_STORE_KVMCLOCK | PV_PARAM | (pvFeatureOf(index) << 8); // one value for both
      case M.MSR_K7_HWCR:
      case M.MSR_IA32_MCG_CTL:
      case M.MSR_MISC_FEATURES_ENABLES:
        return SET_ZERO_STORE;
      // With the PV feature, 0 is always valid and stored (without an irqchip ASYNC_PF_EN stores
      // nothing, but then it can only ever hold 0).
      case M.MSR_KVM_ASYNC_PF_EN:
      case M.MSR_KVM_STEAL_TIME:
      case M.MSR_KVM_PV_EOI_EN:
        return SET_PV_ZERO_STORE | PV_PARAM | (pvFeatureOf(index) << 8);
      case M.MSR_KVM_POLL_CONTROL:
        return SET_PV_BIT0_STORE | PV_PARAM | (pvFeatureOf(index) << 8);
      case M.MSR_KVM_ASYNC_PF_INT:
        return SET_PV_BYTE_STORE_IF_IRQCHIP | PV_PARAM | (pvFeatureOf(index) << 8);
      case M.MSR_PLATFORM_INFO:
        return SET_PLATFORM_INFO;
      case M.MSR_IA32_PERF_CAPABILITIES:
        if (!this.featureMsrsNeedCpuid) return FAST_SLOW;
        return SET_ZERO_STORE_IF_CAP_ELSE_ZERO_ONLY | CAP_PARAM | (capIndex(CAP.PDCM) << 8);
      case M.MSR_KVM_ASYNC_PF_ACK:
        return SET_PV_ZERO_ONLY | PV_PARAM | (M.KVM_FEATURE_ASYNC_PF_INT << 8);
      case M.MSR_KVM_WALL_CLOCK:
        return SET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE << 8);
      case M.MSR_KVM_WALL_CLOCK_NEW:
        return SET_PV_WALL_CLOCK | PV_PARAM | (M.KVM_FEATURE_CLOCKSOURCE2 << 8);
      case M.MSR_IA32_ARCH_CAPABILITIES:
        if (!this.featureMsrsNeedCpuid) return FAST_SLOW;
        // Stored with the CPUID bit; without it, advertised-but-unsupported (writes of 0 pass).
        return GATED_CAP | (capIndex(CAP.ARCH_CAPABILITIES) << 8);
      case M.MSR_IA32_TSC_ADJUST:
        // A host write is stored with the CPUID bit and dropped without; it never moves the TSC.
        return SET_STORE_IF_CAP_ELSE_DROP | CAP_PARAM | (capIndex(CAP.TSC_ADJUST) << 8);
      case M.MSR_IA32_TSC:
        // A vendor that cannot offset the TSC ignores host writes (kvm_synchronize_tsc returns early).
        return this.vendor.tscOffsetHonored ? FAST_SLOW : SET_DROP;
      case M.MSR_EFER:
      case M.MSR_IA32_XSS:
      case M.MSR_IA32_XFD:
      case M.MSR_IA32_XFD_ERR:
        return FAST_SLOW;
      default:
        return UNHANDLED;
    }
  }

  /** kvm_vcpu_after_set_cpuid: the vendor's part (the common part is in the KVM_SET_CPUID2 handler). */
  afterSetCpuid(vcpu: Vcpu): void {
    this.vendor.vcpuAfterSetCpuid(this, vcpu);
  }

  // ---- kvm_arch_vcpu_create / kvm_vcpu_reset / kvm_arch_vcpu_postcreate ----
  initVcpu(vcpu: Vcpu): void {
    this.clockMs = NaN;
    vcpu.msrs.set(this.resetValues);
    // kvm_lapic_reset: the APIC is enabled at its default base; vCPU 0 is the BSP (bsp_vcpu_id 0).
    this.store(vcpu, M.MSR_IA32_APICBASE, APIC_DEFAULT_PHYS_BASE | APICBASE_ENABLE | (vcpu.id === 0 ? APICBASE_BSP : 0), 0);
    // kvm_arch_vcpu_create: kvm_set_tsc_khz(vcpu, kvm->arch.default_tsc_khz), result ignored. The
    // vCPU starts with l1_tsc_scaling_ratio 0 and keeps it if that call writes no multiplier: on a
    // host without TSC scaling whose max_tsc_khz lies outside the tolerance band of the refined
    // tsc_khz, the TSC then reads its offset alone and stands still (seen live on kvm_amd 6.12).
    vcpu.tscKhz = 0;
    this.kvmSetTscKhz(vcpu, vcpu.vm.defaultTscKhz === 0 ? this.tscKhz : vcpu.vm.defaultTscKhz);
    this.vendor.vcpuCreate(this, vcpu);
    if (this.hyperv) hvInitVcpu(vcpu);
    // kvm_synchronize_tsc(vcpu, NULL) writes 0, which always synchronizes: a new vCPU joins the
    // VM's TSC generation, and the first one starts it at 0.
    this.synchronizeTsc(vcpu, 0, 0, false);
  }

  // ---- helpers on the vCPU's typed array ----
  load(vcpu: Vcpu, index: number, out: MsrValue): number {
    const s = slotOf(index) * 2;
    out.lo = vcpu.msrs[s]!;
    out.hi = vcpu.msrs[s + 1]!;
    return MSR_OK;
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
  /** is_noncanonical_msr_address against max_host_virt_addr_bits(). */
  isNoncanonical(hi: number): boolean {
    if (this.hostLa57) {
      const top = hi >>> 24;
      return top !== 0 && top !== 0xff;
    }
    const top = hi >>> 15;
    return top !== 0 && top !== 0x1ffff;
  }
  /** __canonical_address(hi) for the upper half: sign-extends from bit 47 (or 56); an int32. */
  canonicalHi(hi: number): number {
    return this.hostLa57 ? (hi << 7) >> 7 : (hi << 16) >> 16;
  }

  // ---- the guest TSC (kvm_get_msr_common MSR_IA32_TSC, kvm_synchronize_tsc) ----
  /**
   * The clock reading for the current ioctl (NaN: not read yet). Reading a clock costs more than
   * an entry, so all TSC entries of one KVM_GET_MSRS share one reading.
   */
  clockMs = NaN;
  private clock(): number {
    let t = this.clockMs;
    if (t !== t) t = this.clockMs = this.now();
    return t;
  }

  readTsc(vcpu: Vcpu, out: MsrValue): number {
    if (!this.vendor.tscOffsetHonored) {
      // The guest sees the host TSC: cycles since the host booted, estimated from this machine's uptime.
      addCycles(0, 0, this.hostTscShare(this.clock(), this.tscKhz), out);
      return MSR_OK;
    }
    if (this.tscUnstable) {
      // kvm_arch_vcpu_load with kvm_check_tsc_unstable(): the offset is recomputed so the guest TSC
      // reads vcpu->arch.last_guest_tsc, which only a TSC write or a guest run moves.
      out.lo = vcpu.tscBaseLo;
      out.hi = vcpu.tscBaseHi;
      return MSR_OK;
    }
    // kvm_scale_tsc(rdtsc(), l1_tsc_scaling_ratio) + l1_tsc_offset; a ratio of 0 (vcpu.tscKhz 0)
    // leaves the offset alone, which stands still.
    addCycles(vcpu.tscBaseLo, vcpu.tscBaseHi, Math.floor((this.clock() - vcpu.tscBaseAt) * vcpu.tscKhz), out);
    return MSR_OK;
  }
  writeTsc(vcpu: Vcpu, lo: number, hi: number): void {
    vcpu.tscBaseLo = lo >>> 0;
    vcpu.tscBaseHi = hi >>> 0;
    vcpu.tscBaseAt = this.clock();
    vcpu.tscEstimated = false;
  }
  /** Whether a read of the vCPU's IA32_TSC rests on kvmsr's estimate of the host TSC. */
  tscEstimated(vcpu: Vcpu): boolean {
    return !this.vendor.tscOffsetHonored || (vcpu.tscEstimated && !this.tscUnstable);
  }
  /** Adds `cycles` (an integer, possibly negative) to the vCPU's TSC base, modulo 2^64. */
  private shiftTscBase(vcpu: Vcpu, cycles: number): void {
    const sum = this.scratch;
    addCycles(vcpu.tscBaseLo, vcpu.tscBaseHi, cycles, sum);
    vcpu.tscBaseLo = sum.lo;
    vcpu.tscBaseHi = sum.hi;
  }
  /**
   * The host TSC's share of a reading at `atMs` for a vCPU running at `khz` (kvm_scale_tsc(rdtsc(),
   * ratio)), estimated from this machine's uptime: the offset stays when the ratio changes, so this
   * much moves with it. Only a change between ratios needs it, and kvmsr cannot know rdtsc exactly.
   */
  private hostTscShare(atMs: number, khz: number): number {
    return Math.floor((HOST_BOOT_AGO_MS + atMs) * khz);
  }

  /**
   * kvm_vcpu_write_tsc_multiplier: the vCPU's TSC now advances at `rate` (0: the ratio was never
   * written). The offset stays, so on a stable host the reading jumps by the host TSC's share.
   */
  private writeTscMultiplier(vcpu: Vcpu, rate: number): void {
    if (rate === vcpu.tscKhz) return;
    if (this.vendor.tscOffsetHonored && !this.tscUnstable) {
      const now = this.clock();
      this.readTsc(vcpu, this.scratch);
      this.writeTsc(vcpu, this.scratch.lo, this.scratch.hi);
      this.shiftTscBase(vcpu, this.hostTscShare(now, rate) - this.hostTscShare(now, vcpu.tscKhz));
      vcpu.tscEstimated = true;
    }
    vcpu.tscKhz = rate;
  }

  /**
   * kvm_guest_time_update with tsc_catchup at a guest entry: the offset is moved up to
   * this_tsc_write plus the virtual cycles since this_tsc_nsec (compute_guest_tsc), if that is
   * ahead. tsc_catchup is set for good when set_tsc_khz took a rate above the host's without TSC
   * scaling (tsc_always_catchup), and on an unstable host by every kvm_arch_vcpu_load, which also
   * requests the clock update (KVM_REQ_GLOBAL_CLOCK_UPDATE, as there is no master clock).
   * Without a master clock the kernel takes that time from the clock itself, as kvmsr does; with
   * one, from the master clock's last update, which kvmsr cannot know, so the value is an estimate.
   */
  enterGuest(vcpu: Vcpu): void {
    if ((!vcpu.tscCatchup && !this.tscUnstable) || !this.vendor.tscOffsetHonored) return;
    const now = this.clock();
    const target = this.scratch;
    addCycles(vcpu.thisTscLo, vcpu.thisTscHi, Math.floor((now - vcpu.thisTscAt) * vcpu.virtualTscKhz), target);
    const tLo = target.lo;
    const tHi = target.hi;
    this.readTsc(vcpu, target);
    if (tHi > target.hi || (tHi === target.hi && tLo > target.lo)) {
      this.writeTsc(vcpu, tLo, tHi);
      vcpu.tscEstimated = !this.tscUnstable; // timed by the master clock only on a stable host
    }
  }

  /**
   * kvm_synchronize_tsc for a host write of (lo, hi), or for vCPU creation (user = false, value 0).
   * A write of 0, or (after a user write) a value within a second of where the last write's TSC
   * would be now, joins the VM's current TSC generation instead of setting the value; anything
   * else starts a new generation at the value. Every rate here is virtual_tsc_khz (nsec_to_cycles).
   */
  synchronizeTsc(vcpu: Vcpu, lo: number, hi: number, user: boolean): void {
    // A vendor that cannot offset the TSC (PVM) ignores it all.
    if (!this.vendor.tscOffsetHonored) return;
    const vm = vcpu.vm;
    const now = this.clock();
    const khz = vcpu.virtualTscKhz;
    const data = (hi >>> 0) * TWO32 + (lo >>> 0);
    let synchronizing = false;
    if (data === 0) {
      synchronizing = true;
    } else if (vm.userSetTsc) {
      // u64 arithmetic: a value just below 2^64 (a small negative TSC) plus the elapsed cycles wraps.
      const expected = wrap64(vm.lastTscWrite + Math.floor((now - vm.lastTscWriteAt) * khz));
      const hz = khz * 1000;
      synchronizing = data < wrap64(expected + hz) && wrap64(data + hz) > expected;
    }
    if (user) vm.userSetTsc = true;
    let written = data; // what __kvm_synchronize_tsc records as kvm->arch.last_tsc_write
    if (synchronizing && vm.tscGenerationAt >= 0 && khz === vm.lastTscKhz) {
      if (this.tscUnstable) {
        // Matched on an unstable TSC: the value written plus the cycles since the VM's last write
        // becomes last_guest_tsc (and the VM's last write); the generation stays.
        vcpu.tscBaseLo = lo >>> 0;
        vcpu.tscBaseHi = hi >>> 0;
        this.shiftTscBase(vcpu, Math.floor((now - vm.lastTscWriteAt) * khz));
        vcpu.tscBaseAt = now;
        vcpu.tscEstimated = false;
        written = vcpu.tscBaseHi * TWO32 + vcpu.tscBaseLo;
      } else {
        // The generation's offset (cur_tsc_offset). A vCPU whose ratio differs from the one that
        // started it reads that offset against its own share of the host TSC.
        vcpu.tscBaseLo = vm.tscGenerationLo;
        vcpu.tscBaseHi = vm.tscGenerationHi;
        vcpu.tscBaseAt = vm.tscGenerationAt;
        vcpu.tscEstimated = false;
        if (vcpu.tscKhz !== vm.tscGenerationRate) {
          const at = vm.tscGenerationAt;
          this.shiftTscBase(vcpu, this.hostTscShare(at, vcpu.tscKhz) - this.hostTscShare(at, vm.tscGenerationRate));
          vcpu.tscEstimated = true;
        }
      }
    } else {
      vcpu.tscBaseLo = lo >>> 0;
      vcpu.tscBaseHi = hi >>> 0;
      vcpu.tscBaseAt = now;
      vcpu.tscEstimated = false;
      vm.tscGenerationLo = vcpu.tscBaseLo;
      vm.tscGenerationHi = vcpu.tscBaseHi;
      vm.tscGenerationAt = now;
      vm.tscGenerationRate = vcpu.tscKhz;
    }
    // __kvm_synchronize_tsc: the vCPU records the generation it joined (this_tsc_write/_nsec).
    vcpu.thisTscLo = vm.tscGenerationLo;
    vcpu.thisTscHi = vm.tscGenerationHi;
    vcpu.thisTscAt = vm.tscGenerationAt;
    vm.lastTscWrite = written;
    vm.lastTscWriteAt = now;
    vm.lastTscKhz = khz;
  }

  // ---- __kvm_get_msr / __kvm_set_msr ----
  getMsr(vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    if (index === M.MSR_TSC_AUX) {
      if (!this.tscAuxSupported) return MSR_ERR;
      if (!host && !this.hasCap(vcpu, CAP.RDTSCP) && !this.hasCap(vcpu, CAP.RDPID)) return MSR_ERR;
    } else if (isCetMsr(index)) {
      const r = this.cetGate(vcpu, index, host);
      if (r !== MSR_OK) return r;
    }
    return this.vendor.getMsr(this, vcpu, index, host, out);
  }

  /** The CET gates of __kvm_get_msr/__kvm_set_msr (6.18): the MSRs exist only with SHSTK/IBT. */
  private cetGate(vcpu: Vcpu, index: number, host: boolean): number {
    // CET virtualization came in 6.18: before it no CET MSR has a handler (seen on 6.12: the guest's
    // access to 0x4b564dff exits with KVM_MSR_EXIT_REASON_UNKNOWN).
    if (this.kernel < 618) return MSR_UNSUPPORTED;
    const shstk = this.hasCap(vcpu, CAP.SHSTK);
    if (index === M.MSR_IA32_U_CET || index === M.MSR_IA32_S_CET) return shstk || this.hasCap(vcpu, CAP.IBT) ? MSR_OK : MSR_UNSUPPORTED;
    if (index === M.MSR_KVM_INTERNAL_GUEST_SSP && !host) return MSR_ERR;
    if (!shstk) return MSR_UNSUPPORTED;
    if (index === M.MSR_IA32_INT_SSP_TAB && !this.hasCap(vcpu, CAP.LM)) return MSR_UNSUPPORTED;
    return MSR_OK;
  }

  /** kvm_is_valid_u_s_cet. */
  private validUSCet(vcpu: Vcpu, lo: number, hi: number): boolean {
    if ((lo & 0x3c0) !== 0) return false; // reserved bits 9:6
    if (!this.hasCap(vcpu, CAP.SHSTK) && (lo & 0x3) !== 0) return false;
    if (!this.hasCap(vcpu, CAP.IBT) && ((lo & 0x3c) !== 0 || (lo & ~0x3ff) !== 0 || hi !== 0)) return false;
    if ((lo & 0x3000) !== 0) return false; // the legacy bitmap base (bits 63:12) is 4-byte aligned
    return !((lo & (1 << 10)) !== 0 && (lo & (1 << 11)) !== 0); // SUPPRESS with WAIT_ENDBR
  }

  setMsr(vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    switch (index) {
      case M.MSR_FS_BASE:
      case M.MSR_GS_BASE:
      case M.MSR_KERNEL_GS_BASE:
      case M.MSR_CSTAR:
      case M.MSR_LSTAR:
        if (this.isNoncanonical(hi)) return MSR_ERR;
        break;
      case M.MSR_IA32_SYSENTER_EIP:
      case M.MSR_IA32_SYSENTER_ESP:
        hi = this.canonicalHi(hi);
        break;
      case M.MSR_TSC_AUX:
        if (!this.tscAuxSupported) return MSR_ERR;
        if (!host && !this.hasCap(vcpu, CAP.RDTSCP) && !this.hasCap(vcpu, CAP.RDPID)) return MSR_ERR;
        if (!vcpu.amdCompatible && hi !== 0) return MSR_ERR;
        hi = 0;
        break;
      case M.MSR_IA32_U_CET:
      case M.MSR_IA32_S_CET: {
        const r = this.cetGate(vcpu, index, host);
        if (r !== MSR_OK) return r;
        if (!this.validUSCet(vcpu, lo, hi)) return MSR_ERR;
        break;
      }
      case M.MSR_IA32_PL0_SSP:
      case M.MSR_IA32_PL0_SSP + 1:
      case M.MSR_IA32_PL0_SSP + 2:
      case M.MSR_IA32_PL3_SSP:
      case M.MSR_IA32_INT_SSP_TAB:
      case M.MSR_KVM_INTERNAL_GUEST_SSP: {
        const r = this.cetGate(vcpu, index, host);
        if (r !== MSR_OK) return r;
        if (this.isNoncanonical(hi)) return MSR_ERR;
        // PLx_SSP (and the internal SSP) must be 4-byte aligned.
        if (index !== M.MSR_IA32_INT_SSP_TAB && (lo & 3) !== 0) return MSR_ERR;
        break;
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
    return this.unsupported(ret, index, host, 0, 0, 'rdmsr');
  }
  accessWrite(vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    const ret = this.setMsr(vcpu, index, host, lo, hi);
    if (ret === MSR_OK) return ret;
    return this.unsupported(ret, index, host, lo, hi, 'wrmsr');
  }
  /**
   * The tail of kvm_do_msr_access: userspace may read, and write 0 to, an MSR that KVM
   * advertises even if the vCPU model lacks it; ignore_msrs turns other unhandled accesses into
   * success.
   */
  private unsupported(ret: number, index: number, host: boolean, lo: number, hi: number, op: string): number {
    if (ret !== MSR_UNSUPPORTED) return ret;
    if (host && lo === 0 && hi === 0 && this.advertised.has(index)) return MSR_OK;
    if (!this.ignoreMsrs) return ret;
    if (this.reportIgnoredMsrs) {
      this.log(`kvm: ignored ${op}: 0x${(index >>> 0).toString(16)} data 0x${((hi >>> 0) * TWO32 + (lo >>> 0)).toString(16)}`);
    }
    return MSR_OK;
  }

  // ---- do_get_msr / do_set_msr / do_get_feature_msr (the KVM_GET/SET_MSRS entry points) ----
  doGetMsr(vcpu: Vcpu, index: number, out: MsrValue): number {
    return this.accessRead(vcpu, index, true, out);
  }

  doSetMsr(vcpu: Vcpu, index: number, lo: number, hi: number): number {
    // Writes to immutable feature MSRs after KVM_RUN must match the current value.
    if (vcpu.hasRun && isImmutableFeatureMsr(index)) {
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
    return this.unsupported(ret, index, true, 0, 0, 'rdmsr');
  }

  // ---- kvm_get_msr_common ----
  getMsrCommon(vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    if (this.hyperv && isHvMsr(index)) return hvGetMsr(this.hvEnv, vcpu, index, host, out);
    // Legacy PMU MSRs the vPMU does not own (enable_pmu=N on the hosts kvmsr models) read 0.
    if (isLegacyPmuMsr(index) || ZERO_READ_MSRS.has(index)) return zero(out);
    if (isMceBankMsr(index)) return this.getMce(vcpu, index, host, out);
    if (isMtrrRange(index)) return this.getMtrr(vcpu, index, out);
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
        if (!host) this.enterGuest(vcpu); // the guest reads what its last entry set
        return this.readTsc(vcpu, out);
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
        // 6.18: unsupported unless the vCPU model has the CPUID bit, host or guest; 6.12: the guest
        // needs the bit (#GP), the host never does.
        if (!this.hasCap(vcpu, CAP.ARCH_CAPABILITIES)) {
          if (this.featureMsrsNeedCpuid) return MSR_UNSUPPORTED;
          if (!host) return MSR_ERR;
        }
        return this.load(vcpu, index, out);
      case M.MSR_IA32_PERF_CAPABILITIES:
        if (!this.hasCap(vcpu, CAP.PDCM)) {
          if (this.featureMsrsNeedCpuid) return MSR_UNSUPPORTED;
          if (!host) return MSR_ERR;
        }
        return this.load(vcpu, index, out);
      case M.MSR_IA32_TSC_DEADLINE:
        // kvm_get_lapic_tscdeadline_msr: 0 unless the in-kernel LAPIC is on and its LVT timer is in
        // TSC-deadline mode (KVM_SET_LAPIC sets that: vcpu-state.ts). No guest runs, so it never expires.
        if (!tscDeadlineArmed(this, vcpu)) return zero(out);
        out.lo = vcpu.state!.tscDeadlineLo;
        out.hi = vcpu.state!.tscDeadlineHi;
        return MSR_OK;
      case M.MSR_IA32_MCG_CTL:
        // get_msr_mce: the guest needs MCG_CTL_P in MCG_CAP.
        if (!host && (this.mcgCap(vcpu) & MCG_CTL_P) === 0) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_PLATFORM_INFO:
        if (!host && !vcpu.vm.guestCanReadPlatformInfo) return MSR_ERR;
        return this.load(vcpu, index, out);
      case M.MSR_KVM_WALL_CLOCK:
      case M.MSR_KVM_WALL_CLOCK_NEW:
        if (!this.guestPvHas(vcpu, index === M.MSR_KVM_WALL_CLOCK ? M.KVM_FEATURE_CLOCKSOURCE : M.KVM_FEATURE_CLOCKSOURCE2)) {
          return MSR_UNSUPPORTED;
        }
        out.lo = vcpu.vm.wallClockLo;
        out.hi = vcpu.vm.wallClockHi;
        return MSR_OK;
      case M.MSR_KVM_SYSTEM_TIME:
      case M.MSR_KVM_SYSTEM_TIME_NEW:
      case M.MSR_KVM_ASYNC_PF_EN:
      case M.MSR_KVM_ASYNC_PF_INT:
      case M.MSR_KVM_STEAL_TIME:
      case M.MSR_KVM_PV_EOI_EN:
      case M.MSR_KVM_POLL_CONTROL:
        if (!this.guestPvHas(vcpu, pvFeatureOf(index))) return MSR_UNSUPPORTED;
        return this.load(vcpu, index, out);
      case M.MSR_KVM_ASYNC_PF_ACK:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_INT)) return MSR_UNSUPPORTED;
        return zero(out);
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
        return MSR_UNSUPPORTED;
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
    if (this.hyperv && isHvMsr(index)) return hvSetMsr(this.hvEnv, vcpu, index, host, lo, hi);
    // Legacy PMU MSRs the vPMU does not own accept every value and drop it, as do these.
    if (isLegacyPmuMsr(index) || DROPPED_WRITE_MSRS.has(index)) return MSR_OK;
    if (isMceBankMsr(index)) return this.setMce(vcpu, index, host, lo, hi);
    if (isMtrrRange(index)) return this.setMtrr(vcpu, index, lo, hi);
    switch (index) {
      case M.MSR_IA32_APICBASE:
        return this.setApicBase(vcpu, host, lo, hi);
      case M.MSR_IA32_PRED_CMD:
        return this.setPredCmd(vcpu, host, lo, hi);
      case M.MSR_IA32_FLUSH_CMD:
        // Write-only: L1D_FLUSH (bit 0) on a host that has it; the guest needs FLUSH_L1D too.
        if (!host && !this.hasCap(vcpu, CAP.FLUSH_L1D)) return MSR_ERR;
        if (!this.hostHas('FLUSH_L1D') || hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
        return MSR_OK;
      case M.MSR_IA32_SMBASE:
        if (!host || !this.smm) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_EFER:
        return this.setEfer(vcpu, host, lo, hi);
      case M.MSR_IA32_XSS: {
        if (this.kernel < 618) {
          // 6.12: the guest needs XSAVES; kvm_caps.supported_xss is 0 on every vendor, so only 0 passes.
          if (!host && !this.hasCap(vcpu, CAP.XSAVES)) return MSR_ERR;
          return lo !== 0 || hi !== 0 ? MSR_ERR : this.store(vcpu, index, 0, 0);
        }
        // 6.18: unsupported without XSAVES; then only the bits the guest CPUID and KVM both have.
        if (!this.hasCap(vcpu, CAP.XSAVES)) return MSR_UNSUPPORTED;
        const okLo = this.guestSupported(vcpu, 0xd, 1, 'ecx');
        const okHi = this.guestSupported(vcpu, 0xd, 1, 'edx');
        if ((lo & ~okLo) !== 0 || (hi & ~okHi) !== 0) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      }
      case M.MSR_IA32_XFD:
      case M.MSR_IA32_XFD_ERR: {
        if (!host && !this.hasCap(vcpu, CAP.XFD)) return MSR_ERR;
        // kvm_guest_supported_xfd: the dynamic user states (XTILEDATA, bit 18) of guest_supported_xcr0.
        const xcr0Lo = this.guestSupported(vcpu, 0xd, 0, 'eax');
        if ((lo & ~(xcr0Lo & (1 << 18))) !== 0 || hi !== 0) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      }
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
        if (this.featureMsrsNeedCpuid && !this.hasCap(vcpu, CAP.ARCH_CAPABILITIES)) return MSR_UNSUPPORTED;
        // From 6.14 a guest write is unsupported (KVM_MSR_EXIT_REASON_UNKNOWN), as seen live on
        // kvm_pvm 6.18.44; before, kvm_set_msr_common returned 1.
        if (!host) return this.featureMsrsNeedCpuid ? MSR_UNSUPPORTED : MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_PERF_CAPABILITIES:
        if (this.featureMsrsNeedCpuid && !this.hasCap(vcpu, CAP.PDCM)) return MSR_UNSUPPORTED;
        if (!host) return MSR_ERR;
        if ((lo & ~this.supportedPerfCapLo) !== 0 || (hi & ~this.supportedPerfCapHi) !== 0) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_K7_HWCR: {
        // Flush-filter disable (6), IGNNE emulation (8) and TLB cache disable (3) are ignored;
        // only McStatusWrEn (18) and TscFreqSel (24) may be set.
        const l = lo & ~(0x40 | 0x100 | 0x8);
        if ((l & ~((1 << 18) | (1 << 24))) !== 0 || hi !== 0) return MSR_ERR;
        return this.store(vcpu, index, l, 0);
      }
      case M.MSR_IA32_CR_PAT:
        if (!patValid(lo, hi)) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_TSC_DEADLINE:
        // kvm_set_lapic_tscdeadline_msr: kept only in TSC-deadline mode, ignored otherwise.
        if (tscDeadlineArmed(this, vcpu)) {
          vcpu.state!.tscDeadlineLo = lo;
          vcpu.state!.tscDeadlineHi = hi;
        }
        return MSR_OK;
      case M.MSR_IA32_TSC_ADJUST:
        // Only stored when the guest CPUID has TSC_ADJUST; a host write never moves the TSC.
        if (this.hasCap(vcpu, CAP.TSC_ADJUST)) {
          if (!host) {
            // adjust_tsc_offset_guest: the guest's TSC moves by the difference.
            const cur = this.scratch;
            this.load(vcpu, index, cur);
            this.addToTsc(vcpu, (lo >>> 0) - cur.lo, (hi >>> 0) - cur.hi);
          }
          this.store(vcpu, index, lo, hi);
        }
        return MSR_OK;
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
        if (host) {
          this.synchronizeTsc(vcpu, lo, hi, true);
        } else {
          this.readTsc(vcpu, this.scratch);
          const dLo = (lo >>> 0) - this.scratch.lo;
          const dHi = (hi >>> 0) - this.scratch.hi;
          this.writeTsc(vcpu, lo, hi);
          // The guest's write also moves IA32_TSC_ADJUST by the same amount.
          this.load(vcpu, M.MSR_IA32_TSC_ADJUST, this.scratch);
          addHalves(this.scratch, dLo, dHi);
          this.store(vcpu, M.MSR_IA32_TSC_ADJUST, this.scratch.lo, this.scratch.hi);
        }
        return MSR_OK;
      case M.MSR_SMI_COUNT:
        if (!host) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_KVM_WALL_CLOCK:
      case M.MSR_KVM_WALL_CLOCK_NEW:
        if (!this.guestPvHas(vcpu, index === M.MSR_KVM_WALL_CLOCK ? M.KVM_FEATURE_CLOCKSOURCE : M.KVM_FEATURE_CLOCKSOURCE2)) {
          return MSR_UNSUPPORTED;
        }
        vcpu.vm.wallClockLo = lo;
        vcpu.vm.wallClockHi = hi;
        return MSR_OK;
      case M.MSR_KVM_SYSTEM_TIME:
      case M.MSR_KVM_SYSTEM_TIME_NEW:
        if (!this.guestPvHas(vcpu, pvFeatureOf(index))) return MSR_UNSUPPORTED;
        // kvm_write_system_time: both MSRs set vcpu->arch.time, which both read back (seen live on
        // kvm_amd 6.12: SYSTEM_TIME_NEW = 1, then SYSTEM_TIME reads 1).
        this.store(vcpu, M.MSR_KVM_SYSTEM_TIME, lo, hi);
        return this.store(vcpu, M.MSR_KVM_SYSTEM_TIME_NEW, lo, hi);
      case M.MSR_KVM_ASYNC_PF_EN:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF)) return MSR_UNSUPPORTED;
        return this.enableAsyncPf(vcpu, lo, hi);
      case M.MSR_KVM_ASYNC_PF_INT:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_INT)) return MSR_UNSUPPORTED;
        if (hi !== 0 || lo >>> 8 !== 0) return MSR_ERR;
        if (!vcpu.vm.irqchip) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_KVM_ASYNC_PF_ACK:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_INT)) return MSR_UNSUPPORTED;
        return MSR_OK;
      case M.MSR_KVM_STEAL_TIME:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_STEAL_TIME)) return MSR_UNSUPPORTED;
        if ((lo & 0x3e) !== 0) return MSR_ERR; // KVM_STEAL_RESERVED_MASK
        return this.store(vcpu, index, lo, hi);
      case M.MSR_KVM_PV_EOI_EN:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_PV_EOI)) return MSR_UNSUPPORTED;
        // kvm_lapic_set_pv_eoi: 4-byte aligned address; when enabled it must be in a memslot.
        if ((lo & 0x2) !== 0) return MSR_ERR;
        if ((lo & 1) !== 0 && !vcpu.vm.gpaRangeMapped((hi >>> 0) * TWO32 + ((lo & ~1) >>> 0), 1)) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_KVM_POLL_CONTROL:
        if (!this.guestPvHas(vcpu, M.KVM_FEATURE_POLL_CONTROL)) return MSR_UNSUPPORTED;
        if (hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_MCG_STATUS:
        return this.store(vcpu, index, lo, hi);
      case M.MSR_IA32_MCG_CTL:
        // set_msr_mce: without MCG_CTL_P only the host may write, and only 0; then 0 or all-ones.
        if ((this.mcgCap(vcpu) & MCG_CTL_P) === 0 && (lo !== 0 || hi !== 0 || !host)) return MSR_ERR;
        // (lo & hi) is -1 for all-ones whether the halves came in signed or unsigned.
        if ((lo | hi) !== 0 && (lo & hi) !== -1) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      case M.MSR_PLATFORM_INFO: {
        if (!host) return MSR_ERR;
        const cur = this.scratch;
        this.load(vcpu, M.MSR_MISC_FEATURES_ENABLES, cur);
        // Clearing CPUID_FAULT support while CPUID faulting is enabled is refused.
        if ((lo & M.PLATFORM_INFO_CPUID_FAULT_LO) === 0 && (cur.lo & 1) !== 0) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      }
      case M.MSR_MISC_FEATURES_ENABLES: {
        if (hi !== 0 || (lo & ~1) !== 0) return MSR_ERR;
        const pi = this.scratch;
        this.load(vcpu, M.MSR_PLATFORM_INFO, pi);
        if ((lo & 1) !== 0 && (pi.lo & M.PLATFORM_INFO_CPUID_FAULT_LO) === 0) return MSR_ERR;
        return this.store(vcpu, index, lo, hi);
      }
      default:
        return MSR_UNSUPPORTED;
    }
  }

  /**
   * kvm_apic_set_base: reserved bits (above MAXPHYADDR, 7:0 and 9, and x2APIC without the CPUID
   * bit) and the invalid mode (x2APIC without enable) fail; a guest may not leave x2APIC for xAPIC
   * or go from disabled straight to x2APIC. kvmsr keeps the value; the LAPIC itself is not modelled.
   */
  private setApicBase(vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
    const maxPhy = vcpu.maxPhyAddr;
    const hiReserved = maxPhy >= 64 ? 0 : maxPhy <= 32 ? -1 : ~((1 << (maxPhy - 32)) - 1);
    const x2 = this.hasCap(vcpu, CAP.X2APIC) ? 0 : APICBASE_X2APIC;
    if ((hi & hiReserved) !== 0 || (lo & (0x2ff | x2)) !== 0) return MSR_ERR;
    const mode = (lo >>> 10) & 3; // 0 disabled, 1 invalid, 2 xAPIC, 3 x2APIC
    if (mode === 1) return MSR_ERR;
    if (!host) {
      const cur = this.scratch;
      this.load(vcpu, M.MSR_IA32_APICBASE, cur);
      const old = (cur.lo >>> 10) & 3;
      if ((old === 3 && mode === 2) || (old === 0 && mode === 3)) return MSR_ERR;
    }
    return this.store(vcpu, M.MSR_IA32_APICBASE, lo, hi);
  }

  /**
   * The vCPU ioctl KVM_SET_TSC_KHZ: 0 means the kernel's tsc_khz (the refined rate, not the one a
   * new vCPU gets). Returns 0 or -EINVAL.
   */
  setTscKhz(vcpu: Vcpu, arg: number): number {
    let khz = ((arg % TWO32) + TWO32) % TWO32; // (u32)arg
    if (this.hasTscScaling() && khz >= MAX_GUEST_TSC_KHZ) return -EINVAL;
    if (khz === 0) khz = this.hostTscKhz;
    return this.kvmSetTscKhz(vcpu, khz) === 0 ? 0 : -EINVAL;
  }

  /**
   * kvm_set_tsc_khz and set_tsc_khz for a nonzero rate. virtual_tsc_khz (what KVM_GET_TSC_KHZ
   * reports) changes first, even when the rate cannot follow. Within kvm.tsc_tolerance_ppm of the
   * kernel's tsc_khz the default multiplier is written; otherwise a host with TSC scaling
   * (KVM_CAP_TSC_CONTROL) scales, and one without leaves the multiplier as it was: a faster rate
   * is caught up only while the guest runs (tsc_always_catchup), a slower one fails ("user
   * requested TSC rate below hardware speed"). Returns 0 or -1.
   */
  private kvmSetTscKhz(vcpu: Vcpu, khz: number): number {
    vcpu.virtualTscKhz = khz;
    const host = this.hostTscKhz;
    if (khz >= adjustTscKhz(host, -this.tscTolerancePpm) && khz <= adjustTscKhz(host, this.tscTolerancePpm)) {
      this.writeTscMultiplier(vcpu, host);
      return 0;
    }
    if (this.hasTscScaling()) {
      this.writeTscMultiplier(vcpu, khz);
      return 0;
    }
    if (khz > host) {
      vcpu.tscCatchup = true; // tsc_catchup and tsc_always_catchup, never cleared
      return 0;
    }
    return -1;
  }

  /** KVM_CAP_TSC_CONTROL: the host can scale the guest TSC. */
  hasTscScaling(): boolean {
    const ext = this.profile.extensions;
    return (ext.vm[KVM_CAP_TSC_CONTROL] ?? ext.system[KVM_CAP_TSC_CONTROL] ?? 0) > 0;
  }

  /** Whether the host has a feature, as KVM_GET_SUPPORTED_CPUID reports it (boot_cpu_has). */
  private hostHas(f: 'IBPB' | 'SBPB' | 'FLUSH_L1D'): boolean {
    const c = this.profile.supportedCpuid;
    const bit = (leaf: number, reg: 'eax' | 'ebx' | 'edx', b: number): boolean => {
      const e = findCpuid(c, leaf, 0);
      return e !== undefined && ((e[reg] >>> b) & 1) === 1;
    };
    if (f === 'IBPB') return bit(7, 'edx', 26) || bit(0x80000008, 'ebx', 12);
    if (f === 'SBPB') return bit(0x80000021, 'eax', 27);
    return bit(7, 'edx', 28);
  }

  /** MSR_IA32_PRED_CMD (write-only): IBPB (bit 0) and SBPB (bit 7), each if the host and (for a guest) its CPUID have it. */
  private setPredCmd(vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
    let reserved = ~(1 | (1 << 7));
    if (!host) {
      // guest_has_pred_cmd_msr (kvmsr tracks no SBPB capability, so a guest never gets SBPB).
      const ibpb = this.hasCap(vcpu, CAP.SPEC_CTRL) || this.hasCap(vcpu, CAP.AMD_IBPB);
      if (!ibpb) return MSR_ERR;
      reserved |= 1 << 7;
    }
    if (!this.hostHas('IBPB')) reserved |= 1;
    if (!this.hostHas('SBPB')) reserved |= 1 << 7;
    if (hi !== 0 || (lo & reserved) !== 0) return MSR_ERR;
    return MSR_OK;
  }

  /** kvm_mtrr_get_msr: MTRRcap is fixed (WC, FIX, 8 variable ranges); the rest are stored. */
  private getMtrr(vcpu: Vcpu, index: number, out: MsrValue): number {
    if (index === M.MSR_MTRRcap) {
      out.lo = 0x500 | KVM_NR_VAR_MTRR;
      out.hi = 0;
      return MSR_OK;
    }
    return isMtrr(index) ? this.load(vcpu, index, out) : MSR_ERR;
  }

  /** kvm_mtrr_set_msr and kvm_mtrr_valid. */
  private setMtrr(vcpu: Vcpu, index: number, lo: number, hi: number): number {
    if (index === M.MSR_MTRRcap) return MSR_UNSUPPORTED; // read-only: kvm_set_msr_common has no case
    if (!isMtrr(index)) return MSR_ERR;
    if (index === M.MSR_MTRRdefType) {
      if ((lo & ~0xcff) !== 0 || hi !== 0 || !validMtrrType(lo & 0xff)) return MSR_ERR;
    } else if (index >= M.MSR_MTRRfix64K_00000) {
      for (let b = 0; b < 4; b++) if (!validMtrrType((lo >>> (8 * b)) & 0xff) || !validMtrrType((hi >>> (8 * b)) & 0xff)) return MSR_ERR;
    } else {
      // Variable ranges: no bits at or above the guest's MAXPHYADDR; base has a type, mask bits 10:0 clear.
      const maxPhy = vcpu.maxPhyAddr;
      const hiReserved = maxPhy >= 64 ? 0 : maxPhy <= 32 ? -1 : ~((1 << (maxPhy - 32)) - 1);
      if ((hi & hiReserved) !== 0) return MSR_ERR;
      if ((index & 1) === 0) {
        if (!validMtrrType(lo & 0xff) || (lo & 0xf00) !== 0) return MSR_ERR;
      } else if ((lo & 0x7ff) !== 0) {
        return MSR_ERR;
      }
    }
    return this.store(vcpu, index, lo, hi);
  }

  /** One register of (guest CPUID leaf.sub) & (KVM's supported leaf.sub); 0 if either lacks the leaf. */
  private guestSupported(vcpu: Vcpu, leaf: number, sub: number, reg: 'eax' | 'ecx' | 'edx'): number {
    const g = findCpuid(vcpu.cpuid, leaf, sub);
    const k = findCpuid(this.profile.supportedCpuid, leaf, sub);
    return g && k ? g[reg] & k[reg] : 0;
  }

  private mcgCap(vcpu: Vcpu): number {
    return vcpu.msrs[slotOf(M.MSR_IA32_MCG_CAP) * 2]!;
  }

  /** get_msr_mce for the banks: MCi_CTL/STATUS/ADDR/MISC (0x400..) and MCi_CTL2 (0x280..). */
  private getMce(vcpu: Vcpu, index: number, host: boolean, out: MsrValue): number {
    const cap = this.mcgCap(vcpu);
    const banks = cap & 0xff;
    if (index < M.MSR_IA32_MC0_CTL) {
      if (index > M.MSR_IA32_MC0_CTL2 + banks - 1) return MSR_ERR;
      if ((cap & MCG_CMCI_P) === 0 && !host) return MSR_ERR;
      return this.load(vcpu, index, out);
    }
    if (index > M.MSR_IA32_MC0_CTL + 4 * banks - 1) return MSR_ERR;
    return this.load(vcpu, index, out);
  }

  /** set_msr_mce for the banks. */
  private setMce(vcpu: Vcpu, index: number, host: boolean, lo: number, hi: number): number {
    const cap = this.mcgCap(vcpu);
    const banks = cap & 0xff;
    const nonzero = lo !== 0 || hi !== 0;
    if (index < M.MSR_IA32_MC0_CTL) {
      if (index > M.MSR_IA32_MC0_CTL2 + banks - 1) return MSR_ERR;
      if ((cap & MCG_CMCI_P) === 0 && (nonzero || !host)) return MSR_ERR;
      // Only CMCI_EN (bit 30) and the threshold (bits 14:0) exist.
      if (hi !== 0 || (lo & ~(0x40000000 | 0x7fff)) !== 0) return MSR_ERR;
      return this.store(vcpu, index, lo, hi);
    }
    if (index > M.MSR_IA32_MC0_CTL + 4 * banks - 1) return MSR_ERR;
    const reg = (index - M.MSR_IA32_MC0_CTL) & 3;
    // MCi_CTL: 0 or all-ones, where bits 10 and 0 may be clear (old Linux and UnixWare quirks).
    if (reg === 0 && nonzero && ((lo | 0x401) !== -1 || hi !== -1)) return MSR_ERR;
    // MCi_STATUS: the guest may write non-zero only on AMD with HWCR.McStatusWrEn.
    if (reg === 1 && !host && nonzero) {
      const hwcr = vcpu.msrs[slotOf(M.MSR_K7_HWCR) * 2]!;
      if (!vcpu.amdCompatible || (hwcr & (1 << 18)) === 0) return MSR_ERR;
    }
    return this.store(vcpu, index, lo, hi);
  }

  /** kvm_vcpu_ioctl_x86_setup_mce. Returns 0 or -EINVAL. */
  setupMce(vcpu: Vcpu, capLo: number, capHi: number): number {
    const banks = capLo & 0xff;
    if (banks === 0 || banks > KVM_MAX_MCE_BANKS) return -EINVAL;
    if ((capLo & ~(this.supportedMceCapLo | 0xff | 0xff0000)) !== 0 || (capHi & ~this.supportedMceCapHi) !== 0) return -EINVAL;
    this.store(vcpu, M.MSR_IA32_MCG_CAP, capLo, capHi);
    if ((capLo & MCG_CTL_P) !== 0) this.store(vcpu, M.MSR_IA32_MCG_CTL, -1, -1);
    for (let b = 0; b < banks; b++) {
      this.store(vcpu, M.MSR_IA32_MC0_CTL + 4 * b, -1, -1);
      if ((capLo & MCG_CMCI_P) !== 0) this.store(vcpu, M.MSR_IA32_MC0_CTL2 + b, 0, 0);
    }
    return 0;
  }

  /** set_efer: reserved bits fail (host too); LMA keeps its current value. */
  private setEfer(vcpu: Vcpu, host: boolean, lo: number, hi: number): number {
    if (hi !== 0 || (lo & ~this.eferAllowed) !== 0) return MSR_ERR;
    const cur = this.scratch;
    this.load(vcpu, M.MSR_EFER, cur);
    // (The guest's "no LME change while paging" rule needs CR0, which the MSR path does not see.)
    if (!host && !this.eferFitsCpuid(vcpu, lo)) return MSR_ERR;
    return this.store(vcpu, M.MSR_EFER, (lo & ~EFER_LMA) | (cur.lo & EFER_LMA), 0);
  }

  /** __kvm_valid_efer: each EFER feature bit needs its guest CPUID bit (set_efer for the guest, kvm_valid_efer). */
  eferFitsCpuid(vcpu: Vcpu, lo: number): boolean {
    if ((lo & (1 << 21)) !== 0 && !this.hasCap(vcpu, CAP.AUTOIBRS)) return false;
    if ((lo & (1 << 14)) !== 0 && !this.hasCap(vcpu, CAP.FXSR_OPT)) return false;
    if ((lo & (1 << 12)) !== 0 && !this.hasCap(vcpu, CAP.SVM)) return false;
    if ((lo & (EFER_LME | EFER_LMA)) !== 0 && !this.hasCap(vcpu, CAP.LM)) return false;
    if ((lo & EFER_NX) !== 0 && !this.hasCap(vcpu, CAP.NX)) return false;
    return true;
  }

  /** kvm_pv_enable_async_pf. */
  private enableAsyncPf(vcpu: Vcpu, lo: number, hi: number): number {
    if ((lo & 0x30) !== 0) return MSR_ERR;
    if (!this.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_VMEXIT) && (lo & 0x4) !== 0) return MSR_ERR;
    if (!this.guestPvHas(vcpu, M.KVM_FEATURE_ASYNC_PF_INT) && (lo & 0x8) !== 0) return MSR_ERR;
    if (!vcpu.vm.irqchip) return lo !== 0 || hi !== 0 ? MSR_ERR : MSR_OK;
    // The value is stored before the GPA is checked, so a failed enable still changes it.
    this.store(vcpu, M.MSR_KVM_ASYNC_PF_EN, lo, hi);
    // kvm_pv_async_pf_enabled: only ENABLED together with DELIVERY_AS_INT looks up the GPA.
    if ((lo & 0x9) !== 0x9) return MSR_OK;
    const gpa = (hi >>> 0) * TWO32 + ((lo & ~0x3f) >>> 0);
    return vcpu.vm.gpaRangeMapped(gpa, 8) ? MSR_OK : MSR_ERR;
  }

  private addToTsc(vcpu: Vcpu, dLo: number, dHi: number): void {
    const t = this.scratch;
    this.readTsc(vcpu, t);
    addHalves(t, dLo, dHi);
    this.writeTsc(vcpu, t.lo, t.hi);
  }

}

/** kvm_is_immutable_feature_msr (6.18: PLATFORM_INFO joined the feature MSRs; UCODE_REV never). */
export function isImmutableFeatureMsr(index: number): boolean {
  if (index >= M.KVM_FIRST_EMULATED_VMX_MSR && index <= M.KVM_LAST_EMULATED_VMX_MSR) return true;
  return (
    index === M.MSR_AMD64_DE_CFG ||
    index === M.MSR_IA32_ARCH_CAPABILITIES ||
    index === M.MSR_IA32_PERF_CAPABILITIES ||
    index === M.MSR_PLATFORM_INFO
  );
}

const KVM_NR_VAR_MTRR = 8;
const KVM_CAP_TSC_CONTROL = 60;
const KVM_CAP_HYPERV = 44;
/** kvm_caps.max_guest_tsc_khz on hosts with TSC scaling, capped at u32 (not in profiles; a documented bound). */
const MAX_GUEST_TSC_KHZ = 0xffffffff;
const APIC_DEFAULT_PHYS_BASE = 0xfee00000 | 0;
const APICBASE_BSP = 1 << 8;
const APICBASE_X2APIC = 1 << 10;
const APICBASE_ENABLE = 1 << 11;
/** The indices kvm_get/set_msr_common send to the MTRR code: MTRRcap, 0x200-0x26f, MTRRdefType. */
function isMtrrRange(index: number): boolean {
  return index === M.MSR_MTRRcap || index === M.MSR_MTRRdefType || (index >= M.MSR_MTRRphysBase0 && index <= M.MSR_MTRRfix4K_F8000);
}
/** find_mtrr: the MSRs that are MTRRs (variable pairs, the fixed ranges, the default type). */
function isMtrr(index: number): boolean {
  return (
    (index >= M.MSR_MTRRphysBase0 && index < M.MSR_MTRRphysBase0 + 2 * KVM_NR_VAR_MTRR) ||
    index === M.MSR_MTRRfix64K_00000 ||
    index === M.MSR_MTRRfix64K_00000 + 8 ||
    index === M.MSR_MTRRfix64K_00000 + 9 ||
    (index >= M.MSR_MTRRfix4K_F8000 - 7 && index <= M.MSR_MTRRfix4K_F8000) ||
    index === M.MSR_MTRRdefType
  );
}
/** valid_mtrr_type: UC, WC, WT, WP, WB. */
function validMtrrType(t: number): boolean {
  return t < 8 && ((1 << t) & 0x73) !== 0;
}

/** The CET MSRs whose existence __kvm_get_msr/__kvm_set_msr gate on SHSTK/IBT (6.18). */
function isCetMsr(index: number): boolean {
  return (index >= M.MSR_IA32_U_CET && index <= M.MSR_IA32_INT_SSP_TAB && index !== 0x6a1 && index !== 0x6a3) || index === M.MSR_KVM_INTERNAL_GUEST_SSP;
}

/** The machine-check bank MSRs get_msr_mce/set_msr_mce handle: MCi_CTL2 and MCi_CTL/STATUS/ADDR/MISC. */
function isMceBankMsr(index: number): boolean {
  return (index >= M.MSR_IA32_MC0_CTL2 && index < M.MSR_IA32_MC0_CTL2 + KVM_MAX_MCE_BANKS) ||
    (index >= M.MSR_IA32_MC0_CTL && index < M.MSR_IA32_MC0_CTL + 4 * KVM_MAX_MCE_BANKS);
}

/** The K7 and P6 PMU MSRs kvm_get/set_msr_common fall back on when the vPMU does not own them. */
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

function isLegacyPmuMsr(index: number): boolean {
  return (
    (index >= M.MSR_K7_EVNTSEL0 && index <= M.MSR_K7_PERFCTR3) ||
    index === M.MSR_P6_PERFCTR0 ||
    index === M.MSR_P6_PERFCTR1 ||
    index === M.MSR_P6_EVNTSEL0 ||
    index === M.MSR_P6_EVNTSEL1
  );
}

export function zero(out: MsrValue): number {
  out.lo = 0;
  out.hi = 0;
  return MSR_OK;
}

/** The bit number of a CAP bit. */
function capIndex(bit: number): number {
  return Math.log2(bit);
}

function pvFeatureOf(index: number): number {
  switch (index) {
    case M.MSR_KVM_SYSTEM_TIME:
      return M.KVM_FEATURE_CLOCKSOURCE;
    case M.MSR_KVM_SYSTEM_TIME_NEW:
      return M.KVM_FEATURE_CLOCKSOURCE2;
    case M.MSR_KVM_ASYNC_PF_EN:
      return M.KVM_FEATURE_ASYNC_PF;
    case M.MSR_KVM_ASYNC_PF_INT:
      return M.KVM_FEATURE_ASYNC_PF_INT;
    case M.MSR_KVM_STEAL_TIME:
      return M.KVM_FEATURE_STEAL_TIME;
    case M.MSR_KVM_PV_EOI_EN:
      return M.KVM_FEATURE_PV_EOI;
    default:
      return M.KVM_FEATURE_POLL_CONTROL;
  }
}

/** kvm_pat_valid: each byte a valid memory type (0, 1, 4, 5, 6, 7). */
export function patValid(lo: number, hi: number): boolean {
  return patHalfValid(lo) && patHalfValid(hi);
}
function patHalfValid(h: number): boolean {
  // Bits 7:3 of each byte are reserved; types 2 and 3 (bit 1 set without bit 2) are invalid.
  if ((h & 0xf8f8f8f8) !== 0) return false;
  return ((h | ((h & 0x02020202) << 1)) >>> 0) === h >>> 0;
}

/** out += (dLo, dHi), modulo 2^64; the deltas may be negative differences of u32 halves. */
function addHalves(out: MsrValue, dLo: number, dHi: number): void {
  const lo = out.lo + dLo;
  const carry = Math.floor(lo / TWO32);
  out.lo = (lo - carry * TWO32) >>> 0;
  out.hi = (out.hi + dHi + carry) >>> 0;
}

function storeU64(arr: Uint32Array, index: number, v: bigint): void {
  const s = slotOf(index) * 2;
  arr[s] = Number(v & 0xffffffffn);
  arr[s + 1] = Number((v >> 32n) & 0xffffffffn);
}

/** adjust_tsc_khz: khz moved by ppm parts per million, rounded down as the kernel's u64 division does. */
export function adjustTscKhz(khz: number, ppm: number): number {
  return Math.floor((khz * (1e6 + ppm)) / 1e6);
}

/** kvm.tsc_tolerance_ppm from a profile's module parameters (the kernel's default: 250). */
export function tscTolerancePpm(params: Record<string, string>): number {
  return Number(params['kvm.tsc_tolerance_ppm'] ?? '250');
}

/** "6.12.117" -> 612, "6.18.44-fc-v782" -> 618; an unreadable version counts as the newest known. */
export function kernelGeneration(release: string): number {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? Number(m[1]) * 100 + Number(m[2]) : 618;
}
