// Dependency probes for /api/health: the standard gRPC health service of a peer, and Redis PING.
import type { Client } from '@grpc/grpc-js';
import { healthClientOf, redisReady, withTimeout, type Redis } from '@agent-mesh/common';
import type { DependencyCheck, HealthProbe } from './types';

/** Checks a peer over the channel of its gateway's client (no second connection, the same options). */
export function grpcHealthProbe(peer: Client, timeoutMs = 1_000): HealthProbe {
  const client = healthClientOf(peer);
  return () =>
    new Promise<DependencyCheck>((resolve) => {
      const started = performance.now();
      client.Check({ service: '' }, { deadline: Date.now() + timeoutMs }, (err, res) => {
        const latencyMs = Math.round((performance.now() - started) * 10) / 10;
        if (err) resolve({ status: 'down', latencyMs, detail: err.details || err.message });
        else if (res?.status !== 'SERVING') resolve({ status: 'down', latencyMs, detail: `health status ${String(res?.status ?? 'UNKNOWN')}` });
        else resolve({ status: 'up', latencyMs });
      });
    });
}

export function redisProbe(redis: Redis, timeoutMs = 1_000): HealthProbe {
  return async () => {
    const started = performance.now();
    const latency = () => Math.round((performance.now() - started) * 10) / 10;
    try {
      // A client still (re)connecting gets the rest of the timeout to become ready.
      await withTimeout((redis.status === 'ready' ? Promise.resolve() : redisReady(redis, timeoutMs)).then(() => redis.ping()), timeoutMs, 'redis');
      return { status: 'up', latencyMs: latency() };
    } catch (err) {
      return { status: 'down', latencyMs: latency(), detail: (err as Error).message };
    }
  };
}
