import { loadConfig } from './config';

describe('sign-in configuration', () => {
  test('neither a JWKS nor a development secret: refused at start, naming both', () => {
    expect(() => loadConfig({})).toThrow(/AUTH_JWKS_URL .*AUTH_JWT_SECRET/);
  });

  test('a JWKS needs its issuer and audience', () => {
    expect(() => loadConfig({ AUTH_JWKS_URL: 'https://idp.example/jwks.json' })).toThrow(/AUTH_ISSUER/);
    expect(() => loadConfig({ AUTH_JWKS_URL: 'https://idp.example/jwks.json', AUTH_ISSUER: 'https://idp.example/' })).toThrow(/AUTH_AUDIENCE/);
    expect(() => loadConfig({ AUTH_JWKS_URL: 'idp.example', AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a' })).toThrow(/http\(s\) URL/);
    const { auth } = loadConfig({ AUTH_JWKS_URL: 'https://idp.example/jwks.json', AUTH_ISSUER: 'https://idp.example/', AUTH_AUDIENCE: 'mesh' });
    expect(auth).toMatchObject({ jwksUrl: 'https://idp.example/jwks.json', issuer: 'https://idp.example/', audience: 'mesh', jwtSecret: undefined });
  });

  test('development: the secret alone is enough', () => {
    expect(loadConfig({ AUTH_JWT_SECRET: 'dev-secret' }).auth).toMatchObject({ jwtSecret: 'dev-secret', jwksUrl: undefined });
  });
});

describe('EDGE_INLINE_BROKER', () => {
  const dev = { AUTH_JWT_SECRET: 'dev-secret' };

  test('off by default: /v1 goes to the llm-broker service', () => {
    expect(loadConfig(dev).inlineBroker).toBeUndefined();
  });

  test("on: the broker's own variables configure it, and their errors stop the edge as they would the broker", () => {
    const cfg = loadConfig({ ...dev, EDGE_INLINE_BROKER: 'true', LLM_BASE_URL: 'http://llm.internal:8090/v1', LLM_API_KEY: 'k', LLM_MODEL: 'gpt-x', LLM_RPM: '900' });
    expect(cfg.inlineBroker?.upstreams).toMatchObject([{ baseUrl: 'http://llm.internal:8090/v1', apiKey: 'k', models: ['gpt-x'], rpm: 900 }]);
    expect(cfg.llmModel).toBe('gpt-x');
    expect(() => loadConfig({ ...dev, EDGE_INLINE_BROKER: 'true', LLM_PRIORITIES: 'boss=9' })).toThrow(/LLM_PRIORITIES: unknown role "boss"/);
  });

  test("LLM_MODEL=upstream, the edge's alias for the broker's default, is not taken as the model to call", () => {
    const cfg = loadConfig({ ...dev, EDGE_INLINE_BROKER: 'true', LLM_MODEL: 'upstream' });
    expect(cfg.llmModel).toBe('upstream');
    expect(cfg.inlineBroker?.upstreams[0]?.models).toEqual(['emulator-1']);
  });
});

describe('taking admissions ahead, remembering budget checks', () => {
  test('defaults: 8 ahead per user within 2 s, a budget check remembered for 1 s; 0 turns each off', () => {
    const c = loadConfig({ AUTH_JWT_SECRET: 's' });
    expect(c).toMatchObject({ rateLimitAhead: 8, rateLimitAheadMs: 2_000 });
    expect(c.budgets.okCacheMs).toBe(1_000);
    const off = loadConfig({ AUTH_JWT_SECRET: 's', RATE_LIMIT_AHEAD: '0', USER_BUDGET_CACHE_MS: '0' });
    expect(off).toMatchObject({ rateLimitAhead: 0 });
    expect(off.budgets.okCacheMs).toBe(0);
    expect(() => loadConfig({ AUTH_JWT_SECRET: 's', RATE_LIMIT_AHEAD_MS: '0' })).toThrow(/RATE_LIMIT_AHEAD_MS/);
  });
});
