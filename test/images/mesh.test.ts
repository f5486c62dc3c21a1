// The whole mesh from its images: the five service containers and the emulator's on one podman
// network whose aliases are the Kubernetes Service names, each with the environment of its
// manifests (deploy/k8s/base: the ConfigMap and its Deployment's env; only the upstream URL and
// the Secret's values are the test's), Redis, FerretDB and Jaeger as containers under the
// ConfigMap's names. Everything is reached from outside the containers, as a kubelet, a Service
// or Prometheus would.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { mintToken, readSse, testDir, waitFor, type SseEvent } from '../support';
import { runService, serving, startContainerMesh, SERVICE_IMAGES, type ContainerMesh } from '../support/containers';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';

jest.setTimeout(300_000);

const SECRETS = { AUTH_JWT_SECRET: 'images-test-secret-long-enough-for-hs256', LLM_API_KEY: 'images-test-key' };
const PROBE = path.join(process.env.MESH_CACHE ?? path.join(os.homedir(), '.cache/agent-mesh'), 'bin/grpc-health-probe');
let mesh: ContainerMesh;
let token: string;

beforeAll(async () => {
  mesh = await startContainerMesh({
    logDir: testDir('images'),
    secrets: SECRETS,
    // The ConfigMap points the broker at a real provider; here the emulator's container stands in.
    overrides: { LLM_BASE_URL: 'http://emulator:8090/v1' },
    emulatorEnv: { EMULATOR_TIME_SCALE: '0.2', EMULATOR_COMPLETION_TOKENS: '30', EMULATOR_REVISE_RATE: '0' },
  });
  token = await mintToken(SECRETS.AUTH_JWT_SECRET, 'images-user');
});

afterAll(() => mesh?.close());

const api = (p: string, init: RequestInit = {}) =>
  fetch(`${mesh.services.edge.url}${p}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });

async function startMessage(content: string): Promise<Response> {
  const created = await api('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'images' }) });
  expect(created.status).toBe(201);
  const { id } = (await created.json()) as { id: string };
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content }) });
  expect(res.status).toBe(200);
  return res;
}

test('every gRPC port answers grpc-health-probe SERVING from outside its container', () => {
  for (const name of SERVICE_IMAGES.filter((n) => n !== 'edge')) {
    const probed = spawnSync(PROBE, [`-addr=${mesh.services[name].grpcAddr}`], { encoding: 'utf8' });
    expect(`${name}: ${probed.stdout}${probed.stderr}`).toContain('status: SERVING');
    expect(probed.status).toBe(0);
  }
});

test('every metrics port serves Prometheus text from outside its container', async () => {
  for (const name of SERVICE_IMAGES) {
    const res = await fetch(mesh.services[name].metricsUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^# HELP process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^# TYPE \w+ (counter|gauge|histogram|summary)$/m);
  }
});

test('a message through the edge container streams to run.completed, and the run is traced in Jaeger', async () => {
  const events = await readSse((await startMessage('Search the latest news about solar panels and plan a short summary')).body!, (e) => TERMINAL.has(e.event));
  expect(events[0]?.event).toBe('run.started');
  expect(events.at(-1)?.event).toBe('run.completed');
  for (const agent of ['planner', 'critic', 'host', 'reporter']) {
    expect(events.some((e) => e.event === 'token' && e.data.agent === agent)).toBe(true);
  }
  expect(events.find((e) => e.event === 'tool.result')?.data.ok).toBe(true);
  // OTEL_EXPORTER_OTLP_ENDPOINT of the ConfigMap (http://jaeger:4318) carries the spans.
  const runId = (events[0]!.data as { runId: string }).runId;
  const tags = encodeURIComponent(JSON.stringify({ 'mesh.run_id': runId }));
  await waitFor('the run trace in jaeger', async () => {
    const r = await fetch(`${mesh.infra.jaeger.queryUrl}/api/traces?service=orchestrator&tags=${tags}&lookback=1h&limit=5`);
    return ((await r.json()) as { data: unknown[] }).data.length > 0;
  }, { timeoutMs: 30_000, intervalMs: 1_000 });
});

test('the edge image runs the llm-broker inside itself with EDGE_INLINE_BROKER: /v1 is answered without the llm-broker container', async () => {
  const completed = async (metricsUrl: string) => {
    const text = await (await fetch(metricsUrl)).text();
    return [...text.matchAll(/^llm_upstream_requests_total\{[^}]*outcome="completed"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
  };
  const inline = await runService(mesh.network, 'edge', {
    alias: 'edge-inline',
    // The broker's settings come from the same ConfigMap; its provider key from the Secret.
    overrides: { EDGE_INLINE_BROKER: 'true', LLM_BASE_URL: 'http://emulator:8090/v1', LLM_API_KEY: SECRETS.LLM_API_KEY },
    secrets: SECRETS,
  });
  await waitFor('the inline edge serving', () => serving(inline), { timeoutMs: 60_000, intervalMs: 250 });
  const before = await completed(mesh.services['llm-broker'].metricsUrl);
  const res = await fetch(`${inline.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: 'Say hello in one short sentence.' }], max_tokens: 16 }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { choices: { message: { content: string } }[] };
  expect(body.choices[0]!.message.content.length).toBeGreaterThan(0);
  expect(await completed(inline.metricsUrl)).toBe(1);
  expect(await completed(mesh.services['llm-broker'].metricsUrl)).toBe(before);
  const stopped = await mesh.network.stop(inline.name, inline.manifest.terminationGracePeriodSeconds);
  expect(stopped.exitCode).toBe(0);
});

test('SIGTERM ends every container with exit 0 within its grace period; open SSE streams are told to reconnect', async () => {
  // A run that stays open: the upstream answers its first call only after a long time.
  const cfg = await fetch(`${mesh.emulator.url}/_emulator/config`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttftMs: 600_000 }),
  });
  expect(cfg.ok).toBe(true);
  const res = await startMessage('Plan a short summary of wind power');
  const events: SseEvent[] = [];
  let sawStart!: () => void;
  const started = new Promise<void>((r) => { sawStart = r; });
  const reading = readSse(res.body!, (e) => {
    events.push(e);
    if (e.event === 'run.started') sawStart();
    return e.event === 'reconnect' || TERMINAL.has(e.event);
  });
  await started;

  // The edge first (with the open stream), then the rest, callers before callees, as the
  // manifests' terminationGracePeriodSeconds allows each.
  for (const name of ['edge', 'orchestrator', 'tool-service', 'llm-broker', 'store'] as const) {
    const s = mesh.services[name];
    const grace = s.manifest.terminationGracePeriodSeconds;
    const { exitCode, ms } = await mesh.network.stop(s.name, grace);
    expect(`${name} exit ${exitCode}`).toBe(`${name} exit 0`);
    expect(ms).toBeLessThan(grace * 1000);
    if (name === 'edge') {
      await reading;
      const last = events.at(-1)!;
      expect(last.event).toBe('reconnect');
      expect(last.data).toMatchObject({ reason: 'draining' });
    }
  }
  const emulator = await mesh.network.stop(mesh.emulator.name, 10);
  expect(emulator.exitCode).toBe(0);
});
