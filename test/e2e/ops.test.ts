// The operations figures and a run's trace through the edge, on real parts: the fleet as the
// launcher starts it (one replica of every service behind nginx, its Prometheus with the mesh's
// rules, the edges told where Prometheus and Jaeger are), Redis, FerretDB, Jaeger and the emulator.
// Real runs by two users, then: /api/ops/figures answers every dashboard figure with data for a
// token with the ops scope, 403 without it; /api/runs/:runId/trace answers the owner's run with
// spans from all five services (the trace id run.started carried), 404 for another user's run or
// a trace that is not the run's; no token is 401; Prometheus or Jaeger gone is 503. Then the web
// UI in headless Chromium: the ops page draws the figures, a finished run shows its waterfall.
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import { FIGURES } from '../../services/edge/src/ops/figures';
import {
  mintToken, readSse, startEmulator, startFerret, startFleet, startJaeger, startRedis, testDir,
  type EmulatorProc, type FerretProc, type Fleet, type JaegerProc, type RedisProc, type SseEvent,
} from '../support';

jest.setTimeout(240_000);

const SECRET = 'ops-e2e-secret-that-is-long-enough-for-hs256';
const SERVICES = ['edge', 'llm-broker', 'orchestrator', 'store', 'tool-service'];
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let dir: string;
let redis: RedisProc, ferret: FerretProc, jaeger: JaegerProc, emulator: EmulatorProc, fleet: Fleet;
let browser: Browser | undefined;
const tokens: Record<string, string> = {};

interface Run { conversationId: string; runId: string; traceId: string; events: SseEvent[] }
const runs: Record<string, Run> = {};

const call = (p: string, user?: string) =>
  fetch(`${fleet.url}${p}`, { headers: user ? { authorization: `Bearer ${tokens[user]}` } : {} });

async function runAs(user: string, content: string): Promise<Run> {
  const headers = { authorization: `Bearer ${tokens[user]}`, 'content-type': 'application/json' };
  const created = await fetch(`${fleet.url}/api/conversations`, { method: 'POST', headers, body: JSON.stringify({ title: 'ops' }) });
  expect(created.status).toBe(201);
  const conversationId = ((await created.json()) as { id: string }).id;
  const res = await fetch(`${fleet.url}/api/conversations/${conversationId}/messages`, { method: 'POST', headers, body: JSON.stringify({ content }) });
  expect(res.status).toBe(200);
  const events = await readSse(res.body!, (e) => TERMINAL.has(e.event));
  expect(events.at(-1)?.event).toBe('run.completed');
  const started = events[0]!;
  expect(started.event).toBe('run.started');
  return { conversationId, runId: started.data.runId, traceId: started.data.traceId, events };
}

