// One way to open Redis: commands fail fast while disconnected (callers decide the fallback)
// and the client reconnects on its own.
import Redis, { type RedisOptions } from 'ioredis';
import type { Logger } from '../logging';

export type { Redis };

export function createRedis(url: string, logger: Logger, options: RedisOptions = {}): Redis {
  const client = new Redis(url, {
    // A command issued while Redis is down fails at once instead of queueing without bound.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
    lazyConnect: false,
    ...options,
  });
  let down = false;
  client.on('error', (err) => {
    if (!down) logger.warn({ err: err.message }, 'redis unavailable');
    down = true;
  });
  client.on('ready', () => {
    if (down) logger.info('redis available again');
    down = false;
  });
  return client;
}

/** True for ioredis' errors that mean Redis cannot be reached right now (not a command's own error). */
export function isRedisConnectionError(err: unknown): boolean {
  const m = err instanceof Error ? err.message : '';
  return /Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|max retries|enableOfflineQueue/i.test(m);
}

/** Resolves once the client is ready (or rejects after timeoutMs). */
export async function redisReady(client: Redis, timeoutMs = 10_000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`redis not ready after ${timeoutMs} ms`)), timeoutMs);
    client.once('ready', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
