// Summarises a peer's prom-client JSON (`/metrics.json`) into the brief's figures. The services
// name their own metrics; these summaries match them by name pattern, so a renamed metric shows
// up as absent (null), never as an error.
import type { PeerMetric } from './gateways/types';

type Labels = Record<string, string | number>;

/** Sum of a counter's or gauge's values (optionally only the series whose labels match). */
export function sumOf(metrics: PeerMetric[], name: RegExp, where?: (l: Labels) => boolean): number | null {
  const found = metrics.filter((m) => name.test(m.name) && (m.type === 'counter' || m.type === 'gauge'));
  if (found.length === 0) return null;
  let total = 0;
  for (const m of found) for (const v of m.values) if (!where || where(v.labels)) total += Number(v.value) || 0;
  return total;
}

/** Average and quantiles (from buckets) of the histograms whose name matches, in their unit. */
export function histogramOf(metrics: PeerMetric[], name: RegExp): { count: number; avg: number; p95: number; p99: number } | null {
  const found = metrics.filter((m) => name.test(m.name) && m.type === 'histogram');
  if (found.length === 0) return null;
  let count = 0;
  let sum = 0;
  const buckets = new Map<number, number>();
  for (const m of found) {
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
  }
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const quantile = (q: number) => {
    if (count === 0) return 0;
    const target = q * count;
    let prevBound = 0;
    for (const [bound, cum] of sorted) {
      if (cum >= target) return Number.isFinite(bound) ? bound : prevBound;
      prevBound = bound;
    }
    return prevBound;
  };
  return { count, avg: count ? sum / count : 0, p95: quantile(0.95), p99: quantile(0.99) };
}

const isError = (l: Labels) =>
  Object.entries(l).some(([k, v]) => /status|outcome|result|code|reason/.test(k) && /error|fail|5\d\d|429|timeout|unavailable|refused/i.test(String(v)));

export function brokerSummary(m: PeerMetric[]) {
  const calls = sumOf(m, /(upstream|llm).*(requests|calls|completions)_total$/);
  const errors = sumOf(m, /(upstream|llm).*(errors|failures)_total$/) ?? sumOf(m, /(upstream|llm).*(requests|calls|completions)_total$/, isError);
  return {
    queueLength: sumOf(m, /queue_(depth|length|size)/),
    inFlight: sumOf(m, /(in_flight|inflight|active|concurrent)/),
    admissions: sumOf(m, /admi(ssions|tted)_total$/),
    refusals: sumOf(m, /refus(als|ed)_total$/),
    upstream429: sumOf(m, /(429|rate_limited)_total$/),
    upstreamErrorRate: calls && errors !== null ? Math.round((errors / calls) * 10_000) / 10_000 : null,
    queueWaitSeconds: histogramOf(m, /(queue_)?wait/),
    effectiveLimits: limitsOf(m),
    breakerOpen: sumOf(m, /breaker/),
  };
}

function limitsOf(m: PeerMetric[]): Record<string, number> | null {
  const out: Record<string, number> = {};
  for (const metric of m) {
    if (metric.type !== 'gauge' || !/limit/.test(metric.name)) continue;
    for (const v of metric.values) {
      const label = Object.entries(v.labels).filter(([k]) => k !== 'service').map(([k, val]) => `${k}=${val}`).join(',');
      out[label ? `${metric.name}{${label}}` : metric.name] = Number(v.value);
    }
  }
  return Object.keys(out).length ? out : null;
}

export function storeSummary(m: PeerMetric[]) {
  const q = histogramOf(m, /(db|mongo|query|store).*(duration|seconds|latency)/);
  const inUse = sumOf(m, /pool.*(checked_out|in_use|inuse|active|busy)/);
  const size = sumOf(m, /pool.*(max|size|total)/);
  return {
    queryTimeMs: q ? { count: q.count, avg: round(q.avg * 1000), p95: round(q.p95 * 1000), p99: round(q.p99 * 1000) } : null,
    pool: { inUse, size, usage: inUse !== null && size ? round(inUse / size, 4) : null },
    slowQueries: sumOf(m, /slow.*_total$/),
  };
}

/** Process figures every prom-client registry carries by default. */
export function processSummary(m: PeerMetric[]) {
  return {
    rssBytes: sumOf(m, /^process_resident_memory_bytes$/),
    heapUsedBytes: sumOf(m, /^nodejs_heap_size_used_bytes$/),
    cpuSecondsTotal: sumOf(m, /^process_cpu_seconds_total$/),
    eventLoopLagP99Seconds: sumOf(m, /^nodejs_eventloop_lag_p99_seconds$/),
  };
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
