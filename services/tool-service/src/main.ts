// Process entry of the tool-service: configuration, Redis, limiters, tools, gRPC and metrics
// servers, pre-warming, and shutdown. Wiring only.
import { randomUUID } from 'node:crypto';
import {
  createLogger,
  createRedis,
  createRegistry,
  GlobalLimiter,
  Lifecycle,
  loadConfigOrExit,
  redisReady,
  startGrpcServer,
  startMetricsServer,
} from '@agent-mesh/common';
import { protobufFileName, ToolServiceService } from '@agent-mesh/common/dist/gen/tools/v1/tools';
import { loadConfig } from './config';
import { SharedBreakers } from './invoke/breaker';
import { ToolInvoker } from './invoke/invoker';
import { ToolMetrics } from './invoke/metrics';
import { ResultCache } from './invoke/result-cache';
import { ReplicaLock } from './invoke/single-flight';
import { Prewarmer, RedisPopularity } from './prewarm/prewarmer';
import { lazyLocalIndex } from './search/build';
import { toolServiceImpl } from './server';
import { GrpcPlanStore } from './store/plan-store';
import { SEARCH_WEB } from './tools/search-web';
import { defaultTools, testTools, ToolRegistry } from './tools/registry';

const logger = createLogger('tool-service');

async function main(): Promise<void> {
  const cfg = loadConfigOrExit('tool-service', logger, loadConfig);
  const lifecycle = new Lifecycle(logger);
  lifecycle.handleSignals();

  const registry = createRegistry('tool-service');
  const metrics = new ToolMetrics(registry);
  const metricsServer = await startMetricsServer(registry, cfg.metricsPort, logger, cfg.host);
  lifecycle.own('metrics server', () => metricsServer.close());

  const redis = createRedis(cfg.redisUrl, logger);
  lifecycle.own('redis', async () => {
    await redis.quit().catch(() => redis.disconnect());
  });
  await redisReady(redis).catch((err: Error) => logger.warn({ err: err.message }, 'starting without redis: limits fall back to this replica\'s share, no shared cache'));

  const store = new GrpcPlanStore(cfg.storeAddr);
  lifecycle.own('store client', () => store.close());

  const localIndex = lazyLocalIndex(
    { sources: cfg.corpusSources, repoRoot: cfg.repoRoot, extraDirs: cfg.corpusDirs },
    logger,
    (counts) => Object.entries(counts).forEach(([source, n]) => metrics.corpusDocuments.set({ source }, n)),
  );
  const tools = new ToolRegistry(
    [...defaultTools({ searchUrl: cfg.searchUrl, localIndex }), ...(cfg.testTools ? testTools() : [])],
    cfg.overrides,
  );

  // One global limiter per tool, shared with every replica through Redis.
  const replicaId = randomUUID();
  const limiters = new Map<string, GlobalLimiter>();
  for (const t of tools.list()) {
    const limiter = new GlobalLimiter(redis, `${cfg.redisPrefix}:limit:${t.name}`, {
      maxConcurrent: t.rateLimit.maxConcurrent,
      requestsPerMinute: t.rateLimit.maxPerMinute,
      burstFraction: cfg.burstFraction,
      leaseMs: t.rateLimit.timeoutMs + 5_000,
      replicaId,
    }, logger);
    limiter.start();
    limiters.set(t.name, limiter);
  }
  lifecycle.own('limiters', () => limiters.forEach((l) => l.stop()));

  const cache = new ResultCache(redis, logger);
  const popularity = new RedisPopularity(redis, cfg.redisPrefix, logger);
  const invoker = new ToolInvoker(
    tools,
    (name) => limiters.get(name)!,
    cache,
    new ReplicaLock(redis, cache),
    store,
    metrics,
    logger,
    { prefix: cfg.redisPrefix, breaker: cfg.breaker, degradedTtlFactor: cfg.degradedTtlFactor, maxArgumentsBytes: cfg.maxArgumentsBytes },
    popularity,
    new SharedBreakers(redis, cfg.redisPrefix, logger),
  );

  const grpc = await startGrpcServer({
    host: cfg.host,
    port: cfg.port,
    services: [{ name: 'tools.v1.ToolService', definition: ToolServiceService, implementation: toolServiceImpl(tools, invoker, logger) }],
    protoFiles: [protobufFileName],
    logger,
  });
  lifecycle.own('grpc server', () => grpc.stop(Math.max(1_000, lifecycle.grace - 2_000)));

  if (cfg.prewarmIntervalMs > 0 && tools.get(SEARCH_WEB)) {
    const prewarmer = new Prewarmer(tools, invoker, popularity, redis, metrics, logger, {
      intervalMs: cfg.prewarmIntervalMs,
      configured: { [SEARCH_WEB]: cfg.prewarmQueries },
      topRecent: cfg.prewarmTop,
      prefix: cfg.redisPrefix,
    });
    // The first round waits for the local index so that it does not time out while it builds.
    void (cfg.searchUrl ? Promise.resolve() : localIndex().then(() => undefined)).then(() => prewarmer.start());
    lifecycle.own('pre-warming', () => prewarmer.stop());
  }
  if (!cfg.searchUrl) void localIndex();

  grpc.serve();
  logger.info({ port: grpc.port, metricsPort: metricsServer.port, tools: tools.names(), search: cfg.searchUrl ? 'web' : 'local' }, 'listening');
}

main().catch((err: unknown) => {
  logger.fatal({ err }, 'tool-service failed to start');
  process.exit(1);
});
