import { backoffMs, createBreaker, RetryBudget } from './resilience';
import { UpstreamError } from './provider';

describe('RetryBudget', () => {
  it('takes back a withdrawal that was not spent, never beyond its cap', () => {
    const budget = new RetryBudget(0.1, 2, 1);
    expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(false);
    budget.giveBack();
    expect(budget.available).toBe(1);
    budget.giveBack();
    budget.giveBack();
    expect(budget.available).toBe(2);
  });

  it('never lets retries exceed requests × ratio + the initial reserve', () => {
    for (const initial of [0, 3]) {
      const budget = new RetryBudget(0.1, 10, initial);
      let retries = 0;
      for (let i = 0; i < 1_000; i += 1) {
        budget.onRequest();
        // A storm: every request fails and asks for three retries.
        for (let r = 0; r < 3; r += 1) if (budget.tryWithdraw()) retries += 1;
      }
      expect(retries).toBeLessThanOrEqual(1_000 * 0.1 + initial);
      expect(retries).toBeGreaterThanOrEqual(1_000 * 0.1 - 1);
    }
  });

  it('saves up at most `cap` retries, and at least one so that deposits add up', () => {
    const budget = new RetryBudget(0.5, 2);
    for (let i = 0; i < 100; i += 1) budget.onRequest();
    expect(budget.available).toBe(2);
    const noReserve = new RetryBudget(0.5, 0);
    expect(noReserve.tryWithdraw()).toBe(false);
    noReserve.onRequest();
    noReserve.onRequest();
    expect(noReserve.tryWithdraw()).toBe(true);
  });
});

describe('backoffMs', () => {
  it('is jittered below an exponential ceiling and never below the provider floor', () => {
    expect(backoffMs(0, 0, 200, 5_000, () => 1)).toBe(200);
    expect(backoffMs(3, 0, 200, 5_000, () => 1)).toBe(1_600);
    expect(backoffMs(10, 0, 200, 5_000, () => 1)).toBe(5_000);
    expect(backoffMs(2, 0, 200, 5_000, () => 0.5)).toBe(400);
    expect(backoffMs(2, 3_000, 200, 5_000, () => 0)).toBe(3_000);
  });
});

describe('createBreaker', () => {
  it('opens on failures but not on 429s or cancels, fails fast, and closes after a good probe', async () => {
    let fail: Error | undefined = new UpstreamError('upstream 503', 503);
    let calls = 0;
    const b = createBreaker(async () => {
      calls += 1;
      if (fail) throw fail;
      return 'ok';
    }, { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeoutMs: 100 });
    const rateLimited = new UpstreamError('upstream 429', 429);
    const fire = () => b.fire().catch((e: Error & { code?: string }) => e.code ?? e.message);
    fail = rateLimited;
    for (let i = 0; i < 6; i += 1) await fire();
    expect(b.opened).toBe(false);
    fail = new UpstreamError('upstream 503', 503);
    for (let i = 0; i < 12 && !b.opened; i += 1) await fire();
    expect(b.opened).toBe(true);
    const before = calls;
    expect(await fire()).toBe('EOPENBREAKER');
    expect(calls).toBe(before);
    fail = undefined;
    await new Promise((r) => setTimeout(r, 150));
    expect(b.halfOpen).toBe(true);
    expect(await b.fire()).toBe('ok');
    expect(b.closed).toBe(true);
    b.shutdown();
  });
});

describe('UpstreamError classification', () => {
  it('a billing 429 is not a rate limit, and account problems are never retried', () => {
    const quota = new UpstreamError('upstream 429: You exceeded your current quota', 429, undefined, {}, 'insufficient_quota');
    expect(quota).toMatchObject({ rateLimited: false, retryable: false, accountProblem: 'insufficient_quota' });
    expect(new UpstreamError('upstream 401', 401, undefined, {}, 'invalid_api_key')).toMatchObject({ retryable: false, accountProblem: 'invalid_api_key' });
    expect(new UpstreamError('upstream 429', 429, 1000)).toMatchObject({ rateLimited: true, retryable: true, accountProblem: undefined });
    expect(new UpstreamError('in-stream error', 0)).toMatchObject({ retryable: true });
  });

  it('the breaker counts neither a 404 for an unknown model nor a 400 as the upstream failing', async () => {
    const b = createBreaker(async (err: Error) => {
      throw err;
    }, { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 10_000 });
    for (let i = 0; i < 10; i += 1) {
      await b.fire(new UpstreamError('upstream 404', 404, undefined, {}, 'model_not_found')).catch(() => undefined);
      await b.fire(new UpstreamError('upstream 400', 400)).catch(() => undefined);
    }
    expect(b.opened).toBe(false);
    // The filtered refusals counted as successes (20): it takes a majority of 5xx to open it.
    for (let i = 0; i < 22 && !b.opened; i += 1) await b.fire(new UpstreamError('upstream 500', 500)).catch(() => undefined);
    expect(b.opened).toBe(true);
    b.shutdown();
  });
});
