// Every multi-key script and transaction of common (the global limiter, the token budgets) keeps
// its keys in one Redis Cluster slot, and separate limiters spread over the slots.
import { GlobalLimiter } from '../quota/limiter';
import { TokenBudgets } from '../quota/budget';
import { keyRecorder } from './key-recorder';
import { sameSlot, slotOf } from './slots';

describe('cluster slots', () => {
  it('computes the slots Redis documents (the hash tag decides when there is one)', () => {
    // Redis Cluster spec: HASH_SLOT = CRC16(key) mod 16384; CRC16("123456789") = 0x31C3.
    expect(slotOf('123456789')).toBe(0x31c3 % 16384);
    expect(slotOf('{user1000}.following')).toBe(slotOf('{user1000}.followers'));
    expect(slotOf('foo{}{bar}')).toBe(slotOf('foo{}{bar}')); // an empty tag: the whole key
    expect(sameSlot(['foo{}{bar}', 'bar'])).toBe(false);
    expect(sameSlot(['a{x}b', 'c{x}d', '{x}'])).toBe(true);
  });

  it("puts every key of one limiter in one slot, whatever its prefix; different limiters' keys spread", async () => {
    const prefixes = ['mesh:llm', 'edge:rl:edges', 'edge:rl:u:alice', 'edge:rl:u:b{o}b', 'mesh:tool:limit:search_web'];
    for (const p of prefixes) expect(sameSlot(Object.values(GlobalLimiter.keysOf(p)))).toBe(true);
    const slots = new Set(prefixes.map((p) => slotOf(GlobalLimiter.keysOf(p).leases)));
    expect(slots.size).toBe(prefixes.length);
    // And what the scripts are really given: acquire, renew, release, pause, heartbeat.
    const { redis, calls } = keyRecorder({ meshQuotaAcquire: [1, 'ok', 0], meshQuotaRenew: 1, meshQuotaRelease: 1, meshQuotaPause: 1, meshQuotaHeartbeat: 1 });
    const limiter = new GlobalLimiter(redis, 'mesh:llm', { maxConcurrent: 2, requestsPerMinute: 60, tokensPerMinute: 1000 });
    const got = await limiter.tryAcquire({ holder: 'h', tokens: 10 });
    if (!got.ok) throw new Error('not admitted');
    await got.lease.renew();
    await got.lease.release({ actualTokens: 5 });
    await limiter.pauseFor(100);
    limiter.start();
    limiter.stop();
    expect(calls.map((c) => c.name).sort()).toEqual(['meshQuotaAcquire', 'meshQuotaHeartbeat', 'meshQuotaPause', 'meshQuotaRelease', 'meshQuotaRenew']);
    for (const c of calls) expect({ call: c.name, sameSlot: sameSlot(c.keys), slot: slotOf(c.keys[0]!) }).toEqual({ call: c.name, sameSlot: true, slot: slotOf('{mesh:llm}') });
  });

  it("keeps each transaction of a token charge in one slot (the user's windows; the day's spenders)", async () => {
    const { redis, calls } = keyRecorder();
    const budgets = new TokenBudgets(redis, 'mesh:budget', { defaults: { perDay: 100, perMinute: 10 } });
    await budgets.charge('alice', 7);
    await budgets.flushRanking();
    expect(calls.map((c) => c.name)).toEqual(['meshBudgetChargeWindows', 'meshBudgetRankSpenders']);
    for (const c of calls) expect(sameSlot(c.keys)).toBe(true);
    expect(calls.flatMap((c) => c.keys).length).toBeGreaterThanOrEqual(3);
  });
});
