// Calls the real open(2)/ioctl(2)/close(2) through koffi (an optional dependency that ships
// prebuilt binaries), so the same bytes can go to /dev/kvm and to kvmsr.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';

export interface RealKvm {
  /** open(2): an fd, or -errno. */
  open(path: string): number;
  close(fd: number): number;
  /** ioctl(2): the return value, or -errno. A Uint8Array is passed as a pointer to its bytes. */
  ioctl(fd: number, request: number, arg?: number | Uint8Array): number;
}

const O_RDWR = 2;
const O_CLOEXEC = 0o2000000;

interface KoffiFn {
  (...args: unknown[]): number;
}
interface KoffiLib {
  func(decl: string): KoffiFn;
}
interface Koffi {
  load(path: string): KoffiLib;
  errno(): number;
}

let cached: RealKvm | null | undefined;
let loadError = '';

/** The libc binding, or null when koffi cannot be loaded (then `realKvmStatus` says why). */
export function loadRealKvm(): RealKvm | null {
  if (cached !== undefined) return cached;
  try {
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as Koffi;
    const libc = koffi.load('libc.so.6');
    const open = libc.func('int open(const char *path, int flags)');
    const close = libc.func('int close(int fd)');
    const ioctl = libc.func('int ioctl(int fd, unsigned long request, ...)');
    const ret = (r: number): number => (r < 0 ? -koffi.errno() : r);
    cached = {
      open: (path) => ret(open(path, O_RDWR | O_CLOEXEC)),
      close: (fd) => ret(close(fd)),
      ioctl: (fd, request, arg = 0) =>
        ret(arg instanceof Uint8Array ? ioctl(fd, request >>> 0, 'void *', arg) : ioctl(fd, request >>> 0, 'unsigned long', arg)),
    };
  } catch (e) {
    loadError = e instanceof Error ? e.message : String(e);
    cached = null;
  }
  return cached;
}

/** Whether the real /dev/kvm can be used here, and if not, why (for visible test skips). */
export function realKvmStatus(): { ok: boolean; reason: string } {
  if (!existsSync('/dev/kvm')) return { ok: false, reason: '/dev/kvm is absent on this machine' };
  const real = loadRealKvm();
  if (!real) return { ok: false, reason: `koffi could not be loaded: ${loadError}` };
  const fd = real.open('/dev/kvm');
  if (fd < 0) return { ok: false, reason: `open(/dev/kvm) failed with errno ${-fd}` };
  real.close(fd);
  return { ok: true, reason: '' };
}
