// Summarises a peer's prom-client JSON (`/metrics.json`) into the brief's figures. Each figure is
// read from the metric the service really exports, by its exact name (services/llm-broker/src/
// metrics.ts, services/store/src/metrics.ts, services/orchestrator/src/metrics.ts,
// services/tool-service/src/invoke/metrics.ts): a figure is a number whenever its service answers
// (0 before anything happened), and null only when the metric is missing — a rename shows up there.
import type { PeerMetric } from './gateways/types';

type Labels = Record<string, string | number>;

/** The exact metric names the summaries read (kept in one place: a rename is one edit here). */
export const PEER_METRICS = {
  broker: {
    queueDepth: 'llm_queue_depth',
    inFlight: 'llm_in_flight',
    breakerState: 'llm_breaker_state',
    quotaShared: 'llm_quota_shared',
    liveReplicas: 'llm_live_replicas',
    effectiveLimit: 'llm_effective_limit',
    queueWait: 'llm_queue_wait_seconds',
    admissions: 'llm_admissions_total',
    refusals: 'llm_refusals_total',
    upstreamRequests: 'llm_upstream_requests_total',
    upstream429: 'llm_upstream_rate_limited_total',
    upstreamErrors: 'llm_upstream_errors_total',
    retries: 'llm_upstream_retries_total',
  },
  store: {
    queryTime: 'store_db_query_seconds',
    slowQueries: 'store_db_slow_queries_total',
    queryErrors: 'store_db_query_errors_total',
    poolInUse: 'store_db_pool_in_use',
    poolSize: 'store_db_pool_size',
    poolMax: 'store_db_pool_max',
    dbUp: 'store_db_up',
  },
  orchestrator: {
    activeRuns: 'orchestrator_active_runs',
    runsStarted: 'orchestrator_runs_started_total',
    runsEnded: 'orchestrator_runs_ended_total',
    runDuration: 'orchestrator_run_duration_seconds',
    takeovers: 'orchestrator_takeovers_total',
  },
  tools: {
    calls: 'tool_calls_total',
    refusals: 'tool_refusals_total',
    cache: 'tool_cache_total',
    latency: 'tool_call_duration_seconds',
  },
} as const;

/** Sum of a counter's or gauge's values (optionally only the series whose labels match); null when absent. */
export function sumOf(metrics: PeerMetric[], name: string, where?: (l: Labels) => boolean): number | null {
  const m = metrics.find((x) => x.name === name && (x.type === 'counter' || x.type === 'gauge'));
  if (!m) return null;
  let total = 0;
  for (const v of m.values) if (!where || where(v.labels)) total += Number(v.value) || 0;
  return total;
}

/** A gauge's or counter's values by one label. */
function byLabel(metrics: PeerMetric[], name: string, label: string): Record<string, number> | null {
  const m = metrics.find((x) => x.name === name);
  if (!m) return null;
  const out: Record<string, number> = {};
  for (const v of m.values) {
    const k = String(v.labels[label] ?? '');
    out[k] = (out[k] ?? 0) + (Number(v.value) || 0);
  }
  return out;
}

export interface HistogramSummary {
  count: number;
  avg: number;
  p95: number;
  p99: number;
}

/**
 * Average and quantiles of a histogram (all label sets merged), in its unit. Quantiles interpolate
 * linearly inside the bucket, like Prometheus's histogram_quantile.
 */
export function histogramOf(metrics: PeerMetric[], name: string): HistogramSummary | null {
  const m = metrics.find((x) => x.name === name && x.type === 'histogram');
  if (!m) return null;
  let count = 0;
  let sum = 0;
  const buckets = new Map<number, number>();
  for (const v of m.values) {
    const metricName = v.metricName ?? '';
    if (metricName.endsWith('_count')) count += Number(v.value) || 0;
    else if (metricName.endsWith('_sum')) sum += Number(v.value) || 0;
    else if (metricName.endsWith('_bucket')) {
      const le = v.labels['le'];
      const bound = le === '+Inf' ? Infinity : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + (Number(v.value) || 0));
    }
  }
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const quantile = (q: number) => {
    if (count === 0) return 0;
    const target = q * count;
    let prevBound = 0;
    let prevCum = 0;
    for (const [bound, cum] of sorted) {
      if (cum >= target) {
        if (!Number.isFinite(bound)) return prevBound; // past the last finite bucket: its bound
        const inBucket = cum - prevCum;
        return inBucket > 0 ? prevBound + ((bound - prevBound) * (target - prevCum)) / inBucket : bound;
      }
      prevBound = bound;
      prevCum = cum;
    }
    return prevBound;
  };
  return { count, avg: count ? sum / count : 0, p95: quantile(0.95), p99: quantile(0.99) };
}

