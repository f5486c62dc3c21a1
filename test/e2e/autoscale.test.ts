// `npm start -- --replicas auto` (deploy/local/autoscale.js): the real HPA loop (API server,
// controller manager, prometheus-adapter, the fleet's Prometheus) with the production overlay
// applied, and one local process per live Pod of each Deployment. The number of processes of each
// service follows its Deployment's spec.replicas as the HPA changes it; a removed replica leaves
// its Service (nginx) first, waits the preStop sleep, then drains on SIGTERM and exits by itself;
// a run streams through the fleet before and after.
import path from 'node:path';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import {
  configureEmulator, EventSourceRun, mintToken, readSse, startEmulator, startFerret, startRedis, testDir,
  type EmulatorProc, type FerretProc, type RedisProc, type SseEvent,
} from '../support';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const autoscale = require('../../deploy/local/autoscale.js');

jest.setTimeout(300_000);

const SECRET = 'autoscale-test-secret-long-enough-for-hs256';
type Obj = Record<string, any>;
interface Event { type: string; service?: string; pod?: string; addr?: string; exit?: { code: number | null; signal: string | null }; at: number; message?: string }

let dir: string;
let redis: RedisProc, ferret: FerretProc, emulator: EmulatorProc;
let fleet: Obj;
const events: Event[] = [];

beforeAll(async () => {
  dir = testDir('autoscale');
  [redis, ferret, emulator] = await Promise.all([startRedis({ logDir: dir }), startFerret({ logDir: dir }), startEmulator({ logDir: dir, env: { EMULATOR_REVISE_RATE: '0' } })]);
  await configureEmulator(emulator, { timeScale: 1, ttftMs: 100, tokensPerSec: 200, completionTokens: 20, reviseRate: 0 });
  fleet = await autoscale.startAutoscaledFleet({
    logDir: dir, dataDir: path.join(dir, 'data'),
    redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret: SECRET,
    syncPeriod: '1s', scrapeInterval: '2s',
    perService: { 'tool-service': { TOOL_CORPUS_SOURCES: 'docs' }, edge: { RATE_LIMIT_PER_MINUTE: '100000' } },
    onEvent: (e: Omit<Event, 'at'>) => events.push({ ...e, at: Date.now() }),
  });
}, 600_000);

afterAll(async () => {
  await fleet?.stop();
  await Promise.all([emulator, ferret, redis].map((p) => p?.stop()));
});

const apiGet = (p: string) => fleet.api.request('GET', p);
const deployment = (s: string) => apiGet(`/apis/apps/v1/namespaces/${fleet.namespace}/deployments/${s}`);
const hpaPath = (s: string) => `/apis/autoscaling/v2/namespaces/${fleet.namespace}/horizontalpodautoscalers/${s}`;

/** Each service: its Deployment's spec.replicas, its running processes, its Pods Running and Ready. */
async function counts(): Promise<Obj[]> {
  return Promise.all(autoscale.SERVICES.map(async (s: string) => {
    const d = await deployment(s);
    const selector = Object.entries(d.spec.selector.matchLabels).map(([k, v]) => `${k}=${v}`).join(',');
    const pods = (await apiGet(`/api/v1/namespaces/${fleet.namespace}/pods?labelSelector=${encodeURIComponent(selector)}`)).items as Obj[];
    const running = pods.filter((p) => p.status.phase === 'Running' && p.status.conditions.some((c: Obj) => c.type === 'Ready' && c.status === 'True'));
    return { service: s, spec: d.spec.replicas, processes: fleet.replicas(s).length, runningPods: running.length };
  }));
}

async function until(timeoutMs: number, check: () => Promise<boolean>): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

async function oneRun(user: string): Promise<string[]> {
  const token = await mintToken(SECRET, user);
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const conv = await (await fetch(`${fleet.url}/api/conversations`, { method: 'POST', headers, body: JSON.stringify({ title: 'auto' }) })).json() as { id: string };
  const res = await fetch(`${fleet.url}/api/conversations/${conv.id}/messages`, { method: 'POST', headers, body: JSON.stringify({ content: 'Search the news about solar power and plan a summary' }) });
  expect(res.status).toBe(200);
  const seen: SseEvent[] = await readSse(res.body!, (e) => TERMINAL.has(e.event));
  return seen.map((e) => e.event).filter((e) => TERMINAL.has(e));
}

