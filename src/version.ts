import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
function findVersion(): string {
  for (const p of ['../package.json', '../../package.json']) {
    try {
      const pkg = require(p) as { name?: string; version?: string };
      if (pkg.name === 'kvmsr' && pkg.version) return pkg.version;
    } catch {
      // try the next location (src/ under vitest, dist/src/ when built)
    }
  }
  return '0.0.0';
}
export const KVMSR_VERSION = findVersion();
