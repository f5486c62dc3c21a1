// The fleet as `npm start -- --replicas 2` runs it: two replicas of every service as real
// processes, the edges behind Debian's nginx (least_conn), gRPC callers balancing round-robin over
// every replica, and a real Prometheus scraping all of them with the mesh's rules. Replicas are
// killed with SIGKILL while they work: streams resume exactly once through nginx on the other
// edge, runs finish on the other orchestrator, a dead broker's queued calls never cause an
// upstream 429, calls go to the surviving store and tool-service, and MeshReplicaDown fires.
// Then every panel of the Grafana dashboard is queried against this Prometheus.
import fs from 'node:fs';
import path from 'node:path';
import {
  emulatorStats, EventSourceRun, exportedMetricNames, metricsIn, parseSseBlock, readSse, startRedis, waitFor,
  type EmulatorProc, type Fleet, type FleetReplica, type ServiceProc, type SseEvent,
} from '../support';
import { FLEET_CONCURRENCY as CONCURRENCY, startTestFleet, type TestFleet } from '../support/fleet';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';

jest.setTimeout(300_000);

const ROOT = path.resolve(__dirname, '../..');
const QUESTION = 'Search the latest news about solar panels and plan a short summary';
let asked = 0;
/** Each run its own question: identical ones would share the Planner's and Critic's cached answers, and these tests count upstream calls. */
const question = () => `${QUESTION} (${++asked})`;

type Replica = FleetReplica;

let setup: TestFleet, fleet: Fleet, emulator: EmulatorProc;
const killed: Replica[] = [];

beforeAll(async () => {
  setup = await startTestFleet({
    name: 'fleet', jwtSecret: 'fleet-test-secret-long-enough-for-hs256',
    redis: (logDir) => startRedis({ logDir }),
    ttftMs: 300, runLeaseMs: 2000,
    prometheus: { scrapeInterval: '1s', evaluationInterval: '1s' },
  });
  ({ fleet, emulator } = setup);
}, 600_000);

afterAll(() => setup?.stop());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const call = (p: string, init?: RequestInit, user?: string) => setup.call(p, init, user);
const newConversation = (user: string) => setup.newConversation(user);
const until = (what: string, check: () => Promise<boolean>, timeoutMs = 60_000) => waitFor(what, check, { timeoutMs, intervalMs: 200 });

