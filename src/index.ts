// kvmsr: a byte-exact emulator of the Linux KVM x86 MSR ioctl ABI.
export * from './abi/ioc.js';
export * from './abi/kvm-ioctls.js';
export * from './abi/errno.js';
export * from './abi/layout.js';
export * from './abi/codecs.js';
export * from './abi/user-memory.js';
export { msrName, msrLabel, parseMsr } from './abi/msr-names.js';
export { Kvm, KvmError, type KvmOptions, type UnmodeledCall } from './kvm/kvm.js';
export { parseProfile, profileToJson, ProfileError, type HostProfile, type ProfileMsr, type VendorModule } from './kvm/profile.js';
export type { IoctlArg } from './kvm/user-arg.js';
export { KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR, type GuestMsrResult } from './kvm/x86/guest-msr.js';
export { builtinProfile, defaultProfile, resolveBuiltinName, BUILTIN_PROFILES, DEFAULT_PROFILE_NAME, INTEL_PROFILE_NAME, PROFILE_ALIASES } from './profiles.js';
