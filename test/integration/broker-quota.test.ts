// The admission Lua scripts against a real Redis: several limiter instances (and a second process)
// never exceed the concurrency, RPM and TPM limits; leases of a killed holder expire; refunds work.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Redis from 'ioredis';
import { GlobalLimiter, type AcquireResult, type Lease } from '@agent-mesh/common';
import { startRedis, testDir, waitFor, type RedisProc } from '../support';

jest.setTimeout(90_000);

const ROOT = path.resolve(__dirname, '../..');
let redis: RedisProc;
const clients: Redis[] = [];
const client = () => {
  const c = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  clients.push(c);
  return c;
};
const ready = async (c: Redis) => waitFor('redis client', () => c.status === 'ready', { timeoutMs: 10_000 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let prefixN = 0;
const prefix = () => `test${(prefixN += 1)}`;

/** Most events inside any window of `windowMs` (weighted by `weight`). */
function worstWindow(events: { t: number; weight: number }[], windowMs: number): number {
  const s = [...events].sort((a, b) => a.t - b.t);
  let worst = 0;
  let sum = 0;
  for (let i = 0, j = 0; i < s.length; i += 1) {
    sum += s[i]!.weight;
    while (s[j]!.t <= s[i]!.t - windowMs) sum -= s[j++]!.weight;
    worst = Math.max(worst, sum);
  }
  return worst;
}

beforeAll(async () => {
  redis = await startRedis({ logDir: testDir('broker-quota') });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
  await redis?.stop();
});

async function limiters(n: number, p: string, opts: ConstructorParameters<typeof GlobalLimiter>[2]) {
  const out: GlobalLimiter[] = [];
  for (let i = 0; i < n; i += 1) {
    const c = client();
    await ready(c);
    out.push(new GlobalLimiter(c, p, opts));
  }
  return out;
}

/** `n` workers spread over the limiters, each running `step(limiter, worker)` again and again for `ms`. */
async function workers(ls: GlobalLimiter[], n: number, ms: number, step: (l: GlobalLimiter, i: number) => Promise<void>): Promise<void> {
  const until = Date.now() + ms;
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      while (Date.now() < until) await step(ls[i % ls.length]!, i);
    }),
  );
}

it('never exceeds maxConcurrent across instances under a concurrent burst', async () => {
  const ls = await limiters(4, prefix(), { maxConcurrent: 5, leaseMs: 5_000 });
  let inFlight = 0;
  let worst = 0;
  let admitted = 0;
  await workers(ls, 40, 2_500, async (l, i) => {
    const r = await l.tryAcquire({ holder: `w${i}`, tokens: 1 });
    if (!r.ok) {
      expect(r.reason).toBe('concurrency');
      await sleep(5);
      return;
    }
    inFlight += 1;
    admitted += 1;
    worst = Math.max(worst, inFlight);
    await sleep(10 + (i % 5) * 5);
    inFlight -= 1; // counted out before the slot is freed in Redis
    await r.lease.release();
  });
  expect(worst).toBeLessThanOrEqual(5);
  expect(worst).toBe(5);
  expect(admitted).toBeGreaterThan(50);
});

it('paces RPM and TPM smoothly with no window over the limit', async () => {
  const windowScale = 0.05; // a 3 s "minute"
  const ls = await limiters(3, prefix(), { requestsPerMinute: 60, tokensPerMinute: 2_000, windowScale });
  const admissions: { t: number; weight: number; tokens: number }[] = [];
  await workers(ls, 30, 7_000, async (l, i) => {
    const tokens = 20 + (i % 4) * 10;
    const r = await l.tryAcquire({ holder: `w${i}`, tokens });
    if (r.ok) {
      admissions.push({ t: Date.now(), weight: 1, tokens });
      await r.lease.release();
    } else {
      expect(['rpm', 'tpm']).toContain(r.reason);
      await sleep(Math.min(r.retryAfterMs, 50));
    }
  });
  const W = 3_000 - 60; // a little less than the window: local clocks see replies a few ms late
  expect(worstWindow(admissions, W)).toBeLessThanOrEqual(60);
  expect(worstWindow(admissions.map((a) => ({ t: a.t, weight: a.tokens })), W)).toBeLessThanOrEqual(2_000);
  // goodput: 7 s at ≥ 98 % pacing of the binding limit (TPM: 2000/3 s at ~35 tokens each ≈ 19/s vs 20/s RPM)
  const tokens = admissions.reduce((s, a) => s + a.tokens, 0);
  expect(tokens).toBeGreaterThan(0.75 * (2_000 * 7_000) / 3_000);
});

