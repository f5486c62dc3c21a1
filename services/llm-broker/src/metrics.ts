// The broker's Prometheus metrics (served on METRICS_PORT by main.ts). Everything about one
// upstream carries its name (`upstream`, from LLM_UPSTREAMS; `default` for the single upstream of
// LLM_BASE_URL), after the metric's own label: sum over it for the replica's totals.
import { Counter, Gauge, Histogram, type Registry } from '@agent-mesh/common';

/** What the gauges read of one upstream when scraped. */
export interface UpstreamGauges {
  name: string;
  queueDepth(): number;
  owedCalls(): number;
  inFlight(): number;
  breakerState(): number;
  /** `otpm`: output tokens limited on their own (0: none). */
  effectiveLimits(): { rpm: number; tpm: number; otpm: number; concurrency: number };
  /** The pacing's bucket: LLM_QUOTA_BURST_FRACTION, halved by each burst the provider refused. */
  burstFraction(): number;
  sharedQuota(): boolean;
  liveReplicas(): number;
  departedReplicas(): number;
}

export interface BrokerGauges {
  upstreams(): UpstreamGauges[];
}

/** Every result of a response-cache lookup (`llm_cache_lookups_total{result}`). */
export const CACHE_LOOKUP_RESULTS = ['hit', 'stale', 'miss', 'error'] as const;
export type CacheLookupResult = (typeof CACHE_LOOKUP_RESULTS)[number];

/**
 * `upstreams` names every configured upstream: the series labelled only by it start at 0, so that
 * a rate over them (429s, retries) is 0 rather than absent before the first event (Prometheus'
 * advice for known label values). The cache's lookups start at 0 for every result likewise (the
 * dashboard's hit rate reads them).
 */
