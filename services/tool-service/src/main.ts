// Process entry of the tool-service: Redis, limiters, tools, gRPC and metrics servers,
// pre-warming — wiring only (configuration, listeners and shutdown phases: runService).
import { closeRedis, createRedis, createRegistry, flushTelemetry, GlobalLimiter, redisReady, ReplicaLock, replicaIdOfProcess, runService, type Service } from '@agent-mesh/common';
import { protobufFileName, ToolServiceService } from '@agent-mesh/common/gen/tools/v1/tools';
import { loadConfig, type ToolServiceConfig } from './config';
import { SharedBreakers } from './invoke/breaker';
import { ToolInvoker } from './invoke/invoker';
import { ToolMetrics } from './invoke/metrics';
import { LlmPause } from './invoke/llm-pause';
import { ResultCache } from './invoke/result-cache';
import { Prewarmer, RedisPopularity } from './prewarm/prewarmer';
import { lazyLocalIndex } from './search/build';
import { toolServiceImpl } from './server';
import { GrpcPlanStore } from './store/plan-store';
import { SEARCH_WEB } from './tools/search-web';
import { defaultTools, testTools, ToolRegistry } from './tools/registry';

void runService({ name: 'tool-service', loadConfig, flushTelemetry, build });

async function build(svc: Service<ToolServiceConfig>): Promise<void> {
  const { config: cfg, logger } = svc;

  const registry = createRegistry('tool-service');
  const metrics = new ToolMetrics(registry);
  const metricsServer = await svc.metricsServer(registry, cfg.metricsPort);

  const redis = createRedis(cfg.redis, logger);
  svc.onShutdown('clients', 'redis', () => closeRedis(redis));
  await redisReady(redis).catch((err: Error) => logger.warn({ err: err.message }, 'starting without redis: limits fall back to this replica\'s share, no shared cache'));

  const store = new GrpcPlanStore(cfg.storeAddr);
  svc.onShutdown('clients', 'store client', () => store.close());

  const localIndex = lazyLocalIndex(
    { sources: cfg.corpusSources, repoRoot: cfg.repoRoot, extraDirs: cfg.corpusDirs, cacheDir: cfg.indexCacheDir },
    logger,
    ({ counts }) => Object.entries(counts).forEach(([source, n]) => metrics.corpusDocuments.set({ source }, n)),
  );
  svc.onShutdown('stop', 'local search index', () => localIndex.close());
  const tools = new ToolRegistry(
    [...defaultTools({ searchUrl: cfg.searchUrl, localIndex }), ...(cfg.testTools ? testTools() : [])],
    cfg.overrides,
  );

  // One global limiter per tool, shared with every replica through Redis.
  const replicaId = replicaIdOfProcess();
  const limiters = new Map<string, GlobalLimiter>();
  for (const t of tools.list()) {
    const limiter = new GlobalLimiter(redis, `${cfg.redisPrefix}:limit:${t.name}`, {
      maxConcurrent: t.rateLimit.maxConcurrent,
      requestsPerMinute: t.rateLimit.maxPerMinute,
      burstFraction: cfg.burstFraction,
      fallbackReplicas: cfg.fallbackReplicas,
      departedHoldMs: cfg.departedHoldMs,
      leaseMs: t.rateLimit.timeoutMs + 5_000,
      replicaId,
    }, logger);
    limiter.start();
    limiters.set(t.name, limiter);
  }
  svc.onShutdown('stop', 'limiters', async () => void (await Promise.all([...limiters.values()].map((l) => l.stop()))));
  metrics.watchLimits(limiters);

  const cache = new ResultCache(redis, logger);
  const lock = new ReplicaLock(redis);
  svc.onShutdown('clients', 'single-flight releases', () => lock.close());
  const llmPause = new LlmPause(redis, cfg.llmPauseKeys);
  const popularity = new RedisPopularity(redis, cfg.redisPrefix, logger);
  const invoker = new ToolInvoker(
    tools,
    (name) => limiters.get(name)!,
    cache,
    lock,
    store,
    metrics,
    logger,
    {
      prefix: cfg.redisPrefix, breaker: cfg.breaker, degradedTtlFactor: cfg.degradedTtlFactor, maxArgumentsBytes: cfg.maxArgumentsBytes,
      llmPaused: () => llmPause.isPaused(),
    },
    popularity,
    new SharedBreakers(redis, cfg.redisPrefix, logger),
  );

  const grpc = await svc.grpcServer({
    port: cfg.port,
    services: [{ name: 'tools.v1.ToolService', definition: ToolServiceService, implementation: toolServiceImpl(tools, invoker, logger) }],
    protoFiles: [protobufFileName],
  });

  if (cfg.prewarmIntervalMs > 0 && tools.get(SEARCH_WEB)) {
    const prewarmer = new Prewarmer(tools, invoker, popularity, redis, metrics, logger, {
      intervalMs: cfg.prewarmIntervalMs,
      configured: { [SEARCH_WEB]: cfg.prewarmQueries },
      topRecent: cfg.prewarmTop,
      prefix: cfg.redisPrefix,
    });
    // The first round waits for the local index so that it does not time out while it builds.
    void (cfg.searchUrl ? Promise.resolve() : localIndex().then(() => undefined)).then(() => prewarmer.start());
    svc.onShutdown('stop', 'pre-warming', () => prewarmer.stop());
  }
  // SERVING only once search_web can answer: a replica that reported Ready while it built its index
  // spent its first minute at full CPU, which a CPU-scaled HPA read as load (deploy/k8s/README.md).
  // Loaded from TOOL_INDEX_CACHE_DIR (the image ships one) this takes a second or two; a failed
  // build leaves search_web failing with the reason, and the other tools serving.
  if (!cfg.searchUrl) await localIndex().catch((err: Error) => logger.error({ err: err.message }, 'serving without the local search index'));

  grpc.serve();
  logger.info({ host: svc.host, port: grpc.port, metricsPort: metricsServer.port, tools: tools.names(), search: cfg.searchUrl ? 'web' : 'local' }, 'listening');
}