it('calls larger than the TPM burst never put more than the limit into a sliding window', async () => {
  // 3,000-token calls against 10,000 TPM (a burst of 200): paced alone, one every 3,000 × 1.2 s ÷ 9,800
  // (367 ms), four of them fell within one 1.2 s window (12,000 tokens) for a provider that counts a
  // sliding minute, as the emulator does; the window's log admits the fourth only once the first left.
  const windowScale = 0.02; // a 1.2 s "minute"
  const p = prefix();
  const ls = await limiters(2, p, { tokensPerMinute: 10_000, windowScale });
  const admissions: { t: number; weight: number }[] = [];
  await workers(ls, 6, 5_000, async (l, i) => {
    const r = await l.tryAcquire({ holder: `w${i}`, tokens: 3_000 });
    if (r.ok) {
      admissions.push({ t: Date.now(), weight: 3_000 });
      await r.lease.release({ actualTokens: 3_000 });
    } else {
      expect(r.reason).toBe('tpm');
      await sleep(Math.min(r.retryAfterMs, 20));
    }
  });
  expect(worstWindow(admissions, 1_200 - 60)).toBeLessThanOrEqual(10_000);
  // Three calls a window, as many as fit: ~12 in 5 s (at least 10, not starved by the log).
  expect(admissions.length).toBeGreaterThanOrEqual(10);
  // Calls that left the window leave its sum, whichever script finds them gone (here a release of
  // a lease the log does not hold): the window is empty again, not short of what they took.
  await sleep(1_300);
  const c = clients.at(-1)! as Redis & { meshQuotaRelease(...args: (string | number)[]): Promise<number> };
  const k = GlobalLimiter.keysOf(p);
  await c.meshQuotaRelease(k.leases, k.tpm, k.tpmLog, k.tpmTokens, 'unknown', -1, 10_000, 1_200, 0.02, '0');
  expect(await c.zcard(k.tpmLog)).toBe(0);
  expect(Number(await c.hget(k.tpmTokens, 'sum'))).toBe(0);
});

it('with tokenPacing off, TPM is counted over its window alone: reservations larger than the pacing bucket go together up to the limit, and tokens given back are taken again at once', async () => {
  const [a, b] = await limiters(2, prefix(), { tokensPerMinute: 1_000, windowScale: 10, tokenPacing: false });
  // Four reservations of 250 across both instances (the pacing's bucket would be 20): all at once; a fifth does not fit.
  const held: AcquireResult[] = [];
  for (const [i, l] of [a, b, a, b].entries()) held.push(await l!.tryAcquire({ holder: `r${i}`, tokens: 250 }));
  expect(held.map((r) => r.ok)).toEqual([true, true, true, true]);
  expect(await a!.tryAcquire({ holder: 'fifth', tokens: 250 })).toMatchObject({ ok: false, reason: 'tpm' });
  // One settles at 50 of its 250: the 200 it gave back are taken again at once, and no more.
  const first = held[0]!;
  if (!first.ok) throw new Error('admitted above');
  await first.lease.release({ actualTokens: 50 });
  expect((await b!.tryAcquire({ holder: 'again', tokens: 200 })).ok).toBe(true);
  expect(await a!.tryAcquire({ holder: 'more', tokens: 1 })).toMatchObject({ ok: false, reason: 'tpm' });
  // Paced (the default), the second reservation of 250 waits for the bucket to fill again.
  const [paced] = await limiters(1, prefix(), { tokensPerMinute: 1_000, windowScale: 10 });
  expect((await paced!.tryAcquire({ holder: 'p1', tokens: 250 })).ok).toBe(true);
  expect(await paced!.tryAcquire({ holder: 'p2', tokens: 250 })).toMatchObject({ ok: false, reason: 'tpm' });
});

