// _IOC encoding of ioctl request numbers (include/uapi/asm-generic/ioctl.h, as used on x86).
export const IOC_NRBITS = 8;
export const IOC_TYPEBITS = 8;
export const IOC_SIZEBITS = 14;
export const IOC_DIRBITS = 2;

export const IOC_NRSHIFT = 0;
export const IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS;
export const IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS;
export const IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS;

export const IOC_NONE = 0;
export const IOC_WRITE = 1;
export const IOC_READ = 2;

/** Returns the request number as an unsigned 32-bit integer. */
export function _IOC(dir: number, type: number, nr: number, size: number): number {
  return (
    ((dir << IOC_DIRSHIFT) | (type << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | (size << IOC_SIZESHIFT)) >>> 0
  );
}
export const _IO = (type: number, nr: number): number => _IOC(IOC_NONE, type, nr, 0);
export const _IOR = (type: number, nr: number, size: number): number => _IOC(IOC_READ, type, nr, size);
export const _IOW = (type: number, nr: number, size: number): number => _IOC(IOC_WRITE, type, nr, size);
export const _IOWR = (type: number, nr: number, size: number): number =>
  _IOC(IOC_READ | IOC_WRITE, type, nr, size);

export const _IOC_DIR = (req: number): number => (req >>> IOC_DIRSHIFT) & ((1 << IOC_DIRBITS) - 1);
export const _IOC_TYPE = (req: number): number => (req >>> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1);
export const _IOC_NR = (req: number): number => (req >>> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1);
export const _IOC_SIZE = (req: number): number => (req >>> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1);

export interface DecodedIoc {
  dir: number;
  type: number;
  nr: number;
  size: number;
}
export function decodeIoc(req: number): DecodedIoc {
  return { dir: _IOC_DIR(req), type: _IOC_TYPE(req), nr: _IOC_NR(req), size: _IOC_SIZE(req) };
}
