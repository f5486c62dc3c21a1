// Today's ranking of spenders (TokenBudgets) on a real Redis, charged by two replicas: each sends
// its charges of a flush period in one command, the user's windows at once.
import Redis from 'ioredis';
import { TokenBudgets } from '@agent-mesh/common';
import { redisForFile } from '../support';

jest.setTimeout(60_000);

const redis = redisForFile('budget-ranking', (url) => [new Redis(url), new Redis(url), new Redis(url)]);
let a: Redis;
let b: Redis;
let probe: Redis;
beforeAll(() => void ([a, b, probe] = redis.clients as [Redis, Redis, Redis]));

const rankingCommands = async () => {
  const stats = await probe.info('commandstats');
  return Number(/cmdstat_zincrby:calls=(\d+)/.exec(stats)?.[1] ?? 0);
};

test("two replicas' charges reach the ranking summed, each replica's in one command per flush, the windows at once", async () => {
  const errors: unknown[] = [];
  const opts = { defaults: { perDay: 0, perMinute: 0 }, rankingFlushMs: 300, onError: (e: unknown) => errors.push(e) };
  const ra = new TokenBudgets(a, 'test:budget', opts);
  const rb = new TokenBudgets(b, 'test:budget', opts);
  const before = await rankingCommands();

  // 30 charges from each replica: alice 10 × (1 + 2), bob 10 × 5, carol 10 × 1.
  for (let i = 0; i < 10; i += 1) {
    await Promise.all([ra.charge('alice', 1), rb.charge('alice', 2), ra.charge('bob', 5), rb.charge('carol', 1)]);
  }
  // The windows were charged at once…
  expect((await ra.usage('alice'))[0]!.used).toBe(30);
  expect((await rb.usage('bob'))[1]!.used).toBe(50);
  // …the ranking not yet (flushed at 300 ms), then with every charge, in one script per replica.
  expect(await ra.topSpenders(3)).toEqual([]);
  const deadline = Date.now() + 5_000;
  while ((await ra.topSpenders(3)).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(await rb.topSpenders(3)).toEqual([50, 30, 10]);
  const zincrby = (await rankingCommands()) - before;
  expect(zincrby).toBe(4); // alice and bob from a, alice and carol from b: one ZINCRBY each, not one per charge
  expect(errors).toEqual([]);
});

test('a flush sends what is pending at once (the service flushes at shutdown)', async () => {
  const r = new TokenBudgets(a, 'test:flush', { defaults: { perDay: 0, perMinute: 0 }, rankingFlushMs: 60_000 });
  await r.charge('dave', 7);
  await r.charge('dave', 3);
  expect(await r.topSpenders(1)).toEqual([]);
  await r.flushRanking();
  expect(await r.topSpenders(1)).toEqual([10]);
  await r.flushRanking(); // nothing pending: nothing sent
  expect(await r.topSpenders(1)).toEqual([10]);
});
