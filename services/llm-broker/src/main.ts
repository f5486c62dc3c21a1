// Process entry of the llm-broker: Redis, the global limiter, the queue, the upstream client
// behind its breaker, the gRPC and metrics servers — wiring only (configuration, listeners and
// shutdown phases: runService).
import { randomUUID } from 'node:crypto';
import {
  BUDGET_KEY_PREFIX, createRedis, LLM_QUOTA_KEY_PREFIX, createRegistry, flushTelemetry, GlobalLimiter, redisReady, runService, TokenBudgets, type Service,
} from '@agent-mesh/common';
import { LlmBroker } from './broker';
import { ResponseCache } from './cache/response-cache';
import { loadConfig, type BrokerConfig } from './config';
import { createBrokerMetrics } from './metrics';
import { AdaptiveLimits } from './queue/adaptive';
import { AdmissionQueue } from './queue/admission';
import { brokerService, PROTO_FILES } from './server';
import { tokenizer } from './tokens';
import { OpenAiCompatibleClient } from './upstream/openai';
import { breakerState, createBreaker, RetryBudget } from './upstream/resilience';

void runService({ name: 'llm-broker', loadConfig, flushTelemetry, build });

async function build(svc: Service<BrokerConfig>): Promise<void> {
  const { config: cfg, logger } = svc;
  tokenizer(); // load the encoder's ranks once, before the first request

  const redis = createRedis(cfg.redisUrl, logger);
  // Start on the local share if Redis is not there yet; the limiter joins it when it comes.
  await redisReady(redis, 3_000).catch((err: Error) => logger.warn({ err: err.message }, 'starting without redis'));
  svc.onShutdown('clients', 'redis', async () => void (await redis.quit().catch(() => redis.disconnect())));

  const configured = { maxConcurrent: cfg.maxConcurrent, requestsPerMinute: cfg.rpm, tokensPerMinute: cfg.tpm };
  const limiter = new GlobalLimiter(
    redis,
    LLM_QUOTA_KEY_PREFIX,
    { ...configured, leaseMs: cfg.leaseMs, windowScale: cfg.timeScale, replicaId: `${process.pid}-${randomUUID()}` },
    logger,
  );
  limiter.start();
  svc.onShutdown('stop', 'limiter', () => limiter.stop());

  const adaptive = new AdaptiveLimits(configured, { creepPeriodMs: 1_000 * cfg.timeScale, holdMs: 5_000 * cfg.timeScale, reportTtlMs: 60_000 * cfg.timeScale });
  const creep = setInterval(() => adaptive.tick() && limiter.setLimits(adaptive.limits), Math.max(50, 500 * cfg.timeScale));
  creep.unref();
  svc.onShutdown('stop', 'adaptive-limits', () => clearInterval(creep));

  const client = new OpenAiCompatibleClient(cfg.baseUrl, cfg.apiKey, cfg.requestTimeoutMs, cfg.streamIdleTimeoutMs);
  const breakerResetMs = cfg.breaker.resetMs;
  const breaker = createBreaker(client.open.bind(client), {
    errorThresholdPercentage: cfg.breaker.errorPercent,
    volumeThreshold: cfg.breaker.volumeThreshold,
    resetTimeoutMs: breakerResetMs,
    timeoutMs: Math.min(cfg.breaker.timeoutMs, cfg.requestTimeoutMs),
    windowMs: cfg.breaker.windowMs,
  });
  breaker.on('open', () => logger.warn('upstream circuit breaker open'));
  breaker.on('halfOpen', () => logger.info('upstream circuit breaker half-open: probing'));
  breaker.on('close', () => logger.info('upstream circuit breaker closed'));
  svc.onShutdown('stop', 'upstream', async () => {
    breaker.shutdown();
    await client.close();
  });

  const registry = createRegistry('llm-broker');
  let broker: LlmBroker | undefined;
  const queueRef: { q?: AdmissionQueue } = {};
  const metrics = createBrokerMetrics(registry, {
    queueDepth: () => queueRef.q?.depth ?? 0,
    inFlight: () => broker?.inFlight ?? 0,
    breakerState: () => ({ closed: 0, half_open: 1, open: 2 })[breakerState(breaker)],
    effectiveLimits: () => {
      const l = adaptive.limits;
      return { rpm: l.requestsPerMinute, tpm: l.tokensPerMinute, concurrency: l.maxConcurrent };
    },
    sharedQuota: () => limiter.mode === 'shared',
    liveReplicas: () => limiter.liveReplicas,
  });
  const queue = new AdmissionQueue(
    limiter,
    {
      maxLength: cfg.queueMax,
      // Before any admission was measured: this replica's share of the RPM pace.
      nominalIntervalMs: () => {
        const rpm = adaptive.limits.requestsPerMinute;
        return rpm > 0 ? (60_000 * cfg.timeScale * limiter.liveReplicas) / rpm : 50;
      },
    },
    {
      onRefused: (reason) => metrics.refusals.inc({ reason }),
    },
  );
  queueRef.q = queue;
  broker = new LlmBroker({
    queue,
    limiter,
    adaptive,
    breaker,
    retryBudget: new RetryBudget(cfg.retry.budgetRatio, cfg.retry.budgetBurst),
    maxRetries: cfg.retry.max,
    tpmAccounting: cfg.tpmAccounting,
    metrics,
    logger,
    defaultModel: cfg.model,
    defaultMaxTokens: cfg.defaultMaxTokens,
    priorities: cfg.priorities,
    breakerResetMs,
    // Charges only: the limits are checked where work starts (the edge).
    // Calls that ask for it; a TTL of 0 turns it off.
    cache: cfg.cache.ttlMs > 0 ? new ResponseCache(redis, { prefix: 'mesh:llm:cache', upstream: cfg.baseUrl, ...cfg.cache }) : undefined,
    budgets: new TokenBudgets(redis, BUDGET_KEY_PREFIX, { defaults: { perDay: 0, perMinute: 0 }, onError: (err) => logger.warn({ err: (err as Error).message }, 'token budget not charged') }),
  });

  const server = await svc.grpcServer({ port: cfg.port, services: [brokerService(broker, logger)], protoFiles: PROTO_FILES });
  const metricsServer = await svc.metricsServer(registry, cfg.metricsPort);
  // Calls still queued when the drain ends are refused.
  svc.onShutdown('stop', 'queue', () => queue.close());
  server.serve();
  logger.info(
    {
      host: svc.host,
      port: server.port,
      metricsPort: metricsServer.port,
      baseUrl: cfg.baseUrl,
      model: cfg.model,
      limits: configured,
      timeScale: cfg.timeScale,
      breaker: cfg.breaker,
      retry: cfg.retry,
      cache: cfg.cache,
    },
    'listening',
  );
}
