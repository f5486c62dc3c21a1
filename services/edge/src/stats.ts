// The edge's own measurements: Prometheus metrics (for /metrics) and a short rolling window of
// request outcomes (for /api/metrics: RPS, response-time percentiles, error and timeout rates).
import { Counter, Gauge, Histogram, TERMINAL_EVENTS, createRegistry, type Registry } from '@agent-mesh/common';

const WINDOW_S = 60;
const SAMPLE_CAP = 2_048;
const TOP_SPENDERS = 5;

export class EdgeStats {
  readonly registry: Registry;
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly durations: Histogram<'method' | 'route' | 'status'>;
  readonly active: Gauge;
  readonly openStreams: Gauge;
  readonly sseQueue: Gauge;
  readonly sseOverflows: Counter;
  readonly sseRefused: Counter<'reason'>;
  readonly rateLimited: Counter;
  readonly budgetRefusals: Counter<'budget'>;
  readonly runDurations: Histogram<'outcome'>;

  /** Per-second buckets of [requests, errors (5xx), timeouts (504)] over the last minute. */
  private readonly buckets = new Map<number, [number, number, number]>();
  private readonly registers: Registry[];
  private readonly samples: number[] = [];
  private readonly runSamples: number[] = [];
  private totalRequests = 0;

  constructor(
    private readonly now: () => number = Date.now,
    /** Today's largest per-user token totals (the budgets' ranking). */
    topSpenders?: (count: number) => Promise<number[]>,
    /** The process's registry, when others (the inline broker's metrics) share it. */
    registry?: Registry,
  ) {
    this.registry = registry ?? createRegistry('edge');
    const registers = (this.registers = [this.registry]);
    this.requests = new Counter({ name: 'edge_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers });
    this.durations = new Histogram({
      name: 'edge_http_request_duration_seconds',
      help: 'HTTP response time (streams: until the stream ends)',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 90, 180],
      registers,
    });
    this.active = new Gauge({ name: 'edge_http_requests_active', help: 'requests being served (open streams included)', registers });
    this.openStreams = new Gauge({ name: 'edge_sse_open_streams', help: 'open SSE streams', registers });
    this.sseQueue = new Gauge({ name: 'edge_sse_queue_length', help: 'clients holding a queue token of the SSE limiter', registers });
    this.sseOverflows = new Counter({ name: 'edge_sse_overflows_total', help: 'streams closed because the client fell behind', registers });
    this.sseRefused = new Counter({ name: 'edge_sse_refused_total', help: 'streams refused by the SSE limiter', labelNames: ['reason'], registers });
    this.rateLimited = new Counter({ name: 'edge_rate_limited_total', help: 'requests refused by the per-user limit', registers });
    this.budgetRefusals = new Counter({ name: 'edge_budget_refusals_total', help: 'runs and /v1 calls refused because the user\'s token budget was used up', labelNames: ['budget'], registers });
    if (topSpenders) {
      // Ranks, never user ids: the label set stays bounded and says nothing about who.
      new Gauge({
        name: 'edge_budget_top_spender_tokens',
        help: "tokens used today by the users spending most, by rank (1 = largest); user ids are not exported",
        labelNames: ['rank'],
        registers,
        async collect() {
          const top = await topSpenders(TOP_SPENDERS).catch(() => [] as number[]);
          this.reset();
          top.forEach((v, i) => this.set({ rank: String(i + 1) }, v));
        },
      });
    }
    this.runDurations = new Histogram({
      name: 'edge_run_duration_seconds',
      help: 'time from a user message to its run terminal event',
      labelNames: ['outcome'],
      buckets: [1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300],
      registers,
    });
    // Every outcome's series from 0: a rate over the first run's sample is then its increase, not
    // nothing (a series that appears at 1 has no increase for rate() to see).
    for (const outcome of TERMINAL_EVENTS) this.runDurations.zero({ outcome });
  }

  /** Exports how many background responses (the Responses API's `background: true`) run in this edge, as `running()` says at each scrape. */
  countBackground(running: () => number): void {
    new Gauge({
      name: 'edge_background_responses',
      help: 'background responses (Responses API, background: true) whose call runs in this edge',
      registers: this.registers,
      collect() {
        this.set(running());
      },
    });
  }

  /** Records a finished request (route = the route pattern, never the raw URL). */
  observe(method: string, route: string, statusCode: number, seconds: number, isStream: boolean): void {
    const labels = { method, route, status: String(statusCode) };
    this.requests.inc(labels);
    this.durations.observe(labels, seconds);
    this.totalRequests += 1;
    const sec = Math.floor(this.now() / 1000);
    const b = this.buckets.get(sec) ?? [0, 0, 0];
    b[0] += 1;
    if (statusCode >= 500) b[1] += 1;
    if (statusCode === 504) b[2] += 1;
    this.buckets.set(sec, b);
    for (const k of this.buckets.keys()) if (k <= sec - WINDOW_S) this.buckets.delete(k);
    // Streams last as long as runs: their durations are the runs' response times, kept apart.
    if (!isStream) push(this.samples, seconds * 1000);
  }

  observeRun(outcome: string, ms: number): void {
    this.runDurations.observe({ outcome }, ms / 1000);
    push(this.runSamples, ms);
  }

  summary() {
    const sec = Math.floor(this.now() / 1000);
    let n = 0;
    let errors = 0;
    let timeouts = 0;
    for (const [k, b] of this.buckets) {
      if (k <= sec - WINDOW_S) continue;
      n += b[0];
      errors += b[1];
      timeouts += b[2];
    }
    return {
      total: this.totalRequests,
      lastMinute: n,
      rps: round(n / WINDOW_S, 3),
      errorRate: n ? round(errors / n, 4) : 0,
      timeoutRate: n ? round(timeouts / n, 4) : 0,
      responseTimeMs: percentiles(this.samples),
      runResponseTimeMs: percentiles(this.runSamples),
    };
  }
}

function push(arr: number[], v: number): void {
  arr.push(v);
  if (arr.length > SAMPLE_CAP) arr.splice(0, arr.length - SAMPLE_CAP);
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

export function percentiles(values: number[]): { count: number; avg: number; p50: number; p95: number; p99: number } {
  if (values.length === 0) return { count: 0, avg: 0, p50: 0, p95: 0, p99: 0 };
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  return {
    count: s.length,
    avg: round(s.reduce((a, b) => a + b, 0) / s.length, 2),
    p50: round(at(0.5), 2),
    p95: round(at(0.95), 2),
    p99: round(at(0.99), 2),
  };
}
