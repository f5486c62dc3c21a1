// Process entry of the llm-broker: configuration, Redis, the global limiter, the queue, the
// upstream client behind its breaker, the gRPC and metrics servers, and shutdown — wiring only.
import { randomUUID } from 'node:crypto';
import {
  createLogger,
  createRedis,
  redisReady,
  createRegistry,
  GlobalLimiter,
  Lifecycle,
  loadConfigOrExit,
  startGrpcServer,
  startMetricsServer,
} from '@agent-mesh/common';
import { LlmBroker } from './broker';
import { loadConfig } from './config';
import { createBrokerMetrics } from './metrics';
import { AdaptiveLimits } from './queue/adaptive';
import { AdmissionQueue } from './queue/admission';
import { brokerService, PROTO_FILES } from './server';
import { tokenizer } from './tokens';
import { OpenAiCompatibleClient } from './upstream/openai';
import { breakerState, createBreaker, RetryBudget } from './upstream/resilience';

async function main(): Promise<void> {
  const logger = createLogger('llm-broker');
  const cfg = loadConfigOrExit('llm-broker', logger, loadConfig);
  const lifecycle = new Lifecycle(logger);
  lifecycle.handleSignals();
  tokenizer(); // load the encoder's ranks once, before the first request

  const redis = createRedis(cfg.redisUrl, logger);
  // Start on the local share if Redis is not there yet; the limiter joins it when it comes.
  await redisReady(redis, 3_000).catch((err: Error) => logger.warn({ err: err.message }, 'starting without redis'));
  lifecycle.own('redis', async () => void (await redis.quit().catch(() => redis.disconnect())));

  const configured = { maxConcurrent: cfg.maxConcurrent, requestsPerMinute: cfg.rpm, tokensPerMinute: cfg.tpm };
  const limiter = new GlobalLimiter(
    redis,
    'mesh:llm',
    { ...configured, leaseMs: cfg.leaseMs, windowScale: cfg.timeScale, replicaId: `${process.pid}-${randomUUID()}` },
    logger,
  );
  limiter.start();
  lifecycle.own('limiter', () => limiter.stop());

  const adaptive = new AdaptiveLimits(configured, { creepPeriodMs: 1_000 * cfg.timeScale, holdMs: 5_000 * cfg.timeScale, reportTtlMs: 60_000 * cfg.timeScale });
  const creep = setInterval(() => adaptive.tick() && limiter.setLimits(adaptive.limits), Math.max(50, 500 * cfg.timeScale));
  creep.unref();
  lifecycle.own('adaptive-limits', () => clearInterval(creep));

  const client = new OpenAiCompatibleClient(cfg.baseUrl, cfg.apiKey, cfg.requestTimeoutMs);
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
  lifecycle.own('upstream', async () => {
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
    metrics,
    logger,
    defaultModel: cfg.model,
    defaultMaxTokens: cfg.defaultMaxTokens,
    priorities: cfg.priorities,
    breakerResetMs,
  });

  const server = await startGrpcServer({ host: '127.0.0.1', port: cfg.port, services: [brokerService(broker, logger)], protoFiles: PROTO_FILES, logger });
  const metricsServer = await startMetricsServer(registry, cfg.metricsPort, logger, '127.0.0.1');
  lifecycle.own('metrics', () => metricsServer.close());
  lifecycle.own('queue', () => queue.close());
  lifecycle.own('grpc', () => server.stop(lifecycle.grace));
  server.serve();
  logger.info(
    {
      port: server.port,
      baseUrl: cfg.baseUrl,
      model: cfg.model,
      limits: configured,
      timeScale: cfg.timeScale,
      breaker: cfg.breaker,
      retry: cfg.retry,
    },
    'listening',
  );
}

main().catch((err: unknown) => {
  // eslint-disable-next-line no-console
  console.error(err);
  process.exit(1);
});
