#!/usr/bin/env bash
# A live kvm_intel oracle on a machine without /dev/kvm (and without VMX): boot Debian's 6.12
# kernel source, built with Debian's KVM settings (KVM_HYPERV=y, KVM_XEN=y, KVM_SMM=y,
# KVM_MAX_NR_VCPUS=4096) and both vendor modules, kvm_intel and kvm_amd, built in (the kernel of
# scripts/kvm-oracle-kernel.sh, shared with scripts/kvm-amd-oracle.sh), under Bochs 2.7, which
# emulates an Intel CPU with VMX, EPT and VPID, so kvm_intel runs nested under it; there run
# `kvmsr-probe --jobs N` on DIR/plan.txt and bring DIR/answers.txt back.
#
#   bash scripts/kvm-intel-oracle.sh [--cpu MODEL] [--jobs N] DIR
#   npx kvmsr harvest plan -o /tmp/harvest-intel-skx --cases 300 --seed 1
#   bash scripts/kvm-intel-oracle.sh /tmp/harvest-intel-skx
#   npx kvmsr harvest judge /tmp/harvest-intel-skx
#
# How: the guest boots from an isolinux ISO (the kernel and a busybox initramfs, kept in ORACLE_DIR
# and rebuilt per run in about a second); the plan, the static probe binary and the job count go in
# on a second IDE disk (ata0-slave, a flat image holding a tar), and the guest writes a tar of its
# output (answers.txt, the probe's log, dmesg, what /sys/module lists) back over the same disk,
# which the host unpacks after Bochs exits (the serial console, COM1 to a file, is only a progress
# log: it loses what is still buffered at power-off). Display: Bochs's VNC server (`rfb`, with
# timeout=0 it waits for no client; nothing connects) by default. Debian's Bochs also has `term`
# (ORACLE_DISPLAY=term), but it costs much: its idle hook sleeps in select() whenever the guest
# halts, so the guest's idle time (each VM created and destroyed waits for RCU/SRCU) passes in real
# time, about 1.5 s per case / 16 threads; and with the debugger built in it draws on a pty of its
# own that this script must read, or Bochs blocks in write() for good after a few minutes.
# Bochs runs inside a private tmux server (term wants a terminal; the debugger reads stdin);
# Debian's Bochs has its debugger built in, so it reads a command file (`c`, then `quit`).
# Kernel side: kvm_amd is built in too but finds no SVM and stays idle; /sys/module still lists it
# (as every built-in module with parameters), so answers.txt has `info module kvm_amd` as well as
# `info module kvm_intel`: the vendor is kvm_intel (the VMX capability MSRs on the feature list).
#
# Takes: the first run installs Debian packages (about 1 minute) and builds the kernel (23 minutes
# on 2 cores, extraction included, measured 2026-12-02; once for both oracles). Each run then (rfb
# display, --jobs 16), measured 2026-12-02 with the 2344-case plan of `kvmsr harvest plan --cases
# 300 --seed 1` (15 MB): corei7_skylake_x: Bochs ran 496 s in all, /dev/kvm after 44 s, the probe
# started after 82 s (unpacking the job disk) and took about 405 s of wall time (5.3 s by the
# guest's own clock: Bochs's clock is not the host's); corei7_icelake_u: 546 s, tigerlake: 536 s.
# Bochs powers off by itself. Not measured here: ORACLE_DISPLAY=term (an earlier run, its display
# not recorded, had done only 254 of 2344 cases after 20 minutes), other --jobs counts, ORACLE_IPS.
# The script prints how long Bochs ran and when /dev/kvm appeared (wall-clock seconds).
# Exit status: 0 when a complete answers.txt came back, 1 otherwise (a partial one is still copied).
# Options/env: --cpu MODEL or ORACLE_CPU (a Bochs CPU model with VMX: corei7_skylake_x (default),
# corei7_icelake_u, tigerlake, corei7_haswell_4770, ...; `bochs --help cpu` lists them), --jobs N or
# ORACLE_JOBS (default 16), ORACLE_DIR (default /tmp/kvm-oracle-dist: kernel, initramfs, runs),
# ORACLE_MEM (guest MiB, default 2048), ORACLE_APPEND (more kernel command line; the default has
# quiet loglevel=2, so KVM's "Unhandled RDMSR" lines stay off the slow serial console: dmesg comes
# back whole in DIR/bochs-dmesg.txt), ORACLE_DISPLAY (rfb or term), ORACLE_TIMEOUT
# (seconds Bochs may run, default 3600), ORACLE_IPS (Bochs's ips= setting; unset: Bochs's default),
# KVMSR_PROBE (the probe binary to run; default dist/probe/kvmsr-probe, which must be static).
# Not part of CI: slow, and Bochs is an emulator (the TSC, the CPU model and its VMX capabilities
# are Bochs's, not a real Skylake's).
set -euo pipefail

