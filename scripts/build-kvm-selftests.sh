#!/usr/bin/env bash
# Builds the Linux 6.12 KVM selftests (x86_64) from Debian's linux-source-6.12, out of tree, into
# OUT (default /tmp/kvmsr-kvm-selftests): OUT/build/x86_64/<test> and OUT/build/<test>. About 40 s
# on two cores. Needs linux-source-6.12, gcc, make, xz-utils. test/kernel-selftests.test.ts runs the
# ones that need no guest code under `kvmsr run`.
set -euo pipefail
OUT=${1:-/tmp/kvmsr-kvm-selftests}
SRC=${LINUX_SOURCE_TAR:-/usr/src/linux-source-6.12.tar.xz}
mkdir -p "$OUT"
cd "$OUT"
if [ ! -d linux-source-6.12 ]; then
  # The selftests need the tools tree, the uapi headers and what `make headers` runs; not drivers.
  tar -xJf "$SRC" --exclude='linux-source-6.12/drivers' --exclude='linux-source-6.12/Documentation' \
    --exclude='linux-source-6.12/sound' --exclude='linux-source-6.12/fs' --exclude='linux-source-6.12/net'
fi
make -C linux-source-6.12 ARCH=x86_64 headers -j"$(nproc)" >/dev/null
make -C linux-source-6.12/tools/testing/selftests/kvm -j"$(nproc)" OUTPUT="$OUT/build" >/dev/null
touch "$OUT/build/.done"
