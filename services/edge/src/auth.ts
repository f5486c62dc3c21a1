// Bearer-token authentication with jose. Two kinds of token, told apart by their `alg`:
// - production: RS256/ES256 tokens of an identity provider, verified against its JWKS
//   (AUTH_JWKS_URL), with the issuer and audience checked. Keys are fetched by `kid` and cached;
//   a token with a `kid` not in the cache makes jose refetch the set (at most once per cooldown),
//   which is how a rotated key is picked up;
// - development: HS256 tokens signed with AUTH_JWT_SECRET (only when that is set).
// Every other algorithm (`none`, HS256 without a secret, HS256 "signed" with a public key, …) is
// refused. The user id is `sub`; `exp` is required; clock skew is tolerated on `exp`/`nbf`.
// A client sends the same token with every request: a verified one is remembered (by its exact
// text, so by its signature too) for VERIFIED_TTL_S at most and never past its `exp`, which saves
// the signature check on the hot path.
import { createHmac } from 'node:crypto';
import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import { isUserId } from '@agent-mesh/common';
import { HttpError, unauthorized } from './errors';

export interface AuthConfig {
  /** The scope (in `scope` or `scp`) that lets a token read the operations figures. */
  opsScope?: string;
  /** HS256 secret (development tokens); undefined: HS256 tokens are refused. */
  jwtSecret?: string;
  /** The identity provider's JWKS (RS256/ES256 tokens); undefined: only HS256. */
  jwksUrl?: string;
  /** Required `iss` and `aud` of JWKS-verified tokens. */
  issuer?: string;
  audience?: string;
  /** Clock skew tolerated on `exp` and `nbf`, seconds. */
  clockToleranceS: number;
  /** How long fetched keys are trusted without refetching, ms. */
  jwksCacheMs: number;
  /** Minimum time between two refetches triggered by an unknown `kid`, ms. */
  jwksCooldownMs: number;
  /** Timeout of a JWKS fetch, ms. */
  jwksTimeoutMs: number;
}

/** Algorithms accepted from the identity provider. */
export const JWKS_ALGORITHMS = ['RS256', 'ES256'];
/**
 * How long a verified token is taken as verified, s. A token of the identity provider counts only
 * while its key (`kid`) is still in the key set the edge holds: a key removed is noticed at the
 * set's next fetch, as without this memory.
 */
export const VERIFIED_TTL_S = 60;
/** Verified tokens remembered at most (the oldest go first). */
export const VERIFIED_MAX = 10_000;

export class TokenVerifier {
  private readonly secret?: Uint8Array;
  private readonly jwks?: ReturnType<typeof createRemoteJWKSet>;
  /** Verified token → who it is, until when (s) it counts as verified, its JWKS key; insertion-ordered. */
  private readonly verified = new Map<string, { principal: Principal; untilS: number; kid?: string }>();

  constructor(
    private readonly cfg: AuthConfig,
    private readonly nowS: () => number = () => Math.floor(Date.now() / 1000),
    private readonly maxVerified = VERIFIED_MAX,
  ) {
    if (cfg.jwtSecret) this.secret = new TextEncoder().encode(cfg.jwtSecret);
    if (cfg.jwksUrl) {
      this.jwks = createRemoteJWKSet(new URL(cfg.jwksUrl), {
        cacheMaxAge: cfg.jwksCacheMs,
        cooldownDuration: cfg.jwksCooldownMs,
        timeoutDuration: cfg.jwksTimeoutMs,
      });
    }
  }

  /** The user id of a valid token; an HttpError (401, or 503 when the keys cannot be fetched) otherwise. */
  async userIdOf(token: string | undefined): Promise<string> {
    return (await this.principalOf(token)).userId;
  }

  /** The user id and scopes of a valid token; an HttpError (401, or 503 when the keys cannot be fetched) otherwise. */
  async principalOf(token: string | undefined): Promise<Principal> {
    if (!token) throw unauthorized('missing bearer token: send "Authorization: Bearer <JWT>"');
    const known = this.verified.get(token);
    if (known && this.nowS() < known.untilS && (known.kid === undefined || this.keyHeld(known.kid))) return known.principal;
    if (known) this.verified.delete(token);
    let alg: string | undefined;
    let kid: string | undefined;
    try {
      ({ alg, kid } = decodeProtectedHeader(token));
    } catch {
      throw unauthorized('token malformed');
    }
    if (token.split('.').length !== 3) throw unauthorized('token malformed');
    let payload: JWTPayload;
    try {
      payload = await this.verify(token, alg);
    } catch (err) {
      throw toHttpError(err);
    }
    if (!isUserId(payload.sub)) throw unauthorized('token subject is not a valid user id');
    const principal: Principal = { userId: payload.sub, scopes: scopesOf(payload) };
    this.remember(token, principal, payload.exp!, alg === 'HS256' ? undefined : (kid ?? ''));
    return principal;
  }

