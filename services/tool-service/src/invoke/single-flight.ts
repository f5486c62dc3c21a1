// Single-flight: identical concurrent calls run once. Within a process the followers await the
// leader's promise; across replicas a short Redis lock elects one leader and the others wait for
// its result to appear in the cache (or for the lock to lapse, and then run it themselves).
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from '@agent-mesh/common';
import type { ResultCache } from './result-cache';

/** Deletes the lock only if this replica still holds it. */
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

export type FlightRole = 'leader' | 'local_follower' | 'remote_follower';

export class SingleFlight<T> {
  private readonly inFlight = new Map<string, Promise<T>>();

  /** Runs `fn` once per key at a time in this process; `role` says how this caller was served. */
  async run(key: string, fn: () => Promise<T>): Promise<{ value: T; role: FlightRole }> {
    const running = this.inFlight.get(key);
    if (running) return { value: await running, role: 'local_follower' };
    const p = fn().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return { value: await p, role: 'leader' };
  }

  get size(): number {
    return this.inFlight.size;
  }
}

export class ReplicaLock {
  private readonly token = randomUUID();

  constructor(
    private readonly redis: Redis,
    private readonly cache: ResultCache,
    private readonly pollMs = 50,
  ) {}

  /**
   * Becomes the leader for `key` (returns a release function), or waits up to `waitMs` for the
   * leader's result in the cache (returns its JSON). Redis trouble makes every caller a leader.
   */
  async leadOrWait(key: string, leaseMs: number, waitMs: number): Promise<{ lead: () => Promise<void> } | { cachedJson: string }> {
    const lockKey = `${key}:lock`;
    const deadline = Date.now() + waitMs;
    for (;;) {
      let got: string | null;
      try {
        got = await this.redis.set(lockKey, this.token, 'PX', Math.max(1, Math.ceil(leaseMs)), 'NX');
      } catch {
        return { lead: async () => undefined };
      }
      if (got === 'OK') {
        return {
          lead: async () => {
            try {
              await this.redis.eval(UNLOCK, 1, lockKey, this.token);
            } catch {
              // The lock expires on its own.
            }
          },
        };
      }
      // Another replica runs it: poll for its answer while its lock lasts.
      while (Date.now() < deadline) {
        await sleep(this.pollMs);
        const cached = await this.cache.get(key);
        if (cached !== undefined) return { cachedJson: cached };
        let held: number;
        try {
          held = await this.redis.exists(lockKey);
        } catch {
          held = 0;
        }
        if (!held) break; // leader gone without a cached answer (failure, uncacheable): try to lead
      }
      if (Date.now() >= deadline) return { lead: async () => undefined };
    }
  }
}
