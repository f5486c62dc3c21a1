// Per-tool Prometheus metrics.
import { Counter, Gauge, Histogram, type Registry } from '@agent-mesh/common';

/** What the gauges read of one tool's limiter when scraped (a GlobalLimiter). */
export interface ToolLimitState {
  readonly mode: 'shared' | 'local';
  readonly liveReplicas: number;
  readonly departedReplicas: number;
}

export class ToolMetrics {
  readonly calls: Counter<'tool' | 'outcome'>;
  readonly executions: Counter<'tool'>;
  readonly cache: Counter<'tool' | 'result'>;
  readonly merges: Counter<'tool' | 'scope'>;
  readonly refusals: Counter<'tool' | 'reason'>;
  readonly breakerState: Gauge<'tool'>;
  readonly latency: Histogram<'tool' | 'outcome'>;
  readonly prewarm: Counter<'tool' | 'result'>;
  readonly corpusDocuments: Gauge<'source'>;

  constructor(private readonly registry: Registry) {
    const registers = [registry];
    this.calls = new Counter({ name: 'tool_calls_total', help: 'Tool calls by outcome (ok, cached, degraded, invalid_arguments, unknown_tool, timeout, rate_limited, failed)', labelNames: ['tool', 'outcome'], registers });
    this.executions = new Counter({ name: 'tool_executions_total', help: 'Real executions of a tool (calls that were not answered from cache or merged)', labelNames: ['tool'], registers });
    this.cache = new Counter({ name: 'tool_cache_total', help: 'Cache lookups by result (hit, miss)', labelNames: ['tool', 'result'], registers });
    this.merges = new Counter({ name: 'tool_singleflight_merges_total', help: 'Calls served by an identical call already running (scope: local process or another replica)', labelNames: ['tool', 'scope'], registers });
    this.refusals = new Counter({ name: 'tool_refusals_total', help: 'Calls refused by reason (concurrency, rpm, paused, breaker_open)', labelNames: ['tool', 'reason'], registers });
    this.breakerState = new Gauge({ name: 'tool_breaker_state', help: 'Breaker state: 0 closed, 1 half-open, 2 open', labelNames: ['tool'], registers });
    this.latency = new Histogram({ name: 'tool_call_duration_seconds', help: 'Tool call latency as the caller sees it', labelNames: ['tool', 'outcome'], buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20], registers });
    this.prewarm = new Counter({ name: 'tool_prewarm_total', help: 'Pre-warming attempts by result (filled, fresh, refused, failed)', labelNames: ['tool', 'result'], registers });
    this.corpusDocuments = new Gauge({ name: 'tool_search_corpus_documents', help: 'Documents in the local search index by source', labelNames: ['source'], registers });
  }

  /** Gauges of each tool's limits as shared through Redis (read from its limiter at each scrape). */
  watchLimits(limiters: ReadonlyMap<string, ToolLimitState>): void {
    const gauge = (name: string, help: string, read: (l: ToolLimitState) => number) =>
      new Gauge({
        name, help, labelNames: ['tool'], registers: [this.registry],
        collect(this: Gauge<'tool'>) {
          for (const [tool, l] of limiters) this.set({ tool }, read(l));
        },
      });
    gauge('tool_limits_shared', "1 while the tool's limits are shared through Redis, 0 on this replica's local share (Redis unreachable)", (l) => (l.mode === 'shared' ? 1 : 0));
    gauge('tool_live_replicas', "tool-service replicas sharing the tool's limits (from heartbeats)", (l) => l.liveReplicas);
    gauge('tool_departed_replicas', "Replicas gone from the heartbeats without leaving, whose shares of the tool's limits the live ones keep free for TOOL_QUOTA_DEPARTED_HOLD_MS", (l) => l.departedReplicas);
  }
}