it('a settlement below the reservation frees its tokens in the TPM window, once', async () => {
  const p = prefix();
  const [l] = await limiters(1, p, { tokensPerMinute: 10_000, windowScale: 10 });
  const c = clients.at(-1)! as Redis & { meshQuotaRelease(...args: (string | number)[]): Promise<number> };
  const k = GlobalLimiter.keysOf(p);
  const inWindow = async () => Number(await c.hget(k.tpmTokens, 'sum'));
  const a = await l!.tryAcquire({ holder: 'a', tokens: 6_000 });
  if (!a.ok) throw new Error('an idle limit admits it');
  expect(await inWindow()).toBe(6_000);
  await a.lease.release({ actualTokens: 1_000 }); // 5,000 back, as the provider settles its charge
  expect(await inWindow()).toBe(1_000);
  // The same release tried again (its first reply lost): nothing is settled twice.
  await c.meshQuotaRelease(k.leases, k.tpm, k.tpmLog, k.tpmTokens, a.lease.id, -5_000, 10_000, 600_000, 0.02, '0');
  expect(await inWindow()).toBe(1_000);
});

it('a charge beyond the reservation stays in the TPM window from its settlement, after the admission has left', async () => {
  const p = prefix();
  const [l] = await limiters(1, p, { tokensPerMinute: 10_000, windowScale: 0.02 }); // a 1.2 s "minute"
  const c = clients.at(-1)! as Redis & { meshQuotaRelease(...args: (string | number)[]): Promise<number> };
  const k = GlobalLimiter.keysOf(p);
  const a = await l!.tryAcquire({ holder: 'a', tokens: 1_000 });
  if (!a.ok) throw new Error('an idle limit admits it');
  await sleep(700);
  await a.lease.release({ actualTokens: 9_000 }); // the provider billed 8,000 more (an attempt before a retry)
  const released = Date.now();
  // Past the admission's window but within the settlement's: a release of a lease the log does not
  // hold prunes what left (the admission's 1,000), and the 8,000 charged at the settlement remain.
  await sleep(1_200 + 100 - 700);
  await c.meshQuotaRelease(k.leases, k.tpm, k.tpmLog, k.tpmTokens, 'unknown', -1, 10_000, 1_200, 0.02, '0');
  expect(Date.now() - released).toBeLessThan(1_150); // still within the settlement's window
  expect(Number(await c.hget(k.tpmTokens, 'sum'))).toBe(8_000);
  expect(await c.zcard(k.tpmLog)).toBe(1);
  // The same release tried again (its first reply lost) writes the same entry: 8,000, not 16,000.
  await c.meshQuotaRelease(k.leases, k.tpm, k.tpmLog, k.tpmTokens, a.lease.id, 8_000, 10_000, 1_200, 0.02, '0');
  expect(Number(await c.hget(k.tpmTokens, 'sum'))).toBe(8_000);
});

it('admits several leases in one decision, in order, stopping at the first that does not fit', async () => {
  // Concurrency: 3 slots; one held elsewhere, so of five asked for only the first two fit.
  const [a, b] = await limiters(2, prefix(), { maxConcurrent: 3, leaseMs: 5_000 });
  const other = await b!.tryAcquire({ holder: 'other', tokens: 1 });
  expect(other.ok).toBe(true);
  const five = await a!.tryAcquireMany(['r1', 'r2', 'r3', 'r4', 'r5'].map((holder) => ({ holder, tokens: 1 })));
  expect(five.map((r) => (r.ok ? r.lease.holder : r.reason))).toEqual(['r1', 'r2', 'concurrency']);
  expect(await b!.tryAcquire({ holder: 'late', tokens: 1 })).toMatchObject({ ok: false, reason: 'concurrency' });
  for (const r of [other, ...five]) if (r.ok) await r.lease.release();

  // TPM: a reservation larger than the burst (20 tokens) fits only a full bucket; once 5 tokens are
  // taken it does not fit and stops the decision: a small one behind it is not admitted ahead of
  // it, though it fits alone.
  const [t] = await limiters(1, prefix(), { tokensPerMinute: 1_000, windowScale: 10 });
  const first = await t!.tryAcquireMany([{ holder: 'x', tokens: 5 }, { holder: 'big', tokens: 600 }, { holder: 'small', tokens: 5 }]);
  expect(first.map((r) => (r.ok ? r.lease.holder : r.reason))).toEqual(['x', 'tpm']);
  expect(await t!.tryAcquire({ holder: 'small', tokens: 5 })).toMatchObject({ ok: true });
  // All admitted together pace exactly as one after the other: 1,000 tokens, then nothing more.
  const [u] = await limiters(1, prefix(), { tokensPerMinute: 1_000, requestsPerMinute: 4, windowScale: 10 });
  const together = await u!.tryAcquireMany(Array.from({ length: 6 }, (_, i) => ({ holder: `p${i}`, tokens: 10 })));
  expect(together.filter((r) => r.ok)).toHaveLength(1); // RPM 4 per window: a burst of max(1, 4 × 0.02) = 1
  expect(together.at(-1)).toMatchObject({ ok: false, reason: 'rpm' });
});

