// Admissions taken ahead of calls (GlobalLimiter's admitAhead) and remembered budget checks, on a
// real Redis: frequent calls are admitted without a round trip (shown by Redis answering nothing
// meanwhile: CLIENT PAUSE), never more than half of a limit is taken ahead, what is not used goes
// back, and a pause takes them away.
import Redis from 'ioredis';
import { GlobalLimiter, TokenBudgets, type AcquireResult, type Lease } from '@agent-mesh/common';
import { startRedis, testDir, waitFor, type RedisProc } from '../support';

jest.setTimeout(60_000);

let redis: RedisProc;
let admin: Redis;
const clients: Redis[] = [];
const client = async () => {
  const c = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  clients.push(c);
  await waitFor('redis client', () => c.status === 'ready', { timeoutMs: 10_000 });
  return c;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let prefixN = 0;
const prefix = () => `ahead${(prefixN += 1)}`;

beforeAll(async () => {
  redis = await startRedis({ logDir: testDir('admit-ahead') });
  admin = new Redis(redis.url);
});

afterAll(async () => {
  await Promise.all([admin, ...clients].map((c) => c.quit().catch(() => undefined)));
  await redis?.stop();
});

const leaseOf = (r: AcquireResult): Lease => {
  if (!r.ok) throw new Error(`refused: ${r.reason}`);
  return r.lease;
};

/** How long an admission takes while Redis answers nobody for `pauseMs`. */
async function timedWhileRedisPaused(l: GlobalLimiter, tokens: number, pauseMs = 600): Promise<{ ms: number; result: AcquireResult }> {
  await admin.client('PAUSE', pauseMs, 'ALL');
  const t0 = performance.now();
  const result = await l.tryAcquire({ holder: 'u', tokens });
  const ms = performance.now() - t0;
  await sleep(pauseMs); // let the pause end before the next step
  return { ms, result };
}

const LIMITS = { maxConcurrent: 100, requestsPerMinute: 6_000, tokensPerMinute: 1_000_000, burstFraction: 0.25, redisTimeoutMs: 2_000 };

it('admits a call that follows another closely from an admission taken ahead, without waiting for Redis', async () => {
  const p = prefix();
  const ahead = new GlobalLimiter(await client(), p, { ...LIMITS, admitAhead: 4, admitAheadMs: 2_000 });
  const plain = new GlobalLimiter(await client(), `${p}-plain`, { ...LIMITS, admitAheadMs: 2_000 });
  for (const l of [ahead, plain]) {
    await leaseOf(await l.tryAcquire({ holder: 'u', tokens: 50 })).release();
    await leaseOf(await l.tryAcquire({ holder: 'u', tokens: 50 })).release(); // close after the first: one more is taken ahead
  }
  const served = await timedWhileRedisPaused(ahead, 50);
  const waited = await timedWhileRedisPaused(plain, 50);
  expect(served.result.ok).toBe(true);
  expect(waited.result.ok).toBe(true);
  expect(served.ms).toBeLessThan(200);
  expect(waited.ms).toBeGreaterThan(400);
  // A call reserving more tokens than the admissions ahead did is decided in Redis.
  await sleep(50); // the used admission's replacement lands
  const bigger = await timedWhileRedisPaused(ahead, 500);
  expect(bigger.result.ok).toBe(true);
  expect(bigger.ms).toBeGreaterThan(400);
});

it('keeps one admission ahead fresh between calls further apart than admitAheadMs, for admitAheadKeepMs after the last', async () => {
  const p = prefix();
  const redisClient = await client();
  const opts = { ...LIMITS, admitAhead: 4, admitAheadMs: 100 };
  const kept = new GlobalLimiter(redisClient, p, { ...opts, admitAheadKeepMs: 1_500 });
  const plain = new GlobalLimiter(await client(), `${p}-plain`, opts);
  const leases = GlobalLimiter.keysOf(p).leases;
  for (const l of [kept, plain]) {
    await leaseOf(await l.tryAcquire({ holder: 'u', tokens: 50 })).release();
    await sleep(250); // further apart than admitAheadMs
    await leaseOf(await l.tryAcquire({ holder: 'u', tokens: 50 })).release();
  }
  // Renewed while kept: one slot held, its admission asked for anew every half admitAheadMs.
  const ids = new Set<string>();
  for (let i = 0; i < 8; i += 1) {
    await sleep(60);
    const held = await redisClient.zrange(leases, 0, -1);
    expect(held.length).toBeLessThanOrEqual(2); // the one kept, and its renewal before the old one is given back
    held.forEach((id) => ids.add(id));
  }
  expect(ids.size).toBeGreaterThanOrEqual(4);
  // ~500 ms after the last call, far longer than admitAheadMs: admitted without waiting for Redis; the plain limiter waits.
  const served = await timedWhileRedisPaused(kept, 50);
  const waited = await timedWhileRedisPaused(plain, 50);
  expect(served.result.ok).toBe(true);
  expect(served.ms).toBeLessThan(200);
  expect(waited.result.ok).toBe(true);
  expect(waited.ms).toBeGreaterThan(400);
  await leaseOf(served.result).release();
  // No call for admitAheadKeepMs: the last one goes back and none is asked for again.
  await waitFor('kept admission given back', async () => (await redisClient.zcard(leases)) === 0, { timeoutMs: 3_000 });
  await sleep(300);
  expect(await redisClient.zcard(leases)).toBe(0);
  kept.stop();
  plain.stop();
});

it('never takes more than half of the concurrency limit ahead, and never exceeds it', async () => {
  const p = prefix();
  const redisClient = await client();
  const l = new GlobalLimiter(redisClient, p, { ...LIMITS, maxConcurrent: 8, admitAhead: 8, admitAheadMs: 5_000 });
  const held: Lease[] = [];
  const aheadByStep: number[] = [];
  let refused = 0;
  for (let i = 0; i < 12; i += 1) {
    const r = await l.tryAcquire({ holder: `c${i}`, tokens: 10 });
    if (r.ok) held.push(r.lease);
    else {
      expect(r.reason).toBe('concurrency');
      refused += 1;
    }
    await sleep(5);
    // Leases held by calls and admissions ahead, together, in Redis: never above the limit, and
    // admissions ahead never more than half of it (each is taken only while, after it, no more than
    // half is taken; calls admitted later may then fill the rest).
    const slots = await redisClient.zcard(GlobalLimiter.keysOf(p).leases);
    expect(slots).toBeLessThanOrEqual(8);
    const takenAhead = slots - held.length;
    expect(takenAhead).toBeLessThanOrEqual(4);
    aheadByStep.push(takenAhead);
  }
  expect(Math.max(...aheadByStep)).toBeGreaterThan(0); // some were taken ahead
  expect(held).toHaveLength(8);
  expect(refused).toBe(4);
  await Promise.all(held.map((h) => h.release()));
  l.stop();
});

it('gives back what it took ahead and did not use: the RPM burst and the slots are whole again', async () => {
  const p = prefix();
  const redisClient = await client();
  // 60 a minute, a burst of 15 (then one every 1.33 s): half of it may be taken ahead.
  const rates = { maxConcurrent: 50, requestsPerMinute: 60, redisTimeoutMs: 2_000, burstFraction: 0.25 };
  const l = new GlobalLimiter(redisClient, p, { ...rates, admitAhead: 8, admitAheadMs: 100 });
  for (let i = 0; i < 4; i += 1) {
    await leaseOf(await l.tryAcquire({ holder: 'u', tokens: 0 })).release();
    await sleep(5);
  }
  await sleep(20); // the replacements land
  const leases = GlobalLimiter.keysOf(p).leases;
  expect(await redisClient.zcard(leases)).toBeGreaterThan(0); // admissions ahead hold slots
  await waitFor('admissions ahead given back', async () => (await redisClient.zcard(leases)) === 0, { timeoutMs: 2_000 });
  await sleep(50); // their RPM refunds travel with the releases
  // Another replica now gets the burst less only what the four calls used (15 − 4), then a refusal.
  const other = new GlobalLimiter(await client(), p, rates);
  let admitted = 0;
  for (;;) {
    const r = await other.tryAcquire({ holder: 'v', tokens: 0 });
    if (!r.ok) break;
    admitted += 1;
    void r.lease.release();
  }
  expect(admitted).toBe(11);
});

it('gives back what it took ahead when the provider asks for a pause: the next call is refused as paused', async () => {
  const l = new GlobalLimiter(await client(), prefix(), { ...LIMITS, admitAhead: 4, admitAheadMs: 5_000 });
  for (let i = 0; i < 3; i += 1) await leaseOf(await l.tryAcquire({ holder: 'u', tokens: 10 })).release();
  await sleep(20);
  await l.pauseFor(1_000);
  const r = await l.tryAcquire({ holder: 'u', tokens: 10 });
  expect(r).toMatchObject({ ok: false, reason: 'paused' });
});

it('remembers a budget check while half of the budget and 10,000 tokens are left, not when less is', async () => {
  const c = await client();
  const p = prefix();
  const budgets = new TokenBudgets(c, p, { defaults: { perDay: 100_000, perMinute: 0 }, okCacheMs: 400 });
  expect(await budgets.check('ann')).toEqual({ ok: true });
  await budgets.charge('ann', 100_000); // spent all of it, in another replica say
  // Remembered: a check within okCacheMs is answered without Redis, as before the charge.
  expect(await budgets.check('ann')).toEqual({ ok: true });
  await sleep(450);
  expect(await budgets.check('ann')).toMatchObject({ ok: false, window: { budget: 'day', used: 100_000 } });
  // Bob has less than half left: every check reads Redis.
  await budgets.charge('bob', 60_000);
  expect(await budgets.check('bob')).toEqual({ ok: true });
  await budgets.charge('bob', 40_000);
  expect(await budgets.check('bob')).toMatchObject({ ok: false });
  // A small budget (less than 10,000 tokens) is never remembered.
  const small = new TokenBudgets(c, `${p}-small`, { defaults: { perDay: 1, perMinute: 0 }, okCacheMs: 60_000 });
  expect(await small.check('cy')).toEqual({ ok: true });
  await small.charge('cy', 1);
  expect(await small.check('cy')).toMatchObject({ ok: false });
});

it('reads a remembered budget check again in the background while its user keeps calling: no call waits for Redis, and a budget spent elsewhere is seen', async () => {
  const c = await client();
  const budgets = new TokenBudgets(c, prefix(), { defaults: { perDay: 100_000, perMinute: 0 }, okCacheMs: 400 });
  expect(await budgets.check('dee')).toEqual({ ok: true }); // read, remembered for 400 ms
  // Checks 250 ms apart, each while Redis answers nobody for 100 ms: each is in the second half of
  // what is remembered, so it starts a read that lands when the pause ends. Without those reads,
  // the third check (500 ms after the only one) would read Redis and wait out the pause.
  for (let i = 0; i < 5; i += 1) {
    await sleep(250);
    await admin.client('PAUSE', 100, 'ALL');
    const t0 = performance.now();
    expect(await budgets.check('dee')).toEqual({ ok: true });
    expect(performance.now() - t0).toBeLessThan(50);
  }
  await sleep(150); // the last read has landed
  // Spent in another replica: the next check is still answered from memory, and its background
  // read finds the budget spent, so the check after it reads Redis and is refused.
  await budgets.charge('dee', 100_000);
  await sleep(100);
  expect(await budgets.check('dee')).toEqual({ ok: true });
  await sleep(50);
  expect(await budgets.check('dee')).toMatchObject({ ok: false, window: { budget: 'day', used: 100_000 } });
});
