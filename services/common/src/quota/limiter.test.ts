import { EventEmitter } from 'node:events';
import { GlobalLimiter } from './limiter';
import type Redis from 'ioredis';

// A stand-in for Redis whose scripts answer as each test says: `hang` never answers, `after(ms)`
// answers after a delay. Only the limiter's own logic is under test here (Redis itself is in the
// integration tests).
type Behaviour = 'ok' | 'hang' | { afterMs: number };
/** Where the heartbeat's `local` flag is among its arguments (two keys, then replicaId, ttlMs, holdMs, local). */
const LOCAL_ARG = 5;
function fakeRedis(behaviour: Record<string, Behaviour>) {
  const replies: Record<string, unknown> = {
    meshQuotaAcquire: [1, '', 0], meshQuotaRenew: 1, meshQuotaRelease: 1, meshQuotaPause: 1, meshQuotaHeartbeat: [1, 0], meshQuotaMerge: 1,
    meshQuotaRequest: [1, 'ok', 0], zrem: 1,
  };
  const calls: string[] = [];
  const args: Record<string, unknown[][]> = {};
  const redis: Record<string, unknown> = { status: 'ready', defineCommand: () => undefined };
  for (const name of Object.keys(replies)) {
    redis[name] = (...a: unknown[]) => {
      calls.push(name);
      (args[name] ??= []).push(a);
      const b = behaviour[name] ?? 'ok';
      if (b === 'hang') return new Promise(() => undefined);
      if (b === 'ok') return Promise.resolve(replies[name]);
      return new Promise((r) => setTimeout(() => r(replies[name]), b.afterMs));
    };
  }
  return { redis: redis as unknown as Redis, calls, args, behaviour, replies, raw: redis };
}

async function within<T>(p: Promise<T>, ms: number): Promise<T | 'still waiting'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'still waiting'>((r) => { timer = setTimeout(() => r('still waiting'), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

// The calls this replica may admit on its own once Redis is lost. The first ask finds Redis gone
// and is refused: other replicas may still run calls the shared state gave them beyond their
// shares, so the share is held back until those can have ended (a lease, 20 ms in these tests).
async function localShare(limiter: GlobalLimiter): Promise<number> {
  expect(await limiter.tryAcquire({ holder: 'first', tokens: 1 })).toMatchObject({ ok: false, reason: 'concurrency' });
  await new Promise((r) => setTimeout(r, 30));
  let admitted = 0;
  while (admitted < 20 && (await limiter.tryAcquire({ holder: String(admitted), tokens: 1 })).ok) admitted += 1;
  return admitted;
}

async function waitFor(check: () => boolean, ms = 2_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('GlobalLimiter recovery after a Redis outage', () => {
  it('finishes even when another call times out while the recovery merges (it never waits for itself)', async () => {
    const fake = fakeRedis({ meshQuotaAcquire: 'hang' });
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 5, requestsPerMinute: 600, redisTimeoutMs: 20, outageBurst: true });
    // Redis does not answer in time: this replica's share admits locally.
    const first = await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    expect(first).toMatchObject({ ok: true, lease: { mode: 'local' } });
    expect(limiter.mode).toBe('local');

    // Redis answers again, slowly for the merge; meanwhile another call times out.
    fake.behaviour.meshQuotaAcquire = 'ok';
    fake.behaviour.meshQuotaMerge = { afterMs: 60 };
    fake.behaviour.meshQuotaPause = 'hang';
    const second = limiter.tryAcquire({ holder: 'b', tokens: 1 });
    await new Promise((r) => setTimeout(r, 5));
    await limiter.pauseFor(1).catch(() => undefined);

    const outcome = await within(second, 2_000);
    expect(outcome).not.toBe('still waiting');
    expect(outcome).toMatchObject({ ok: true });
    expect(fake.calls).toContain('meshQuotaMerge');
    // The lease admitted locally was registered in Redis by the recovery.
    expect(fake.calls).toContain('meshQuotaRenew');
  });
});

describe('GlobalLimiter: a lease admitted locally and settled while the recovery registers it in Redis', () => {
  it('gives its slot in Redis back (it was held there until it expired)', async () => {
    const fake = fakeRedis({ meshQuotaAcquire: 'hang' });
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 5, requestsPerMinute: 600, redisTimeoutMs: 200, outageBurst: true });
    const local = await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    if (!local.ok) throw new Error('refused');
    expect(local.lease.mode).toBe('local');

    // Redis answers again; the recovery registers the local lease (a forced renewal), slowly.
    fake.behaviour.meshQuotaAcquire = 'ok';
    fake.behaviour.meshQuotaRenew = { afterMs: 60 };
    const next = limiter.tryAcquire({ holder: 'b', tokens: 1 });
    await new Promise((r) => setTimeout(r, 10));
    expect(fake.calls).toContain('meshQuotaRenew');
    // The call ends (a refund) while that renewal is on its way: settled on the local share.
    await local.lease.refund();
    await next;
    await new Promise((r) => setTimeout(r, 60));
    // The renewal took a slot in Redis for a lease already settled: it is given back there.
    const released = (fake.args.meshQuotaRelease ?? []).map((a) => a[4]);
    expect(released).toContain(local.lease.id);
  });
});