test('one process per Pod: every Deployment has its HPA floor of replicas, each running, Ready and scraped with its pod labels', async () => {
  const hpas = await Promise.all(autoscale.SERVICES.map(async (s: string) => (await apiGet(hpaPath(s))).spec.minReplicas as number));
  expect(await counts()).toEqual(autoscale.SERVICES.map((s: string, i: number) => ({ service: s, spec: hpas[i], processes: hpas[i], runningPods: hpas[i] })));
  // Prometheus sees each replica as its Pod (what the adapter maps to the HPA's pods).
  const ok = await until(30_000, async () => {
    const r = await (await fetch(`${fleet.prometheus.url}/api/v1/query?query=${encodeURIComponent(`count by (job) (up{namespace="${fleet.namespace}",pod!=""} == 1)`)}`)).json() as Obj;
    const byJob = Object.fromEntries(r.data.result.map((x: Obj) => [x.metric.job, Number(x.value[1])]));
    return autoscale.SERVICES.every((s: string, i: number) => byJob[s] === hpas[i]);
  });
  expect(ok).toBe(true);
  // Every HPA reads every metric it declares, custom (queue, runs, streams) and CPU (the
  // processes' CPU seconds through the adapter's resource metrics API).
  const reading = await until(90_000, async () => (await Promise.all(autoscale.SERVICES.map(async (s: string) => {
    const h = await apiGet(hpaPath(s));
    return (h.status.conditions ?? []).some((c: Obj) => c.type === 'ScalingActive' && c.status === 'True') && (h.status.currentMetrics ?? []).length === h.spec.metrics.length;
  }))).every(Boolean));
  expect(reading).toBe(true);
});

test('a run streams to run.completed through the edges and the Services (nginx in front of every replica)', async () => {
  expect(await oneRun('u1')).toEqual(['run.completed']);
});

test('the HPA moves a Deployment up and down, and the processes follow: a new replica starts, a removed one leaves nginx, waits its preStop, drains and exits 0', async () => {
  const s = 'llm-broker';
  const before = (await apiGet(hpaPath(s))).spec as Obj;
  const d = await deployment(s);
  const preStopS = d.spec.template.spec.containers[0].lifecycle.preStop.sleep.seconds as number;
  const patch = (min: number, max: number) => fleet.api.request('PATCH', hpaPath(s), { spec: { minReplicas: min, maxReplicas: max } }, 'application/merge-patch+json');
  const up = before.minReplicas + 1;
  // Below its new floor, the HPA scales up at once; above its new ceiling, down at once.
  await patch(up, up);
  const grew = await until(60_000, async () => (await counts()).find((c) => c.service === s)!.processes === up);
  const scaledUp = (await counts()).find((c) => c.service === s);
  expect({ grew, ...scaledUp }).toEqual({ grew: true, service: s, spec: up, processes: up, runningPods: up });

  const t0 = Date.now();
  await patch(before.minReplicas, before.minReplicas);
  const shrank = await until(90_000, async () => events.some((e) => e.at >= t0 && e.type === 'stopped' && e.service === s));
  expect(shrank).toBe(true);
  const stopping = events.find((e) => e.at >= t0 && e.type === 'stopping' && e.service === s)!;
  const stopped = events.find((e) => e.at >= t0 && e.type === 'stopped' && e.pod === stopping.pod)!;
  // nginx no longer lists the removed replica once it is stopping.
  const conf = require('node:fs').readFileSync(fleet.nginx.config, 'utf8') as string;
  const gone = !fleet.replicas(s).some((r: Obj) => r.pod === stopping.pod);
  expect({
    exit: stopped.exit, waitedPreStop: stopped.at - stopping.at >= preStopS * 1000, gone,
    counts: (await counts()).find((c) => c.service === s),
  }).toEqual({ exit: { code: 0, signal: null }, waitedPreStop: true, gone: true, counts: { service: s, spec: before.minReplicas, processes: before.minReplicas, runningPods: before.minReplicas } });
  expect(conf).toContain('grpc_pass grpc://llm_broker;');
  expect(conf).not.toContain(`server ${stopping.addr} `);
  await patch(before.minReplicas, before.maxReplicas);
  expect(await oneRun('u2')).toEqual(['run.completed']);
});

