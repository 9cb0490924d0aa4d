// KVM_GET_STATS_FD (kvm_main.c kvm_vm_ioctl_get_stats_fd, kvm_vcpu_ioctl_get_stats_fd; binary_stats.c):
// a read-only file of struct kvm_stats_header, the id string, the descriptors and the data. Which
// statistics a kernel keeps, and their layout, belong to its build: kvmsr serves what the host's
// profile captured from a fresh VM and vCPU (`binaryStats`), with the id the kernel would write for
// this caller ("kvm-<tid>" at KVM_CREATE_VM, "kvm-<tid>/vcpu-<id>" at KVM_CREATE_VCPU, the creating
// thread's id). No guest runs, so the counters keep their fresh values. Without a captured layout
// the call is not modelled (ENOSYS).

/** struct kvm_stats_header: flags, name_size, num_desc, id_offset, desc_offset, data_offset. */
const HEADER = 24;

export interface StatsLayout {
  /** The file a fresh VM's (or vCPU's) KVM_GET_STATS_FD gave, whole. */
  vm: Uint8Array;
  vcpu: Uint8Array;
}

/** Whether these bytes are a stats file whose header points inside it. */
export function validStatsFile(b: Uint8Array): boolean {
  if (b.length < HEADER) return false;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const nameSize = dv.getUint32(4, true);
  const idOff = dv.getUint32(12, true);
  const descOff = dv.getUint32(16, true);
  const dataOff = dv.getUint32(20, true);
  return nameSize > 0 && idOff + nameSize <= b.length && descOff <= b.length && dataOff <= b.length;
}

/** The stats file with its id string replaced (NUL-padded to name_size, as the kernel keeps it). */
export function statsFileWithId(file: Uint8Array, id: string): Uint8Array {
  const out = file.slice();
  if (!validStatsFile(out)) return out;
  const dv = new DataView(out.buffer);
  const nameSize = dv.getUint32(4, true);
  const idOff = dv.getUint32(12, true);
  const bytes = new TextEncoder().encode(id).subarray(0, nameSize - 1);
  out.fill(0, idOff, idOff + nameSize);
  out.set(bytes, idOff);
  return out;
}

/** The file's id string (up to its first NUL). */
export function statsFileId(file: Uint8Array): string {
  if (!validStatsFile(file)) return '';
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const nameSize = dv.getUint32(4, true);
  const idOff = dv.getUint32(12, true);
  const raw = file.subarray(idOff, idOff + nameSize);
  const end = raw.indexOf(0);
  return new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end));
}

/** The file KVM_GET_STATS_FD hands out: read-only, close-on-exec (anon_inode_getfd(..., O_RDONLY), O_CLOEXEC fd). */
export function statsFile(bytes: Uint8Array): { bytes: Uint8Array; size: number; writable: false; cloexec: true } {
  return { bytes, size: bytes.length, writable: false, cloexec: true };
}
