// The broker as a part of a process: Redis, and per upstream its global limiter, queue and provider
// behind its breaker, with their shutdown steps. The llm-broker service serves it over gRPC
// (main.ts); an edge with EDGE_INLINE_BROKER calls it in its own process for `/v1` (no gRPC hop).
import { BUDGET_KEY_PREFIX, closeRedis, createRedis, GlobalLimiter, redisReady, replicaIdOfProcess, TokenBudgets, type AdmissionLimits, type LimiterOptions, type Redis, type Registry, type Service } from '@agent-mesh/common';
import { LlmBroker, type Upstream } from './broker';
import { ResponseCache } from './cache/response-cache';
import type { BrokerConfig, UpstreamConfig } from './config';
import { createBrokerMetrics, type BrokerMetrics, type UpstreamGauges } from './metrics';
import { AdaptiveLimits } from './queue/adaptive';
import { AdmissionQueue } from './queue/admission';
import { FleetOwedCalls } from './queue/fleet-owed';
import { OutputTokenAdmitter, outputQuotaKey } from './queue/output-tokens';
import { tokenizer } from './tokens';
import { HttpProvider } from './upstream/http';
import { WIRE_PROTOCOLS } from './upstream/protocols';
import { breakerState, createBreaker, RetryBudget } from './upstream/resilience';

/** What the broker needs of its process: a logger and shutdown steps. */
export type BrokerHost = Pick<Service<BrokerConfig>, 'logger' | 'onShutdown'>;

/**
 * The broker and its upstreams, its metrics on `registry`, on the host's Redis connection if given
 * (else its own, from cfg.redis). Its queues are closed and its settlements awaited in the host's
 * `stop` phase.
 */
export async function assembleBroker(svc: BrokerHost, cfg: BrokerConfig, registry: Registry, shared?: Redis): Promise<{ broker: LlmBroker; upstreams: Upstream[] }> {
  const { logger } = svc;
  tokenizer(); // load the encoder's ranks once, before the first request

  // The commands of one event-loop turn (admissions, settlements, budget charges of many calls)
  // leave in one write instead of one write each (not on a Redis Cluster: see createRedis).
  const redis = shared ?? createRedis(cfg.redis, logger, { coalesceWrites: true });
  // Start on the local share if Redis is not there yet; the limiter joins it when it comes. (A
  // client lent by the edge: the edge has waited for it already.)
  if (!shared) await redisReady(redis, 3_000).catch((err: Error) => logger.warn({ err: err.message }, 'starting without redis'));
  if (!shared) svc.onShutdown('clients', 'redis', () => closeRedis(redis));

  const budgets = new TokenBudgets(redis, BUDGET_KEY_PREFIX, { defaults: { perDay: 0, perMinute: 0 }, onError: (err) => logger.warn({ err: (err as Error).message }, 'token budget not charged') });
  const brokerRef: { b?: LlmBroker } = {};
  const gauges: UpstreamGauges[] = [];
  const metrics = createBrokerMetrics(registry, { upstreams: () => gauges }, cfg.upstreams.map((u) => u.name));
  const upstreams = cfg.upstreams.map((u) => {
    const built = buildUpstream(svc, cfg, u, redis, metrics);
    gauges.push({
      name: u.name,
      queueDepth: () => built.upstream.queue.depth,
      owedCalls: () => built.upstream.queue.owedCalls,
      inFlight: () => brokerRef.b?.inFlightOf(u.name) ?? 0,
      breakerState: () => ({ closed: 0, half_open: 1, open: 2 })[breakerState(built.upstream.breaker)],
      effectiveLimits: () => {
        const l = built.upstream.adaptive.limits;
        const otpm = built.upstream.output?.adaptive.limits.tokensPerMinute ?? 0;
        return { rpm: l.requestsPerMinute, tpm: l.tokensPerMinute, otpm, concurrency: l.maxConcurrent };
      },
      burstFraction: () => built.limiter.burstFraction,
      sharedQuota: () => built.limiter.mode === 'shared',
      liveReplicas: () => built.limiter.liveReplicas,
      departedReplicas: () => built.limiter.departedReplicas,
    });
    return built.upstream;
  });
  // Calls that ask for it; a TTL of 0 turns it off.
  const cache = cfg.cache.ttlMs > 0 ? new ResponseCache(redis, { prefix: 'mesh:llm:cache', ...cfg.cache }) : undefined;
  const broker = new LlmBroker({
    upstreams,
    maxRetries: cfg.retry.max,
    tpmAccounting: cfg.tpmAccounting,
    embedBatchTokens: cfg.embedBatchTokens,
    timeScale: cfg.timeScale,
    metrics,
    logger,
    defaultMaxTokens: cfg.defaultMaxTokens,
    priorities: cfg.priorities,
    cache,
    promptCacheShared: { redis, prefix: 'mesh:llm:prompt-cache', onError: (err) => logger.debug({ err: (err as Error).message }, 'prompt-cache forecast not shared') },
    // Charges only: the limits are checked where work starts (the edge).
    budgets,
  });
  brokerRef.b = broker;
  if (cache) svc.onShutdown('clients', 'response cache', () => cache.close());
  // Calls still queued when the drain ends are refused.
  svc.onShutdown('stop', 'queues', () => upstreams.forEach((u) => u.queue.close()));
  // Answered calls whose leases are still being settled, and the spenders' ranking they charged: in Redis before it closes.
  svc.onShutdown('stop', 'settlements', async () => {
    await broker.settled();
    await budgets.flushRanking();
  });
  return { broker, upstreams };
}

