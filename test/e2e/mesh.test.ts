// The whole mesh as separate processes on real infrastructure: a user message streams through
// edge → orchestrator → broker → emulator, is stored through the store, calls a tool, and shows
// up in Jaeger as one trace.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import {
  emulatorStats, mintToken, readSse, startEmulator, startFerret, startJaeger, startMesh, startRedis, testDir, waitFor,
  type EmulatorProc, type FerretProc, type JaegerProc, type Mesh, type RedisProc, type SseEvent,
} from '../support';
import { adapterRules, hpaMetrics, matches, parseExposition, rendered, type HpaMetric, type Sample } from '../support/kube';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';

jest.setTimeout(180_000);

const SECRET = 'e2e-secret-that-is-long-enough-for-hs256';
/** A distinctive upstream API key, to look for in the logs. */
const API_KEY = `sk-e2e-${randomBytes(12).toString('hex')}`;
let dir: string;
let redis: RedisProc, ferret: FerretProc, jaeger: JaegerProc, emulator: EmulatorProc, mesh: Mesh;
let token: string;

beforeAll(async () => {
  dir = testDir('e2e');
  [redis, ferret, jaeger, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    startJaeger({ logDir: dir }),
    startEmulator({
      logDir: dir,
      env: { EMULATOR_TIME_SCALE: '0.2', EMULATOR_COMPLETION_TOKENS: '30', EMULATOR_REVISE_RATE: '0' },
    }),
  ]);
  mesh = await startMesh({
    logDir: dir,
    redisUrl: redis.url,
    mongoUri: ferret.uri,
    otlpEndpoint: jaeger.otlpEndpoint,
    llmBaseUrl: `${emulator.url}/v1`,
    llmApiKey: API_KEY,
    jwtSecret: SECRET,
  });
  token = await mintToken(SECRET, 'e2e-user');
});

afterAll(async () => {
  await mesh?.stop();
  await Promise.all([emulator, jaeger, ferret, redis].map((p) => p?.stop()));
});