usage="usage: $0 [--cpu MODEL] [--jobs N] DIR"
cpu=${ORACLE_CPU:-corei7_skylake_x}
jobs=${ORACLE_JOBS:-16}
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; cpu=$2; shift 2 ;;
    --cpu=*) cpu=${1#--cpu=}; shift ;;
    --jobs|-j) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; jobs=$2; shift 2 ;;
    --jobs=*) jobs=${1#--jobs=}; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "unknown option $1; $usage" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "$usage" >&2; exit 2; }; out=$1; shift ;;
  esac
done
[ -n "$out" ] || { echo "$usage" >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "--jobs needs a positive number; $usage" >&2; exit 2; }
[ -f "$out/plan.txt" ] || { echo "$out/plan.txt not found (make one with: npx kvmsr harvest plan -o $out)" >&2; exit 2; }
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

export ORACLE_DIR=${ORACLE_DIR:-/tmp/kvm-oracle-dist}
dir=$ORACLE_DIR
mem=${ORACLE_MEM:-2048}
timeout=${ORACLE_TIMEOUT:-3600}
display=${ORACLE_DISPLAY:-rfb}
mkdir -p "$dir"

. "$(dirname "$0")/apt-need.sh"
apt_need bochs bochsbios bochs-term vgabios xorriso isolinux syslinux-common busybox-static cpio tmux file

# The probe: it runs in a busybox initramfs, so it must be static.
probe=${KVMSR_PROBE:-$repo/dist/probe/kvmsr-probe}
if [ -z "${KVMSR_PROBE:-}" ] && ! file -L "$probe" 2>/dev/null | grep -q 'statically linked'; then
  echo "$probe is missing or not static; building a static copy in $dir (needs libc6-dev's libc.a)" >&2
  dpkg -s libc6-dev >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq libc6-dev build-essential >/dev/null; }
  cc -static -O2 -Wall -pthread -o "$dir/kvmsr-probe" "$repo/probe/kvmsr-probe.c"
  probe=$dir/kvmsr-probe
fi
file -L "$probe" | grep -q 'statically linked' || { echo "$probe is not statically linked: it cannot run in the guest" >&2; exit 1; }

kernel=$(bash "$here/kvm-oracle-kernel.sh")

