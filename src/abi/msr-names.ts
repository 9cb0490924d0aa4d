// MSR names (arch/x86/include/asm/msr-index.h, arch/x86/include/uapi/asm/kvm_para.h).
const NAMED: ReadonlyArray<readonly [number, string]> = [
  [0x10, 'IA32_TSC'], [0x11, 'KVM_WALL_CLOCK'], [0x12, 'KVM_SYSTEM_TIME'], [0x1b, 'IA32_APICBASE'],
  [0x34, 'SMI_COUNT'], [0x3a, 'IA32_FEAT_CTL'], [0x3b, 'IA32_TSC_ADJUST'], [0x48, 'IA32_SPEC_CTRL'],
  [0x49, 'IA32_PRED_CMD'], [0x8b, 'IA32_UCODE_REV'], [0x9e, 'IA32_SMBASE'], [0xc1, 'IA32_PERFCTR0'],
  [0xc2, 'IA32_PERFCTR1'], [0xce, 'PLATFORM_INFO'], [0xe1, 'IA32_UMWAIT_CONTROL'],
  [0x10a, 'IA32_ARCH_CAPABILITIES'], [0x10b, 'IA32_FLUSH_CMD'], [0x122, 'IA32_TSX_CTRL'],
  [0x140, 'MISC_FEATURES_ENABLES'], [0x174, 'IA32_SYSENTER_CS'], [0x175, 'IA32_SYSENTER_ESP'],
  [0x176, 'IA32_SYSENTER_EIP'], [0x179, 'IA32_MCG_CAP'], [0x17a, 'IA32_MCG_STATUS'], [0x17b, 'IA32_MCG_CTL'],
  [0x186, 'IA32_PERFEVTSEL0'], [0x187, 'IA32_PERFEVTSEL1'], [0x1a0, 'IA32_MISC_ENABLE'],
  [0x1c4, 'IA32_XFD'], [0x1c5, 'IA32_XFD_ERR'], [0x1d9, 'IA32_DEBUGCTL'], [0x1db, 'LASTBRANCHFROMIP'],
  [0x1dc, 'LASTBRANCHTOIP'], [0x1dd, 'LASTINTFROMIP'], [0x1de, 'LASTINTTOIP'], [0x1fc, 'IA32_POWER_CTL'],
  [0x277, 'IA32_CR_PAT'], [0x2ff, 'MTRRdefType'], [0x309, 'FIXED_CTR0'], [0x30a, 'FIXED_CTR1'],
  [0x30b, 'FIXED_CTR2'], [0x345, 'IA32_PERF_CAPABILITIES'], [0x38d, 'FIXED_CTR_CTRL'],
  [0x38e, 'PERF_GLOBAL_STATUS'], [0x38f, 'PERF_GLOBAL_CTRL'], [0x390, 'PERF_GLOBAL_OVF_CTRL'],
  [0x3f1, 'IA32_PEBS_ENABLE'], [0x3f2, 'PEBS_DATA_CFG'], [0x480, 'IA32_VMX_BASIC'],
  [0x481, 'IA32_VMX_PINBASED_CTLS'], [0x482, 'IA32_VMX_PROCBASED_CTLS'], [0x483, 'IA32_VMX_EXIT_CTLS'],
  [0x484, 'IA32_VMX_ENTRY_CTLS'], [0x485, 'IA32_VMX_MISC'], [0x486, 'IA32_VMX_CR0_FIXED0'],
  [0x487, 'IA32_VMX_CR0_FIXED1'], [0x488, 'IA32_VMX_CR4_FIXED0'], [0x489, 'IA32_VMX_CR4_FIXED1'],
  [0x48a, 'IA32_VMX_VMCS_ENUM'], [0x48b, 'IA32_VMX_PROCBASED_CTLS2'], [0x48c, 'IA32_VMX_EPT_VPID_CAP'],
  [0x48d, 'IA32_VMX_TRUE_PINBASED_CTLS'], [0x48e, 'IA32_VMX_TRUE_PROCBASED_CTLS'],
  [0x48f, 'IA32_VMX_TRUE_EXIT_CTLS'], [0x490, 'IA32_VMX_TRUE_ENTRY_CTLS'], [0x491, 'IA32_VMX_VMFUNC'],
  [0x492, 'IA32_VMX_PROCBASED_CTLS3'], [0x4d0, 'IA32_MCG_EXT_CTL'], [0x560, 'IA32_RTIT_OUTPUT_BASE'],
  [0x561, 'IA32_RTIT_OUTPUT_MASK'], [0x570, 'IA32_RTIT_CTL'], [0x571, 'IA32_RTIT_STATUS'],
  [0x572, 'IA32_RTIT_CR3_MATCH'], [0x600, 'IA32_DS_AREA'], [0x6a0, 'IA32_U_CET'], [0x6a2, 'IA32_S_CET'],
  [0x6a8, 'IA32_INT_SSP_TAB'], [0x6e0, 'IA32_TSC_DEADLINE'], [0xd90, 'IA32_BNDCFGS'], [0xda0, 'IA32_XSS'],
  [0x4b564d00, 'KVM_WALL_CLOCK_NEW'], [0x4b564d01, 'KVM_SYSTEM_TIME_NEW'], [0x4b564d02, 'KVM_ASYNC_PF_EN'],
  [0x4b564d03, 'KVM_STEAL_TIME'], [0x4b564d04, 'KVM_PV_EOI_EN'], [0x4b564d05, 'KVM_POLL_CONTROL'],
  [0x4b564d06, 'KVM_ASYNC_PF_INT'], [0x4b564d07, 'KVM_ASYNC_PF_ACK'], [0x4b564dff, 'KVM_INTERNAL_GUEST_SSP'],
  [0x40000000, 'HV_X64_MSR_GUEST_OS_ID'],
  [0x40000001, 'HV_X64_MSR_HYPERCALL'],
  [0x40000002, 'HV_X64_MSR_VP_INDEX'],
  [0x40000003, 'HV_X64_MSR_RESET'],
  [0x40000010, 'HV_X64_MSR_VP_RUNTIME'],
  [0x40000020, 'HV_X64_MSR_TIME_REF_COUNT'],
  [0x40000021, 'HV_X64_MSR_REFERENCE_TSC'],
  [0x40000022, 'HV_X64_MSR_TSC_FREQUENCY'],
  [0x40000023, 'HV_X64_MSR_APIC_FREQUENCY'],
  [0x40000070, 'HV_X64_MSR_EOI'],
  [0x40000071, 'HV_X64_MSR_ICR'],
  [0x40000072, 'HV_X64_MSR_TPR'],
  [0x40000073, 'HV_X64_MSR_VP_ASSIST_PAGE'],
  [0x40000080, 'HV_X64_MSR_SCONTROL'],
  [0x40000081, 'HV_X64_MSR_SVERSION'],
  [0x40000082, 'HV_X64_MSR_SIEFP'],
  [0x40000083, 'HV_X64_MSR_SIMP'],
  [0x40000084, 'HV_X64_MSR_EOM'],
  [0x400000f0, 'HV_X64_MSR_GUEST_IDLE'],
  [0x400000f1, 'HV_X64_MSR_SYNDBG_CONTROL'],
  [0x400000f2, 'HV_X64_MSR_SYNDBG_STATUS'],
  [0x400000f3, 'HV_X64_MSR_SYNDBG_SEND_BUFFER'],
  [0x400000f4, 'HV_X64_MSR_SYNDBG_RECV_BUFFER'],
  [0x400000f5, 'HV_X64_MSR_SYNDBG_PENDING_BUFFER'],
  [0x400000ff, 'HV_X64_MSR_SYNDBG_OPTIONS'],
  [0x40000105, 'HV_X64_MSR_CRASH_CTL'],
  [0x40000106, 'HV_X64_MSR_REENLIGHTENMENT_CONTROL'],
  [0x40000107, 'HV_X64_MSR_TSC_EMULATION_CONTROL'],
  [0x40000108, 'HV_X64_MSR_TSC_EMULATION_STATUS'],
  [0x40000118, 'HV_X64_MSR_TSC_INVARIANT_CONTROL'],
  [0xc0000080, 'EFER'], [0xc0000081, 'STAR'], [0xc0000082, 'LSTAR'], [0xc0000083, 'CSTAR'],
  [0xc0000084, 'SYSCALL_MASK'], [0xc0000100, 'FS_BASE'], [0xc0000101, 'GS_BASE'],
  [0xc0000102, 'KERNEL_GS_BASE'], [0xc0000103, 'TSC_AUX'], [0xc0000104, 'AMD64_TSC_RATIO'],
  [0xc0000300, 'AMD64_PERF_CNTR_GLOBAL_STATUS'], [0xc0000301, 'AMD64_PERF_CNTR_GLOBAL_CTL'],
  [0xc0000302, 'AMD64_PERF_CNTR_GLOBAL_STATUS_CLR'], [0xc0000303, 'AMD64_PERF_CNTR_GLOBAL_STATUS_SET'],
  [0xc0010000, 'K7_EVNTSEL0'], [0xc0010001, 'K7_EVNTSEL1'], [0xc0010002, 'K7_EVNTSEL2'],
  [0xc0010003, 'K7_EVNTSEL3'], [0xc0010004, 'K7_PERFCTR0'], [0xc0010005, 'K7_PERFCTR1'],
  [0xc0010006, 'K7_PERFCTR2'], [0xc0010007, 'K7_PERFCTR3'], [0xc0010010, 'AMD64_SYSCFG'],
  [0xc0010015, 'K7_HWCR'], [0xc0010114, 'VM_CR'], [0xc0010115, 'VM_IGNNE'], [0xc0010117, 'VM_HSAVE_PA'],
  [0xc001011f, 'AMD64_VIRT_SPEC_CTRL'], [0xc0011020, 'AMD64_LS_CFG'], [0xc0011021, 'F15H_IC_CFG'],
  [0xc0011029, 'AMD64_DE_CFG'],
];

