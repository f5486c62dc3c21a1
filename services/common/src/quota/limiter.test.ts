import { GlobalLimiter } from './limiter';
import type Redis from 'ioredis';

// A stand-in for Redis whose scripts answer as each test says: `hang` never answers, `after(ms)`
// answers after a delay. Only the limiter's own logic is under test here (Redis itself is in the
// integration tests).
type Behaviour = 'ok' | 'hang' | { afterMs: number };
function fakeRedis(behaviour: Record<string, Behaviour>) {
  const replies: Record<string, unknown> = {
    meshQuotaAcquire: [1, '', 0], meshQuotaRenew: 1, meshQuotaRelease: 1, meshQuotaPause: 1, meshQuotaHeartbeat: 1, meshQuotaMerge: 1,
  };
  const calls: string[] = [];
  const redis: Record<string, unknown> = { status: 'ready', defineCommand: () => undefined };
  for (const name of Object.keys(replies)) {
    redis[name] = () => {
      calls.push(name);
      const b = behaviour[name] ?? 'ok';
      if (b === 'hang') return new Promise(() => undefined);
      if (b === 'ok') return Promise.resolve(replies[name]);
      return new Promise((r) => setTimeout(() => r(replies[name]), b.afterMs));
    };
  }
  return { redis: redis as unknown as Redis, calls, behaviour };
}

async function within<T>(p: Promise<T>, ms: number): Promise<T | 'still waiting'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'still waiting'>((r) => { timer = setTimeout(() => r('still waiting'), ms); })]);
  } finally {
    clearTimeout(timer);
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
