import { createHmac } from 'node:crypto';
import { devAuth, signToken, TokenVerifier, bearerOf } from './auth';

const SECRET = 'unit-secret';
const v = new TokenVerifier(devAuth(SECRET));
const reject = (t: string | undefined) => v.userIdOf(t).then(() => 'accepted', (e: Error) => e.message);

describe('JWT checks (HS256, development)', () => {
  test('a valid HS256 token gives its sub', async () => {
    await expect(v.userIdOf(signToken(SECRET, 'user-1'))).resolves.toBe('user-1');
  });

  test('clock skew within the tolerance is accepted, beyond it refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expect(v.userIdOf(signToken(SECRET, 'u', { exp: now - 20 }))).resolves.toBe('u');
    expect(await reject(signToken(SECRET, 'u', { exp: now - 40 }))).toMatch(/expired/);
  });

  test('missing, forged, expired, not-yet-valid, wrong alg, bad sub, no exp', async () => {
    expect(await reject(undefined)).toMatch(/missing/);
    expect(await reject(signToken('other', 'u'))).toMatch(/signature/);
    expect(await reject(signToken(SECRET, 'u', { exp: Math.floor(Date.now() / 1000) - 60 }))).toMatch(/expired/);
    expect(await reject(signToken(SECRET, 'u', { nbf: Math.floor(Date.now() / 1000) + 600 }))).toMatch(/not yet/);
    expect(await reject(signToken(SECRET, '$where'))).toMatch(/subject/);
    expect(await reject('a.b')).toMatch(/malformed/);
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${enc({ alg: 'none' })}.${enc({ sub: 'u', exp: 2e9 })}.`;
    expect(await reject(none)).toMatch(/algorithm/);
    const rs = `${enc({ alg: 'RS256' })}.${enc({ sub: 'u', exp: 2e9 })}.c2ln`;
    expect(await reject(rs)).toMatch(/algorithm/); // no JWKS configured
    const body = `${enc({ alg: 'HS256' })}.${enc({ sub: 'u' })}`;
    const noExp = `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
    expect(await reject(noExp)).toMatch(/exp/);
  });

  test('bearer header parsing', () => {
    expect(bearerOf('Bearer abc')).toBe('abc');
    expect(bearerOf('bearer abc ')).toBe('abc');
    expect(bearerOf('Basic abc')).toBeUndefined();
    expect(bearerOf(undefined)).toBeUndefined();
  });
});