  private remember(token: string, principal: Principal, expS: number, kid: string | undefined): void {
    if (this.verified.size >= this.maxVerified) this.verified.delete(this.verified.keys().next().value!);
    // Until exp (exp itself is refused: jose accepts up to exp + tolerance, the cache stops sooner).
    this.verified.set(token, { principal, untilS: Math.min(this.nowS() + VERIFIED_TTL_S, expS), kid });
  }

  /** The key set the edge holds has this key (a token without a kid: any key). */
  private keyHeld(kid: string): boolean {
    const keys = this.jwks?.jwks()?.keys ?? [];
    return kid === '' ? keys.length > 0 : keys.some((k) => k.kid === kid);
  }

  private async verify(token: string, alg: string | undefined): Promise<JWTPayload> {
    const common = {
      clockTolerance: this.cfg.clockToleranceS,
      requiredClaims: ['exp'],
      currentDate: new Date(this.nowS() * 1000),
    };
    if (alg === 'HS256' && this.secret) {
      return (await jwtVerify(token, this.secret, { ...common, algorithms: ['HS256'] })).payload;
    }
    if (this.jwks && alg !== 'HS256') {
      const opts = { ...common, algorithms: JWKS_ALGORITHMS, issuer: this.cfg.issuer, audience: this.cfg.audience };
      return (await jwtVerify(token, this.jwks, opts)).payload;
    }
    throw unauthorized(`token algorithm not allowed (${this.allowed().join(', ')} only)`);
  }

  private allowed(): string[] {
    return [...(this.secret ? ['HS256'] : []), ...(this.jwks ? JWKS_ALGORITHMS : [])];
  }
}

/** Who a valid token is: its user (`sub`) and the scopes it grants. */
export interface Principal {
  userId: string;
  scopes: ReadonlySet<string>;
}

/**
 * A token's scopes: `scope` as a space-separated string (RFC 8693 / RFC 9068, most identity
 * providers), or `scp` as an array or a string (Azure AD, Okta). Anything else grants none.
 */
export function scopesOf(payload: JWTPayload): ReadonlySet<string> {
  const out = new Set<string>();
  for (const claim of [payload['scope'], payload['scp']]) {
    const items = typeof claim === 'string' ? claim.split(' ') : Array.isArray(claim) ? claim : [];
    for (const s of items) if (typeof s === 'string' && s) out.add(s);
  }
  return out;
}

/** What a jose error means for the caller: 401 naming the problem, or 503 when the IdP is unreachable. */
function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof errors.JWTExpired) return unauthorized('token expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return unauthorized('token not yet valid');
    return unauthorized(`token claim invalid: ${err.claim} ${err.reason === 'missing' ? 'missing' : 'not accepted'}`);
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return unauthorized('token algorithm not allowed');
  if (err instanceof errors.JWKSNoMatchingKey) return unauthorized('token signed with an unknown key (kid)');
  if (err instanceof errors.JWSSignatureVerificationFailed) return unauthorized('token signature invalid');
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) {
    return unauthorized('token malformed');
  }
  // The key set could not be fetched or parsed (timeout, connection refused, non-200, bad JSON):
  // not the caller's fault, and not a reason to believe the token.
  return new HttpError(503, 'auth_unavailable', "the identity provider's keys cannot be fetched: retry shortly", 5);
}

/** Development sign-in only (HS256 with `secret`), as tests and tools build it without env. */
export function devAuth(secret: string): AuthConfig {
  return { jwtSecret: secret, opsScope: 'ops', clockToleranceS: 30, jwksCacheMs: 600_000, jwksCooldownMs: 30_000, jwksTimeoutMs: 5_000 };
}

/** Signs an HS256 token (tests, benchmarks and dev tokens). */
export function signToken(secret: string, sub: string, opts: { expiresInS?: number; exp?: number; nbf?: number; scope?: string } = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const claims = { sub, iat: now, exp: opts.exp ?? now + (opts.expiresInS ?? 3600), ...(opts.nbf ? { nbf: opts.nbf } : {}), ...(opts.scope ? { scope: opts.scope } : {}) };
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${body}.${createHmac('sha256', Buffer.from(secret, 'utf8')).update(body).digest('base64url')}`;
}

/** The token of `Authorization: Bearer …`, if any. */
export function bearerOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}
