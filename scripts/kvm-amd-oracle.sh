#!/usr/bin/env bash
# A live kvm_amd oracle on a machine without /dev/kvm: boot Debian's 6.12 kernel source, built with
# Debian's KVM settings (KVM_HYPERV=y, KVM_XEN=y, KVM_SMM=y, KVM_AMD_SEV=y, KVM_MAX_NR_VCPUS=4096)
# and both vendor modules, kvm_intel and kvm_amd, built in (see scripts/kvm-oracle-kernel.sh), under
# QEMU's TCG with an AMD CPU model that has SVM, and run a command inside it with the host's /
# shared over 9p, so the command sees /dev/kvm (kvm_amd, nested under TCG) and this checkout.
# kvm_intel is built in too but finds no VMX, so it stays idle; /sys/module still lists it (as
# every built-in module with parameters), so answers.txt has `info module kvm_intel` as well as
# `info module kvm_amd`: the vendor is kvm_amd.
#
#   bash scripts/kvm-amd-oracle.sh -- npx kvmsr profile capture -o /tmp/svm-612.json
#   bash scripts/kvm-amd-oracle.sh -- dist/probe/kvmsr-probe --jobs 2 /tmp/harvest-amd-dist
#   bash scripts/kvm-amd-oracle.sh -- npx vitest run test/differential.test.ts
#
# First run: installs Debian packages (about 1 minute) and builds the kernel (about 30 minutes on
# 2 cores; kept in ORACLE_DIR, shared with scripts/kvm-intel-oracle.sh); later runs boot in about
# 10-20 s (the kernel's boot under TCG) plus the command's own time. Not part of CI: too slow, and
# TCG is an emulator, so timing-dependent answers (the TSC) follow QEMU's clock, and the CPU model
# is QEMU's, not a real EPYC.
# Env: ORACLE_DIR (default /tmp/kvm-oracle-dist), ORACLE_MEM (MiB, default 6144), ORACLE_SMP
# (default 1), ORACLE_APPEND (more kernel command line, e.g. tsc=unstable to give KVM an unstable
# host TSC).
set -euo pipefail

export ORACLE_DIR=${ORACLE_DIR:-/tmp/kvm-oracle-dist}
dir=$ORACLE_DIR
mem=${ORACLE_MEM:-6144}
smp=${ORACLE_SMP:-1}
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- COMMAND..." >&2; exit 2; }
mkdir -p "$dir"

. "$(dirname "$0")/apt-need.sh"
apt_need qemu-system-x86 busybox-static cpio

kernel=$(bash "$(dirname "$0")/kvm-oracle-kernel.sh")

initrd="$dir/amd-initrd.gz"
if [ ! -f "$initrd" ]; then
  root="$dir/amd-initramfs"
  rm -rf "$root" && mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/host"
  cp /bin/busybox "$root/bin/busybox"
  cat > "$root/init" <<'INIT'
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
INIT
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