it('refund gives the reserved tokens back; release settles to actual usage', async () => {
  const [l] = await limiters(1, prefix(), { tokensPerMinute: 1_000, windowScale: 10 });
  const a = await l!.tryAcquire({ holder: 'a', tokens: 1_000 });
  expect(a.ok).toBe(true);
  expect(await l!.tryAcquire({ holder: 'b', tokens: 100 })).toMatchObject({ ok: false, reason: 'tpm' });
  if (a.ok) await a.lease.refund();
  const b = await l!.tryAcquire({ holder: 'b', tokens: 500 });
  expect(b.ok).toBe(true);
  if (b.ok) await b.lease.release({ actualTokens: 0 }); // all 500 back: the bucket is full again
  const c = await l!.tryAcquire({ holder: 'c', tokens: 1_000 });
  expect(c.ok).toBe(true);
  const T = 600_000 / 980; // ms per token at this window
  if (c.ok) await c.lease.release({ actualTokens: 400 }); // 600 back: 400 still in the bucket
  const d = await l!.tryAcquire({ holder: 'd', tokens: 600 });
  expect(d).toMatchObject({ ok: false, reason: 'tpm' });
  if (!d.ok) expect(d.retryAfterMs).toBeGreaterThan(350 * T);
  if (!d.ok) expect(d.retryAfterMs).toBeLessThan(450 * T);
  const f = await l!.tryAcquire({ holder: 'f', tokens: 1_000 });
  expect(f).toMatchObject({ ok: false, reason: 'tpm' });
});

it('a lease\'s extra requests (retries) share the RPM window with admissions on every instance; one given back frees a place', async () => {
  // 4 per 3 s "minute", with a burst of 1: one place every second.
  const [a, b] = await limiters(2, prefix(), { requestsPerMinute: 4, windowScale: 0.05 });
  const first = await a!.tryAcquire({ holder: 'x', tokens: 1 });
  if (!first.ok) throw new Error('refused');
  // The admission took the bucket: a retry of its lease waits as another instance's admission does.
  const retry = await first.lease.chargeRequest();
  expect(retry).toMatchObject({ ok: false, reason: 'rpm' });
  if (!retry.ok) {
    expect(retry.retryAfterMs).toBeGreaterThan(800);
    expect(retry.retryAfterMs).toBeLessThanOrEqual(1_000);
    await sleep(retry.retryAfterMs);
  }
  expect(await first.lease.chargeRequest()).toEqual({ ok: true });
  // Taken: the other instance's next admission waits a whole interval more.
  expect(await b!.tryAcquire({ holder: 'y', tokens: 1 })).toMatchObject({ ok: false, reason: 'rpm' });
  // A request that never reached the provider goes back: the other instance is admitted at once.
  await first.lease.refundRequest();
  const second = await b!.tryAcquire({ holder: 'y', tokens: 1 });
  expect(second.ok).toBe(true);
  // And a pause stops retries as it stops admissions.
  await b!.pauseFor(300);
  expect(await first.lease.chargeRequest()).toMatchObject({ ok: false, reason: 'paused' });
  await first.lease.release();
  if (second.ok) await second.lease.release();
});

it('a pause set by one instance stops every instance until it ends', async () => {
  const [a, b] = await limiters(2, prefix(), { maxConcurrent: 10 });
  await a!.pauseFor(400);
  const r = await b!.tryAcquire({ holder: 'x', tokens: 1 });
  expect(r).toMatchObject({ ok: false, reason: 'paused' });
  if (!r.ok) expect(r.retryAfterMs).toBeLessThanOrEqual(400);
  await sleep(450);
  expect((await b!.tryAcquire({ holder: 'x', tokens: 1 })).ok).toBe(true);
});

