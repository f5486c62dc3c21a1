import { runTraceOf, traceHasRun, traceView, type JaegerTrace } from './jaeger';

const RUN = '11111111-2222-4333-8444-555555555555';
const OTHER = '99999999-2222-4333-8444-555555555555';

function trace(id: string, t0: number, spans: { id: string; parent?: string; p: string; start: number; dur: number; run?: string; error?: boolean }[]): JaegerTrace {
  return {
    traceID: id,
    processes: { p1: { serviceName: 'edge' }, p2: { serviceName: 'orchestrator' }, p3: { serviceName: 'store' } },
    spans: spans.map((s) => ({
      traceID: id,
      spanID: s.id,
      operationName: `op-${s.id}`,
      references: s.parent ? [{ refType: 'CHILD_OF', traceID: id, spanID: s.parent }] : [],
      startTime: t0 + s.start,
      duration: s.dur,
      tags: [...(s.run ? [{ key: 'mesh.run_id', type: 'string', value: s.run }] : []), ...(s.error ? [{ key: 'error', type: 'bool', value: true }] : [])],
      processID: s.p,
    })),
  };
}

const T0 = 1_700_000_000_000_000;
const own = trace('a'.repeat(32), T0, [
  { id: 's2', parent: 's1', p: 'p2', start: 1_000, dur: 5_000, run: RUN },
  { id: 's1', p: 'p1', start: 0, dur: 9_000 },
  { id: 's3', parent: 's2', p: 'p3', start: 2_000, dur: 500, error: true },
  { id: 's4', parent: 'not-exported', p: 'p3', start: 3_000, dur: 100 },
]);

test('a trace is the run\'s only when one of its spans carries the run id', () => {
  expect(traceHasRun(own, RUN)).toBe(true);
  expect(traceHasRun(own, OTHER)).toBe(false);
});

test('the run\'s trace among several found is the one that began first', () => {
  const cancel = trace('b'.repeat(32), T0 + 50_000, [{ id: 'c1', p: 'p1', start: 0, dur: 10, run: RUN }]);
  const other = trace('c'.repeat(32), T0 - 50_000, [{ id: 'o1', p: 'p1', start: 0, dur: 10, run: OTHER }]);
  expect(runTraceOf([cancel, other, own], RUN)?.traceID).toBe(own.traceID);
  expect(runTraceOf([other], RUN)).toBeUndefined();
});

test('the view: ms from the first span, services by process, parents only when in the trace, errors', () => {
  const v = traceView(own, RUN);
  expect(v).toMatchObject({ traceId: own.traceID, runId: RUN, durationMs: 9, services: ['edge', 'orchestrator', 'store'], truncated: false });
  expect(v.startedAt).toBe(new Date(T0 / 1000).toISOString());
  expect(v.spans.map((s) => [s.spanId, s.parentSpanId, s.service, s.startMs, s.durationMs, s.error])).toEqual([
    ['s1', null, 'edge', 0, 9, false],
    ['s2', 's1', 'orchestrator', 1, 5, false],
    ['s3', 's2', 'store', 2, 0.5, true],
    ['s4', null, 'store', 3, 0.1, false],
  ]);
});
