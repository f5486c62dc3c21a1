import { llmQuotaKeyPrefixes } from '@agent-mesh/common';
import { loadConfig } from './config';

describe('loadConfig', () => {
  it('documents defaults for the breaker and the retry budget', () => {
    const c = loadConfig({});
    expect(c.breaker).toEqual({ errorPercent: 50, volumeThreshold: 10, resetMs: 5_000, timeoutMs: 30_000, windowMs: 10_000 });
    expect(c.retry).toEqual({ max: 3, budgetRatio: 0.1, budgetBurst: 10 });
  });

  it('reads them from the environment and names a bad one', () => {
    const c = loadConfig({ LLM_BREAKER_VOLUME_THRESHOLD: '4', LLM_BREAKER_RESET_MS: '1500', LLM_RETRY_BUDGET_RATIO: '0.2', LLM_RETRY_BUDGET_BURST: '0' });
    expect(c.breaker.volumeThreshold).toBe(4);
    expect(c.breaker.resetMs).toBe(1_500);
    expect(c.retry).toMatchObject({ budgetRatio: 0.2, budgetBurst: 0 });
    expect(() => loadConfig({ LLM_RETRY_BUDGET_RATIO: '2' })).toThrow(/LLM_RETRY_BUDGET_RATIO/);
    expect(() => loadConfig({ LLM_BREAKER_ERROR_PERCENT: '101' })).toThrow(/LLM_BREAKER_ERROR_PERCENT/);
    expect(() => loadConfig({ LLM_RETRY_MAX: 'x' })).toThrow(/LLM_RETRY_MAX/);
  });
});

describe('loadConfig, upstream realism', () => {
  it('reads the stream idle timeout and the TPM accounting model, refusing an unknown model', () => {
    expect(loadConfig({})).toMatchObject({ streamIdleTimeoutMs: 30_000, tpmAccounting: 'settle', embedBatchTokens: 300_000 });
    expect(loadConfig({ LLM_STREAM_IDLE_TIMEOUT_MS: '2500', LLM_TPM_ACCOUNTING: 'reserve' })).toMatchObject({ streamIdleTimeoutMs: 2_500, tpmAccounting: 'reserve' });
    expect(() => loadConfig({ LLM_TPM_ACCOUNTING: 'refund' })).toThrow(/LLM_TPM_ACCOUNTING must be settle or reserve/);
  });
});

describe('loadConfig, response cache', () => {
  it('defaults to an hour fresh and a day stale; a TTL of 0 is allowed (the cache off)', () => {
    expect(loadConfig({}).cache).toEqual({ ttlMs: 3_600_000, staleMs: 86_400_000, lockMs: 3_000, waitMs: 60_000 });
    expect(loadConfig({ LLM_CACHE_TTL_S: '0.5', LLM_CACHE_STALE_S: '0', LLM_CACHE_LOCK_MS: '800', LLM_CACHE_WAIT_MS: '2000' }).cache).toEqual({ ttlMs: 500, staleMs: 0, lockMs: 800, waitMs: 2_000 });
    expect(loadConfig({ LLM_CACHE_TTL_S: '0' }).cache.ttlMs).toBe(0);
    expect(() => loadConfig({ LLM_CACHE_TTL_S: '-1' })).toThrow(/LLM_CACHE_TTL_S/);
  });
});