/** Where each upstream is, what it serves, its limits: for a log line, never the keys. */
export function describeUpstreams(cfg: BrokerConfig) {
  return cfg.upstreams.map((u) => ({ name: u.name, protocol: u.protocol, baseUrl: u.baseUrl, models: u.models, maxConcurrent: u.maxConcurrent, rpm: u.rpm, tpm: u.tpm, otpm: u.otpm, quotaKey: u.quotaKey }));
}

/** One upstream's own parts: its quota in Redis (limiter, adaptive limits), queue, provider and breaker. */
function buildUpstream(svc: BrokerHost, cfg: BrokerConfig, u: UpstreamConfig, redis: Redis, metrics: BrokerMetrics): { upstream: Upstream; limiter: GlobalLimiter } {
  const { logger } = svc;
  const log = logger.child({ upstream: u.name });
  /** A limiter of the upstream's quota in Redis, and its limits adapting to the provider. */
  const quota = (keyPrefix: string, configured: Required<AdmissionLimits>, what: string, options: LimiterOptions = {}) => {
    const limiter = new GlobalLimiter(
      redis,
      keyPrefix,
      { ...configured, leaseMs: cfg.leaseMs, fallbackReplicas: cfg.fallbackReplicas, departedHoldMs: cfg.departedHoldMs, windowScale: cfg.timeScale, windowMarginMs: cfg.quotaWindowMarginMs, burstFraction: cfg.quotaBurstFraction, admitAhead: cfg.admitAhead, admitAheadMs: cfg.admitAheadMs, admitAheadKeepMs: cfg.admitAheadKeepMs, replicaId: replicaIdOfProcess(), ...options },
      log,
    );
    limiter.start();
    svc.onShutdown('stop', `${what}:${u.name}`, () => limiter.stop());
    const adaptive = new AdaptiveLimits(configured, { creepPeriodMs: 1_000 * cfg.timeScale, holdMs: 5_000 * cfg.timeScale, reportTtlMs: 60_000 * cfg.timeScale });
    const creep = setInterval(() => adaptive.tick() && limiter.setLimits(adaptive.limits), Math.max(50, 500 * cfg.timeScale));
    creep.unref();
    svc.onShutdown('stop', `adaptive-${what}:${u.name}`, () => clearInterval(creep));
    return { limiter, adaptive };
  };
  const { limiter, adaptive } = quota(u.quotaKey, { maxConcurrent: u.maxConcurrent, requestsPerMinute: u.rpm, tokensPerMinute: u.tpm }, 'limiter');
  // Output tokens limited on their own (OTPM): a second limiter, of tokens only, counted over the
  // window without pacing (a call reserves max_tokens, mostly given back: see LimiterOptions.tokenPacing),
  // and asked at each call (the first limiter's round trip is made anyway: nothing taken ahead).
  const output = u.otpm > 0
    ? quota(outputQuotaKey(u.quotaKey), { maxConcurrent: 0, requestsPerMinute: 0, tokensPerMinute: u.otpm }, 'output-limiter', { tokenPacing: false, admitAhead: 0 })
    : undefined;

  const provider = new HttpProvider(WIRE_PROTOCOLS[u.protocol], {
    baseUrl: u.baseUrl, apiKey: u.apiKey, requestTimeoutMs: cfg.requestTimeoutMs, streamIdleTimeoutMs: cfg.streamIdleTimeoutMs, maxConnections: u.maxConcurrent,
    ...(u.cacheReadsLimited !== undefined ? { cacheReadsLimited: u.cacheReadsLimited } : {}),
    ...(u.anthropicBetas ? { anthropicBetas: new Set(u.anthropicBetas) } : {}),
  });
  const breaker = createBreaker(provider.open.bind(provider), {
    errorThresholdPercentage: cfg.breaker.errorPercent,
    volumeThreshold: cfg.breaker.volumeThreshold,
    resetTimeoutMs: cfg.breaker.resetMs,
    timeoutMs: Math.min(cfg.breaker.timeoutMs, cfg.requestTimeoutMs),
    windowMs: cfg.breaker.windowMs,
  });
  breaker.on('open', () => log.warn('upstream circuit breaker open'));
  breaker.on('halfOpen', () => log.info('upstream circuit breaker half-open: probing'));
  breaker.on('close', () => log.info('upstream circuit breaker closed'));
  svc.onShutdown('stop', `upstream:${u.name}`, async () => {
    breaker.shutdown();
    await provider.close();
  });

  const queue = new AdmissionQueue(
    output ? new OutputTokenAdmitter(limiter, output.limiter) : limiter,
    {
      maxLength: cfg.queueMax,
      // Before any admission was measured: this replica's share of the RPM pace.
      nominalIntervalMs: () => {
        const rpm = adaptive.limits.requestsPerMinute;
        return rpm > 0 ? ((60_000 * cfg.timeScale + cfg.quotaWindowMarginMs) * limiter.liveReplicas) / rpm : 50;
      },
      tokenIntervalMs: () => {
        const tpm = adaptive.limits.tokensPerMinute;
        return tpm > 0 ? ((60_000 * cfg.timeScale + cfg.quotaWindowMarginMs) * limiter.liveReplicas) / tpm : 0;
      },
      replicas: () => limiter.liveReplicas,
      // One ledger of owed calls for every broker sharing the quota: a run's later calls land on any.
      owedLedger: (callMs) => {
        const ledger = new FleetOwedCalls(redis, u.quotaKey, callMs, () => limiter.liveReplicas);
        svc.onShutdown('stop', `owed-calls:${u.name}`, () => ledger.close());
        return ledger;
      },
    },
    { onRefused: (reason) => metrics.refusals.inc({ reason, upstream: u.name }) },
  );
  return {
    limiter,
    upstream: {
      name: u.name,
      provider,
      models: u.models,
      queue,
      limiter,
      adaptive,
      output,
      breaker,
      breakerResetMs: cfg.breaker.resetMs,
      retryBudget: new RetryBudget(cfg.retry.budgetRatio, cfg.retry.budgetBurst),
      keyVariable: u.keyVariable || 'LLM_UPSTREAMS (no keyEnv)',
      identity: `${u.protocol} ${u.baseUrl}`,
    },
  };
}
