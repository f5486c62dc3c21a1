// The ops routes' own logic against in-memory peers and fake Prometheus/Jaeger readers (the real
// ones: test/e2e/ops.test.ts): the ops scope, what is asked of Prometheus (the allow-list only),
// a refused query vs an unreachable Prometheus, the run's owner, a trace that is not the run's.
import { createLogger } from '@agent-mesh/common';
import { buildApp, type EdgeApp } from '../app';
import { devAuth, scopesOf, signToken } from '../auth';
import { FIGURES } from '../ops/figures';
import type { JaegerReader, JaegerTrace } from '../ops/jaeger';
import { prometheusUnavailable, PromQueryError, type PrometheusReader } from '../ops/prometheus';
import { memoryRequestLimiter } from '../ratelimit';
import { fakeGateways } from '../testing/fakes';

const SECRET = 'ops-unit-secret-of-sufficient-length';
const asked: string[] = [];
let promDown = false;
const prometheus: PrometheusReader = {
  async queryRange(expr, range) {
    if (promDown) throw prometheusUnavailable('not reachable');
    asked.push(expr);
    if (expr === FIGURES[1]!.queries[0]!.expr) throw new PromQueryError('parse error');
    return [{ labels: { instance: 'a:1' }, points: [[range.startS * 1000, 1], [range.endS * 1000, null]] }];
  },
};
const traces = new Map<string, JaegerTrace>();
const jaeger: JaegerReader = {
  async trace(id) { return traces.get(id); },
  async findRunTraces(runId) { return [...traces.values()].filter((t) => t.spans.some((s) => s.tags?.some((x) => x.value === runId))); },
};

async function edge(withBackends: boolean): Promise<{ e: EdgeApp; gw: ReturnType<typeof fakeGateways> }> {
  const gw = fakeGateways();
  const e = await buildApp({
    cfg: { auth: devAuth(SECRET), sse: { maxStreams: 10, heartbeatMs: 15_000, bufferMaxEvents: 100, bufferMaxBytes: 1 << 20, retryMs: 2000 }, maxMessageChars: 8000, bodyLimitBytes: 65_536, v1BodyLimitBytes: 1 << 20, corsOrigins: [], llmModel: 'upstream' },
    gateways: withBackends ? { ...gw, prometheus, jaeger } : gw,
    logger: createLogger('ops-test', 'silent'),
    requestLimiter: memoryRequestLimiter(0),
    publicDir: '/nonexistent',
  });
  await e.app.listen({ port: 0, host: '127.0.0.1' });
  return { e, gw };
}

const get = async (e: EdgeApp, url: string, sub = 'alice', scope?: string) => {
  const { port } = e.app.server.address() as { port: number };
  const res = await fetch(`http://127.0.0.1:${port}${url}`, { headers: { authorization: `Bearer ${signToken(SECRET, sub, scope ? { scope } : {})}` } });
  return { status: res.status, body: (await res.json()) as any };
};

let full: EdgeApp, bare: EdgeApp, gw: ReturnType<typeof fakeGateways>;
beforeAll(async () => {
  ({ e: full, gw } = await edge(true));
  ({ e: bare } = await edge(false));
});
afterAll(async () => {
  await full.app.close();
  await bare.app.close();
});

test("scopes come from `scope` (space-separated) or `scp` (array or string)", () => {
  expect([...scopesOf({ scope: 'read ops' })]).toEqual(['read', 'ops']);
  expect([...scopesOf({ scp: ['ops', 7] })]).toEqual(['ops']);
  expect([...scopesOf({ scp: 'ops' })]).toEqual(['ops']);
  expect([...scopesOf({ scope: 42 })]).toEqual([]);
});

