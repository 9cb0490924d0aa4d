// A vCPU's kvm_run page, shared with the program under `kvmsr run`: a file the program maps (mmap of
// its vCPU fd) and kvmsr reads and writes around each of the vCPU's ioctls. Node cannot map memory,
// so the page is copied: the file's bytes into kvmsr's page before the ioctl (what the VMM wrote,
// e.g. run->msr.error before KVM_RUN completes an MSR exit) and, after it, only the bytes kvmsr
// changed back into the file, so a write another thread of the VMM makes meanwhile is not undone.
import { closeSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';

export class RunPage {
  private readonly was: Uint8Array;

  private constructor(
    private readonly fd: number,
    /** kvmsr's page (Kvm.runPage), updated in place. */
    private readonly page: Uint8Array,
  ) {
    this.was = new Uint8Array(page.length);
  }

  /** Creates the file at `path` with `size` bytes (KVM_GET_VCPU_MMAP_SIZE), zeroed as a new kvm_run is. */
  static create(path: string, size: number, page: Uint8Array): RunPage {
    const fd = openSync(path, 'wx+', 0o600);
    ftruncateSync(fd, Math.max(size, page.length));
    const p = new RunPage(fd, page);
    p.push(); // a recycled page may hold old bytes; the file is what the program sees first
    return p;
  }

  /** The file's bytes into kvmsr's page (before an ioctl). */
  pull(): void {
    const n = readSync(this.fd, this.page, 0, this.page.length, 0);
    if (n < this.page.length) this.page.fill(0, n); // the program truncated its mapping's file
    this.was.set(this.page);
  }

  /** What kvmsr changed since pull() back into the file (after an ioctl). */
  push(): void {
    const p = this.page;
    const w = this.was;
    let a = 0;
    let b = p.length;
    while (a < b && p[a] === w[a]) a++;
    while (b > a && p[b - 1] === w[b - 1]) b--;
    if (a < b) writeSync(this.fd, p, a, b - a, a);
    w.set(p);
  }

  close(): void {
    closeSync(this.fd);
  }
}
