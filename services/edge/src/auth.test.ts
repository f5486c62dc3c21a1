import { createHmac } from 'node:crypto';
import { devAuth, signToken, TokenVerifier, bearerOf, VERIFIED_TTL_S } from './auth';

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

  test('a verified token is remembered for VERIFIED_TTL_S, never past its exp, and the memory is bounded', async () => {
    let now = Math.floor(Date.now() / 1000);
    const clocked = new TokenVerifier(devAuth(SECRET), () => now, 3);
    const checks = jest.spyOn(clocked as unknown as { verify: () => Promise<unknown> }, 'verify');
    const long = signToken(SECRET, 'u-long', { exp: now + 3600 });
    const short = signToken(SECRET, 'u-short', { exp: now + 10 });
    for (const t of [long, short, long, short]) await clocked.userIdOf(t);
    expect(checks).toHaveBeenCalledTimes(2);
    now += 11; // past the short one's exp (within the clock tolerance): checked again, not remembered
    await expect(clocked.userIdOf(short)).resolves.toBe('u-short');
    await expect(clocked.userIdOf(long)).resolves.toBe('u-long');
    expect(checks).toHaveBeenCalledTimes(3);
    now += 40;
    await expect(clocked.userIdOf(short)).rejects.toThrow(/expired/);
    now += VERIFIED_TTL_S;
    await clocked.userIdOf(long);
    expect(checks).toHaveBeenCalledTimes(5);
    for (let i = 0; i < 5; i += 1) await clocked.userIdOf(signToken(SECRET, `u-${i}`, { exp: now + 3600 }));
    expect((clocked as unknown as { verified: Map<string, unknown> }).verified.size).toBe(3);
  });

  test('bearer header parsing', () => {
    expect(bearerOf('Bearer abc')).toBe('abc');
    expect(bearerOf('bearer abc ')).toBe('abc');
    expect(bearerOf('Basic abc')).toBeUndefined();
    expect(bearerOf(undefined)).toBeUndefined();
  });
});