async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 60_000, explain: (v: T) => unknown = (v) => v): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await get();
    if (ok(last)) return last;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms; last: ${JSON.stringify(explain(last))?.slice(0, 1500)}`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

beforeAll(async () => {
  dir = testDir('ops');
  [redis, ferret, jaeger, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    startJaeger({ logDir: dir }),
    startEmulator({ logDir: dir, env: { EMULATOR_TIME_SCALE: '0.2', EMULATOR_COMPLETION_TOKENS: '30', EMULATOR_REVISE_RATE: '0' } }),
  ]);
  fleet = await startFleet({
    replicas: 1,
    logDir: dir,
    redisUrl: redis.url,
    mongoUri: ferret.uri,
    otlpEndpoint: jaeger.otlpEndpoint,
    jaegerQueryUrl: jaeger.queryUrl,
    llmBaseUrl: `${emulator.url}/v1`,
    jwtSecret: SECRET,
    prometheus: { scrapeInterval: '1s', evaluationInterval: '1s' },
    perService: { 'tool-service': { TOOL_CORPUS_SOURCES: 'docs' } },
  });
  // The runs go after Prometheus has scraped every replica once: a rate needs a sample from before
  // the increase it measures (on a busy machine the runs can end before the first scrape).
  const upTargets = async () => {
    const res = await fetch(`${fleet.prometheus!.url}/api/v1/query?query=${encodeURIComponent('count(up == 1)')}`);
    const body = (await res.json()) as { data: { result: { value: [number, string] }[] } };
    return Number(body.data.result[0]?.value[1] ?? 0);
  };
  await until('every replica scraped', upTargets, (n) => n >= fleet.services.length, 60_000);
  tokens.alice = await mintToken(SECRET, 'alice', { scope: 'ops' });
  tokens.bob = await mintToken(SECRET, 'bob');
  runs.alice = await runAs('alice', 'Search the latest news about solar panels and plan a short summary');
  runs.bob = await runAs('bob', 'Search the latest news about wind turbines and plan a short summary');
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await fleet?.stop();
  await Promise.all([emulator, jaeger, ferret, redis].map((p) => p?.stop()));
});

test('run.started carries the run\'s trace id', () => {
  expect(runs.alice!.traceId).toMatch(/^[0-9a-f]{32}$/);
  expect(runs.bob!.traceId).toMatch(/^[0-9a-f]{32}$/);
  expect(runs.bob!.traceId).not.toBe(runs.alice!.traceId);
});

test('without a token both routes are 401', async () => {
  for (const p of ['/api/ops/figures', `/api/runs/${runs.alice!.runId}/trace`]) {
    const res = await call(p);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unauthenticated');
  }
});

describe('GET /api/ops/figures', () => {
  type Figures = { window: string; stepS: number; figures: { id: string; title: string; unit: string; series: { name: string; points: [number, number | null][] }[]; error?: string }[] };

  test('a token without the ops scope is 403', async () => {
    const res = await call('/api/ops/figures', 'bob');
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('forbidden');
  });

  test('every figure of the dashboard has data from the fleet\'s Prometheus', async () => {
    const hasData = (f: Figures['figures'][number]) => !f.error && f.series.some((s) => s.points.some(([, v]) => v !== null));
    const body = await until('every figure with data', async () => {
      const res = await call('/api/ops/figures?window=5m', 'alice');
      expect(res.status).toBe(200);
      return (await res.json()) as Figures;
    }, (b) => b.figures.every(hasData), 90_000, (b) => ({ withoutData: b.figures.filter((f) => !hasData(f)).map((f) => ({ id: f.id, error: f.error })) }));
    expect(body.window).toBe('5m');
    expect(body.figures.map((f) => f.id)).toEqual(FIGURES.map((f) => f.id));
    for (const f of body.figures) expect({ id: f.id, data: hasData(f) }).toEqual({ id: f.id, data: true });
    // The run time percentiles count the runs just made (two runs of a few seconds each).
    const runTime = body.figures.find((f) => f.id === 'run_time')!;
    const p95 = runTime.series.find((s) => s.name === 'p95')!;
    const latest = p95.points.filter(([, v]) => v !== null).at(-1)![1]!;
    expect(latest).toBeGreaterThan(0);
    expect(latest).toBeLessThan(60);
    // Replicas up: one of each of the five services.
    const up = body.figures.find((f) => f.id === 'replicas_up')!;
    expect(up.series.map((s) => s.name).sort()).toEqual(SERVICES);
  });

  test('a window not offered is 400', async () => {
    expect((await call('/api/ops/figures?window=2d', 'alice')).status).toBe(400);
    expect((await call('/api/ops/figures?query=up', 'alice')).status).toBe(400);
  });
});

describe('GET /api/runs/:runId/trace', () => {
  type Trace = { traceId: string; runId: string; services: string[]; spans: { spanId: string; parentSpanId: string | null; service: string; startMs: number; durationMs: number }[] };

  test("the owner gets the run's trace with spans from all five services", async () => {
    const { runId, traceId } = runs.alice!;
    const trace = await until('the trace with all five services', async () => {
      const res = await call(`/api/runs/${runId}/trace?traceId=${traceId}`, 'alice');
      return res.status === 200 ? ((await res.json()) as Trace) : undefined;
    }, (t) => !!t && SERVICES.every((s) => t.services.includes(s)));
    expect(trace!.traceId).toBe(traceId);
    expect(trace!.runId).toBe(runId);
    expect(trace!.services).toEqual(SERVICES);
    const ids = new Set(trace!.spans.map((s) => s.spanId));
    for (const s of trace!.spans) {
      if (s.parentSpanId !== null) expect(ids.has(s.parentSpanId)).toBe(true);
      expect(s.startMs).toBeGreaterThanOrEqual(0);
      expect(s.durationMs).toBeGreaterThanOrEqual(0);
    }
    // The same trace when found by the run's id alone.
    const found = await call(`/api/runs/${runId}/trace`, 'alice');
    expect(found.status).toBe(200);
    expect(((await found.json()) as Trace).traceId).toBe(traceId);
  });

  test("another user's run is 404, with or without its trace id", async () => {
    const { runId, traceId } = runs.alice!;
    for (const p of [`/api/runs/${runId}/trace?traceId=${traceId}`, `/api/runs/${runId}/trace`]) {
      const res = await call(p, 'bob');
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found');
    }
  });

  test("another run's trace id on one's own run is 404", async () => {
    // Bob's trace exists (wait for it), but it is not Alice's run's.
    await until("bob's trace", async () => (await call(`/api/runs/${runs.bob!.runId}/trace?traceId=${runs.bob!.traceId}`, 'bob')).status, (s) => s === 200);
    const res = await call(`/api/runs/${runs.alice!.runId}/trace?traceId=${runs.bob!.traceId}`, 'alice');
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('trace_not_found');
  });

  test('a malformed run or trace id is 400', async () => {
    expect((await call('/api/runs/not-a-run/trace', 'alice')).status).toBe(400);
    expect((await call(`/api/runs/${runs.alice!.runId}/trace?traceId=XYZ`, 'alice')).status).toBe(400);
  });
});

describe('the web UI', () => {
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  });

  test('a finished run shows the waterfall of its spans across the five services', async () => {
    const page = await browser!.newPage({ viewport: { width: 1400, height: 950 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.addInitScript((t) => localStorage.setItem('agent-mesh.token', t), tokens.alice!); // signed in
    await page.goto(`${fleet.url}/#c=${runs.alice!.conversationId}`);
    const button = page.locator('.run[data-state="completed"] button.trace-toggle');
    await button.waitFor({ timeout: 30_000 });
    await button.click();
    await page.locator('.waterfall .span-row').first().waitFor({ timeout: 30_000 });
    const services = await page.locator('.waterfall .span-row').evaluateAll((rows) => [...new Set(rows.map((r) => (r as HTMLElement).dataset.service))].sort());
    expect(services).toEqual(SERVICES);
    expect(await page.locator('.waterfall').getAttribute('data-trace-id')).toBe(runs.alice!.traceId);
    await page.screenshot({ path: path.join(dir, 'ui-trace.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  test('the ops page draws every Prometheus figure', async () => {
    const page = await browser!.newPage({ viewport: { width: 1400, height: 950 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.addInitScript((t) => localStorage.setItem('agent-mesh.token', t), tokens.alice!); // signed in
    await page.goto(`${fleet.url}/ops.html`);
    await page.waitForFunction((n) => document.querySelectorAll('#prom-figures .figure[data-has-data="true"]').length === n, FIGURES.length, { timeout: 60_000 });
    const titles = await page.locator('#prom-figures .figure h3').allTextContents();
    expect(titles).toEqual(FIGURES.map((f) => f.title));
    await page.screenshot({ path: path.join(dir, 'ui-ops-prometheus.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('when Prometheus or Jaeger is gone', () => {
  test('the routes answer 503 naming the backend', async () => {
    await fleet.prometheus!.stop();
    const figures = await call('/api/ops/figures', 'alice');
    expect(figures.status).toBe(503);
    expect(((await figures.json()) as { error: { code: string } }).error.code).toBe('prometheus_unavailable');
    await jaeger.stop();
    const trace = await call(`/api/runs/${runs.alice!.runId}/trace?traceId=${runs.alice!.traceId}`, 'alice');
    expect(trace.status).toBe(503);
    expect(((await trace.json()) as { error: { code: string } }).error.code).toBe('jaeger_unavailable');
  });
});
