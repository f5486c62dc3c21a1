// Tool results in Redis with the tool's TTL. Redis trouble never fails a call: a read error is a
// miss and a write error is logged.
import type { Logger, Redis } from '@agent-mesh/common';

export class ResultCache {
  constructor(
    private readonly redis: Redis,
    private readonly logger: Logger,
  ) {}

  /** The cached result's JSON text, or undefined. */
  async get(key: string): Promise<string | undefined> {
    try {
      return (await this.redis.get(key)) ?? undefined;
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, 'cache read failed');
      return undefined;
    }
  }

  async set(key: string, json: string, ttlSeconds: number): Promise<void> {
    if (ttlSeconds <= 0) return;
    try {
      await this.redis.set(key, json, 'EX', Math.ceil(ttlSeconds));
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'cache write failed');
    }
  }

  /** Lengthens an entry's life (while its tool's breaker is open), never shortening it. */
  async extend(key: string, ttlSeconds: number): Promise<void> {
    try {
      await this.redis.expire(key, Math.ceil(ttlSeconds), 'GT');
    } catch {
      // Best effort.
    }
  }

  async has(key: string): Promise<boolean> {
    try {
      return (await this.redis.exists(key)) === 1;
    } catch {
      return false;
    }
  }
}
