#!/bin/sh
# For test/run-vmm.test.ts: runs a command in a new mount namespace (unshare -m, as root) whose /dev
# is a tmpfs holding only null, zero, full, random, urandom, tty, shm, pts and mqueue: no kvm node,
# whether or not the machine has one.
set -e
mount --make-rprivate /
T=$(mktemp -d)
mount --bind /dev "$T"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom tty; do [ -e "$T/$n" ] && touch "/dev/$n" && mount --bind "$T/$n" "/dev/$n"; done
for d in shm pts mqueue; do [ -d "$T/$d" ] && mkdir -p "/dev/$d" && mount --bind "$T/$d" "/dev/$d"; done
ln -s /proc/self/fd /dev/fd
umount -l "$T"
exec "$@"