const BY_INDEX = new Map<number, string>(NAMED);
const BY_NAME = new Map<string, number>(NAMED.map(([i, n]) => [n, i]));

function rangeName(index: number): string | undefined {
  if (index >= 0x400 && index < 0x400 + 32 * 4) {
    const bank = (index - 0x400) >> 2;
    return `IA32_MC${bank}_${['CTL', 'STATUS', 'ADDR', 'MISC'][(index - 0x400) & 3]}`;
  }
  if (index >= 0x280 && index < 0x280 + 32) return `IA32_MC${index - 0x280}_CTL2`;
  if (index >= 0x4c1 && index <= 0x4c8) return `IA32_PMC${index - 0x4c1}`;
  if (index >= 0xc0010200 && index <= 0xc001020b) {
    const n = (index - 0xc0010200) >> 1;
    return `F15H_PERF_${(index & 1) === 0 ? 'CTL' : 'CTR'}${n}`;
  }
  if (index >= 0x40000090 && index <= 0x4000009f) return `HV_X64_MSR_SINT${index - 0x40000090}`;
  if (index >= 0x400000b0 && index <= 0x400000b7) return `HV_X64_MSR_STIMER${(index - 0x400000b0) >> 1}_${(index & 1) === 0 ? 'CONFIG' : 'COUNT'}`;
  if (index >= 0x40000100 && index <= 0x40000104) return `HV_X64_MSR_CRASH_P${index - 0x40000100}`;
  if (index >= 0x40000000 && index <= 0x400001ff) return `HV_0x${index.toString(16)}`;
  return undefined;
}

/** The kernel's name for an MSR without the MSR_ prefix, or undefined. */
export function msrName(index: number): string | undefined {
  return BY_INDEX.get(index >>> 0) ?? rangeName(index >>> 0);
}
/** '0x174 IA32_SYSENTER_CS' or '0x12345678'. */
export function msrLabel(index: number): string {
  const n = msrName(index);
  return `0x${(index >>> 0).toString(16)}${n ? ' ' + n : ''}`;
}
/** Accepts a name (with or without MSR_ prefix, in upper or lower case) or a number. */
export function parseMsr(text: string): number | undefined {
  const t = text.trim();
  if (/^(0x[0-9a-f]+|[0-9]+)$/i.test(t)) {
    const v = Number(t);
    return v <= 0xffffffff ? v : undefined;
  }
  const up = t.toUpperCase().replace(/^MSR_/, '');
  return BY_NAME.get(up);
}
