// The broker's Prometheus metrics (served on METRICS_PORT by main.ts).
import { Counter, Gauge, Histogram, type Registry } from '@agent-mesh/common';

export interface BrokerGauges {
  queueDepth(): number;
  inFlight(): number;
  breakerState(): number;
  effectiveLimits(): { rpm: number; tpm: number; concurrency: number };
  sharedQuota(): boolean;
  liveReplicas(): number;
}

export function createBrokerMetrics(registry: Registry, gauges: BrokerGauges) {
  const registers = [registry];
  const gauge = (name: string, help: string, collect: (g: Gauge) => void, labelNames: string[] = []) =>
    new Gauge({ name, help, registers, labelNames, collect(this: Gauge) { collect(this); } });
  gauge('llm_queue_depth', 'Calls waiting in this replica\'s LLM queue', (g) => g.set(gauges.queueDepth()));
  gauge('llm_in_flight', 'Upstream calls in flight from this replica', (g) => g.set(gauges.inFlight()));
  gauge('llm_breaker_state', 'Upstream circuit breaker: 0 closed, 1 half-open, 2 open', (g) => g.set(gauges.breakerState()));
  gauge('llm_quota_shared', '1 while the quota is shared through Redis, 0 on the local fallback share', (g) => g.set(gauges.sharedQuota() ? 1 : 0));
  gauge('llm_live_replicas', 'Broker replicas sharing the quota (from heartbeats)', (g) => g.set(gauges.liveReplicas()));
  gauge('llm_effective_limit', 'Effective quota after adapting to the provider (0 = unlimited)', (g) => {
    const l = gauges.effectiveLimits();
    g.set({ limit: 'rpm' }, l.rpm);
    g.set({ limit: 'tpm' }, l.tpm);
    g.set({ limit: 'concurrency' }, l.concurrency);
  }, ['limit']);
  return {
    queueWait: new Histogram({
      name: 'llm_queue_wait_seconds',
      help: 'Time from entering the queue to admission',
      buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    admissions: new Counter({ name: 'llm_admissions_total', help: 'Calls admitted to the upstream', registers }),
    refusals: new Counter({ name: 'llm_refusals_total', help: 'Admission refusals by reason (queue and quota)', labelNames: ['reason'], registers }),
    tokens: new Counter({ name: 'llm_tokens_total', help: 'TPM tokens reserved, settled (billed) and refunded', labelNames: ['kind'], registers }),
    upstreamRequests: new Counter({ name: 'llm_upstream_requests_total', help: 'Upstream HTTP requests by outcome', labelNames: ['outcome'], registers }),
    upstream429: new Counter({ name: 'llm_upstream_rate_limited_total', help: 'Upstream 429 answers', registers }),
    upstreamErrors: new Counter({ name: 'llm_upstream_errors_total', help: 'Upstream failures (5xx, connection, cut stream, timeout, mid_stream: after tokens reached the caller)', labelNames: ['kind'], registers }),
    retries: new Counter({ name: 'llm_upstream_retries_total', help: 'Retries before the first token', registers }),
    alerts: new Counter({
      name: 'llm_upstream_alerts_total',
      help: 'Provider refusals an operator must fix (reason: invalid_api_key, insufficient_quota); each opens the breaker',
      labelNames: ['reason'],
      registers,
    }),
    cacheLookups: new Counter({
      name: 'llm_cache_lookups_total',
      help: 'Calls that asked for the response cache, by result: hit (fresh, or a concurrent leader\'s answer), stale (expired, served while the upstream refuses), miss (the upstream answered), error (Redis unavailable: the upstream answered)',
      labelNames: ['result'],
      registers,
    }),
    cacheTokensSaved: new Counter({ name: 'llm_cache_tokens_saved_total', help: 'Tokens (prompt + completion) the upstream billed for answers later served from the cache', registers }),
    cacheFlights: new Counter({
      name: 'llm_cache_single_flight_total',
      help: 'Misses by single-flight role: led (called the upstream for every replica), followed (got the leader\'s answer), took_over (the leader vanished), timed_out / redis_unavailable (called the upstream alone)',
      labelNames: ['outcome'],
      registers,
    }),
  };
}

export type BrokerMetrics = ReturnType<typeof createBrokerMetrics>;
