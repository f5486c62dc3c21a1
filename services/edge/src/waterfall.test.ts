// The web UI's waterfall (public/waterfall.js, a browser module with no DOM code): span tree → rows.
import { formatDuration, serviceSummary, waterfallRows } from '../public/waterfall.js';

const span = (spanId: string, parentSpanId: string | null, service: string, startMs: number, durationMs: number, error = false) =>
  ({ spanId, parentSpanId, service, name: `op ${spanId}`, startMs, durationMs, error });

const trace = {
  durationMs: 100,
  spans: [
    span('c2', 'root', 'orchestrator', 50, 40),
    span('root', null, 'edge', 0, 100),
    span('g1', 'c1', 'store', 12, 3, true),
    span('c1', 'root', 'orchestrator', 10, 30),
    span('orphan', 'gone', 'llm-broker', 60, 0.25),
  ],
};

test('rows in tree order: each span under its parent, siblings by start; orphans as roots', () => {
  const rows = waterfallRows(trace);
  expect(rows.map((r) => [r.spanId, r.depth, r.children])).toEqual([
    ['root', 0, 2], ['c1', 1, 1], ['g1', 2, 0], ['c2', 1, 0], ['orphan', 0, 0],
  ]);
});

test('bars are placed as percentages of the trace, with a visible minimum width', () => {
  const rows = Object.fromEntries(waterfallRows(trace).map((r) => [r.spanId, r]));
  expect([rows.root!.leftPct, rows.root!.widthPct]).toEqual([0, 100]);
  expect([rows.c1!.leftPct, rows.c1!.widthPct]).toEqual([10, 30]);
  expect(rows.g1!.error).toBe(true);
  expect(rows.orphan!.widthPct).toBeCloseTo(0.3);
  // A bar never runs past the end.
  const late = waterfallRows({ durationMs: 10, spans: [span('x', null, 'edge', 9.9, 0)] })[0]!;
  expect(late.leftPct + late.widthPct).toBeLessThanOrEqual(100);
});

test('a cycle or a self-parent in broken data shows each span once', () => {
  const rows = waterfallRows({ durationMs: 5, spans: [span('a', 'b', 'edge', 0, 1), span('b', 'a', 'edge', 1, 1), span('s', 's', 'store', 2, 1)] });
  expect(rows.map((r) => r.spanId).sort()).toEqual(['a', 'b', 's']);
  expect(waterfallRows({ durationMs: 0, spans: [] })).toEqual([]);
});

test('per service: spans and busy time with overlaps counted once, in the order a run passes them', () => {
  expect(serviceSummary(trace)).toEqual([
    { service: 'edge', spans: 1, busyMs: 100 },
    { service: 'orchestrator', spans: 2, busyMs: 70 },
    { service: 'llm-broker', spans: 1, busyMs: 0.25 },
    { service: 'store', spans: 1, busyMs: 3 },
  ]);
});

test('durations for people', () => {
  expect(formatDuration(0.25)).toBe('250 µs');
  expect(formatDuration(3.456)).toBe('3.5 ms');
  expect(formatDuration(250)).toBe('250 ms');
  expect(formatDuration(1234)).toBe('1.23 s');
});
