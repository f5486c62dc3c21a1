// The per-user request limit: pacing per user, and the shared limiter's local fallback while
// Redis is unreachable (users stay limited, each by this replica's share).
import { createLogger, createRegistry, type Redis } from '@agent-mesh/common';
import { memoryRequestLimiter, RecentRefusals, redisRequestLimiter } from './ratelimit';

describe('per-user request limit', () => {
  test('in memory: a burst of ⌊L × 0.25⌋, then refused with a wait, per user', async () => {
    let now = 1_000_000;
    const l = memoryRequestLimiter(12, () => now);
    for (let i = 0; i < 3; i++) expect(await l.check('alice')).toEqual({ ok: true });
    const refused = await l.check('alice');
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.retryAfterMs).toBeGreaterThan(0);
    expect(await l.check('bob')).toEqual({ ok: true });
    now += 60_000 / 9 + 1;
    expect(await l.check('alice')).toEqual({ ok: true });
  });

  test('Redis down: the shared limiter decides locally, still per user', async () => {
    // A client that never becomes ready: every decision takes the local fallback path.
    const offline = { status: 'end', defineCommand: () => undefined, once: () => undefined } as unknown as Redis;
    const registry = createRegistry('rl-test');
    const l = redisRequestLimiter(offline, { perMinute: 8 }, createLogger('rl-test', 'silent'), registry);
    try {
      expect((await l.check('alice')).ok).toBe(true);
      expect((await l.check('alice')).ok).toBe(true);
      expect((await l.check('alice')).ok).toBe(false);
      expect((await l.check('bob')).ok).toBe(true);
      // Each decision, admitted or refused, counted as made on this replica's share.
      expect(await registry.getSingleMetricAsString('edge_rate_limit_local_decisions_total')).toMatch(/_total{service="rl-test"} 4$/m);
    } finally {
      l.close?.();
    }
  });

  test('Redis down from the start: a user\'s limit divided by fallbackReplicas (the edges it cannot count)', async () => {
    const offline = { status: 'end', defineCommand: () => undefined, once: () => undefined } as unknown as Redis;
    // 16 a minute: alone, a burst of 4 on this edge; among 2 edges, 8 a minute each, a burst of 2.
    const admitted = async (fallbackReplicas?: number) => {
      const l = redisRequestLimiter(offline, { perMinute: 16, fallbackReplicas }, createLogger('rl-test', 'silent'));
      let n = 0;
      while (n < 20 && (await l.check('alice')).ok) n += 1;
      await l.close?.();
      return n;
    };
    expect([await admitted(), await admitted(2)]).toEqual([4, 2]);
  });

  test('0 means unlimited', async () => {
    const l = memoryRequestLimiter(0);
    for (let i = 0; i < 100; i++) expect((await l.check('alice')).ok).toBe(true);
  });
});

describe('users refused lately', () => {
  test('are remembered for the wait their refusal gave, at least a second and at most a minute', () => {
    let now = 0;
    const r = new RecentRefusals(10, () => now);
    r.note('alice', 50);
    r.note('bob', 5_000);
    r.note('carol', 3_600_000);
    expect([r.has('alice'), r.has('bob'), r.has('carol'), r.has('dave')]).toEqual([true, true, true, false]);
    now = 999;
    expect(r.has('alice')).toBe(true);
    now = 1_000;
    expect([r.has('alice'), r.has('bob')]).toEqual([false, true]);
    now = 5_000;
    expect([r.has('bob'), r.has('carol')]).toEqual([false, true]);
    now = 60_000;
    expect(r.has('carol')).toBe(false);
  });

  test('a new refusal renews the memory; past the bound, the user noted longest ago is forgotten first', () => {
    let now = 0;
    const r = new RecentRefusals(2, () => now);
    r.note('alice', 2_000);
    r.note('bob', 2_000);
    now = 1_500;
    r.note('alice', 2_000); // alice again: now the one noted last
    r.note('carol', 2_000); // over the bound: bob goes
    expect([r.has('alice'), r.has('bob'), r.has('carol')]).toEqual([true, false, true]);
    now = 3_000;
    expect(r.has('alice')).toBe(true); // renewed at 1,500 for 2 s
  });
});
