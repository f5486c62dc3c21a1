// Dependency probes for /api/health: the standard gRPC health service of a peer, and Redis PING.
import { credentials, loadPackageDefinition, type ChannelOptions, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath } from 'grpc-health-check';
import { channelCredentials, CLIENT_CHANNEL_OPTIONS, grpcTarget, redisReady, type Redis } from '@agent-mesh/common';
import type { DependencyCheck, HealthProbe } from './types';

interface HealthClient extends Client {
  Check(
    req: { service: string },
    opts: { deadline: number },
    cb: (err: ServiceError | null, res?: { status: string | number }) => void,
  ): void;
}
type HealthCtor = new (addr: string, creds: ReturnType<typeof credentials.createInsecure>, options?: ChannelOptions) => HealthClient;

let HealthClientCtor: HealthCtor | undefined;
function healthCtor(): HealthCtor {
  if (!HealthClientCtor) {
    const def = loadPackageDefinition(loadSync(protoPath, { keepCase: true })) as unknown as {
      grpc: { health: { v1: { Health: HealthCtor } } };
    };
    HealthClientCtor = def.grpc.health.v1.Health;
  }
  return HealthClientCtor;
}

export function grpcHealthProbe(addr: string, timeoutMs = 1_000): HealthProbe & { close(): void } {
  const Ctor = healthCtor();
  // Over every replica of the peer (round-robin skips dead ones): up while one of them serves.
  const client = new Ctor(grpcTarget(addr), channelCredentials(), CLIENT_CHANNEL_OPTIONS);
  const probe = () =>
    new Promise<DependencyCheck>((resolve) => {
      const started = performance.now();
      client.Check({ service: '' }, { deadline: Date.now() + timeoutMs }, (err, res) => {
        const latencyMs = Math.round((performance.now() - started) * 10) / 10;
        if (err) resolve({ status: 'down', latencyMs, detail: err.details || err.message });
        // proto-loader gives the enum as its number (1 = SERVING) unless told otherwise.
        else if (res?.status !== 'SERVING' && res?.status !== 1) resolve({ status: 'down', latencyMs, detail: `health status ${String(res?.status ?? 'UNKNOWN')}` });
        else resolve({ status: 'up', latencyMs });
      });
    });
  return Object.assign(probe, { close: () => client.close() });
}

export function redisProbe(redis: Redis, timeoutMs = 1_000): HealthProbe {
  return async () => {
    const started = performance.now();
    const latency = () => Math.round((performance.now() - started) * 10) / 10;
    try {
      await Promise.race([
        // A client still (re)connecting gets the rest of the timeout to become ready.
        (redis.status === 'ready' ? Promise.resolve() : redisReady(redis, timeoutMs)).then(() => redis.ping()),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs).unref()),
      ]);
      return { status: 'up', latencyMs: latency() };
    } catch (err) {
      return { status: 'down', latencyMs: latency(), detail: (err as Error).message };
    }
  };
}