/** Sum of every sample of a metric on a replica's /metrics (the edge serves it on its HTTP port). */
async function metricSum(r: Replica, name: string, labels = ''): Promise<number> {
  const url = r.service === 'edge' ? `${r.url}/metrics` : `http://127.0.0.1:${r.metricsPort}/metrics`;
  const text = await (await fetch(url)).text();
  return text.split('\n')
    .filter((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(labels))
    .reduce((s, l) => s + Number(l.split(' ').pop()), 0);
}

/** Every event exactly once: ids 1..n without gap or repeat, ending with run.completed. */
function expectExactlyOnce(r: EventSourceRun): void {
  expect(r.terminal?.event).toBe('run.completed');
  expect(r.seqs).toEqual(Array.from({ length: r.seqs.length }, (_, i) => i + 1));
}

async function kill(r: Replica): Promise<void> {
  await r.kill();
  killed.push(r);
}

test('runs through nginx complete, every replica of every service takes part, the cancel route passes through', async () => {
  const runs = await Promise.all(['u1', 'u2', 'u3', 'u4', 'u5', 'u6'].map(async (u) => new EventSourceRun(call, u, await newConversation(u), question())));
  await Promise.all(runs.map((r) => r.done));
  for (const r of runs) {
    expectExactlyOnce(r);
    expect(r.connections).toBe(1);
  }
  // nginx compresses JSON for a client that accepts gzip, never an event stream.
  const conversation = await newConversation('u1');
  const json = await call('/api/conversations?pageSize=50', { headers: { 'accept-encoding': 'gzip' } }, 'u1');
  expect(json.status).toBe(200);
  expect(json.headers.get('content-encoding')).toBe('gzip');
  const stream = await call(`/api/conversations/${conversation}/messages`, { method: 'POST', body: JSON.stringify({ content: question() }), headers: { 'accept-encoding': 'gzip' } }, 'u1');
  expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(stream.headers.get('content-encoding')).toBeNull();
  // The cancel route through nginx (it may reach the other edge and the other orchestrator).
  const seen: SseEvent[] = [];
  const reading = readSse(stream.body!, (e) => { seen.push(e); return TERMINAL.has(e.event); });
  await until('the run streaming', async () => seen.some((e) => e.event === 'token'));
  const cancel = await call(`/api/conversations/${conversation}/cancel`, { method: 'POST', body: '{}' }, 'u1');
  expect(cancel.status).toBe(202);
  expect(((await cancel.json()) as { cancelled: boolean }).cancelled).toBe(true);
  expect((await reading).at(-1)?.event).toBe('run.cancelled');
  const share = async (replicas: Replica[], metric: string) => Promise.all(replicas.map((r) => metricSum(r, metric)));
  const spread = {
    edge: await share(fleet.edges, 'edge_http_requests_total'),
    orchestrator: await share(fleet.orchestrators, 'orchestrator_runs_started_total'),
    broker: await share(fleet.brokers, 'llm_admissions_total'),
    tools: await share(fleet.tools, 'tool_calls_total'),
    store: await share(fleet.stores, 'store_db_query_seconds_count'),
  };
  console.log(`fleet spread (replica 1, replica 2): ${JSON.stringify(spread)}`);
  for (const [service, counts] of Object.entries(spread)) {
    for (const c of counts) expect({ service, calls: c > 0 }).toEqual({ service, calls: true });
  }
});

test('Prometheus scrapes every replica of every service', async () => {
  const expected = fleet.services.length;
  await until('all targets up', async () => {
    const t = (await (await fetch(`${fleet.prometheus!.url}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string }[] } };
    return t.data.activeTargets.length === expected && t.data.activeTargets.every((x) => x.health === 'up');
  }, 30_000);
  const up = (await (await fetch(`${fleet.prometheus!.url}/api/v1/query?query=${encodeURIComponent('sum by (job) (up)')}`)).json()) as {
    data: { result: { metric: { job: string }; value: [number, string] }[] };
  };
  const byJob = Object.fromEntries(up.data.result.map((r) => [r.metric.job, Number(r.value[1])]));
  expect(byJob).toEqual({ edge: 2, orchestrator: 2, 'llm-broker': 2, 'tool-service': 2, store: 2 });
});

test("kill -9 of the edge serving a live stream: the client resumes through nginx on the other edge, every event exactly once; another user's stream is untouched", async () => {
  const openOn = () => Promise.all(fleet.edges.map((e) => metricSum(e, 'edge_sse_open_streams')));
  await until('no open streams', async () => (await openOn()).every((n) => n === 0));
  const alice = new EventSourceRun(call, 'alice', await newConversation('alice'), question());
  await until('alice streaming', async () => alice.seqs.length >= 3);
  const afterAlice = await openOn();
  const victimIndex = afterAlice.indexOf(1);
  expect(afterAlice.filter((n) => n === 1)).toHaveLength(1);
  // least_conn: bob's stream goes to the edge that has none.
  const bob = new EventSourceRun(call, 'bob', await newConversation('bob'), question());
  await until('bob streaming', async () => bob.seqs.length >= 3);
  expect(await openOn()).toEqual([1, 1]);
  const victim = fleet.edges[victimIndex]!;
  const seenBeforeKill = alice.seqs.length;
  await kill(victim);
  await Promise.all([alice.done, bob.done]);
  expectExactlyOnce(alice);
  expectExactlyOnce(bob);
  expect(alice.connections).toBeGreaterThanOrEqual(2);
  expect(bob.connections).toBe(1);
  expect(alice.seqs.length).toBeGreaterThan(seenBeforeKill);
  console.log(`edge kill: alice had ${seenBeforeKill} events, resumed for ${alice.seqs.length - seenBeforeKill} more over ${alice.connections} connections; bob ${bob.seqs.length} events on 1`);
});

test('kill -9 of an orchestrator with runs in flight: every run completes on the other one', async () => {
  const users = ['o1', 'o2', 'o3', 'o4'];
  const runs = await Promise.all(users.map(async (u) => new EventSourceRun(call, u, await newConversation(u), question())));
  const active = () => Promise.all(fleet.orchestrators.map((o) => metricSum(o, 'orchestrator_active_runs')));
  await until('both orchestrators running runs', async () => (await active()).every((n) => n > 0), 30_000);
  const victim = fleet.orchestrators[0]!;
  const inFlight = (await active())[0]!;
  const survivor = fleet.orchestrators[1]!;
  const takeoversBefore = await metricSum(survivor, 'orchestrator_takeovers_total');
  await kill(victim);
  await Promise.all(runs.map((r) => r.done));
  for (const r of runs) expectExactlyOnce(r);
  const takeovers = (await metricSum(survivor, 'orchestrator_takeovers_total')) - takeoversBefore;
  expect(takeovers).toBeGreaterThanOrEqual(inFlight);
  expect(runs.some((r) => r.events.some((e) => e.event === 'agent.restarted'))).toBe(true);
  console.log(`orchestrator kill: ${inFlight} runs in flight on the victim, ${takeovers} taken over, ${runs.length} of ${runs.length} completed`);
});

test('kill -9 of a broker with queued calls: no upstream 429, queued calls go to the other broker, every run ends clearly', async () => {
  const before = await emulatorStats(emulator);
  // Six runs want more than CONCURRENCY calls at once: the rest wait in the brokers' queues.
  const users = ['b1', 'b2', 'b3', 'b4', 'b5', 'b6'];
  const runs = await Promise.all(users.map(async (u) => new EventSourceRun(call, u, await newConversation(u), question())));
  const queued = () => Promise.all(fleet.brokers.map((b) => metricSum(b, 'llm_queue_depth')));
  await until('calls queued on a broker', async () => (await queued()).some((n) => n > 0), 60_000);
  const depths = await queued();
  const victim = fleet.brokers[depths[0]! > 0 ? 0 : 1]!;
  const inFlight = await metricSum(victim, 'llm_in_flight');
  await kill(victim);
  await Promise.all(runs.map((r) => r.done));
  const after = await emulatorStats(emulator);
  const outcomes = runs.map((r) => r.terminal?.event);
  console.log(`broker kill: queued ${JSON.stringify(depths)}, ${inFlight} in flight on the victim; outcomes ${JSON.stringify(outcomes)}; upstream 429s ${after.rateLimited - before.rateLimited}, max in flight ${after.maxInFlight}`);
  expect(after.rateLimited - before.rateLimited).toBe(0);
  // The victim's queued calls are resubmitted to the other broker: only calls it had already sent
  // upstream can end their runs (degraded, "busy, try again", with a message), never silently.
  expect(outcomes.filter((o) => o !== 'run.completed').length).toBeLessThanOrEqual(inFlight);
  for (const r of runs) {
    const t = r.terminal!;
    expect(TERMINAL.has(t.event)).toBe(true);
    if (t.event !== 'run.completed') expect(String(t.data.message ?? '').length).toBeGreaterThan(0);
  }
});

test('kill -9 of a store and of a tool-service replica: calls go to the other replicas', async () => {
  const [deadStore, liveStore] = fleet.stores as [Replica, Replica];
  const [deadTools, liveTools] = fleet.tools as [Replica, Replica];
  await kill(deadStore);
  await kill(deadTools);
  const storeBefore = await metricSum(liveStore, 'store_db_query_seconds_count');
  const toolsBefore = await metricSum(liveTools, 'tool_calls_total');
  const runs = await Promise.all(['s1', 's2'].map(async (u) => new EventSourceRun(call, u, await newConversation(u), question())));
  await Promise.all(runs.map((r) => r.done));
  for (const r of runs) expectExactlyOnce(r);
  expect(await metricSum(liveStore, 'store_db_query_seconds_count')).toBeGreaterThan(storeBefore);
  expect(await metricSum(liveTools, 'tool_calls_total')).toBeGreaterThan(toolsBefore);
  const listed = await call('/api/conversations', {}, 's1');
  expect(listed.status).toBe(200);
});

test('Prometheus: MeshReplicaDown fires for every killed replica', async () => {
  expect(killed.length).toBeGreaterThanOrEqual(4);
  const want = killed.map((r) => `${r.service} ${r.service === 'edge' ? r.addr : `127.0.0.1:${r.metricsPort}`}`).sort();
  let firing: string[] = [];
  await until('MeshReplicaDown firing for the killed replicas', async () => {
    const a = (await (await fetch(`${fleet.prometheus!.url}/api/v1/alerts`)).json()) as {
      data: { alerts: { labels: Record<string, string>; state: string; annotations: Record<string, string> }[] };
    };
    firing = a.data.alerts.filter((x) => x.labels.alertname === 'MeshReplicaDown' && x.state === 'firing')
      .map((x) => `${x.labels.job} ${x.labels.instance}`).sort();
    return want.every((w) => firing.includes(w));
  }, 90_000);
  expect(firing).toEqual(want);
});

test('every panel of the Grafana dashboard gets data from the fleet\'s Prometheus', async () => {
  interface Panel { title: string; targets: { expr: string }[] }
  const dash = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/grafana/agent-mesh.json'), 'utf8')) as { panels: Panel[] };
  const names = new Set(((await (await fetch(`${fleet.prometheus!.url}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data);
  const exported = exportedMetricNames();
  const problems: string[] = [];
  for (const panel of dash.panels) {
    let series = 0;
    for (const t of panel.targets) {
      const res = (await (await fetch(`${fleet.prometheus!.url}/api/v1/query?query=${encodeURIComponent(t.expr)}`)).json()) as {
        status: string; error?: string; data?: { result: unknown[] };
      };
      if (res.status !== 'success') problems.push(`${panel.title}: ${t.expr}: ${res.error}`);
      series += res.data?.result.length ?? 0;
      // Every metric a query reads exists (a misspelt name would just return nothing): scraped
      // or recorded by now, or defined by a service (a labelled counter nothing incremented yet).
      for (const n of metricsIn(t.expr)) {
        if (!names.has(n) && !exported.has(n.replace(/_(bucket|sum|count)$/, ''))) problems.push(`${panel.title}: no metric ${n}`);
      }
    }
    if (series === 0) problems.push(`${panel.title}: no data`);
  }
  expect(problems).toEqual([]);
  expect(dash.panels.length).toBeGreaterThanOrEqual(15);
});