describe('GlobalLimiter against its Redis scripts (fake Redis)', () => {
  it('asks the acquire script with its limits and reports a refusal with its reason and wait', async () => {
    const fake = fakeRedis({});
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 7, requestsPerMinute: 600, tokensPerMinute: 9000 });
    const granted = await limiter.tryAcquire({ holder: 'a', tokens: 12.2 });
    expect(granted).toMatchObject({ ok: true, lease: { mode: 'shared', tokens: 13, holder: 'a' } });
    // KEYS leases rpm tpm pause, then id, lease ms, concurrency, rpm, tpm, tokens, …
    const [, , , , , , , , concurrency, rpm, tpm, tokens] = fake.args.meshQuotaAcquire![0]!;
    expect([concurrency, rpm, tpm, tokens]).toEqual([7, 600, 9000, 13]);
    fake.replies.meshQuotaAcquire = [0, 'rpm', 1234];
    expect(await limiter.tryAcquire({ holder: 'b', tokens: 1 })).toEqual({ ok: false, reason: 'rpm', retryAfterMs: 1234 });
  });

  it('settles a lease once: the release script gets the unused reservation back', async () => {
    const fake = fakeRedis({});
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 2, requestsPerMinute: 600, tokensPerMinute: 9000 });
    const r = await limiter.tryAcquire({ holder: 'a', tokens: 100 });
    if (!r.ok) throw new Error('refused');
    await r.lease.release({ actualTokens: 30 });
    await r.lease.release({ actualTokens: 30 });
    await r.lease.refund();
    expect(fake.calls.filter((c) => c === 'meshQuotaRelease')).toHaveLength(1);
    // KEYS leases tpm, then id, delta (actual − reserved)
    const [, , , , id, delta] = fake.args.meshQuotaRelease![0]!;
    expect([id, delta]).toEqual([r.lease.id, -70]);
  });

  it('without Redis, admits on this replica’s share and refuses beyond it, without calling Redis', async () => {
    const fake = fakeRedis({});
    fake.raw.status = 'end';
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 2, requestsPerMinute: 0 });
    const a = await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    const b = await limiter.tryAcquire({ holder: 'b', tokens: 1 });
    expect([a, b]).toEqual([expect.objectContaining({ ok: true, lease: expect.objectContaining({ mode: 'local' }) }), expect.objectContaining({ ok: true })]);
    expect(await limiter.tryAcquire({ holder: 'c', tokens: 1 })).toMatchObject({ ok: false, reason: 'concurrency' });
    expect(limiter.mode).toBe('local');
    expect(fake.calls).not.toContain('meshQuotaAcquire');
    if (a.ok) await a.lease.release();
    expect(await limiter.tryAcquire({ holder: 'c', tokens: 1 })).toMatchObject({ ok: true });
  });

  it('started without Redis, divides the limit by fallbackReplicas (it cannot know the fleet)', async () => {
    const fake = fakeRedis({});
    fake.raw.status = 'end';
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 6, requestsPerMinute: 0, fallbackReplicas: 3, leaseMs: 20 });
    expect(await localShare(limiter)).toBe(2);
    expect(limiter.liveReplicas).toBe(3);
  });

  it('divides by the larger of fallbackReplicas and the live replicas the heartbeats last counted', async () => {
    const shareAfterHeartbeat = async (live: number, fallbackReplicas: number) => {
      const fake = fakeRedis({});
      fake.replies.meshQuotaHeartbeat = [live, 0];
      const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 12, requestsPerMinute: 0, fallbackReplicas, heartbeatMs: 60_000, leaseMs: 20, departedHoldMs: 0 });
      limiter.start();
      await new Promise((r) => setImmediate(r));
      await limiter.stop();
      expect(limiter.liveReplicas).toBe(live); // what the heartbeats counted, whatever the floor
      fake.raw.status = 'end'; // Redis lost
      return localShare(limiter);
    };
    expect(await shareAfterHeartbeat(2, 4)).toBe(3); // 12 ÷ 4: replicas may have started since
    expect(await shareAfterHeartbeat(4, 2)).toBe(3); // 12 ÷ 4: the fleet is larger than the floor
    expect(await shareAfterHeartbeat(2, 1)).toBe(6); // 12 ÷ 2
  });
});

