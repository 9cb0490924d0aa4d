// Legacy and model-specific MSRs of kvm_get/set_msr_common that old guests touch: read as 0, or
// written and dropped, with no CPUID check; and the K7/P6 PMU MSRs the vPMU does not own.
import { M } from './msr-index.js';

/**
 * Legacy and model-specific MSRs kvm_get_msr_common reads as 0 with no CPUID check, so that old
 * guests boot (the RAPL ones also hide the host's energy counters). Writes to some are dropped
 * (kvm_set_msr_common), to the rest unsupported. Found handled but unlisted by the harvest's rule
 * probes on kvm_pvm 6.18.44; the rules are x86.c's.
 */
export const ZERO_READ_MSRS: ReadonlySet<number> = new Set([
  M.MSR_IA32_PLATFORM_ID, M.MSR_IA32_EBL_CR_POWERON, M.MSR_AMD64_SYSCFG, M.MSR_K8_TSEG_ADDR, M.MSR_K8_TSEG_MASK,
  M.MSR_K8_INT_PENDING_MSG, M.MSR_AMD64_NB_CFG, M.MSR_FAM10H_MMIO_CONF_BASE, M.MSR_AMD64_BU_CFG2, M.MSR_IA32_PERF_CTL,
  M.MSR_AMD64_DC_CFG, M.MSR_AMD64_TW_CFG, M.MSR_F15H_EX_CFG, M.MSR_RAPL_POWER_UNIT, M.MSR_PP0_ENERGY_STATUS,
  M.MSR_PP1_ENERGY_STATUS, M.MSR_PKG_ENERGY_STATUS, M.MSR_DRAM_ENERGY_STATUS,
]);

/** MSRs whose writes kvm_set_msr_common accepts and drops (microcode loading, AMD config, K7 clock). */
export const DROPPED_WRITE_MSRS: ReadonlySet<number> = new Set([
  M.MSR_AMD64_NB_CFG, M.MSR_IA32_UCODE_WRITE, M.MSR_AMD64_PATCH_LOADER, M.MSR_AMD64_BU_CFG2, M.MSR_AMD64_DC_CFG,
  M.MSR_AMD64_TW_CFG, M.MSR_F15H_EX_CFG, M.MSR_K7_CLK_CTL, M.MSR_IA32_BBL_CR_CTL3,
]);

/** The K7 and P6 PMU MSRs kvm_get/set_msr_common fall back on when the vPMU does not own them. */
export function isLegacyPmuMsr(index: number): boolean {
  return (
    (index >= M.MSR_K7_EVNTSEL0 && index <= M.MSR_K7_PERFCTR3) ||
    index === M.MSR_P6_PERFCTR0 ||
    index === M.MSR_P6_PERFCTR1 ||
    index === M.MSR_P6_EVNTSEL0 ||
    index === M.MSR_P6_EVNTSEL1
  );
}
