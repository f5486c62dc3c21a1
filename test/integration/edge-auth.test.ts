// Production sign-in: the edge as a real process verifying RS256/ES256 tokens against a JWKS
// served by a local identity provider this test starts (real Redis, FerretDB and store behind
// it), with a key rotation, and the refusals: unknown kid, wrong issuer or audience, expired,
// `alg: none`, HS256 signed with the public key; the IdP down is 503, not a pass.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createHmac } from 'node:crypto';
import { freePort, startFerret, startRedis, startService, testDir, type FerretProc, type RedisProc, type ServiceProc } from '../support';

jest.setTimeout(120_000);

const ROOT = path.resolve(__dirname, '../..');
const ISSUER = 'https://idp.test/';
const AUDIENCE = 'agent-mesh';
const COOLDOWN_MS = 300;

interface Key { kid: string; alg: 'RS256' | 'ES256'; privateKey: CryptoKey; publicKey: CryptoKey; jwk: JWK }
async function newKey(kid: string, alg: 'RS256' | 'ES256'): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

let dir: string;
let redis: RedisProc, ferret: FerretProc, store: ServiceProc, edge: ServiceProc;
let idp: http.Server;
let published: Key[] = [];
let jwksFetches = 0;
let idpUp = true;
let rsa1: Key, rsa2: Key, ec1: Key, stranger: Key;

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-b', 'services/edge', 'services/store'], { cwd: ROOT, stdio: 'inherit' });
  [rsa1, rsa2, ec1, stranger] = await Promise.all([newKey('rsa-1', 'RS256'), newKey('rsa-2', 'RS256'), newKey('ec-1', 'ES256'), newKey('rsa-x', 'RS256')]);
  published = [rsa1, ec1];
  idp = http.createServer((req, res) => {
    if (req.url !== '/.well-known/jwks.json' || !idpUp) {
      res.writeHead(idpUp ? 404 : 503).end();
      return;
    }
    jwksFetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published.map((k) => k.jwk) }));
  });
  const idpPort = await freePort();
  await new Promise<void>((resolve) => idp.listen(idpPort, '127.0.0.1', resolve));
  dir = testDir('edge-auth');
  [redis, ferret] = await Promise.all([startRedis({ logDir: dir }), startFerret({ logDir: dir })]);
  store = await startService('store', { logDir: dir, env: { MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true' } });
  edge = await startService('edge', {
    logDir: dir,
    env: {
      REDIS_URL: redis.url,
      STORE_ADDR: store.addr,
      OTEL_SDK_DISABLED: 'true',
      AUTH_JWT_SECRET: '',
      AUTH_JWKS_URL: `http://127.0.0.1:${idpPort}/.well-known/jwks.json`,
      AUTH_ISSUER: ISSUER,
      AUTH_AUDIENCE: AUDIENCE,
      AUTH_JWKS_COOLDOWN_MS: String(COOLDOWN_MS),
      AUTH_JWKS_TIMEOUT_MS: '1000',
      AUTH_CLOCK_TOLERANCE_S: '30',
    },
  });
});

afterAll(async () => {
  await edge?.stop();
  await store?.stop();
  await Promise.all([ferret, redis].map((p) => p?.stop()));
  await new Promise((resolve) => idp?.close(resolve));
});

async function sign(key: Key, claims: { sub?: string; iss?: string; aud?: string; expOffsetS?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setSubject(claims.sub ?? 'carol')
    .setIssuer(claims.iss ?? ISSUER)
    .setAudience(claims.aud ?? AUDIENCE)
    .setIssuedAt(now - 60)
    .setExpirationTime(now + (claims.expOffsetS ?? 600))
    .sign(key.privateKey);
}

async function get(token: string): Promise<{ status: number; message: string }> {
  const res = await fetch(`${edge.url}/api/conversations`, { headers: { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as { error?: { message: string } };
  return { status: res.status, message: body.error?.message ?? '' };
}

test('RS256 and ES256 tokens of the identity provider are accepted; the key set is fetched once and cached', async () => {
  const before = jwksFetches;
  expect(await get(await sign(rsa1))).toEqual({ status: 200, message: '' });
  expect(await get(await sign(ec1, { sub: 'dave' }))).toEqual({ status: 200, message: '' });
  expect(await get(await sign(rsa1))).toEqual({ status: 200, message: '' });
  expect(jwksFetches - before).toBeLessThanOrEqual(1);
});

test('clock skew: a token expired 10 s ago passes (tolerance 30 s), one expired 60 s ago does not', async () => {
  expect((await get(await sign(rsa1, { expOffsetS: -10 }))).status).toBe(200);
  const old = await get(await sign(rsa1, { expOffsetS: -60 }));
  expect(old).toEqual({ status: 401, message: 'token expired' });
});

test('wrong issuer, wrong audience, unknown kid, alg none, HS256 signed with the public key: 401', async () => {
  expect(await get(await sign(rsa1, { iss: 'https://evil.test/' }))).toEqual({ status: 401, message: 'token claim invalid: iss not accepted' });
  expect(await get(await sign(rsa1, { aud: 'another-app' }))).toEqual({ status: 401, message: 'token claim invalid: aud not accepted' });
  expect(await get(await sign(stranger))).toEqual({ status: 401, message: 'token signed with an unknown key (kid)' });

  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const claims = enc({ sub: 'carol', iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 600 });
  const none = `${enc({ alg: 'none', typ: 'JWT' })}.${claims}.`;
  expect((await get(none)).status).toBe(401);
  // The classic key-confusion attack: HS256 with the public key (PEM, and the JWK's modulus) as the HMAC secret.
  for (const secret of [await exportSPKI(rsa1.publicKey), rsa1.jwk.n!]) {
    const body = `${enc({ alg: 'HS256', typ: 'JWT', kid: rsa1.kid })}.${claims}`;
    const forged = `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
    expect(await get(forged)).toEqual({ status: 401, message: expect.stringMatching(/algorithm not allowed/) });
  }
  // A token signed by the right key but with its signature tampered.
  const good = await sign(rsa1);
  const tampered = good.slice(0, -4) + (good.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  expect((await get(tampered)).status).toBe(401);
});

test('key rotation: a token with the new kid is accepted after one refetch; the retired key is refused', async () => {
  published = [rsa2, ec1];
  await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
  const before = jwksFetches;
  expect(await get(await sign(rsa2))).toEqual({ status: 200, message: '' });
  expect(jwksFetches - before).toBe(1);
  // rsa-1 is no longer in the (refetched) set.
  expect(await get(await sign(rsa1))).toEqual({ status: 401, message: 'token signed with an unknown key (kid)' });
});

test('identity provider unreachable for a key not cached: 503 with Retry-After, never a pass', async () => {
  idpUp = false;
  try {
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    const rsa3 = await newKey('rsa-3', 'RS256');
    const res = await fetch(`${edge.url}/api/conversations`, { headers: { authorization: `Bearer ${await sign(rsa3)}` } });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('5');
    // Cached keys keep working while the IdP is down.
    expect((await get(await sign(rsa2))).status).toBe(200);
  } finally {
    idpUp = true;
  }
});
