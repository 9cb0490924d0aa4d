// The API page's example (docs/api.md), run as written (with the package name pointed at the source).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import * as kvmsr from '../src/index.js';

test('the API page example runs and says what it shows', () => {
  const readme = readFileSync(join(__dirname, '..', 'docs', 'api.md'), 'utf8');
  const code = /# API\n\n```ts\n([\s\S]*?)```/.exec(readme)![1]!;
  const body = code.replace(/^import .*$/m, '');
  const lines: string[] = [];
  const { Kvm, KVM_CREATE_VM, KVM_CREATE_VCPU, KVM_GET_MSRS, KVM_SET_MSRS, encodeMsrs, decodeMsrs, KvmError } = kvmsr;
  const run = new Function('Kvm', 'KVM_CREATE_VM', 'KVM_CREATE_VCPU', 'KVM_GET_MSRS', 'KVM_SET_MSRS', 'encodeMsrs', 'decodeMsrs', 'lines',
    body.replace(/^const r = (.*);.*$/m, 'const r = $1; lines.push(String(r));')
      .replace(/^decodeMsrs\(buf\)\.entries;.*$/m, 'lines.push(decodeMsrs(buf).entries.map((e) => e.index.toString(16) + "=" + e.data.toString(16)).join(" "));')
      .replace(/^kvm\.ioctl\(vcpu, KVM_SET_MSRS, tooMany\);.*$/m, 'lines.push(String(kvm.ioctl(vcpu, KVM_SET_MSRS, tooMany)));')
      .replace(/^kvm\.ioctlOrThrow\(vcpu, KVM_SET_MSRS, tooMany\);.*$/m, 'try { kvm.ioctlOrThrow(vcpu, KVM_SET_MSRS, tooMany); lines.push("no throw"); } catch (e) { lines.push(e.code); }'));
  run(Kvm, KVM_CREATE_VM, KVM_CREATE_VCPU, KVM_GET_MSRS, KVM_SET_MSRS, encodeMsrs, decodeMsrs, lines);
  expect(lines).toEqual(['1', '277=7040600070406 12345678=0', '-7', 'E2BIG']);
  expect(KvmError).toBeDefined();
});
