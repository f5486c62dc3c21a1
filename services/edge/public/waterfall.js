// A trace as waterfall rows (pure: no DOM, unit-tested in services/edge/src/waterfall.test.ts).
// Input: the edge's trace (GET /api/runs/:runId/trace: spans with parentSpanId, service, name,
// startMs from the trace's first span, durationMs, error). Output: one row per span in tree order
// (each span under its parent, siblings by start time), with its depth and its bar's place as a
// percentage of the trace's length.

/** The services in the order a run passes them (others after, alphabetically). */
export const SERVICE_ORDER = ['edge', 'orchestrator', 'llm-broker', 'tool-service', 'store'];

/** Smallest bar, in percent, so a span of a few microseconds is still visible. */
const MIN_WIDTH_PCT = 0.3;

/**
 * @param {{durationMs: number, spans: {spanId: string, parentSpanId: string|null, service: string, name: string, startMs: number, durationMs: number, error: boolean}[]}} trace
 * @returns {{spanId: string, depth: number, service: string, name: string, startMs: number, durationMs: number, error: boolean, leftPct: number, widthPct: number, children: number}[]}
 */
export function waterfallRows(trace) {
  const spans = Array.isArray(trace?.spans) ? trace.spans : [];
  const ids = new Set(spans.map((s) => s.spanId));
  const end = Math.max(Number(trace?.durationMs) || 0, ...spans.map((s) => s.startMs + s.durationMs), 0);
  const total = end > 0 ? end : 1;
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    // A span whose parent is not in the trace (not exported, or left out) is drawn as a root.
    const parent = s.parentSpanId && s.parentSpanId !== s.spanId && ids.has(s.parentSpanId) ? s.parentSpanId : null;
    if (parent) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(s);
    } else {
      roots.push(s);
    }
  }
  const byStart = (a, b) => a.startMs - b.startMs || a.spanId.localeCompare(b.spanId);
  const rows = [];
  const seen = new Set();
  // Depth-first with an explicit stack: a trace can hold thousands of spans.
  const stack = roots.sort(byStart).reverse().map((s) => ({ s, depth: 0 }));
  for (;;) {
    if (!stack.length) {
      // Spans no root leads to (parents in a cycle, in broken data) are drawn as roots too.
      const left = spans.filter((s) => !seen.has(s.spanId)).sort(byStart);
      if (!left.length) break;
      stack.push({ s: left[0], depth: 0 });
    }
    const { s, depth } = stack.pop();
    if (seen.has(s.spanId)) continue; // a cycle in broken data: each span once
    seen.add(s.spanId);
    const kids = (children.get(s.spanId) ?? []).sort(byStart);
    const leftPct = clamp((s.startMs / total) * 100, 0, 100);
    const widthPct = clamp((s.durationMs / total) * 100, MIN_WIDTH_PCT, 100 - leftPct);
    rows.push({
      spanId: s.spanId, depth, service: s.service, name: s.name, startMs: s.startMs, durationMs: s.durationMs,
      error: Boolean(s.error), leftPct, widthPct, children: kids.length,
    });
    for (let i = kids.length - 1; i >= 0; i--) stack.push({ s: kids[i], depth: depth + 1 });
  }
  return rows;
}

/** Per service: spans and the time its spans cover (overlaps counted once), in SERVICE_ORDER. */
export function serviceSummary(trace) {
  const spans = Array.isArray(trace?.spans) ? trace.spans : [];
  const by = new Map();
  for (const s of spans) {
    if (!by.has(s.service)) by.set(s.service, []);
    by.get(s.service).push([s.startMs, s.startMs + s.durationMs]);
  }
  const rank = (name) => {
    const i = SERVICE_ORDER.indexOf(name);
    return i < 0 ? SERVICE_ORDER.length : i;
  };
  return [...by.entries()]
    .sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b))
    .map(([service, intervals]) => ({ service, spans: intervals.length, busyMs: unionLength(intervals) }));
}

function unionLength(intervals) {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let [from, to] = [-Infinity, -Infinity];
  for (const [a, b] of sorted) {
    if (a > to) {
      if (to > from) total += to - from;
      [from, to] = [a, b];
    } else if (b > to) {
      to = b;
    }
  }
  if (to > from && Number.isFinite(from)) total += to - from;
  return total;
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/** A duration for people: µs, ms or s. */
export function formatDuration(ms) {
  const v = Number(ms) || 0;
  if (v < 1) return `${Math.round(v * 1000)} µs`;
  if (v < 1000) return `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
  return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
}