describe('GlobalLimiter: a lease\'s extra requests (retries)', () => {
  it('asks the request script with the RPM limit and window (1: count one, -1: give one back) and reports its refusal', async () => {
    const fake = fakeRedis({});
    const limiter = new GlobalLimiter(fake.redis, 't', { requestsPerMinute: 120, windowScale: 0.1, windowMarginMs: 100 });
    const r = await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    if (!r.ok) throw new Error('refused');
    expect(await r.lease.chargeRequest()).toEqual({ ok: true });
    fake.replies.meshQuotaRequest = [0, 'paused', 800];
    expect(await r.lease.chargeRequest()).toEqual({ ok: false, reason: 'paused', retryAfterMs: 800 });
    await r.lease.refundRequest();
    // KEYS rpm pause, then rpm, window (with the margin), burst fraction, delta.
    expect(fake.args.meshQuotaRequest!.map((a) => [a[0], a[1], a[2], a[3], a[5]])).toEqual([
      ['{t}:rpm', '{t}:pause', 120, 6_100, 1], ['{t}:rpm', '{t}:pause', 120, 6_100, 1], ['{t}:rpm', '{t}:pause', 120, 6_100, -1],
    ]);
  });

  it('Redis not answering: counted on this replica\'s share instead (paced there; one given back frees a place)', async () => {
    const fake = fakeRedis({});
    // 2 per minute: a burst of one, then one every 60 s.
    const limiter = new GlobalLimiter(fake.redis, 't', { requestsPerMinute: 2, redisTimeoutMs: 20, outageBurst: true });
    const r = await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    if (!r.ok) throw new Error('refused');
    fake.behaviour.meshQuotaRequest = 'hang';
    const retry = await r.lease.chargeRequest();
    expect(limiter.mode).toBe('local');
    expect(retry).toEqual({ ok: true }); // the local share's own bucket (its burst)
    expect(await r.lease.chargeRequest()).toMatchObject({ ok: false, reason: 'rpm' });
    await r.lease.refundRequest();
    expect(await r.lease.chargeRequest()).toEqual({ ok: true });
  });
});