it('frees the slots of a holder killed with SIGKILL after leaseMs, and renewals keep a lease alive', async () => {
  const p = prefix();
  const leaseMs = 1_500;
  const [l] = await limiters(1, p, { maxConcurrent: 3, leaseMs });
  // A renewed lease held here outlives several lease periods.
  const kept = await l!.tryAcquire({ holder: 'kept', tokens: 1 });
  if (!kept.ok) throw new Error('refused');
  const stopRenew = kept.lease.keepAlive(300);
  // Another process takes the two remaining slots and dies without releasing them.
  const script = `
    const Redis = require('ioredis');
    const { GlobalLimiter } = require(${JSON.stringify(path.join(ROOT, 'services/common/dist'))});
    const c = new Redis(${JSON.stringify(redis.url)});
    c.once('ready', async () => {
      const l = new GlobalLimiter(c, ${JSON.stringify(p)}, { maxConcurrent: 3, leaseMs: ${leaseMs} });
      const a = await l.tryAcquire({ holder: 'child', tokens: 1 });
      const b = await l.tryAcquire({ holder: 'child', tokens: 1 });
      console.log(JSON.stringify([a.ok, b.ok]));
    });`;
  const child = spawn(process.execPath, ['-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(d.toString())));
  expect(JSON.parse(line)).toEqual([true, true]);
  const killedAt = Date.now();
  child.kill('SIGKILL');
  expect(await l!.tryAcquire({ holder: 'me', tokens: 1 })).toMatchObject({ ok: false, reason: 'concurrency' });
  // The child's two leases expire one by one (it took them one after the other): wait for both.
  const freed: Lease[] = [];
  await waitFor('both slots freed', async () => {
    const r = await l!.tryAcquire({ holder: 'me', tokens: 1 });
    if (r.ok) freed.push(r.lease);
    return freed.length === 2;
  }, { timeoutMs: leaseMs * 4, intervalMs: 50 });
  expect(Date.now() - killedAt).toBeLessThan(leaseMs + 1_500);
  // The renewed lease is still held: with it and the two freed slots, none is left.
  expect(await l!.tryAcquire({ holder: 'fourth', tokens: 1 })).toMatchObject({ ok: false, reason: 'concurrency' });
  stopRenew();
  await kept.lease.release();
  for (const lease of freed) await lease.release();
});

it('frees a slot released while Redis restarts as soon as it is back, not when the lease expires', async () => {
  const dir = testDir('broker-quota-restart');
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir);
  let r = await startRedis({ logDir: dir, dataDir, appendOnly: true });
  const port = r.port;
  const leaseMs = 15_000;
  // Its own client, which reconnects every 100 ms until disconnected (not quit: Redis is gone by then).
  const c = new Redis(r.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => 100 });
  try {
    await ready(c);
    const l = new GlobalLimiter(c, prefix(), { maxConcurrent: 2, leaseMs, redisTimeoutMs: 200 });
    const a = await l.tryAcquire({ holder: 'a', tokens: 1 });
    const b = await l.tryAcquire({ holder: 'b', tokens: 1 });
    if (!a.ok || !b.ok) throw new Error('refused');
    expect(await l.tryAcquire({ holder: 'c', tokens: 1 })).toMatchObject({ ok: false, reason: 'concurrency' });
    // Redis goes away (its append-only file keeps both leases); both calls end meanwhile.
    await r.stop();
    await waitFor('client disconnected', () => c.status !== 'ready', { timeoutMs: 5_000 });
    await a.lease.release();
    await b.lease.release();
    r = await startRedis({ logDir: dir, dataDir, appendOnly: true, port });
    await ready(c);
    const back = Date.now();
    // The shared slots are free again long before their leases would have expired.
    await waitFor('a shared slot', async () => {
      const got = await l.tryAcquire({ holder: 'd', tokens: 1 });
      if (got.ok) await got.lease.release();
      return got.ok && got.lease.mode === 'shared';
    }, { timeoutMs: leaseMs, intervalMs: 100 });
    expect(Date.now() - back).toBeLessThan(3_000);
    expect(await c.zcard(`${(l as unknown as { keys: { leases: string } }).keys.leases}`)).toBe(0);
  } finally {
    c.disconnect();
    await r.stop();
  }
});