# The initramfs (built once; rebuilt when this init changes).
init=$(cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
up() { cut -d' ' -f1 /proc/uptime; }
echo "oracle: init at uptime $(up)"
i=0
while [ ! -e /dev/kvm ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
if [ -e /dev/kvm ]; then echo "oracle: /dev/kvm at uptime $(up)"; else echo "oracle: no /dev/kvm"; fi
disk=
for b in /sys/block/sd* /sys/block/hd*; do
  [ -e "$b" ] && [ "$(cat $b/removable 2>/dev/null)" != 1 ] && { disk=/dev/${b##*/}; break; }
done
mkdir -p /work /out
if [ -z "$disk" ] || ! tar -xf "$disk" -C /work; then
  echo "oracle: no job disk (${disk:-none}); block devices: $(ls /sys/block)"
else
  JOBS=16; . /work/run.conf
  {
    echo "disk $disk"; uname -a; ls -l /dev/kvm; echo "modules: $(ls -d /sys/module/kvm* | tr '\n' ' ')"
    grep -H . /sys/module/kvm*/parameters/* 2>/dev/null; grep -m1 -E '^flags' /proc/cpuinfo
    grep -m1 -E '^vmx flags' /proc/cpuinfo; grep -m1 'model name' /proc/cpuinfo; free
  } > /out/guest-info.txt 2>&1
  echo "oracle: probe start (--jobs $JOBS) at uptime $(up)"
  chmod +x /work/kvmsr-probe
  /work/kvmsr-probe --jobs "$JOBS" /work/job 2>&1 | tee /out/probe.log
  echo "oracle: probe end at uptime $(up)"
  cp /work/job/answers.txt /out/ 2>/dev/null
  dmesg > /out/dmesg.txt
  tar -cf "$disk" -C /out .
  sync
fi
echo "oracle: done"
sleep 1
poweroff -f
INIT
)
initrd="$dir/intel-initrd.gz"
if [ ! -f "$initrd" ] || [ "$(cat "$dir/intel-initramfs/init" 2>/dev/null)" != "$init" ]; then
  root="$dir/intel-initramfs"
  rm -rf "$root" && mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
  cp /bin/busybox "$root/bin/busybox"
  file -L "$root/bin/busybox" | grep -q 'statically linked' || { echo "/bin/busybox is not static (install busybox-static)" >&2; exit 1; }
  printf '%s\n' "$init" > "$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip) > "$initrd"
fi

# This run: its own directory, ISO, job disk, bochsrc.
find "$dir" -maxdepth 1 -name 'intel-run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
run=$(mktemp -d "$dir/intel-run.XXXXXX")
mkdir -p "$run/iso/isolinux" "$run/payload/job" "$run/back"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$run/iso/isolinux/"
cp "$kernel" "$run/iso/linux"
cp "$initrd" "$run/iso/initrd.gz"
cat > "$run/iso/isolinux/isolinux.cfg" <<EOF
DEFAULT oracle
PROMPT 0
TIMEOUT 0
LABEL oracle
  KERNEL /linux
  APPEND initrd=/initrd.gz console=ttyS0,115200 quiet loglevel=2 panic=-1 ${ORACLE_APPEND:-}
EOF
xorriso -as mkisofs -quiet -o "$run/oracle.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
  -no-emul-boot -boot-load-size 4 -boot-info-table "$run/iso" 2>"$run/xorriso.log" \
  || { cat "$run/xorriso.log" >&2; exit 1; }

cp "$out/plan.txt" "$run/payload/job/plan.txt"
cp "$probe" "$run/payload/kvmsr-probe"
echo "JOBS=$jobs" > "$run/payload/run.conf"
# The disk: a flat image of 16 heads x 63 sectors cylinders, big enough for the plan and the answers.
plan_mb=$(( $(stat -c %s "$out/plan.txt") / 1048576 ))
cyl=$(( (64 + 8 * plan_mb) * 1048576 / 516096 + 1 ))
truncate -s $(( cyl * 516096 )) "$run/disk.img"
tar -cf "$run/payload.tar" -C "$run/payload" .
dd if="$run/payload.tar" of="$run/disk.img" conv=notrunc status=none

case "$display" in
  term) display_line="display_library: term" ;;
  rfb) display_line='display_library: rfb, options="timeout=0"' ;;
  *) echo "ORACLE_DISPLAY must be rfb or term" >&2; exit 2 ;;
esac
cat > "$run/bochsrc" <<EOF
$display_line
megs: $mem
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
cpu: model=$cpu, count=1${ORACLE_IPS:+, ips=$ORACLE_IPS}
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=$run/oracle.iso, status=inserted
ata0-slave: type=disk, mode=flat, path=$run/disk.img, cylinders=$cyl, heads=16, spt=63
boot: cdrom
com1: enabled=1, mode=file, dev=$run/serial.log
log: $run/bochs.log
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
mouse: enabled=0
speaker: enabled=0
# No sound: with no ALSA card, Debian's Bochs 2.7 aborts ("buffer overflow detected") while its
# ALSA plugin loads; the dummy drivers keep it from loading.
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
EOF
printf 'c\nquit\n' > "$run/debugger.rc"

sock="kvm-intel-oracle-$$"
sess=bochs
start=$(date +%s)
tmux -L "$sock" new-session -d -s "$sess" -x 132 -y 50 \
  "echo \$\$ > '$run/bochs.pid'; exec bochs -q -f '$run/bochsrc' -rc '$run/debugger.rc'"
drain=
cleanup() {
  tmux -L "$sock" kill-server 2>/dev/null || true
  if [ -n "$drain" ]; then kill "$drain" 2>/dev/null || true; fi
}
trap cleanup EXIT
for _ in $(seq 50); do if [ -s "$run/bochs.pid" ]; then break; fi; sleep 0.1; done
pid=$(cat "$run/bochs.pid" 2>/dev/null || true)
[ -n "$pid" ] || { echo "bochs did not start" >&2; exit 1; }
echo "bochs ($cpu, ${mem} MiB, --jobs $jobs, display $display) started, pid $pid; run directory $run" >&2
if [ "$display" = term ]; then
  # With the debugger built in, the term display draws on a pty of its own ("Bochs connected to
  # screen /dev/pts/N") that nobody reads: once its buffer is full (the blinking cursor fills it
  # in a few minutes) Bochs blocks in write() for good. Read it (raw, into screen.raw).
  tty=
  for _ in $(seq 100); do
    tty=$(tmux -L "$sock" capture-pane -p -t "$sess" 2>/dev/null | sed -n 's/.*Bochs connected to screen "\([^"]*\)".*/\1/p' | tail -1)
    if [ -n "$tty" ]; then break; fi
    sleep 0.1
  done
  if [ -n "$tty" ] && [ -c "$tty" ]; then
    stty -F "$tty" raw -echo 2>/dev/null || true
    cat "$tty" > "$run/screen.raw" 2>/dev/null &
    drain=$!
  else
    echo "  warning: did not find the term display's pty; Bochs may stall once it fills" >&2
  fi
fi

kvm_at= probe_at= done_at= last_line=
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  t=$(( $(date +%s) - start ))
  if [ -z "$kvm_at" ] && grep -qE 'oracle: (/dev/kvm|no /dev/kvm)' "$run/serial.log" 2>/dev/null; then
    kvm_at=$t; echo "  ${t}s: $(grep -m1 -E 'oracle: (/dev/kvm|no /dev/kvm)' "$run/serial.log")" >&2
  fi
  if [ -z "$probe_at" ] && grep -q 'oracle: probe start' "$run/serial.log" 2>/dev/null; then probe_at=$t; fi
  line=$(grep -a 'kvmsr-probe:' "$run/serial.log" 2>/dev/null | tail -1 || true)
  if [ -n "$line" ] && [ "$line" != "$last_line" ]; then echo "  ${t}s: $line" >&2; last_line=$line; fi
  if [ -z "$done_at" ] && grep -q 'oracle: done' "$run/serial.log" 2>/dev/null; then done_at=$t; fi
  # The guest powered off but Bochs waits (e.g. at its debugger prompt): end it.
  if [ -n "$done_at" ] && [ $(( t - done_at )) -gt 30 ]; then
    echo "  bochs still running 30 s after the guest finished; stopping it" >&2; kill "$pid" 2>/dev/null || true; break
  fi
  if [ "$t" -ge "$timeout" ]; then
    echo "  timeout after ${timeout}s; stopping bochs" >&2
    tmux -L "$sock" capture-pane -p -t "$sess" > "$run/screen.txt" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true; break
  fi
  if [ $(( t % 10 )) -eq 0 ]; then tmux -L "$sock" capture-pane -p -t "$sess" > "$run/screen.txt" 2>/dev/null || true; fi
done
for _ in $(seq 20); do if ! kill -0 "$pid" 2>/dev/null; then break; fi; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
total=$(( $(date +%s) - start ))

cp "$run/serial.log" "$out/bochs-serial.log" 2>/dev/null || true
rc=0
if tar -xf "$run/disk.img" -C "$run/back" 2>/dev/null && [ -f "$run/back/answers.txt" ]; then
  cp "$run/back/answers.txt" "$out/answers.txt"
  for f in probe.log guest-info.txt dmesg.txt; do if [ -f "$run/back/$f" ]; then cp "$run/back/$f" "$out/bochs-$f"; fi; done
  if ! grep -q '^done ' "$out/answers.txt"; then
    echo "answers.txt came back incomplete (no done line); see $out/bochs-probe.log" >&2; rc=1
  fi
else
  echo "no answers came back; the serial log is $out/bochs-serial.log, Bochs's log $run/bochs.log, its screen $run/screen.txt" >&2
  rc=1
fi
probe_s=$(sed -n 's/^done [0-9]* \([0-9.]*\)$/\1/p' "$out/answers.txt" 2>/dev/null | tail -1)
echo "bochs ran ${total}s (cpu $cpu): /dev/kvm after ${kvm_at:-?}s, probe started after ${probe_at:-?}s," \
  "probe's own time ${probe_s:-?}s (guest clock), guest finished after ${done_at:-?}s; answers in $out/answers.txt" >&2
exit "$rc"
