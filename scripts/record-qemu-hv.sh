#!/usr/bin/env bash
# Records Debian's QEMU 7.2 with Hyper-V enlightenments saving a 2-vCPU VM to a file and a second
# QEMU restoring it, each under `kvmsr record`, where /dev/kvm is (for example inside the
# distribution-config oracle: bash scripts/kvm-amd-oracle.sh -- bash scripts/record-qemu-hv.sh DIR).
# Writes DIR/qemu-hv-migrate-save.jsonl and DIR/qemu-hv-migrate-load.jsonl; the migration stream
# stays in DIR/hv.mig. About a minute under TCG.
# Env: QEMU_CPU (default qemu64), HV_FLAGS (default: every hv-* flag QEMU 7.2 takes on kvm_amd),
# SAVE_AFTER (seconds of SeaBIOS before the save, default 10).
set -euo pipefail
out=${1:?usage: record-qemu-hv.sh OUTDIR}
mkdir -p "$out"
flags=${HV_FLAGS:-hv-relaxed,hv-vapic,hv-time,hv-vpindex,hv-runtime,hv-crash,hv-reset,hv-synic,hv-stimer,hv-frequencies,hv-reenlightenment,hv-tlbflush,hv-ipi}
cpu="${QEMU_CPU:-qemu64},$flags"
mig="$out/hv.mig"
rm -f "$mig"
qemu=(qemu-system-x86_64 -accel kvm -m 128 -smp 2 -display none -nodefaults -cpu "$cpu" -monitor stdio)
start=$(date +%s)
{ sleep "${SAVE_AFTER:-10}"; echo "migrate \"exec:cat > $mig\""; sleep 8; echo 'info migrate'; echo quit; } |
  npx kvmsr record -o "$out/qemu-hv-migrate-save.jsonl" -- "${qemu[@]}"
[ -s "$mig" ] || { echo "record-qemu-hv: the save wrote no migration stream" >&2; exit 1; }
{ sleep 8; echo 'info registers -a'; echo quit; } |
  npx kvmsr record -o "$out/qemu-hv-migrate-load.jsonl" -- "${qemu[@]}" -incoming "exec:cat $mig"
echo "record-qemu-hv: done in $(( $(date +%s) - start )) s: $out" >&2
