// Bearer-token authentication: HS256 JWTs signed with AUTH_JWT_SECRET; the user id is `sub`.
// Verified with node:crypto rather than jose: jose 6 is ESM-only and the repository's jest setup
// cannot load it (see the report); the checks are the same as jwtVerify's for HS256 — algorithm
// pinned, constant-time signature comparison, `exp` required, `nbf` honoured.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { isUserId } from '@agent-mesh/common';
import { unauthorized } from './errors';

/** Clock skew tolerated on `exp` and `nbf`. */
const CLOCK_TOLERANCE_S = 5;

export class TokenVerifier {
  private readonly key: Buffer;

  constructor(
    secret: string,
    private readonly nowS: () => number = () => Math.floor(Date.now() / 1000),
  ) {
    this.key = Buffer.from(secret, 'utf8');
  }

  /** The user id of a valid token; an HttpError(401) saying what is wrong otherwise. */
  async userIdOf(token: string | undefined): Promise<string> {
    if (!token) throw unauthorized('missing bearer token: send "Authorization: Bearer <JWT>"');
    const parts = token.split('.');
    if (parts.length !== 3) throw unauthorized('token malformed');
    const [h, p, s] = parts as [string, string, string];
    const header = decodeJson(h);
    if (!header) throw unauthorized('token malformed');
    if (header['alg'] !== 'HS256') throw unauthorized('token algorithm not allowed (HS256 only)');
    const expected = createHmac('sha256', this.key).update(`${h}.${p}`).digest();
    const given = Buffer.from(s, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw unauthorized('token signature invalid');
    const claims = decodeJson(p);
    if (!claims) throw unauthorized('token malformed');
    const now = this.nowS();
    const exp = claims['exp'];
    if (typeof exp !== 'number') throw unauthorized('token claim invalid: exp missing');
    if (exp <= now - CLOCK_TOLERANCE_S) throw unauthorized('token expired');
    const nbf = claims['nbf'];
    if (nbf !== undefined && (typeof nbf !== 'number' || nbf > now + CLOCK_TOLERANCE_S)) throw unauthorized('token not yet valid');
    if (!isUserId(claims['sub'])) throw unauthorized('token subject is not a valid user id');
    return claims['sub'];
  }
}

function decodeJson(part: string): Record<string, unknown> | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Signs an HS256 token (tests, benchmarks and dev tokens). */
export function signToken(secret: string, sub: string, opts: { expiresInS?: number; exp?: number; nbf?: number } = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ sub, iat: now, exp: opts.exp ?? now + (opts.expiresInS ?? 3600), ...(opts.nbf ? { nbf: opts.nbf } : {}) })}`;
  return `${body}.${createHmac('sha256', Buffer.from(secret, 'utf8')).update(body).digest('base64url')}`;
}

/** The token of `Authorization: Bearer …`, if any. */
export function bearerOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}
