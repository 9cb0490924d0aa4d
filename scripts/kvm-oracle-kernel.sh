#!/usr/bin/env bash
# Builds (once) the kernel both live-KVM oracles boot, and prints the path of its bzImage:
#   scripts/kvm-amd-oracle.sh    (QEMU TCG, -cpu max,vendor=AuthenticAMD: kvm_amd nested on SVM)
#   scripts/kvm-intel-oracle.sh  (Bochs 2.7, corei7_skylake_x & co.: kvm_intel nested on VMX)
#
#   bash scripts/kvm-oracle-kernel.sh                     # prints e.g. /tmp/kvm-oracle-dist/bzImage
#   ORACLE_KERNEL=6.1 bash scripts/kvm-oracle-kernel.sh   # /tmp/kvm-oracle-dist/bzImage-6.1
#
# ORACLE_KERNEL picks Debian's source package: 6.12 (default; linux-source-6.12, today 6.12.118)
# or 6.1 (linux-source-6.1, today 6.1.192: Debian 12's own kernel and Firecracker's host kernel).
# The kernel is configured the way Debian's amd64 kernel of that series (linux-config-SERIES,
# config.amd64_none_amd64) configures KVM. 6.12: KVM_HYPERV=y, KVM_XEN=y, KVM_SMM=y, KVM_AMD_SEV=y,
# X86_SGX_KVM=y, MAXSMP (so KVM_MAX_NR_VCPUS=4096). 6.1 has no KVM_HYPERV/KVM_SMM options (both are
# always built) and no KVM_MAX_NR_VCPUS (KVM_MAX_VCPUS is 1024), and Debian 6.1 leaves KVM_XEN off.
# Both series build BOTH vendor modules, kvm_intel and kvm_amd. Debian builds them as modules; here they are built in (=y, no
# module support), so /sys/module lists kvm, kvm_intel and kvm_amd on every host (built-in
# modules with parameters always appear there) and only the one whose CPU feature exists (VMX or
# SVM) registers /dev/kvm. The rest of the config is x86_64_defconfig + kvm_guest.config (not
# Debian's whole config: its thousands of =m drivers would vanish with modules off anyway, and its
# built-in rest would double the build) plus what the two emulators need: virtio-pci and 9p for
# QEMU's -virtfs, the 8250 serial console and libata's PIIX driver (ata_piix: the IDE disk through
# which Bochs gets its answers back), initramfs, devtmpfs.
#
# Takes: extracting the source ~1-2 min; the build about 25-35 minutes on 2 cores (make -j$(nproc)).
# Later calls print the path at once. A changed config list below makes the next call rebuild
# (incrementally, in the kept source tree). Needs root for apt-get when packages are missing.
# Env: ORACLE_DIR (default /tmp/kvm-oracle-dist): where the source tree and bzImage are kept.
set -euo pipefail