describe('GlobalLimiter: a client making its first connection', () => {
  /** A fake client still connecting, that emits `ready` when told (the scripts answer as fakeRedis'). */
  function connecting() {
    const fake = fakeRedis({});
    const events = new EventEmitter();
    Object.assign(fake.raw, { status: 'connecting', once: events.once.bind(events) });
    const ready = () => {
      fake.raw.status = 'ready';
      events.emit('ready');
    };
    return { ...fake, ready };
  }

  it('waits for it within the time limit and decides in Redis', async () => {
    const fake = connecting();
    const limiter = new GlobalLimiter(fake.redis, 't', { requestsPerMinute: 60, redisTimeoutMs: 1_000, outageBurst: true });
    const asked = limiter.tryAcquire({ holder: 'a', tokens: 0 });
    setTimeout(fake.ready, 50);
    expect(await asked).toMatchObject({ ok: true, lease: { mode: 'shared' } });
    expect(fake.calls).toContain('meshQuotaAcquire');
    expect(limiter.mode).toBe('shared');
  });

  it('decides on the local share once the time limit has passed without it', async () => {
    const fake = connecting();
    const limiter = new GlobalLimiter(fake.redis, 't', { requestsPerMinute: 60, redisTimeoutMs: 100, outageBurst: true });
    const startedAt = Date.now();
    expect(await limiter.tryAcquire({ holder: 'a', tokens: 0 })).toMatchObject({ ok: true, lease: { mode: 'local' } });
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(95);
    expect(fake.calls).not.toContain('meshQuotaAcquire');
  });

  it('connected once, does not wait when connecting again (an outage): the local share at once', async () => {
    const fake = connecting();
    const limiter = new GlobalLimiter(fake.redis, 't', { requestsPerMinute: 60, redisTimeoutMs: 10_000, outageBurst: true });
    fake.ready();
    expect(await limiter.tryAcquire({ holder: 'a', tokens: 0 })).toMatchObject({ ok: true, lease: { mode: 'shared' } });
    fake.raw.status = 'connecting';
    // Another limiter on the same client, made during the outage, does not wait either.
    const later = new GlobalLimiter(fake.redis, 'u', { requestsPerMinute: 60, redisTimeoutMs: 10_000, outageBurst: true });
    const results = await within(Promise.all([limiter, later].map((l) => l.tryAcquire({ holder: 'b', tokens: 0 }))), 500);
    expect(results).toEqual([expect.objectContaining({ ok: true, lease: expect.objectContaining({ mode: 'local' }) }), expect.objectContaining({ ok: true, lease: expect.objectContaining({ mode: 'local' }) })]);
  });
});

describe('GlobalLimiter windows', () => {
  it('counts its RPM and TPM windows windowMarginMs (real ms, not scaled) longer than the provider\'s', async () => {
    const fake = fakeRedis({});
    const limiter = new GlobalLimiter(fake.redis, 't', { requestsPerMinute: 120, tokensPerMinute: 1000, windowScale: 0.1, windowMarginMs: 100 });
    const got = await limiter.tryAcquire({ holder: 'h', tokens: 10 });
    expect(got.ok).toBe(true);
    // KEYS ×4, leaseId, leaseMs, maxConcurrent, rpm, tpm, tokens, then the window the pacing counts.
    expect(fake.args.meshQuotaAcquire?.[0]?.[12]).toBe(6_100);
    if (got.ok) await got.lease.release({ actualTokens: 5 });
    expect(fake.args.meshQuotaRelease?.[0]?.[7]).toBe(6_100);
    // Without a margin, the provider's window as it is.
    const exact = new GlobalLimiter(fakeRedis({}).redis, 't', { requestsPerMinute: 120, windowScale: 0.1 });
    expect((exact as unknown as { windowMs: number }).windowMs).toBe(6_000);
  });
});

