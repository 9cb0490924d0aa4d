#!/usr/bin/env bash
# A live kvm_amd oracle on a machine without /dev/kvm: boot Debian's 6.12 kernel source, built with
# KVM_AMD, under QEMU's TCG with an AMD CPU model that has SVM, and run a command inside it with the
# host's / shared over 9p, so the command sees /dev/kvm (kvm_amd, nested under TCG) and this checkout.
#
#   bash scripts/kvm-amd-oracle.sh -- npx kvmsr profile capture -o /tmp/svm-612.json
#   bash scripts/kvm-amd-oracle.sh -- npx vitest run test/differential.test.ts
#
# First run: installs Debian packages and builds the kernel (about 25 minutes on 2 cores); later runs
# boot in seconds. Not part of CI: too slow, and TCG is an emulator, so timing-dependent answers
# (the TSC) follow QEMU's clock, and the CPU model is QEMU's, not a real EPYC.
# Env: ORACLE_DIR (default /tmp/kvm-amd-oracle), ORACLE_MEM (MiB, default 6144), ORACLE_SMP (default 1),
# ORACLE_APPEND (more kernel command line, e.g. tsc=unstable to give KVM an unstable host TSC).
set -euo pipefail

dir=${ORACLE_DIR:-/tmp/kvm-amd-oracle}
mem=${ORACLE_MEM:-6144}
smp=${ORACLE_SMP:-1}
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- COMMAND..." >&2; exit 2; }
mkdir -p "$dir"

need=()
for p in flex bison bc libelf-dev libssl-dev qemu-system-x86 busybox-static cpio linux-source-6.12; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

kernel="$dir/bzImage"
if [ ! -f "$kernel" ]; then
  src=$(ls -d "$dir"/linux-source-6.12 2>/dev/null || true)
  if [ -z "$src" ]; then
    tar -C "$dir" -xf /usr/src/linux-source-6.12.tar.xz
    src="$dir/linux-source-6.12"
  fi
  (
    cd "$src"
    make -s x86_64_defconfig && make -s kvm_guest.config
    # KVM_HYPERV off: kvmsr does not model the Hyper-V MSRs (0x40000000 up), which a distro host lists.
    ./scripts/config -e VIRTUALIZATION -e KVM -e KVM_AMD -d KVM_INTEL -e NET_9P -e NET_9P_VIRTIO \
      -e 9P_FS -e 9P_FS_POSIX_ACL -e VIRTIO_PCI -e DEVTMPFS -e DEVTMPFS_MOUNT -e PERF_EVENTS \
      -e CPU_SUP_AMD -d DRM -d SOUND -d USB_SUPPORT -d WLAN -d WIRELESS -d CFG80211 -d HID -d AGP \
      -d NETFILTER -d IPV6 -e DEBUG_INFO_NONE -d MODULES -d KVM_XEN -d HYPERV -d XEN -d KVM_HYPERV
    make -s olddefconfig
    echo "building the 6.12 kernel with kvm_amd (about 25 minutes on 2 cores)..." >&2
    make -s -j"$(nproc)" bzImage
  )
  cp "$src/arch/x86/boot/bzImage" "$kernel"
fi

initrd="$dir/initrd.gz"
if [ ! -f "$initrd" ]; then
  root="$dir/initramfs"
  rm -rf "$root" && mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/host"
  cp /bin/busybox "$root/bin/busybox"
  cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /host
for d in proc sys dev; do mount --bind /$d /host/$d; done
job=$(cat /proc/cmdline | sed -n 's/.*oracle_job=\([^ ]*\).*/\1/p')
chroot /host /bin/bash "$job/cmd" > "/host$job/out" 2>&1
echo $? > "/host$job/rc"
sync
poweroff -f
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip) > "$initrd"
fi

job=$(mktemp -d "$dir/job.XXXXXX")
{
  echo "cd $(printf '%q' "$PWD")"
  echo "export PATH=$(printf '%q' "$PATH") HOME=$(printf '%q' "$HOME")"
  printf '%q ' "$@"; echo
} > "$job/cmd"
qemu-system-x86_64 -accel tcg -cpu max,vendor=AuthenticAMD -m "$mem" -smp "$smp" -nographic -no-reboot \
  -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 quiet panic=-1 oracle_job=$job ${ORACLE_APPEND:-}" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,id=hostroot,multidevs=remap \
  > "$job/console" 2>&1 || true
cat "$job/out" 2>/dev/null || { echo "the guest wrote no output; its console:" >&2; cat "$job/console" >&2; exit 1; }
rc=$(cat "$job/rc" 2>/dev/null || echo 1)
rm -rf "$job"
exit "$rc"
