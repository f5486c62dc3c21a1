// Jaeger's query API (`/api/traces/<id>`, and a search by the run id tag), read by the edge for a
// run's trace, and the trace as the web UI's waterfall needs it. A trace is shown only when one of
// its spans carries the run's id (`mesh.run_id`): the caller owns the run (checked with the store
// first), so the trace shown is their run's, whatever trace id they asked for.
import { ATTR } from '@agent-mesh/common';
import { HttpError } from '../errors';

/** Jaeger's JSON trace (the query API's `data[]` items). */
export interface JaegerTrace {
  traceID: string;
  spans: {
    traceID: string;
    spanID: string;
    operationName: string;
    references?: { refType: string; traceID: string; spanID: string }[];
    /** Unix microseconds. */
    startTime: number;
    /** Microseconds. */
    duration: number;
    tags?: { key: string; type?: string; value: unknown }[];
    processID: string;
  }[];
  processes: Record<string, { serviceName: string }>;
}

export interface JaegerReader {
  /** The trace, or undefined when Jaeger has no span of it. */
  trace(traceId: string): Promise<JaegerTrace | undefined>;
  /** The traces with a span tagged with the run's id, started at `sinceMs` or later. */
  findRunTraces(runId: string, sinceMs: number): Promise<JaegerTrace[]>;
}

export const jaegerUnavailable = (why: string) =>
  new HttpError(503, 'jaeger_unavailable', `the tracing backend cannot be read: ${why}`, 5);

export function jaegerReader(baseUrl: string, timeoutMs = 5_000): JaegerReader {
  const get = async (pathAndQuery: string): Promise<{ status: number; data: JaegerTrace[] }> => {
    let res: Response;
    try {
      res = await fetch(`${baseUrl}${pathAndQuery}`, { signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw jaegerUnavailable((err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : 'not reachable');
    }
    const body = (await res.json().catch(() => undefined)) as { data?: JaegerTrace[] | null } | undefined;
    if (res.status === 404) return { status: 404, data: [] };
    if (!res.ok || !body) throw jaegerUnavailable(`HTTP ${res.status}`);
    return { status: res.status, data: body.data ?? [] };
  };
  return {
    async trace(traceId) {
      const { data } = await get(`/api/traces/${encodeURIComponent(traceId)}`);
      return data.find((t) => t.spans.length > 0);
    },
    async findRunTraces(runId, sinceMs) {
      const q = new URLSearchParams({
        service: 'orchestrator',
        tags: JSON.stringify({ [ATTR.runId]: runId }),
        start: String(Math.max(0, sinceMs - 60_000) * 1000),
        end: String((Date.now() + 60_000) * 1000),
        limit: '20',
      });
      return (await get(`/api/traces?${q}`)).data;
    },
  };
}

/** One span as the waterfall draws it; times in ms from the trace's first span. */
export interface TraceSpan {
  spanId: string;
  parentSpanId: string | null;
  service: string;
  name: string;
  startMs: number;
  durationMs: number;
  error: boolean;
}

export interface TraceView {
  traceId: string;
  runId: string;
  startedAt: string;
  durationMs: number;
  /** The services with spans in the trace, sorted. */
  services: string[];
  spans: TraceSpan[];
  /** More spans than MAX_SPANS: the latest were left out. */
  truncated: boolean;
}

export const MAX_SPANS = 5_000;

const tagOf = (span: JaegerTrace['spans'][number], key: string) => span.tags?.find((t) => t.key === key)?.value;

/** Whether one of the trace's spans carries the run's id. */
export function traceHasRun(t: JaegerTrace, runId: string): boolean {
  return t.spans.some((s) => tagOf(s, ATTR.runId) === runId);
}

/**
 * The trace of a run among those a search found: the first to begin (a run's own trace starts with
 * the request that started it; a later cancel or resume of the run is a trace of its own).
 */
export function runTraceOf(traces: JaegerTrace[], runId: string): JaegerTrace | undefined {
  const start = (t: JaegerTrace) => Math.min(...t.spans.map((s) => s.startTime));
  return traces.filter((t) => t.spans.length > 0 && traceHasRun(t, runId)).sort((a, b) => start(a) - start(b))[0];
}

/** Jaeger's trace as the web UI's waterfall reads it (spans by start time). */
export function traceView(t: JaegerTrace, runId: string): TraceView {
  const sorted = [...t.spans].sort((a, b) => a.startTime - b.startTime);
  const kept = sorted.slice(0, MAX_SPANS);
  const t0 = sorted[0]?.startTime ?? 0;
  const end = Math.max(t0, ...sorted.map((s) => s.startTime + s.duration));
  const ids = new Set(kept.map((s) => s.spanID));
  const spans = kept.map((s): TraceSpan => {
    const parent = s.references?.find((r) => r.refType === 'CHILD_OF' && r.traceID === s.traceID)?.spanID;
    const status = tagOf(s, 'otel.status_code');
    return {
      spanId: s.spanID,
      parentSpanId: parent && ids.has(parent) ? parent : null,
      service: t.processes[s.processID]?.serviceName ?? 'unknown',
      name: s.operationName,
      startMs: (s.startTime - t0) / 1000,
      durationMs: s.duration / 1000,
      error: tagOf(s, 'error') === true || status === 'ERROR',
    };
  });
  return {
    traceId: t.traceID,
    runId,
    startedAt: new Date(Math.floor(t0 / 1000)).toISOString(),
    durationMs: (end - t0) / 1000,
    services: [...new Set(spans.map((s) => s.service))].sort(),
    spans,
    truncated: sorted.length > kept.length,
  };
}