const ms = (h: HistogramSummary | null) =>
  h ? { count: h.count, avg: round(h.avg * 1000), p95: round(h.p95 * 1000), p99: round(h.p99 * 1000) } : null;

export function brokerSummary(m: PeerMetric[]) {
  const n = PEER_METRICS.broker;
  const limits = byLabel(m, n.effectiveLimit, 'limit');
  // Upstream attempts = final outcomes + retries; failed attempts = errors + 429s.
  const requests = sumOf(m, n.upstreamRequests);
  const retries = sumOf(m, n.retries) ?? 0;
  const errors = sumOf(m, n.upstreamErrors);
  const rateLimited = sumOf(m, n.upstream429);
  const attempts = requests === null ? null : requests + retries;
  const failed = errors === null && rateLimited === null ? null : (errors ?? 0) + (rateLimited ?? 0);
  return {
    queueLength: sumOf(m, n.queueDepth),
    inFlight: sumOf(m, n.inFlight),
    admissions: sumOf(m, n.admissions),
    refusals: sumOf(m, n.refusals),
    refusalsByReason: byLabel(m, n.refusals, 'reason'),
    upstreamRequests: requests,
    upstream429: rateLimited,
    upstreamErrors: errors,
    upstreamErrorRate: attempts === null || failed === null ? null : attempts > 0 ? round(Math.min(1, failed / attempts), 4) : 0,
    queueWaitMs: ms(histogramOf(m, n.queueWait)),
    /** The quota after adapting to the provider (0 = unlimited). */
    effectiveLimits: limits ? { rpm: limits['rpm'] ?? 0, tpm: limits['tpm'] ?? 0, concurrency: limits['concurrency'] ?? 0 } : null,
    quotaShared: sumOf(m, n.quotaShared),
    liveReplicas: sumOf(m, n.liveReplicas),
    breakerState: sumOf(m, n.breakerState),
  };
}

export function storeSummary(m: PeerMetric[]) {
  const n = PEER_METRICS.store;
  const inUse = sumOf(m, n.poolInUse);
  const max = sumOf(m, n.poolMax);
  return {
    queryTimeMs: ms(histogramOf(m, n.queryTime)),
    pool: {
      inUse,
      size: sumOf(m, n.poolSize),
      max,
      /** Checked-out connections against maxPoolSize, in percent (target < 80). */
      usagePercent: inUse !== null && max !== null ? (max > 0 ? round((inUse / max) * 100) : 0) : null,
    },
    slowQueries: sumOf(m, n.slowQueries),
    queryErrors: sumOf(m, n.queryErrors),
    up: sumOf(m, n.dbUp),
  };
}

export function orchestratorSummary(m: PeerMetric[]) {
  const n = PEER_METRICS.orchestrator;
  return {
    activeRuns: sumOf(m, n.activeRuns),
    runsStarted: sumOf(m, n.runsStarted),
    runsEnded: byLabel(m, n.runsEnded, 'outcome'),
    runDurationMs: ms(histogramOf(m, n.runDuration)),
    takeovers: sumOf(m, n.takeovers),
  };
}

export function toolSummary(m: PeerMetric[]) {
  const n = PEER_METRICS.tools;
  const cache = byLabel(m, n.cache, 'result');
  const hits = cache?.['hit'] ?? 0;
  const lookups = hits + (cache?.['miss'] ?? 0);
  return {
    calls: sumOf(m, n.calls),
    callsByOutcome: byLabel(m, n.calls, 'outcome'),
    refusals: sumOf(m, n.refusals),
    cacheHitRate: cache === null ? null : lookups > 0 ? round(hits / lookups, 4) : 0,
    latencyMs: ms(histogramOf(m, n.latency)),
  };
}

/** Process figures every prom-client registry carries by default. */
export function processSummary(m: PeerMetric[]) {
  return {
    rssBytes: sumOf(m, 'process_resident_memory_bytes'),
    heapUsedBytes: sumOf(m, 'nodejs_heap_size_used_bytes'),
    cpuSecondsTotal: sumOf(m, 'process_cpu_seconds_total'),
    eventLoopLagP99Seconds: sumOf(m, 'nodejs_eventloop_lag_p99_seconds'),
  };
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