const api = (p: string, init: RequestInit = {}) =>
  fetch(`${mesh.edge.url}${p}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });


test('every gRPC service answers SERVING to grpc-health-probe', () => {
  const probe = path.join(process.env.MESH_CACHE ?? path.join(os.homedir(), '.cache/agent-mesh'), 'bin/grpc-health-probe');
  for (const s of [mesh.store, mesh.broker, mesh.tools, mesh.orchestrator]) {
    const probed = spawnSync(probe, [`-addr=${s.addr}`], { encoding: 'utf8' });
    expect(probed.status).toBe(0);
    expect(`${probed.stdout}${probed.stderr}`).toContain('status: SERVING');
  }
});

describe('a user message', () => {
  let events: SseEvent[];
  let conversationId: string;
  let runId: string;
  /** The calls the emulator got during the run. */
  let upstreamCalls: number;

  beforeAll(async () => {
    const before = (await emulatorStats(emulator)).requests;
    const created = await api('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'e2e' }) });
    expect(created.status).toBe(201);
    conversationId = ((await created.json()) as { id: string }).id;
    const res = await api(`/api/conversations/${conversationId}/messages`, {
      method: 'POST',
      body: JSON.stringify({ content: 'Search the latest news about solar panels and plan a short summary' }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    events = await readSse(res.body!, (e) => TERMINAL.has(e.event));
    runId = (events[0]?.data as { runId: string }).runId;
    upstreamCalls = (await emulatorStats(emulator)).requests - before;
  });

  test('streams the run from run.started to run.completed with strictly increasing ids', () => {
    expect(events[0]?.event).toBe('run.started');
    expect(events.at(-1)?.event).toBe('run.completed');
    const seqs = events.map((e) => {
      const [rid, seq] = (e.id ?? '').split(':');
      expect(rid).toBe(runId);
      return Number(seq);
    });
    seqs.forEach((s, i) => expect(s).toBe(i + 1));
  });

  test('all four agents stream tokens, each between its agent.started and agent.completed', () => {
    for (const agent of ['planner', 'critic', 'host', 'reporter']) {
      const idx = (type: string) => events.findIndex((e) => e.event === type && e.data.agent === agent);
      const started = idx('agent.started');
      const completed = events.findIndex((e) => e.event === 'agent.completed' && e.data.agent === agent);
      const tokens = events.filter((e) => e.event === 'token' && e.data.agent === agent);
      expect(started).toBeGreaterThanOrEqual(0);
      expect(completed).toBeGreaterThan(started);
      expect(tokens.length).toBeGreaterThan(0);
    }
    const reporterDone = events.findIndex((e) => e.event === 'agent.completed' && e.data.agent === 'reporter');
    const plannerStart = events.findIndex((e) => e.event === 'agent.started' && e.data.agent === 'planner');
    expect(plannerStart).toBeLessThan(reporterDone);
    expect(events.some((e) => e.event === 'round.completed' && e.data.verdict === 'approve')).toBe(true);
    const done = events.at(-1)!.data;
    expect(typeof done.answer).toBe('string');
    expect(done.answer.length).toBeGreaterThan(0);
    expect(done.usage.totalTokens).toBeGreaterThan(0);
  });

  test('the host called search_web and its result is in the stream', () => {
    const called = events.find((e) => e.event === 'tool.called');
    const result = events.find((e) => e.event === 'tool.result');
    expect(called?.data.tool).toBe('search_web');
    expect(result?.data.ok).toBe(true);
  });

  test("the user's message and the agents' outputs are stored", async () => {
    const res = await api(`/api/conversations/${conversationId}?pageSize=200`);
    expect(res.status).toBe(200);
    const conv = (await res.json()) as { messages: { role: string; agent?: string; content: string }[] };
    expect(conv.messages[0]).toMatchObject({ role: 'user' });
    const agents = new Set(conv.messages.filter((m) => m.role !== 'user').map((m) => m.agent));
    expect([...agents].sort()).toEqual(['critic', 'host', 'planner', 'reporter']);
    const answers = conv.messages.filter((m) => m.agent === 'reporter');
    expect(answers).toHaveLength(1);
  });

  test('Jaeger holds the run as one trace with spans from every service, one client span per call upstream', async () => {
    type Trace = { spans: { processID: string; tags: { key: string; value: unknown }[] }[]; processes: Record<string, { serviceName: string }> };
    const tag = (s: Trace['spans'][number], key: string) => s.tags.find((t) => t.key === key)?.value;
    const upstreamSpans = (t: Trace) => t.spans.filter((s) => t.processes[s.processID]?.serviceName === 'llm-broker' && tag(s, 'span.kind') === 'client' && tag(s, 'url.full') === `${emulator.url}/v1/chat/completions`);
    const tags = encodeURIComponent(JSON.stringify({ 'mesh.run_id': runId }));
    let trace: Trace | undefined;
    await waitFor('the run trace in jaeger', async () => {
      const r = await fetch(`${jaeger.queryUrl}/api/traces?service=orchestrator&tags=${tags}&lookback=1h&limit=5`);
      const body = (await r.json()) as { data: Trace[] };
      trace = body.data[0];
      if (!trace) return false;
      const services = new Set(trace.spans.map((s) => trace!.processes[s.processID]?.serviceName));
      return ['edge', 'orchestrator', 'llm-broker', 'store', 'tool-service'].every((s) => services.has(s)) && upstreamSpans(trace).length >= upstreamCalls;
    }, { timeoutMs: 30_000, intervalMs: 1_000 });
    // The broker's calls to the provider are traced once each (its own span; the undici
    // instrumentation leaves requests that carry a trace context alone).
    expect(upstreamCalls).toBeGreaterThanOrEqual(4);
    expect(upstreamSpans(trace!)).toHaveLength(upstreamCalls);
    expect(upstreamSpans(trace!).map((s) => tag(s, 'http.response.status_code'))).toEqual(Array(upstreamCalls).fill(200));
    const services = new Set(trace!.spans.map((s) => trace!.processes[s.processID]?.serviceName));
    expect([...services].sort()).toEqual(expect.arrayContaining(['edge', 'llm-broker', 'orchestrator', 'store', 'tool-service']));
    // The services' logs of this run carry its trace id.
    const traceId = (trace as unknown as { traceID: string }).traceID;
    expect(mesh.broker.log()).toContain(`"trace_id":"${traceId}"`);
    expect(mesh.orchestrator.log()).toContain(`"trace_id":"${traceId}"`);
  });
});

test('a /v1 call\'s metadata tags its trace: Jaeger finds the call, with the broker\'s spans, by each tag', async () => {
  const tag = `e2e-${Date.now()}`;
  const res = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'emulator-1', messages: [{ role: 'user', content: 'How do tides work?' }], metadata: { team: tag, job: 'nightly' } }) });
  expect(res.status).toBe(200);
  type Trace = { spans: { operationName: string; processID: string; tags: { key: string; value: unknown }[] }[]; processes: Record<string, { serviceName: string }> };
  const find = async (tags: Record<string, string>) =>
    ((await (await fetch(`${jaeger.queryUrl}/api/traces?service=edge&tags=${encodeURIComponent(JSON.stringify(tags))}&lookback=1h&limit=5`)).json()) as { data: Trace[] }).data;
  let traces: Trace[] = [];
  await waitFor('the tagged trace in jaeger', async () => (traces = await find({ 'metadata.team': tag })).length > 0, { timeoutMs: 30_000, intervalMs: 1_000 });
  expect(traces).toHaveLength(1);
  // The same trace holds the broker's call to the provider.
  const services = new Set(traces[0]!.spans.map((s) => traces[0]!.processes[s.processID]?.serviceName));
  expect([...services]).toEqual(expect.arrayContaining(['edge', 'llm-broker']));
  expect(await find({ 'metadata.team': tag, 'metadata.job': 'nightly' })).toHaveLength(1);
  expect(await find({ 'metadata.team': tag, 'metadata.job': 'hourly' })).toHaveLength(0);
});

test('no secret in any log line: the JWT secret, the upstream API key and the user tokens never appear', async () => {
  // Paths where a careless log line would carry a secret: a refused token, a /v1 call (the API key
  // goes upstream), a bad body, an unknown route.
  const forged = `${token.slice(0, token.lastIndexOf('.'))}.${Buffer.from('forged').toString('base64url')}`;
  await fetch(`${mesh.edge.url}/api/conversations`, { headers: { authorization: `Bearer ${forged}` } });
  await fetch(`${mesh.edge.url}/api/conversations/${'x'.repeat(10)}/events?access_token=${token}`);
  await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'emulator-1', messages: [{ role: 'user', content: 'hi' }] }) });
  await api('/api/conversations', { method: 'POST', body: '{"title": 5}' });
  await api('/nowhere');
  const logs = fs.readdirSync(dir).filter((f) => f.endsWith('.log'));
  // Every service wrote its log here (so the check below reads something).
  for (const svc of ['edge', 'orchestrator', 'llm-broker', 'store', 'tool-service']) expect(logs.some((f) => f.startsWith(svc))).toBe(true);
  const secrets = { 'JWT secret': SECRET, 'API key': API_KEY, token, 'forged token': forged, 'token signature': token.split('.')[2]! };
  const leaks: string[] = [];
  for (const f of logs) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    for (const [what, value] of Object.entries(secrets)) if (text.includes(value)) leaks.push(`${what} in ${f}`);
  }
  expect(leaks).toEqual([]);
});

// The HPAs (deploy/k8s) scale on custom metrics that prometheus-adapter serves from what Prometheus
// scrapes of the pods. Read from the manifests, each must be exported by the running service the
// HPA scales, under exactly the name and labels the adapter rule and the HPA select.
describe('the metrics the autoscaling manifests refer to', () => {
  const K8S = path.resolve(__dirname, '../../deploy/k8s');
  const overlays = ['dev', 'production'].map((o) => rendered(path.join(K8S, 'overlays', o)));
  const rules = adapterRules(rendered(path.join(K8S, 'prometheus-adapter')));
  const metrics = overlays.flatMap(hpaMetrics).filter((m, i, all) => all.findIndex((x) => JSON.stringify(x) === JSON.stringify(m)) === i);
  const procOf = (deployment: string) =>
    ({ edge: mesh.edge, orchestrator: mesh.orchestrator, 'llm-broker': mesh.broker, 'tool-service': mesh.tools, store: mesh.store })[deployment];

  /** What Prometheus scrapes of a Deployment's pod, on the port and path of its prometheus.io annotations. */
  async function scrape(deployment: string): Promise<Sample[]> {
    const d = overlays[0]!.find((o) => o.kind === 'Deployment' && o.metadata.name === deployment)!;
    const annotations = d.spec.template.metadata.annotations as Record<string, string>;
    const port = Number(annotations['prometheus.io/port']);
    const portName = (d.spec.template.spec.containers[0].ports as { name: string; containerPort: number }[]).find((p) => p.containerPort === port)?.name;
    const proc = procOf(deployment);
    if (!proc || !portName) throw new Error(`${deployment}: no running service or no port ${port}`);
    const local = portName === 'metrics' ? proc.metricsPort : proc.port;
    const res = await fetch(`http://127.0.0.1:${local}${annotations['prometheus.io/path']}`);
    expect(res.status).toBe(200);
    return parseExposition(await res.text());
  }

  /** Why `m` would not reach its HPA, or undefined when a rule serves it from a series the service exports. */
  function unserved(m: HpaMetric, samples: Sample[]): string | undefined {
    const served = rules.some((r) => samples.some((s) =>
      matches(r.matchers.filter((x) => !r.resourceLabels.includes(x.label)), s.labels)
      && r.servedAs(s.name) === m.name
      && Object.entries(m.matchLabels).every(([k, v]) => s.labels[k] === v)));
    return served ? undefined : `HPA ${m.hpa}: no adapter rule serves ${m.name} from what ${m.deployment} exports`;
  }

  test('the manifests name custom metrics and adapter rules (what is checked below)', () => {
    expect(metrics.length).toBeGreaterThan(0);
    expect(rules.length).toBeGreaterThan(0);
    // The labels Prometheus adds, not the service, are left to the scrape configuration.
    expect(rules.every((r) => r.resourceLabels.includes('pod'))).toBe(true);
  });

  test('every HPA custom metric is served by an adapter rule from a series its service exports, under its exact name and labels', async () => {
    const problems: string[] = [];
    for (const m of metrics) {
      const samples = await scrape(m.deployment);
      const why = unserved(m, samples);
      if (why) problems.push(why);
      // The same check refuses a name one letter off.
      expect(unserved({ ...m, name: `${m.name}s` }, samples)).toBeDefined();
    }
    expect(problems).toEqual([]);
  });

  test('every adapter rule selects a series some service exports', async () => {
    const all = (await Promise.all(['edge', 'orchestrator', 'llm-broker', 'tool-service', 'store'].map(scrape))).flat();
    const unmatched = rules.filter((r) => !all.some((s) => matches(r.matchers.filter((x) => !r.resourceLabels.includes(x.label)), s.labels)));
    expect(unmatched.map((r) => r.seriesQuery)).toEqual([]);
  });
});