it('tokens admitted on the local share while Redis was away go into the shared TPM window when it is back', async () => {
  const dir = testDir('broker-quota-window-merge');
  let r = await startRedis({ logDir: dir });
  const port = r.port;
  const c = new Redis(r.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => 100 });
  try {
    await ready(c);
    const p = prefix();
    const k = GlobalLimiter.keysOf(p);
    // A 600 s window: nothing leaves it during the test.
    const l = new GlobalLimiter(c, p, { tokensPerMinute: 10_000, windowScale: 10, redisTimeoutMs: 200, departedHoldMs: 0 });
    await r.stop();
    await waitFor('client disconnected', () => c.status !== 'ready', { timeoutMs: 5_000 });
    let local: Lease | undefined;
    await waitFor('a local admission', async () => {
      const got = await l.tryAcquire({ holder: 'a', tokens: 3_000 });
      if (got.ok) local = got.lease;
      return got.ok;
    }, { timeoutMs: 15_000, intervalMs: 100 });
    expect(local!.mode).toBe('local');
    await local!.release({ actualTokens: 3_000 });
    r = await startRedis({ logDir: dir, port }); // empty: the shared window knows nothing of the call
    await ready(c);
    // The next decision finds Redis back and merges the local state first.
    const merged = async () => (await c.zrange(k.tpmLog, 0, -1)).filter((id) => id.startsWith('merge:'));
    await waitFor('the local state merged', async () => {
      const got = await l.tryAcquire({ holder: 'b', tokens: 1 });
      if (got.ok) await got.lease.release({ actualTokens: 1 });
      return (await merged()).length > 0;
    }, { timeoutMs: 10_000, intervalMs: 100 });
    const [entry] = await merged();
    expect(Number(await c.hget(k.tpmTokens, entry!))).toBe(3_000);
    expect(Number(await c.hget(k.tpmTokens, 'sum'))).toBeGreaterThanOrEqual(3_000);
  } finally {
    c.disconnect();
    await r.stop();
  }
});

it('a process kept busy past the Redis time limit, its answer waiting in the socket, does not count Redis as down', async () => {
  // As at a service's start: the first heartbeat is written, then the process compiles its routes
  // for longer than redisTimeoutMs. Redis answered at once; the timer must not win over the answer.
  const [l] = await limiters(1, prefix(), { maxConcurrent: 5, redisTimeoutMs: 200 });
  const modes: string[] = [];
  l!.onModeChange = (m) => void modes.push(m);
  // Busy in the loop's check phase, its command written first (the promise callbacks before it
  // run within the phase): the next turn's timer phase (the timer due) comes before its poll phase
  // (the answer read).
  const { pending } = await new Promise<{ pending: Promise<AcquireResult> }>((resolve) =>
    setImmediate(() => {
      const p = l!.tryAcquire({ holder: 'h', tokens: 0 });
      void (async () => {
        for (let i = 0; i < 20; i += 1) await new Promise((r) => process.nextTick(r));
        const busyUntil = performance.now() + 500;
        while (performance.now() < busyUntil);
        resolve({ pending: p });
      })();
    }),
  );
  const r = await pending;
  expect(r.ok).toBe(true);
  expect(l!.mode).toBe('shared');
  expect(modes).toEqual([]);
  // Redis that does not answer is still a timeout.
  const admin = client();
  await ready(admin);
  await admin.client('PAUSE', 600, 'ALL');
  const t0 = performance.now();
  const paused = await l!.tryAcquire({ holder: 'h', tokens: 0 });
  expect(performance.now() - t0).toBeLessThan(450);
  expect(paused.ok).toBe(true); // decided on this replica's share
  expect(l!.mode).toBe('local');
  expect(modes).toEqual(['local']);
});

it('a replica just started decides in Redis while its client makes its first connection, not on an outage\'s share', async () => {
  // 8 a minute with a burst of 2: shared, the fresh client's first admission leaves one for the
  // other replica and none for its second; on the local share (what it did before waiting for the
  // first connection) it would have had a burst of its own.
  const p = prefix();
  const opts = { requestsPerMinute: 8, burstFraction: 0.25, outageBurst: true, redisTimeoutMs: 5_000 };
  const [other] = await limiters(1, p, opts);
  const fresh = client();
  expect(fresh.status).toBe('connecting');
  const l = new GlobalLimiter(fresh, p, opts);
  expect(await l.tryAcquire({ holder: 'a', tokens: 0 })).toMatchObject({ ok: true, lease: { mode: 'shared' } });
  expect(await other!.tryAcquire({ holder: 'a', tokens: 0 })).toMatchObject({ ok: true });
  expect(await l.tryAcquire({ holder: 'a', tokens: 0 })).toMatchObject({ ok: false, reason: 'rpm' });
  expect(l.mode).toBe('shared');
});