dir=${ORACLE_DIR:-/tmp/kvm-oracle-dist}
series=${ORACLE_KERNEL:-6.12}
case "$series" in 6.1|6.12) ;; *) echo "ORACLE_KERNEL must be 6.1 or 6.12, not $series" >&2; exit 2 ;; esac
[ $# -eq 0 ] || { echo "usage: $0   (prints the path of the oracle kernel's bzImage, building it first if needed)" >&2; exit 2; }
mkdir -p "$dir"

. "$(dirname "$0")/apt-need.sh"
apt_need build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils "linux-source-$series" "linux-config-$series"

# scripts/config arguments, applied on top of x86_64_defconfig + kvm_guest.config.
config_args=(
  # Debian amd64's Virtualization menu (config.amd64_none_amd64), with =m made =y; the series'
  # own options are added below.
  -e VIRTUALIZATION -e KVM -e KVM_INTEL -e KVM_AMD -e KVM_AMD_SEV
  -e X86_X2APIC -e X86_SGX -e X86_SGX_KVM -d KVM_WERROR -d KVM_SW_PROTECTED_VM -d KVM_INTEL_PROVE_VE -d KVM_PROVE_MMU
  -e MAXSMP --set-val NR_CPUS 8192
  # What KVM_AMD_SEV depends on, as Debian has it (CCP_DD is =m there, next to KVM_AMD=m).
  -e AMD_MEM_ENCRYPT -e CRYPTO_DEV_CCP -e CRYPTO_DEV_CCP_DD -e CRYPTO_DEV_SP_PSP
  # Debian's CPU-side choices that shape what KVM sees of the host.
  -e CPU_SUP_INTEL -e CPU_SUP_AMD -e CPU_SUP_HYGON -e CPU_SUP_CENTAUR -e CPU_SUP_ZHAOXIN -e IA32_FEAT_CTL
  -e PERF_EVENTS -e X86_MCE -e X86_MCE_INTEL -e X86_MCE_AMD -e X86_5LEVEL -e X86_CPU_RESCTRL -e X86_INTEL_TSX_MODE_OFF -d X86_INTEL_TSX_MODE_ON
  -d X86_INTEL_TSX_MODE_AUTO -e HZ_250 -d HZ_1000 -d HZ_100 -d HZ_300 -e PREEMPT_VOLUNTARY
  -d PREEMPT_NONE -d PREEMPT -e PREEMPT_DYNAMIC -e HYPERVISOR_GUEST -e PARAVIRT -e KVM_GUEST
  # QEMU oracle: virtio-pci + 9p (the host's / at /host).
  -e VIRTIO -e VIRTIO_PCI -e NET_9P -e NET_9P_VIRTIO -e 9P_FS -e 9P_FS_POSIX_ACL
  # Bochs oracle: 8250 console on COM1, the PIIX IDE controller (ata_piix) and SCSI disks, ISO9660.
  -e SERIAL_8250 -e SERIAL_8250_CONSOLE -e ATA -e ATA_SFF -e ATA_BMDMA -e ATA_PIIX -e BLK_DEV_SD
  -e ISO9660_FS -e ACPI
  # Both: an initramfs, devtmpfs; no modules, no debug info, less to build.
  -e BLK_DEV_INITRD -e DEVTMPFS -e DEVTMPFS_MOUNT -d MODULES -e DEBUG_INFO_NONE -d DEBUG_INFO_BTF
  -d DRM -d SOUND -d USB_SUPPORT -d WLAN -d WIRELESS -d CFG80211 -d HID -d AGP -d NETFILTER -d IPV6
  -d HYPERV -d XEN -d WERROR
)
# Options the result must have (checked after olddefconfig, so a silently dropped one fails).
must=(CONFIG_KVM=y CONFIG_KVM_INTEL=y CONFIG_KVM_AMD=y CONFIG_KVM_AMD_SEV=y CONFIG_X86_SGX_KVM=y
  CONFIG_9P_FS=y CONFIG_NET_9P_VIRTIO=y CONFIG_VIRTIO_PCI=y CONFIG_SERIAL_8250_CONSOLE=y
  CONFIG_ATA_PIIX=y CONFIG_BLK_DEV_SD=y CONFIG_BLK_DEV_INITRD=y CONFIG_DEVTMPFS=y CONFIG_X86_X2APIC=y
  CONFIG_MAXSMP=y)

if [ "$series" = 6.12 ]; then
  config_args+=(-e KVM_SMM -e KVM_HYPERV -e KVM_XEN --set-val KVM_MAX_NR_VCPUS 4096
    -e X86_USER_SHADOW_STACK -e X86_KERNEL_IBT)
  must+=(CONFIG_KVM_SMM=y CONFIG_KVM_HYPERV=y CONFIG_KVM_XEN=y CONFIG_KVM_MAX_NR_VCPUS=4096)
  kernel="$dir/bzImage"
else
  # Debian 6.1: KVM_XEN off, X86_KERNEL_IBT off; no shadow stacks in 6.1.
  config_args+=(-d KVM_XEN -d X86_KERNEL_IBT)
  kernel="$dir/bzImage-$series"
fi

stamp=$(printf '%s\n' "$series" "${config_args[@]}" "${must[@]}" | sha256sum | cut -c1-16)
if [ -f "$kernel" ] && [ "$(cat "$kernel.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$kernel"
  exit 0
fi

src="$dir/linux-source-$series"
# A kept tree of an older Debian upload (6.12.117 when the package is now 6.12.118) is replaced.
want=$(dpkg-query -W -f '${Version}' "linux-source-$series" 2>/dev/null || echo unknown)
if [ ! -f "$src/Makefile" ] || [ "$(cat "$src/.debian-version" 2>/dev/null)" != "$want" ]; then
  echo "extracting /usr/src/linux-source-$series.tar.xz ($want) into $dir (1-2 minutes)..." >&2
  rm -rf "$src"
  tar -C "$dir" -xf "/usr/src/linux-source-$series.tar.xz"
  echo "$want" > "$src/.debian-version"
fi
(
  cd "$src"
  make -s x86_64_defconfig >&2 && make -s kvm_guest.config >&2
  ./scripts/config "${config_args[@]}"
  make -s olddefconfig >&2
  for m in "${must[@]}"; do
    grep -qx "$m" .config || { echo "kernel config: wanted $m, got: $(grep "^${m%%=*}=" .config || echo 'not set')" >&2; exit 1; }
  done
  # x86_64_defconfig has WERROR=y, which selects KVM_WERROR; Debian has neither.
  ! grep -qE '^CONFIG_(KVM_)?WERROR=y' .config || { echo "kernel config: WERROR still set" >&2; exit 1; }
  # What Debian sets in the Virtualization menu vs this build (for the record).
  xz -dc "/usr/src/linux-config-$series/config.amd64_none_amd64.xz" | grep -E '^(# )?CONFIG_(KVM|X86_SGX_KVM)' \
    > "$dir/debian-kvm-$series.config" || true
  grep -E '^(# )?CONFIG_(KVM|X86_SGX_KVM)' .config > "$dir/oracle-kvm-$series.config" || true
  echo "building the $series kernel (kvm_intel + kvm_amd built in, Debian's KVM options; about 30 minutes on 2 cores)..." >&2
  start=$(date +%s)
  make -s -j"$(nproc)" bzImage >&2
  echo "kernel built in $(( $(date +%s) - start )) s" >&2
)
cp "$src/arch/x86/boot/bzImage" "$kernel"
cp "$src/.config" "$kernel.config"
echo "$stamp" > "$kernel.stamp"
echo "$kernel"