test('scaling down under load loses nothing: an orchestrator and an edge leave while runs stream, and every run completes with each event exactly once', async () => {
  // Runs of ~40 s (four agents of ~10 s), so that the scale-down (the HPA's next sync, the
  // preStop's 5 s, then the drain) lands in the middle of them even on a slow machine.
  await configureEmulator(emulator, { ttftMs: 500, tokensPerSec: 8, completionTokens: 80 });
  const call = async (p: string, init: RequestInit, user: string) => fetch(`${fleet.url}${p}`, {
    ...init, headers: { authorization: `Bearer ${await mintToken(SECRET, user)}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });
  const newConversation = async (user: string) => ((await (await call('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'scale-down' }) }, user)).json()) as { id: string }).id;
  const users = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'];
  const runs = await Promise.all(users.map(async (u) => new EventSourceRun(call, u, await newConversation(u), 'Search the news about wind power and plan a summary')));
  const streaming = await until(30_000, async () => runs.every((r) => r.events.some((e) => e.event === 'token')));
  expect(streaming).toBe(true);
  // least_conn spread the six streams over the three edges: each holds some, the one that leaves too.
  const openStreams = await Promise.all(fleet.replicas('edge').map(async (r: Obj) => {
    const text = await (await fetch(`http://${r.replica.addr}/metrics`)).text();
    return Number(/^edge_sse_open_streams(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1]);
  }));
  expect({ edges: openStreams.length, streams: openStreams.reduce((a, b) => a + b, 0), idleEdges: openStreams.filter((n) => n === 0).length })
    .toEqual({ edges: 3, streams: users.length, idleEdges: 0 });

  const t0 = Date.now();
  const floors: Record<string, Obj> = {};
  for (const s of ['orchestrator', 'edge']) {
    floors[s] = (await apiGet(hpaPath(s))).spec;
    const down = floors[s]!.minReplicas - 1;
    // Above its new ceiling, the HPA scales down at once: the ReplicaSet removes a Pod, its process drains.
    await fleet.api.request('PATCH', hpaPath(s), { spec: { minReplicas: down, maxReplicas: down } }, 'application/merge-patch+json');
  }
  const ended = await Promise.all(runs.map((r) => r.done.then(() => Date.now())));
  const stopped = (s: string) => events.filter((e) => e.at >= t0 && e.type === 'stopped' && e.service === s).map((e) => e.exit);
  const drained = await until(60_000, async () => stopped('orchestrator').length === 1 && stopped('edge').length === 1);
  expect({ drained, orchestrator: stopped('orchestrator'), edge: stopped('edge') })
    .toEqual({ drained: true, orchestrator: [{ code: 0, signal: null }], edge: [{ code: 0, signal: null }] });
  // Every run: run.completed, its events' seqs 1..n without a gap or a repeat.
  expect(runs.map((r) => ({ user: r.user, terminal: r.terminal?.event, exactlyOnce: r.seqs.every((q, i) => q === i + 1) })))
    .toEqual(users.map((user) => ({ user, terminal: 'run.completed', exactlyOnce: true })));
  // The edge exited while every run streamed, holding some of them: their clients reconnected.
  const edgeExited = events.find((e) => e.at >= t0 && e.type === 'stopped' && e.service === 'edge')!.at;
  console.log(`scale-down: edge exited at +${edgeExited - t0} ms, runs ended at +${Math.min(...ended) - t0}..+${Math.max(...ended) - t0} ms, connections ${runs.map((r) => r.connections).join(' ')}`);
  expect({ leftMidRun: edgeExited < Math.min(...ended), reconnected: runs.some((r) => r.connections > 1) }).toEqual({ leftMidRun: true, reconnected: true });
  for (const s of ['orchestrator', 'edge']) {
    await fleet.api.request('PATCH', hpaPath(s), { spec: { minReplicas: floors[s]!.minReplicas, maxReplicas: floors[s]!.maxReplicas } }, 'application/merge-patch+json');
  }
});
