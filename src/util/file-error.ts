// An error in an input file that names the file, the line and the field, as every kvmsr reader reports.
export class FileLineError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly field: string,
    message: string,
  ) {
    super(`${file}:${line}: ${field}: ${message}`);
    this.name = 'FileLineError';
  }
}