describe('GlobalLimiter: replicas that departed without leaving', () => {
  /** A limiter whose first heartbeat counted `live` and `departed` replicas. */
  async function afterHeartbeat(live: number, departed: number, o: Partial<import('./types').LimiterOptions> = {}) {
    const fake = fakeRedis({});
    fake.replies.meshQuotaHeartbeat = [live, departed];
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 12, requestsPerMinute: 600, tokensPerMinute: 6_000, heartbeatMs: 60_000, ...o });
    limiter.start();
    await new Promise((r) => setImmediate(r));
    return { fake, limiter };
  }

  it('keeps their shares free: Redis decides on the limits less one share each', async () => {
    const { fake, limiter } = await afterHeartbeat(2, 1);
    expect(limiter.departedReplicas).toBe(1);
    await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    // KEYS leases rpm tpm pause, then id, leaseMs, concurrency, rpm, tpm: each limit less 1 ÷ 3 of it.
    expect(fake.args.meshQuotaAcquire![0]!.slice(8, 11)).toEqual([8, 400, 4_000]);
    await limiter.stop();
  });

  it('divides the local share among the departed too', async () => {
    const { fake, limiter } = await afterHeartbeat(2, 1, { leaseMs: 20, requestsPerMinute: 0, tokensPerMinute: 0, departedHoldMs: 0 });
    await limiter.stop();
    fake.raw.status = 'end';
    expect(await localShare(limiter)).toBe(4); // 12 ÷ 3
  });

  it('losing Redis, admits nothing locally until the others can count it departed, then beats as departed', async () => {
    const { fake, limiter } = await afterHeartbeat(1, 0, { heartbeatMs: 25, redisTimeoutMs: 20, leaseMs: 20, requestsPerMinute: 0, tokensPerMinute: 0 });
    const beatAt = Date.now();
    for (const command of Object.keys(fake.replies)) fake.behaviour[command] = 'hang'; // Redis stops answering
    // Its last beat + the Redis timeout + 4 beats (expiry after 3, read by the others at the 4th).
    const first = await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    expect(first).toMatchObject({ ok: false, reason: 'paused' });
    if (first.ok) return;
    expect(first.retryAfterMs).toBeGreaterThan(60);
    // Its beats while local say so: one that lands late counts it departed, not live.
    await waitFor(() => fake.args.meshQuotaHeartbeat!.at(-1)![LOCAL_ARG] === 1);
    expect(fake.args.meshQuotaHeartbeat![0]![LOCAL_ARG]).toBe(0);
    fake.raw.status = 'end';
    await new Promise((r) => setTimeout(r, first.retryAfterMs + 5));
    expect(Date.now() - beatAt).toBeGreaterThanOrEqual(120);
    expect(await limiter.tryAcquire({ holder: 'b', tokens: 1 })).toMatchObject({ ok: true, lease: { mode: 'local' } });
    await limiter.stop();
  });

  it('back from an outage, beats as live at once (the others stop keeping its share free)', async () => {
    const { fake, limiter } = await afterHeartbeat(1, 0, { redisTimeoutMs: 20, leaseMs: 20, requestsPerMinute: 0, tokensPerMinute: 0, departedHoldMs: 0 });
    fake.raw.status = 'end';
    await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    expect(limiter.mode).toBe('local');
    const beats = fake.args.meshQuotaHeartbeat!.length;
    fake.raw.status = 'ready';
    await limiter.tryAcquire({ holder: 'b', tokens: 1 });
    expect(limiter.mode).toBe('shared');
    // The next periodic beat is a minute away: this one is the recovery's.
    await waitFor(() => fake.args.meshQuotaHeartbeat!.length > beats);
    expect(fake.args.meshQuotaHeartbeat!.at(-1)![LOCAL_ARG]).toBe(0);
    await limiter.stop();
  });

  it('not started (no heartbeat), does not beat when back from an outage either', async () => {
    const fake = fakeRedis({});
    const limiter = new GlobalLimiter(fake.redis, 't', { maxConcurrent: 12, requestsPerMinute: 0, fallbackReplicas: 3, redisTimeoutMs: 20, leaseMs: 20 });
    fake.raw.status = 'end';
    await limiter.tryAcquire({ holder: 'a', tokens: 1 });
    fake.raw.status = 'ready';
    await limiter.tryAcquire({ holder: 'b', tokens: 1 });
    expect(limiter.mode).toBe('shared');
    await new Promise((r) => setTimeout(r, 20));
    expect(fake.args.meshQuotaHeartbeat).toBeUndefined();
    expect(limiter.liveReplicas).toBe(3);
  });

  it('leaves the heartbeat set when stopped (the others then keep nothing free for it)', async () => {
    const { fake, limiter } = await afterHeartbeat(1, 0);
    await limiter.stop();
    expect(fake.args.zrem).toEqual([['{t}:replicas', expect.any(String)]]);
  });
});
