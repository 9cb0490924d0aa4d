// Host profiles: the JSON form round-trips, and a malformed profile is refused with an error that
// names the file and the field.
import { describe, expect, test } from 'vitest';
import { parseProfile, profileToJson, ProfileError } from '../src/kvm/profile.js';
import { Kvm } from '../src/kvm/kvm.js';
import { BUILTIN_PROFILES, DEFAULT_PROFILE_NAME, defaultProfile } from '../src/profiles.js';

const base = (): Record<string, unknown> => JSON.parse(JSON.stringify(BUILTIN_PROFILES[DEFAULT_PROFILE_NAME])) as Record<string, unknown>;

describe('profiles', () => {
  test('the built-in profile round-trips through its JSON form', () => {
    const p = defaultProfile();
    const again = parseProfile(JSON.parse(JSON.stringify(profileToJson(p))), 'again');
    expect(again).toEqual(p);
    expect(p.host.vendorModule).toBe('kvm_pvm');
    expect(p.msrIndexList).toHaveLength(40);
  });

  test('new Kvm({ profile }) takes the parsed JSON as `kvmsr profile capture` writes it', () => {
    const kvm = new Kvm({ profile: base() });
    expect(kvm.profile.msrIndexList).toEqual(defaultProfile().msrIndexList);
  });

  test.each([
    ['format', (p: Record<string, unknown>) => { p['format'] = 'x'; }, 'format'],
    ['version', (p: Record<string, unknown>) => { p['version'] = 2; }, 'version'],
    ['vendor module', (p: Record<string, unknown>) => { (p['host'] as Record<string, unknown>)['vendorModule'] = 'kvm_arm'; }, 'host.vendorModule'],
    ['list entry', (p: Record<string, unknown>) => { (p['msrIndexList'] as unknown[])[3] = 'zz'; }, 'msrIndexList[3]'],
    ['MSR out of range', (p: Record<string, unknown>) => { (p['msrIndexList'] as unknown[])[0] = '0x12345678'; }, 'msrIndexList[0]'],
    ['feature value', (p: Record<string, unknown>) => { ((p['featureMsrs'] as Record<string, unknown>[])[1]!)['value'] = '0x1ffffffffffffffff'; }, 'featureMsrs[1].value'],
    ['cpuid register', (p: Record<string, unknown>) => { ((p['supportedCpuid'] as Record<string, unknown>[])[2]!)['ecx'] = -1; }, 'supportedCpuid[2].ecx'],
    ['extension key', (p: Record<string, unknown>) => { ((p['extensions'] as Record<string, Record<string, unknown>>)['vm']!)['abc'] = 1; }, 'extensions.vm.abc'],
    ['missing host', (p: Record<string, unknown>) => { delete p['host']; }, 'host'],
  ])('a bad %s names its field', (_what, mutate, field) => {
    const p = base();
    mutate(p);
    try {
      parseProfile(p, 'my-host.json');
      expect.unreachable('parseProfile accepted a bad profile');
    } catch (e) {
      expect(e).toBeInstanceOf(ProfileError);
      expect((e as ProfileError).field).toBe(field);
      expect((e as Error).message.startsWith(`my-host.json: ${field}: `)).toBe(true);
    }
  });

  test('a non-object is refused, never crashes', () => {
    for (const v of [null, 3, 'x', [], undefined]) expect(() => parseProfile(v, 'f')).toThrow(ProfileError);
    expect(() => new Kvm({ profile: { nonsense: true } })).toThrow(ProfileError);
  });
});
