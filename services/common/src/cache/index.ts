// What the caches of several services share: canonical JSON for cache keys, and single flight
// across replicas (one replica computes a key's value while the others wait for it in Redis).
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from '../redis';

/** JSON with object keys sorted recursively, so that {a,b} and {b,a} hash alike. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** Deletes the lock only if this holder still holds it. */
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
/** Extends the lock only if this holder still holds it. */
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;

/**
 * How a caller is to get a key's value:
 * - `leader`: compute it, store it where `ready` finds it, then `release()` (also on failure);
 *   `tookOver` when an earlier leader's lock lapsed without a value (it died or failed);
 * - `follower`: the leader's value, found by `ready`;
 * - `alone`: compute it without the lock — waited `waitMs` in vain, or Redis is unavailable.
 */
export type Turn<T> =
  | { role: 'leader'; tookOver: boolean; release(): Promise<void> }
  | { role: 'follower'; value: T }
  | { role: 'alone'; reason: 'timed_out' | 'redis_unavailable' };

export interface TurnOptions<T> {
  /** The lock's lease; the leader renews it every third of it until release, so a dead leader's lock lapses after at most this. */
  leaseMs: number;
  /** Longest a follower waits for the leader's value. */
  waitMs: number;
  /** The value, once the leader has stored it (undefined before). */
  ready(): Promise<T | undefined>;
  /** The caller gave up: waiting stops with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Single flight across replicas: a short Redis lock (SET NX PX) elects one leader per key; the
 * others poll for its value while the lock lasts, take over when it lapses without a value, and
 * stop waiting after `waitMs`. Redis trouble never fails a call: every caller then runs alone.
 */
export class ReplicaLock {
  private readonly token = randomUUID();
  private readonly pollMs: number;
  private readonly redisTimeoutMs: number;

  constructor(
    private readonly redis: Redis,
    opts: { pollMs?: number; redisTimeoutMs?: number } = {},
  ) {
    this.pollMs = opts.pollMs ?? 50;
    this.redisTimeoutMs = opts.redisTimeoutMs ?? 500;
  }

  async turn<T>(lockKey: string, opts: TurnOptions<T>): Promise<Turn<T>> {
    const deadline = Date.now() + opts.waitMs;
    const leaseMs = Math.max(1, Math.ceil(opts.leaseMs));
    let waited = false;
    try {
      for (;;) {
        const got = await this.bounded(this.redis.set(lockKey, this.token, 'PX', leaseMs, 'NX'));
        if (got === 'OK') return this.leadership(lockKey, leaseMs, waited);
        // Another replica computes it: poll for its value while its lock lasts.
        waited = true;
        for (;;) {
          if (Date.now() >= deadline) return { role: 'alone', reason: 'timed_out' };
          await sleep(Math.min(this.pollMs, Math.max(1, deadline - Date.now())), undefined, opts.signal ? { signal: opts.signal } : undefined);
          const value = await this.bounded(opts.ready());
          if (value !== undefined) return { role: 'follower', value };
          if ((await this.bounded(this.redis.exists(lockKey))) === 0) break; // the leader is gone without a value: try to lead
        }
      }
    } catch {
      if (opts.signal?.aborted) throw opts.signal.reason;
      // A Redis command failed or took too long (or `ready` did, reading Redis).
      return { role: 'alone', reason: 'redis_unavailable' };
    }
  }

  private leadership(lockKey: string, leaseMs: number, tookOver: boolean): Turn<never> {
    const renew = setInterval(() => {
      this.bounded(this.redis.eval(RENEW, 1, lockKey, this.token, leaseMs)).catch(() => undefined);
    }, Math.max(10, Math.floor(leaseMs / 3)));
    renew.unref();
    return {
      role: 'leader',
      tookOver,
      release: async () => {
        clearInterval(renew);
        // Best effort: the lock lapses on its own.
        await this.bounded(this.redis.eval(UNLOCK, 1, lockKey, this.token)).catch(() => undefined);
      },
    };
  }

  private bounded<R>(p: Promise<R>): Promise<R> {
    return withTimeout(p, this.redisTimeoutMs, 'redis');
  }
}

/** `p`, or a rejection naming `what` once `ms` have passed (for calls that must never hang). */
export async function withTimeout<R>(p: Promise<R>, ms: number, what: string): Promise<R> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}
