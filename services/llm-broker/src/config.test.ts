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
    expect(loadConfig({})).toMatchObject({ streamIdleTimeoutMs: 30_000, tpmAccounting: 'settle' });
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
