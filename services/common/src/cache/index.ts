// What the caches of several services share: canonical JSON for cache keys, and single flight
// across replicas (one replica computes a key's value while the others wait for it in Redis).
import { randomUUID } from 'node:crypto';
import { withTimeout } from '../lifecycle/timeout';
import { reconnectWhenGivenUp, type Redis } from '../redis';

/** JSON with object keys sorted recursively, so that {a,b} and {b,a} hash alike. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** Deletes the lock only if this holder still holds it, and says so on the releases' channel. */
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); redis.call('PUBLISH', ARGV[2], KEYS[1]); return 1 else return 0 end`;

/** The channel on which every leader announces its release (the message is the lock's key). */
export const LOCK_RELEASES_CHANNEL = 'mesh:locks:released';
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
 * others wait for its value while the lock lasts, take over when it lapses without a value, and
 * stop waiting after `waitMs`. A leader announces its release (Redis pub/sub), which wakes its
 * followers at once; they also look every `pollMs`, for a leader that died or an announcement
 * lost while the subscriber reconnected. Redis trouble never fails a call: every caller then
 * runs alone.
 */
export class ReplicaLock {
  private readonly token = randomUUID();
  private readonly pollMs: number;
  private readonly redisTimeoutMs: number;
  private readonly releases: ReleaseWatch;

  constructor(
    private readonly redis: Redis,
    opts: { pollMs?: number; redisTimeoutMs?: number } = {},
  ) {
    this.pollMs = opts.pollMs ?? 50;
    this.redisTimeoutMs = opts.redisTimeoutMs ?? 500;
    this.releases = new ReleaseWatch(redis, this.redisTimeoutMs);
  }

  /** Closes the subscriber connection, if one was opened. */
  close(): void {
    this.releases.close();
  }

  async turn<T>(lockKey: string, opts: TurnOptions<T>): Promise<Turn<T>> {
    const deadline = Date.now() + opts.waitMs;
    const leaseMs = Math.max(1, Math.ceil(opts.leaseMs));
    let waited = false;
    let wake: Wake | undefined;
    try {
      for (;;) {
        const got = await this.bounded(this.redis.set(lockKey, this.token, 'PX', leaseMs, 'NX'));
        if (got === 'OK') return this.leadership(lockKey, leaseMs, waited);
        // Another replica computes it: wait for its value while its lock lasts. Listening before
        // the first look, so that a release between the look and the wait is not missed.
        waited = true;
        wake ??= await this.releases.listen(lockKey);
        for (;;) {
          const value = await this.bounded(opts.ready());
          if (value !== undefined) return { role: 'follower', value };
          if ((await this.bounded(this.redis.exists(lockKey))) === 0) break; // the leader is gone without a value: try to lead
          if (Date.now() >= deadline) return { role: 'alone', reason: 'timed_out' };
          await wake.next(Math.min(this.pollMs, Math.max(1, deadline - Date.now())), opts.signal);
        }
      }
    } catch {
      if (opts.signal?.aborted) throw opts.signal.reason;
      // A Redis command failed or took too long (or `ready` did, reading Redis).
      return { role: 'alone', reason: 'redis_unavailable' };
    } finally {
      wake?.stop();
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
        await this.bounded(this.redis.eval(UNLOCK, 1, lockKey, this.token, LOCK_RELEASES_CHANNEL)).catch(() => undefined);
      },
    };
  }

  private bounded<R>(p: Promise<R>): Promise<R> {
    return withTimeout(p, this.redisTimeoutMs, 'redis');
  }
}

/** A follower's wait: until the lock's release is announced, or a time passes. */
interface Wake {
  /** Resolves at the next announcement (at once if one came since the last call), or after `ms`. */
  next(ms: number, signal?: AbortSignal): Promise<void>;
  stop(): void;
}

/**
 * The leaders' release announcements, read on a Redis connection of its own (a subscriber can do
 * nothing else), opened at the first wait. Without it (Redis refuses, or a client that cannot
 * duplicate itself) the followers just look every `pollMs`.
 */
class ReleaseWatch {
  private sub?: Redis;
  private subscribed?: Promise<void>;
  private readonly waiting = new Map<string, Set<() => void>>();

  constructor(
    private readonly redis: Redis,
    private readonly timeoutMs: number,
  ) {}

  async listen(key: string): Promise<Wake> {
    let announced = false;
    let wakeUp: (() => void) | undefined;
    const onRelease = () => {
      announced = true;
      wakeUp?.();
    };
    const set = this.waiting.get(key) ?? new Set();
    set.add(onRelease);
    this.waiting.set(key, set);
    await this.subscribe();
    return {
      next: async (ms, signal) => {
        if (!announced) {
          await new Promise<void>((resolve, reject) => {
            const finish = () => {
              clearTimeout(timer);
              signal?.removeEventListener('abort', onAbort);
              wakeUp = undefined;
            };
            const done = () => {
              finish();
              resolve();
            };
            const onAbort = () => {
              finish();
              reject(signal!.reason as Error);
            };
            const timer = setTimeout(done, ms);
            wakeUp = done;
            signal?.addEventListener('abort', onAbort, { once: true });
            if (signal?.aborted) onAbort();
          });
        }
        announced = false;
      },
      stop: () => {
        set.delete(onRelease);
        if (set.size === 0 && this.waiting.get(key) === set) this.waiting.delete(key);
      },
    };
  }

  close(): void {
    this.sub?.disconnect();
  }

  /** Subscribes once; a failure leaves the followers polling (and is tried again at the next wait). */
  private subscribe(): Promise<void> {
    this.subscribed ??= (async () => {
      try {
        if (!this.sub) {
          this.sub = this.redis.duplicate();
          reconnectWhenGivenUp(this.sub);
          this.sub.on('error', () => undefined); // reconnects on its own, and resubscribes
          this.sub.on('message', (_channel: string, key: string) => this.waiting.get(key)?.forEach((wake) => wake()));
        }
        await withTimeout(this.sub.subscribe(LOCK_RELEASES_CHANNEL), this.timeoutMs, 'redis');
      } catch {
        this.subscribed = undefined;
      }
    })();
    return this.subscribed;
  }
}

