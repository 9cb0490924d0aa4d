#!/usr/bin/env bash
# Records Debian's QEMU 7.2 with Hyper-V enlightenments saving a 2-vCPU VM to a file and a second
# QEMU restoring it, each under `kvmsr record`, where /dev/kvm is (for example inside the
# distribution-config oracle: bash scripts/kvm-amd-oracle.sh -- bash scripts/record-qemu-hv.sh DIR).
# Writes DIR/qemu-hv-migrate-save.jsonl and DIR/qemu-hv-migrate-load.jsonl; the migration stream
# stays in DIR/hv.mig, and each QEMU's monitor output in DIR/save.monitor and DIR/load.monitor.
# The save asks `info migrate` until the migration has completed; the restore asks `info status`
# until the incoming migration is over (no longer "inmigrate") and only then for the registers and
# `quit`: a `quit` while QEMU still loads the stream leaves the restore's KVM_SET_MSRS without the
# saved values (and can make QEMU 7.2 abort). TIME_LIMIT seconds each (default 900: nested under
# TCG, loading the stream takes minutes); the script fails if either side does not finish. In the
# oracle (2026-12-07) the save took 91 s and the restore 103 s, 3 min 24 s with the oracle's boot.
# Env: QEMU_CPU (default qemu64), HV_FLAGS (default: every hv-* flag QEMU 7.2 takes on kvm_amd),
# SAVE_AFTER (seconds of SeaBIOS before the save, default 10), TIME_LIMIT.
set -euo pipefail
out=${1:?usage: record-qemu-hv.sh OUTDIR}
mkdir -p "$out"
flags=${HV_FLAGS:-hv-relaxed,hv-vapic,hv-time,hv-vpindex,hv-runtime,hv-crash,hv-reset,hv-synic,hv-stimer,hv-frequencies,hv-reenlightenment,hv-tlbflush,hv-ipi}
cpu="${QEMU_CPU:-qemu64},$flags"
mig="$out/hv.mig"
rm -f "$mig"
qemu=(qemu-system-x86_64 -accel kvm -m 128 -smp 2 -display none -nodefaults -cpu "$cpu" -monitor stdio)
limit=${TIME_LIMIT:-900}
start=$(date +%s)
# ask CMD PREFIX BUSY MON: sends the monitor command CMD once a second while the last line of MON
# that starts with PREFIX is missing or matches the extended regex BUSY (at most TIME_LIMIT times).
ask() {
  local i=0 last
  while [ "$i" -lt "$limit" ]; do
    echo "$1"; sleep 1
    last=$(grep -a "$2" "$4" | tail -n 1 || true)
    [ -n "$last" ] && ! grep -qE "$3" <<< "$last" && return 0
    i=$((i + 1))
  done
}
smon="$out/save.monitor"
: > "$smon"
{ sleep "${SAVE_AFTER:-10}"; echo "migrate \"exec:cat > $mig\""; ask 'info migrate' 'Migration status:' 'setup|active|device|switchover' "$smon"; echo 'info migrate'; echo quit; } |
  npx kvmsr record -o "$out/qemu-hv-migrate-save.jsonl" -- "${qemu[@]}" > "$smon" ||
  echo "record-qemu-hv: the save's QEMU or monitor loop exited with $?" >&2
grep -aq 'Migration status: completed' "$smon" || { cat "$smon" >&2; echo "record-qemu-hv: the save did not complete" >&2; exit 1; }
[ -s "$mig" ] || { echo "record-qemu-hv: the save wrote no migration stream" >&2; exit 1; }
echo "record-qemu-hv: saved in $(( $(date +%s) - start )) s ($(stat -c %s "$mig") bytes)" >&2
lmon="$out/load.monitor"
: > "$lmon"
loaded=$(date +%s)
{ ask 'info status' 'VM status:' 'inmigrate' "$lmon"; echo 'info registers -a'; echo quit; } |
  npx kvmsr record -o "$out/qemu-hv-migrate-load.jsonl" -- "${qemu[@]}" -incoming "exec:cat $mig" > "$lmon" ||
  echo "record-qemu-hv: the restore's QEMU or monitor loop exited with $?" >&2
last=$(grep -a 'VM status:' "$lmon" | tail -n 1 || true)
case "$last" in
  *running*) ;;
  *) cat "$lmon" >&2; echo "record-qemu-hv: the restore did not finish loading the stream (last: ${last:-no status})" >&2; exit 1 ;;
esac
echo "record-qemu-hv: restored in $(( $(date +%s) - loaded )) s ($last)" >&2
echo "record-qemu-hv: done in $(( $(date +%s) - start )) s: $out" >&2