describe('loadConfig, upstreams', () => {
  it('without LLM_UPSTREAMS: one OpenAI-compatible upstream from the single-upstream variables, on the quota keys it always had', () => {
    const [u, ...rest] = loadConfig({ LLM_BASE_URL: 'https://api.example/v1/', LLM_API_KEY: 'sk-1', LLM_MODEL: 'm', LLM_RPM: '60' }).upstreams;
    expect(rest).toEqual([]);
    expect(u).toEqual({ name: 'default', protocol: 'openai', baseUrl: 'https://api.example/v1', apiKey: 'sk-1', keyVariable: 'LLM_API_KEY', models: ['m'], maxConcurrent: 50, rpm: 60, tpm: 0, otpm: 0, quotaKey: 'mesh:llm' });
    expect(loadConfig({ LLM_TPM: '50000', LLM_OTPM: '10000' }).upstreams[0]).toMatchObject({ tpm: 50_000, otpm: 10_000 });
    expect(loadConfig({ LLM_PROTOCOL: 'anthropic' }).upstreams[0]!.protocol).toBe('anthropic');
    expect(() => loadConfig({ LLM_PROTOCOL: 'gemini' })).toThrow(/LLM_PROTOCOL/);
  });

  it('reads LLM_UPSTREAMS: keys from the variables named, limits defaulting to LLM_*, quota keys apart', () => {
    const env = {
      LLM_RPM: '100',
      K1: 'key-one',
      K2: 'key-two',
      LLM_UPSTREAMS: JSON.stringify([
        { name: 'ark', baseUrl: 'https://ark.example/api/v3', keyEnv: 'K1', models: ['ep-1'], tpm: 9000 },
        { name: 'claude', protocol: 'anthropic', baseUrl: 'https://api.anthropic.example/v1', keyEnv: 'K2', models: ['claude-h', 'claude-s'], rpm: 50, tpm: 50000, otpm: 10000 },
      ]),
    };
    const [a, b] = loadConfig(env).upstreams;
    expect(a).toMatchObject({ name: 'ark', protocol: 'openai', apiKey: 'key-one', keyVariable: 'K1', rpm: 100, tpm: 9000, quotaKey: 'mesh:llm' });
    expect(a!.otpm).toBe(0);
    expect(b).toMatchObject({ name: 'claude', protocol: 'anthropic', apiKey: 'key-two', models: ['claude-h', 'claude-s'], rpm: 50, tpm: 50_000, otpm: 10_000, quotaKey: 'mesh:llm:upstream:claude' });
  });

  it('whether the provider counts its prompt cache\'s reads against the token limit: the protocol\'s rule unless LLM_CACHE_READS_LIMITED or the upstream\'s cacheReadsLimited says', () => {
    expect(loadConfig({}).upstreams[0]!.cacheReadsLimited).toBeUndefined();
    expect(loadConfig({ LLM_CACHE_READS_LIMITED: 'true' }).upstreams[0]!.cacheReadsLimited).toBe(true);
    expect(loadConfig({ LLM_CACHE_READS_LIMITED: 'false' }).upstreams[0]!.cacheReadsLimited).toBe(false);
    expect(() => loadConfig({ LLM_CACHE_READS_LIMITED: 'yes' })).toThrow(/LLM_CACHE_READS_LIMITED/);
    const list = JSON.stringify([
      { name: 'claude', protocol: 'anthropic', baseUrl: 'https://a.example/v1', models: ['c'] },
      { name: 'old', protocol: 'anthropic', baseUrl: 'https://a.example/v1', models: ['c-3'], quotaKey: 'q:old', cacheReadsLimited: true },
    ]);
    expect(loadConfig({ LLM_UPSTREAMS: list }).upstreams.map((u) => u.cacheReadsLimited)).toEqual([undefined, true]);
    expect(loadConfig({ LLM_UPSTREAMS: list, LLM_CACHE_READS_LIMITED: 'false' }).upstreams.map((u) => u.cacheReadsLimited)).toEqual([false, true]);
    expect(() => loadConfig({ LLM_UPSTREAMS: JSON.stringify([{ name: 'x', baseUrl: 'https://x.example', models: ['m'], cacheReadsLimited: 'no' }]) })).toThrow(/x: "cacheReadsLimited" must be true or false/);
  });

  it("which of the callers' Anthropic betas an upstream is sent: all unless LLM_ANTHROPIC_BETAS or the upstream's anthropicBetas names some (in lower case); a name that cannot be one refused", () => {
    expect(loadConfig({}).upstreams[0]!.anthropicBetas).toBeUndefined();
    expect(loadConfig({ LLM_ANTHROPIC_BETAS: ' Context-1M-2025-08-07, claude-code-20250219 ' }).upstreams[0]!.anthropicBetas).toEqual(['context-1m-2025-08-07', 'claude-code-20250219']);
    expect(loadConfig({ LLM_ANTHROPIC_BETAS: 'none' }).upstreams[0]!.anthropicBetas).toEqual([]);
    expect(() => loadConfig({ LLM_ANTHROPIC_BETAS: 'context 1m' })).toThrow(/LLM_ANTHROPIC_BETAS must be "\*" or a list of betas' names/);
    const list = JSON.stringify([
      { name: 'claude', protocol: 'anthropic', baseUrl: 'https://a.example/v1', models: ['c'] },
      { name: 'vertex', protocol: 'anthropic', baseUrl: 'https://v.example/v1', models: ['c'], anthropicBetas: ['context-1m-2025-08-07'] },
      { name: 'direct', protocol: 'anthropic', baseUrl: 'https://d.example/v1', models: ['c'], anthropicBetas: '*' },
    ]);
    expect(loadConfig({ LLM_UPSTREAMS: list }).upstreams.map((u) => u.anthropicBetas)).toEqual([undefined, ['context-1m-2025-08-07'], undefined]);
    expect(loadConfig({ LLM_UPSTREAMS: list, LLM_ANTHROPIC_BETAS: 'none' }).upstreams.map((u) => u.anthropicBetas)).toEqual([[], ['context-1m-2025-08-07'], undefined]);
    expect(() => loadConfig({ LLM_UPSTREAMS: JSON.stringify([{ name: 'x', baseUrl: 'https://x.example', models: ['m'], anthropicBetas: 'all' }]) }))
      .toThrow(/LLM_UPSTREAMS: x: "anthropicBetas" must be "\*" or a list/);
  });

  it('names the quota keys as the tool-service reads them from the same LLM_UPSTREAMS (for the pause)', () => {
    const list = [
      { name: 'ark', baseUrl: 'https://ark.example/api/v3', models: ['ep-1'] },
      { name: 'claude', protocol: 'anthropic', baseUrl: 'https://api.anthropic.example/v1', models: ['c'] },
      { name: 'own', baseUrl: 'https://own.example/v1', models: ['o'], quotaKey: 'quota:own' },
    ];
    const text = JSON.stringify(list);
    expect(loadConfig({ LLM_UPSTREAMS: text }).upstreams.map((u) => u.quotaKey)).toEqual(llmQuotaKeyPrefixes(text));
    expect(llmQuotaKeyPrefixes(text)).toEqual(['mesh:llm', 'mesh:llm:upstream:claude', 'quota:own']);
    expect(loadConfig({}).upstreams.map((u) => u.quotaKey)).toEqual(llmQuotaKeyPrefixes(''));
  });

  it('names what is wrong in LLM_UPSTREAMS', () => {
    const one = (o: Record<string, unknown>, env: Record<string, string> = {}) => () => loadConfig({ ...env, LLM_UPSTREAMS: JSON.stringify([{ name: 'x', baseUrl: 'https://x.example', models: ['m'], ...o }]) });
    expect(() => loadConfig({ LLM_UPSTREAMS: '{"name":"x"}' })).toThrow(/LLM_UPSTREAMS: must be a non-empty JSON list/);
    expect(() => loadConfig({ LLM_UPSTREAMS: '[{' })).toThrow(/LLM_UPSTREAMS: must be a JSON list/);
    expect(one({ protocol: 'gemini' })).toThrow(/x: "protocol" must be openai or anthropic/);
    expect(one({ baseUrl: 'ftp://x' })).toThrow(/must be an http\(s\) URL/);
    expect(one({ models: [] })).toThrow(/"models" must be a non-empty list/);
    expect(one({ keyEnv: 'NOPE' })).toThrow(/its key variable NOPE is not set/);
    expect(one({ rpm: -1 })).toThrow(/"rpm" must be an integer/);
    expect(one({ apiKey: 'sk-inline' })).toThrow(/unknown field "apiKey"/);
    expect(() => loadConfig({ LLM_UPSTREAMS: JSON.stringify([{ name: 'x', baseUrl: 'https://x.example', models: ['m'] }, { name: 'x', baseUrl: 'https://y.example', models: ['m'] }]) })).toThrow(/two upstreams are named "x"/);
  });
});

describe('loadConfig, priorities', () => {
  it('reads a priority per caller role and refuses a role the broker does not have', () => {
    expect(loadConfig({}).priorities).toEqual({ host: 4, reporter: 3, critic: 2, planner: 2, direct: 2 });
    expect(loadConfig({ LLM_PRIORITIES: 'Host=9, direct=-1' }).priorities).toEqual({ host: 9, direct: -1 });
    expect(() => loadConfig({ LLM_PRIORITIES: 'hots=4' })).toThrow(/LLM_PRIORITIES: unknown role "hots" \(roles: planner, critic, host, reporter, direct\)/);
    expect(() => loadConfig({ LLM_PRIORITIES: 'host' })).toThrow(/expected role=number pairs/);
  });
});

describe('loadConfig, the pacing\'s burst', () => {
  it('lets 2 % of a limit go at once by default, and takes a share between 0.001 and 0.5', () => {
    expect(loadConfig({}).quotaBurstFraction).toBe(0.02);
    expect(loadConfig({ LLM_QUOTA_BURST_FRACTION: '0.016' }).quotaBurstFraction).toBe(0.016);
    expect(() => loadConfig({ LLM_QUOTA_BURST_FRACTION: '0' })).toThrow(/LLM_QUOTA_BURST_FRACTION/);
    expect(() => loadConfig({ LLM_QUOTA_BURST_FRACTION: '0.9' })).toThrow(/LLM_QUOTA_BURST_FRACTION/);
  });
});

describe('loadConfig, admissions taken ahead', () => {
  it('takes 8 ahead for 50 ms by default, and refuses a wait longer than the window margin', () => {
    expect(loadConfig({})).toMatchObject({ admitAhead: 8, admitAheadMs: 50, admitAheadKeepMs: 1000, quotaWindowMarginMs: 75 });
    expect(loadConfig({ LLM_ADMIT_AHEAD_KEEP_MS: '0' })).toMatchObject({ admitAheadKeepMs: 0 });
    expect(loadConfig({ LLM_ADMIT_AHEAD: '0', LLM_ADMIT_AHEAD_MS: '500' })).toMatchObject({ admitAhead: 0 });
    expect(() => loadConfig({ LLM_ADMIT_AHEAD_MS: '100' })).toThrow(/LLM_ADMIT_AHEAD_MS \(100\) must not exceed LLM_QUOTA_WINDOW_MARGIN_MS \(75\)/);
    expect(loadConfig({ LLM_ADMIT_AHEAD_MS: '100', LLM_QUOTA_WINDOW_MARGIN_MS: '150' })).toMatchObject({ admitAheadMs: 100 });
  });
});