export function createBrokerMetrics(registry: Registry, gauges: BrokerGauges, upstreams: readonly string[]) {
  const registers = [registry];
  const gauge = (name: string, help: string, collect: (g: Gauge) => void, labelNames: string[] = []) =>
    new Gauge({ name, help, registers, labelNames, collect(this: Gauge) { collect(this); } });
  const each = (read: (u: UpstreamGauges) => number) => (g: Gauge) => {
    for (const u of gauges.upstreams()) g.set({ upstream: u.name }, read(u));
  };
  const up = ['upstream'];
  gauge('llm_queue_depth', 'Calls waiting in this replica\'s LLM queue of the upstream', each((u) => u.queueDepth()), up);
  gauge(
    'llm_queue_owed_calls',
    'This replica\'s share of the later calls that the agent runs begun on any replica sharing the quota still owe the upstream and are expected to make (a run\'s further agents\' calls, a revision\'s): a first call queued here is told it waits behind them',
    each((u) => u.owedCalls()),
    up,
  );
  gauge('llm_in_flight', 'Upstream calls in flight from this replica', each((u) => u.inFlight()), up);
  gauge('llm_breaker_state', 'Upstream circuit breaker: 0 closed, 1 half-open, 2 open', each((u) => u.breakerState()), up);
  gauge('llm_quota_shared', '1 while the upstream\'s quota is shared through Redis, 0 on the local fallback share', each((u) => (u.sharedQuota() ? 1 : 0)), up);
  gauge('llm_live_replicas', 'Broker replicas sharing the upstream\'s quota (from heartbeats)', each((u) => u.liveReplicas()), up);
  gauge('llm_departed_replicas', 'Replicas gone from the heartbeats without leaving, whose shares of the upstream\'s quota the live ones keep free for LLM_QUOTA_DEPARTED_HOLD_MS (they may be cut off from Redis, admitting on their local shares)', each((u) => u.departedReplicas()), up);
  gauge('llm_effective_limit', 'Effective quota of the upstream after adapting to the provider (0 = unlimited; otpm: output tokens limited on their own, 0 = none, tpm then counting input and output)', (g) => {
    for (const u of gauges.upstreams()) {
      const l = u.effectiveLimits();
      g.set({ limit: 'rpm', upstream: u.name }, l.rpm);
      g.set({ limit: 'tpm', upstream: u.name }, l.tpm);
      g.set({ limit: 'otpm', upstream: u.name }, l.otpm);
      g.set({ limit: 'concurrency', upstream: u.name }, l.concurrency);
    }
  }, ['limit', 'upstream']);
  gauge('llm_quota_burst_fraction', 'Share of each RPM and TPM limit this replica lets go to the upstream at once (LLM_QUOTA_BURST_FRACTION, halved by each burst the provider refused with its minute not used up)', each((u) => u.burstFraction()), up);
  const metrics = {
    queueWait: new Histogram({
      name: 'llm_queue_wait_seconds',
      help: 'Time from entering the queue to admission',
      buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      labelNames: up,
      registers,
    }),
    admissions: new Counter({ name: 'llm_admissions_total', help: 'Calls admitted to the upstream', labelNames: up, registers }),
    refusals: new Counter({ name: 'llm_refusals_total', help: 'Admission refusals by reason (queue and quota)', labelNames: ['reason', 'upstream'], registers }),
    tokens: new Counter({ name: 'llm_tokens_total', help: 'Tokens reserved against the TPM (reserved; input tokens only where output tokens are limited apart) and against the OTPM (reserved_output), settled (what the limits count of what was billed, input and output), refunded (reserved of both less settled), and of the prompts billed those the provider read from its prompt cache (cache_read; not in settled where the provider leaves them out of its input limit, as Anthropic does) and wrote to it (cache_write)', labelNames: ['kind', 'upstream'], registers }),
    upstreamRequests: new Counter({ name: 'llm_upstream_requests_total', help: 'Upstream HTTP requests by outcome and API (chat: chat completions and messages; embeddings)', labelNames: ['outcome', 'upstream', 'api'], registers }),
    upstream429: new Counter({ name: 'llm_upstream_rate_limited_total', help: 'Upstream 429 answers', labelNames: up, registers }),
    upstreamErrors: new Counter({ name: 'llm_upstream_errors_total', help: 'Upstream failures (5xx, connection, cut stream, timeout, mid_stream: after tokens reached the caller)', labelNames: ['kind', 'upstream'], registers }),
    retries: new Counter({ name: 'llm_upstream_retries_total', help: 'Retries before the first token', labelNames: up, registers }),
    alerts: new Counter({
      name: 'llm_upstream_alerts_total',
      help: 'Provider refusals an operator must fix (reason: invalid_api_key, insufficient_quota); each opens the breaker',
      labelNames: ['reason', 'upstream'],
      registers,
    }),
    fallbacks: new Counter({
      name: 'llm_upstream_fallbacks_total',
      help: 'Calls passed over from this upstream to the next of LLM_UPSTREAMS, by reason (breaker_open, queue_wait: its estimated wait ends after the call\'s deadline, or a refusal before any token: deadline_unreachable, queue_full, upstream_rate_limited, upstream_error, model_not_found)',
      labelNames: ['reason', 'upstream'],
      registers,
    }),
    cacheLookups: new Counter({
      name: 'llm_cache_lookups_total',
      help: 'Calls that asked for the response cache, by result: hit (fresh, or a concurrent leader\'s answer), stale (expired, served while the upstream refuses), miss (the upstream answered), error (Redis unavailable: the upstream answered)',
      labelNames: ['result'],
      registers,
    }),
    cacheTokensSaved: new Counter({ name: 'llm_cache_tokens_saved_total', help: 'Tokens (prompt + completion) the upstream billed for answers later served from the cache, and the tokens of embeddings inputs whose vectors came from it', registers }),
    cacheEmbeddingInputs: new Counter({
      name: 'llm_cache_embedding_inputs_total',
      help: 'Embeddings inputs of calls that asked for the response cache, by result: hit (the vector came from the cache), stale (an expired vector, served while every upstream refuses), miss (the upstream embedded it), error (Redis unavailable: the upstream embedded it)',
      labelNames: ['result'],
      registers,
    }),
    cacheFlights: new Counter({
      name: 'llm_cache_single_flight_total',
      help: 'Misses (of a chat, or of an embeddings call\'s inputs not found) by single-flight role: led (called the upstream for every replica), followed (got the leader\'s answer), took_over (the leader vanished), timed_out / redis_unavailable (called the upstream alone)',
      labelNames: ['outcome'],
      registers,
    }),
  };
  for (const upstream of upstreams) {
    metrics.queueWait.zero({ upstream });
    for (const c of [metrics.admissions, metrics.upstream429, metrics.retries]) c.inc({ upstream }, 0);
  }
  for (const result of CACHE_LOOKUP_RESULTS) metrics.cacheLookups.inc({ result }, 0);
  for (const result of ['hit', 'stale', 'miss', 'error']) metrics.cacheEmbeddingInputs.inc({ result }, 0);
  return metrics;
}

export type BrokerMetrics = ReturnType<typeof createBrokerMetrics>;
