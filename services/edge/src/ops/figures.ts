// The operations figures: the panels of the Grafana dashboard (deploy/grafana/agent-mesh.json),
// each with its PromQL queries and legends. This list is the whole allow-list of what the edge asks
// Prometheus on a user's behalf (GET /api/ops/figures): no query comes from the request. A unit test
// (figures.test.ts) keeps it equal to the dashboard's panels.

/** Grafana's unit names, as the dashboard uses them (the web UI formats values by them). */
export type FigureUnit = 'short' | 's' | 'reqps' | 'ops' | 'percentunit' | 'currencyUSD';

export interface FigureQuery {
  expr: string;
  /** Grafana's legend format: `{{label}}` is replaced by the series' label value. */
  legend: string;
}

export interface Figure {
  /** Stable id (the panel's title in snake case). */
  id: string;
  title: string;
  unit: FigureUnit;
  queries: FigureQuery[];
}

export const FIGURES: readonly Figure[] = [
  {
    id: 'replicas_up',
    title: 'Replicas up',
    unit: 'short',
    queries: [
      { expr: 'sum by (job) (up{job=~"edge|orchestrator|llm-broker|tool-service|store"})', legend: '{{job}}' },
    ],
  },
  {
    id: 'run_time',
    title: 'Run time',
    unit: 's',
    queries: [
      { expr: 'mesh:run_duration_seconds:avg5m', legend: 'avg' },
      { expr: 'mesh:run_duration_seconds:p95_5m', legend: 'p95' },
      { expr: 'mesh:run_duration_seconds:p99_5m', legend: 'p99' },
      { expr: 'instance:run_duration_seconds:p95_5m', legend: 'p95 {{instance}}' },
    ],
  },
  {
    id: 'requests_per_second',
    title: 'Requests per second',
    unit: 'reqps',
    queries: [
      { expr: 'mesh:edge_requests:rate1m', legend: 'total' },
      { expr: 'instance:edge_requests:rate1m', legend: '{{instance}}' },
    ],
  },
  {
    id: 'active_and_queued_requests',
    title: 'Active and queued requests',
    unit: 'short',
    queries: [
      { expr: 'mesh:edge_requests_active:sum', legend: 'active' },
      { expr: 'mesh:edge_requests_queued:sum', legend: 'queued (SSE limiter)' },
      { expr: 'sum by (instance) (edge_http_requests_active)', legend: 'active {{instance}}' },
    ],
  },
  {
    id: 'errors_and_timeouts',
    title: 'Errors and timeouts',
    unit: 'percentunit',
    queries: [
      { expr: 'mesh:edge_request_errors:ratio_rate5m', legend: '5xx' },
      { expr: 'mesh:edge_request_timeouts:ratio_rate5m', legend: '504' },
      { expr: 'mesh:run_failures:ratio_rate5m', legend: 'runs failed' },
    ],
  },
  {
    id: 'run_outcomes',
    title: 'Run outcomes',
    unit: 'ops',
    queries: [
      { expr: 'mesh:runs_ended:rate5m', legend: '{{outcome}}' },
    ],
  },
  {
    id: 'active_runs',
    title: 'Active runs',
    unit: 'short',
    queries: [
      { expr: 'sum(orchestrator_active_runs)', legend: 'total' },
      { expr: 'sum by (instance) (orchestrator_active_runs)', legend: '{{instance}}' },
    ],
  },
  {
    id: 'llm_queue_vs_quota',
    title: 'LLM queue vs quota',
    unit: 'short',
    queries: [
      { expr: 'mesh:llm_queue_depth:sum', legend: 'queued' },
      { expr: 'sum by (instance) (llm_queue_depth)', legend: 'queued {{instance}}' },
      { expr: 'sum(llm_in_flight)', legend: 'in flight' },
      { expr: 'max(llm_effective_limit{limit="concurrency"})', legend: 'concurrency limit' },
    ],
  },
  {
    id: 'quota_utilisation',
    title: 'Quota utilisation',
    unit: 'percentunit',
    queries: [
      { expr: 'mesh:llm_quota_utilisation:ratio', legend: '{{limit}}' },
    ],
  },
  {
    id: 'tokens_per_minute',
    title: 'Tokens per minute',
    unit: 'short',
    queries: [
      { expr: 'mesh:llm_tokens_settled:rate1m_per_minute', legend: 'settled' },
      { expr: 'sum(rate(llm_tokens_total{kind="reserved"}[1m])) * 60', legend: 'reserved' },
      { expr: 'max(llm_effective_limit{limit="tpm"})', legend: 'TPM limit (0 = unlimited)' },
    ],
  },
  {
    id: 'upstream_429s_and_errors',
    title: 'Upstream 429s and errors',
    unit: 'short',
    queries: [
      { expr: 'mesh:llm_upstream_rate_limited:increase5m', legend: '429s in 5 min' },
      { expr: 'sum by (kind) (increase(llm_upstream_errors_total[5m]))', legend: 'errors {{kind}}' },
      { expr: 'sum by (api, outcome) (increase(llm_upstream_requests_total[5m]))', legend: '{{api}} requests {{outcome}}' },
      { expr: 'sum by (reason) (increase(llm_upstream_alerts_total[5m]))', legend: 'account refused: {{reason}}' },
    ],
  },
  {
    id: 'open_sse_streams',
    title: 'Open SSE streams',
    unit: 'short',
    queries: [
      { expr: 'mesh:edge_sse_open_streams:sum', legend: 'total' },
      { expr: 'sum by (instance) (edge_sse_open_streams)', legend: '{{instance}}' },
    ],
  },
  {
    id: 'store_query_time',
    title: 'Store query time',
    unit: 's',
    queries: [
      { expr: 'mesh:store_db_query_seconds:avg5m', legend: 'avg' },
      { expr: 'mesh:store_db_query_seconds:p95_5m', legend: 'p95' },
      { expr: 'histogram_quantile(0.95, sum by (op, le) (rate(store_db_query_seconds_bucket[5m])))', legend: 'p95 {{op}}' },
    ],
  },
  {
    id: 'db_pool_usage',
    title: 'DB pool usage',
    unit: 'percentunit',
    queries: [
      { expr: 'instance:store_db_pool:ratio', legend: '{{instance}}' },
    ],
  },
  {
    id: 'breakers',
    title: 'Breakers',
    unit: 'short',
    queries: [
      { expr: 'max by (instance) (llm_breaker_state)', legend: 'LLM {{instance}}' },
      { expr: 'max by (tool) (tool_breaker_state)', legend: 'tool {{tool}}' },
    ],
  },
  {
    id: 'cost_per_run',
    title: 'Cost per run',
    unit: 'currencyUSD',
    queries: [
      { expr: 'mesh:run_cost_usd:avg5m', legend: 'USD per run' },
      { expr: 'sum(rate(orchestrator_run_cost_usd_total[5m])) * 3600', legend: 'USD per hour' },
    ],
  },
  {
    id: 'cpu_per_replica',
    title: 'CPU per replica',
    unit: 'percentunit',
    queries: [
      { expr: 'instance:process_cpu:ratio_rate1m', legend: '{{job}} {{instance}}' },
    ],
  },
  {
    id: 'heap_per_replica',
    title: 'Heap per replica',
    unit: 'percentunit',
    queries: [
      { expr: 'instance:nodejs_heap:ratio', legend: '{{job}} {{instance}}' },
    ],
  },
  {
    id: 'llm_cache_hit_rate',
    title: 'LLM cache hit rate',
    unit: 'percentunit',
    queries: [
      { expr: 'mesh:llm_cache_hit:ratio_rate5m', legend: 'answered from the cache' },
      { expr: 'sum(rate(llm_cache_lookups_total{result="stale"}[5m])) / sum(rate(llm_cache_lookups_total[5m]))', legend: 'of which stale' },
      { expr: 'mesh:llm_cache_embedding_hit:ratio_rate5m', legend: 'embeddings inputs from the cache' },
    ],
  },
  {
    id: 'llm_cache_tokens_saved',
    title: 'LLM cache tokens saved',
    unit: 'short',
    queries: [
      { expr: 'mesh:llm_cache_tokens_saved:rate5m_per_minute', legend: 'tokens saved per minute' },
    ],
  },
  {
    id: 'limits_shared_through_redis',
    title: 'Limits shared through Redis',
    unit: 'short',
    queries: [
      { expr: 'min by (job, instance) (llm_quota_shared)', legend: 'LLM quota {{job}} {{instance}}' },
      { expr: 'min by (instance) (tool_limits_shared)', legend: 'tool limits {{instance}}' },
      { expr: 'max(llm_departed_replicas)', legend: 'departed brokers' },
      { expr: 'max(tool_departed_replicas)', legend: 'departed tool-services' },
      { expr: 'sum by (instance) (rate(edge_rate_limit_local_decisions_total[1m]))', legend: 'request limits decided locally /s {{instance}}' },
    ],
  },
];

/** A series' name from its legend format and labels (Grafana's `{{name}}` templating). */
export function seriesName(legend: string, labels: Record<string, string>): string {
  const name = legend.replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, (_, k: string) => labels[k] ?? '');
  return name.trim() || Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(', ') || 'value';
}