describe('GET /api/ops/figures', () => {
  test('403 without the ops scope, 200 with it (among others)', async () => {
    expect((await get(full, '/api/ops/figures')).status).toBe(403);
    expect((await get(full, '/api/ops/figures', 'alice', 'read')).status).toBe(403);
    expect((await get(full, '/api/ops/figures', 'alice', 'read ops')).status).toBe(200);
  });

  test('asks Prometheus the dashboard\'s queries and nothing else; a refused query is that figure\'s error', async () => {
    asked.length = 0;
    const { status, body } = await get(full, '/api/ops/figures?window=1h', 'alice', 'ops');
    expect(status).toBe(200);
    expect(asked.sort()).toEqual(FIGURES.flatMap((f) => f.queries.map((q) => q.expr)).sort());
    expect(body.window).toBe('1h');
    expect(body.stepS).toBe(30);
    expect(Date.parse(body.end) - Date.parse(body.start)).toBe(3_600_000);
    expect(body.figures.map((f: { id: string }) => f.id)).toEqual(FIGURES.map((f) => f.id));
    const refused = body.figures[1];
    expect(refused.error).toMatch(/parse error/);
    expect(refused.series.length).toBe(FIGURES[1]!.queries.length - 1);
    expect(body.figures[0].error).toBeUndefined();
    // The legend {{job}} names nothing here: the series is named by its labels.
    expect(body.figures[0].series[0]).toMatchObject({ name: 'instance="a:1"', labels: { instance: 'a:1' } });
    expect(body.figures[0].series[0].points[1]).toEqual([expect.any(Number), null]);
  });

  test('Prometheus unreachable or not configured: 503 naming it', async () => {
    promDown = true;
    try {
      const { status, body } = await get(full, '/api/ops/figures', 'alice', 'ops');
      expect([status, body.error.code]).toEqual([503, 'prometheus_unavailable']);
    } finally {
      promDown = false;
    }
    const { status, body } = await get(bare, '/api/ops/figures', 'alice', 'ops');
    expect([status, body.error.code]).toEqual([503, 'prometheus_not_configured']);
  });
});

describe('GET /api/runs/:runId/trace', () => {
  const RUN_A = '11111111-2222-4333-8444-555555555555';
  const RUN_B = '21111111-2222-4333-8444-555555555555';
  const mk = (traceID: string, runId: string): JaegerTrace => ({
    traceID,
    processes: { p: { serviceName: 'orchestrator' } },
    spans: [{ traceID, spanID: '1', operationName: 'run', startTime: 1e15, duration: 10, processID: 'p', tags: [{ key: 'mesh.run_id', value: runId }] }],
  });
  beforeAll(() => {
    gw.fakeStore.addRun({ id: RUN_A, userId: 'alice', conversationId: RUN_A, messageId: 'm' });
    gw.fakeStore.addRun({ id: RUN_B, userId: 'bob', conversationId: RUN_B, messageId: 'm' });
    traces.set('a'.repeat(32), mk('a'.repeat(32), RUN_A));
    traces.set('b'.repeat(32), mk('b'.repeat(32), RUN_B));
  });

  test("the owner's run: by its trace id, or found by the run id", async () => {
    for (const q of [`?traceId=${'a'.repeat(32)}`, '']) {
      const { status, body } = await get(full, `/api/runs/${RUN_A}/trace${q}`);
      expect(status).toBe(200);
      expect(body).toMatchObject({ traceId: 'a'.repeat(32), runId: RUN_A, services: ['orchestrator'] });
    }
  });

  test("another user's run is 404; another run's trace on one's own run is 404", async () => {
    expect((await get(full, `/api/runs/${RUN_A}/trace?traceId=${'a'.repeat(32)}`, 'bob')).body.error.code).toBe('not_found');
    const wrong = await get(full, `/api/runs/${RUN_A}/trace?traceId=${'b'.repeat(32)}`);
    expect([wrong.status, wrong.body.error.code]).toEqual([404, 'trace_not_found']);
    const none = await get(full, `/api/runs/${RUN_A}/trace?traceId=${'c'.repeat(32)}`);
    expect([none.status, none.body.error.code]).toEqual([404, 'trace_not_found']);
  });

  test('Jaeger not configured: 503', async () => {
    const { status, body } = await get(bare, `/api/runs/${RUN_A}/trace`);
    expect([status, body.error.code]).toEqual([503, 'jaeger_not_configured']);
  });
});
