import type { RequestDecision } from '@agent-mesh/common';
import { UpstreamError } from './provider';
import { CONNECT_FAILED, reachedProvider, SentRequests } from './requests';

/** A lease whose RPM window answers from `decisions` (then ok), recording what was taken and given back. */
function lease(decisions: RequestDecision[] = []) {
  const l = {
    charged: 0,
    refunded: 0,
    chargeRequest: async (): Promise<RequestDecision> => {
      const d = decisions.shift() ?? { ok: true };
      if (d.ok) l.charged += 1;
      return d;
    },
    refundRequest: async () => void (l.refunded += 1),
  };
  return l;
}

function clock() {
  let t = 1_000;
  const slept: number[] = [];
  return {
    slept,
    now: () => t,
    sleep: async (ms: number) => {
      slept.push(ms);
      t += ms;
    },
  };
}

const signal = new AbortController().signal;
const served = new UpstreamError('upstream 500: boom', 500);
const reset = new UpstreamError('upstream connection failed: other side closed', 0);
const refused = new UpstreamError('upstream connection failed: connect ECONNREFUSED', 0, undefined, {}, CONNECT_FAILED);

describe('reachedProvider', () => {
  it('an answer of any status, a connection broken after the request, a timeout, a cancel: reached; refused connections and an open breaker: not', () => {
    expect(reachedProvider(served)).toBe(true);
    expect(reachedProvider(new UpstreamError('upstream 429: slow down', 429))).toBe(true);
    expect(reachedProvider(reset)).toBe(true);
    expect(reachedProvider(Object.assign(new Error('Timed out'), { code: 'ETIMEDOUT' }))).toBe(true);
    expect(reachedProvider(new DOMException('aborted', 'AbortError'))).toBe(true);
    expect(reachedProvider(refused)).toBe(false);
    expect(reachedProvider(Object.assign(new Error('Breaker is open'), { code: 'EOPENBREAKER' }))).toBe(false);
    expect(reachedProvider(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe(false);
  });
});

describe('SentRequests: each request the provider receives takes one place in the RPM window', () => {
  it('the first attempt uses the admission\'s place; each retry after a request that reached the provider takes one more', async () => {
    const l = lease();
    const c = clock();
    const r = new SentRequests(l, c);
    r.sending();
    r.failed(served);
    expect(await r.beforeRetry(signal, undefined)).toBe(true);
    r.sending();
    r.failed(reset);
    expect(await r.beforeRetry(signal, undefined)).toBe(true);
    r.sending(); // answered
    await r.end();
    expect(l).toMatchObject({ charged: 2, refunded: 0 });
  });

  it('a retry waits until the window has room (or a pause ends), as often as it is refused', async () => {
    const l = lease([{ ok: false, reason: 'rpm', retryAfterMs: 300 }, { ok: false, reason: 'paused', retryAfterMs: 1_000 }]);
    const c = clock();
    const r = new SentRequests(l, c);
    r.sending();
    r.failed(served);
    expect(await r.beforeRetry(signal, undefined)).toBe(true);
    expect(c.slept).toEqual([300, 1_000]);
    expect(l.charged).toBe(1);
  });

  it('no room before the deadline: no retry, and nothing taken', async () => {
    const l = lease([{ ok: false, reason: 'rpm', retryAfterMs: 5_000 }]);
    const c = clock();
    const r = new SentRequests(l, c);
    r.sending();
    r.failed(served);
    expect(await r.beforeRetry(signal, c.now() + 1_000)).toBe(false);
    expect(c.slept).toEqual([]);
    await r.end();
    expect(l).toMatchObject({ charged: 0, refunded: 0 });
  });

  it('an attempt that never reached the provider leaves its place to the next; with none reaching it, the admission\'s goes back', async () => {
    const l = lease();
    const r = new SentRequests(l, clock());
    r.sending();
    r.failed(refused);
    expect(await r.beforeRetry(signal, undefined)).toBe(true);
    expect(l.charged).toBe(0);
    r.sending();
    r.failed(Object.assign(new Error('Breaker is open'), { code: 'EOPENBREAKER' }));
    await r.end();
    expect(l).toMatchObject({ charged: 0, refunded: 1 });
    await r.end(); // once only
    expect(l.refunded).toBe(1);
  });

  it('a place taken for a retry that then could not connect goes back too', async () => {
    const l = lease();
    const r = new SentRequests(l, clock());
    r.sending();
    r.failed(served);
    await r.beforeRetry(signal, undefined);
    r.sending();
    r.failed(refused);
    await r.end();
    expect(l).toMatchObject({ charged: 1, refunded: 1 });
  });
});
