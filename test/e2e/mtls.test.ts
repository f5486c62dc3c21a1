// The local stack with mutual TLS, as `npm start -- --mtls` runs it: a throwaway CA and a
// certificate per service made by openssl (deploy/local/stack.js makeMeshTls), every service
// started by startMesh with its own GRPC_TLS_* and found ready through its plain-HTTP /readyz.
// A user's run goes through the edge end to end (every gRPC hop is mutual TLS); a plaintext call
// to any service is refused, and so is TLS without a client certificate, while the documented
// grpc-health-probe command with one is served.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import { LlmBrokerServiceClient } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import {
  makeMeshTls, mintToken, readSse, startEmulator, startFerret, startMesh, startRedis, testDir, waitFor,
  type EmulatorProc, type FerretProc, type Mesh, type RedisProc, type SseEvent,
} from '../support';

jest.setTimeout(120_000);

const SECRET = 'mtls-e2e-secret-that-is-long-enough';
const PROBE = path.join(process.env.MESH_CACHE ?? path.join(os.homedir(), '.cache/agent-mesh'), 'bin/grpc-health-probe');
let dir: string;
let tls: ReturnType<typeof makeMeshTls>;
let redis: RedisProc, ferret: FerretProc, emulator: EmulatorProc, mesh: Mesh;
let token: string;

beforeAll(async () => {
  dir = testDir('mtls-e2e');
  tls = makeMeshTls(path.join(dir, 'tls'));
  [redis, ferret, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    startEmulator({ logDir: dir, env: { EMULATOR_TIME_SCALE: '0.2', EMULATOR_COMPLETION_TOKENS: '30', EMULATOR_REVISE_RATE: '0' } }),
  ]);
  mesh = await startMesh({
    logDir: dir, redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret: SECRET, perService: tls.perService,
  });
  token = await mintToken(SECRET, 'mtls-user');
});

afterAll(async () => {
  await mesh?.stop();
  await Promise.all([emulator, ferret, redis].map((p) => p?.stop()));
});

const grpcServices = () => [mesh.store, mesh.broker, mesh.tools, mesh.orchestrator];
const probe = (addr: string, ...flags: string[]) => {
  const r = spawnSync(PROBE, [`-addr=${addr}`, ...flags], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
};

test('every gRPC service is ready on its plain-HTTP /readyz and answers grpc-health-probe only with a client certificate of the CA', async () => {
  const edge = tls.perService.edge!;
  for (const s of grpcServices()) {
    const ready = await fetch(`http://127.0.0.1:${s.metricsPort}/readyz`);
    expect({ service: s.name, status: ready.status }).toEqual({ service: s.name, status: 200 });
    const withCert = probe(s.addr, '-tls', `-tls-ca-cert=${tls.ca}`, `-tls-client-cert=${edge.GRPC_TLS_CERT}`, `-tls-client-key=${edge.GRPC_TLS_KEY}`);
    expect({ service: s.name, ...withCert }).toEqual({ service: s.name, status: 0, out: 'status: SERVING' });
    // Refused: grpc-health-probe exits 2 (no connection) or 3 (the call failed), never 0 or 4 (answered).
    for (const flags of [[], ['-tls', `-tls-ca-cert=${tls.ca}`]]) {
      const refused = probe(s.addr, ...flags);
      expect({ service: s.name, flags, refused: [2, 3].includes(refused.status!) }).toEqual({ service: s.name, flags, refused: true });
    }
  }
});

test("a plaintext call to the store is refused: no user's data without a certificate", async () => {
  const client = new StoreServiceClient(mesh.store.addr, credentials.createInsecure());
  try {
    const err = await new Promise<ServiceError | null>((resolve) =>
      client.listConversations({ userId: 'mtls-user', pageSize: 10, pageToken: '' }, new Metadata(), { deadline: Date.now() + 3_000 }, (e) => resolve(e)),
    );
    expect(err?.code).toBe(status.UNAVAILABLE);
  } finally {
    client.close();
  }
});

test("each service serves only the services that call it (GRPC_ALLOWED_CALLERS): the tool-service's certificate reads the store's plans, no conversation, and calls no broker", async () => {
  const as = (name: string) => {
    const files = tls.perService[name]!;
    return credentials.createSsl(fs.readFileSync(tls.ca), fs.readFileSync(files.GRPC_TLS_KEY), fs.readFileSync(files.GRPC_TLS_CERT));
  };
  const call = <Req,>(client: { close(): void }, method: (req: Req, md: Metadata, o: { deadline: number }, cb: (e: ServiceError | null) => void) => void, req: Req) =>
    new Promise<ServiceError | null>((resolve) => method.call(client, req, new Metadata(), { deadline: Date.now() + 5_000 }, (e) => resolve(e))).finally(() => client.close());
  const store = (name: string) => new StoreServiceClient(mesh.store.addr, as(name));
  const conversations = { userId: 'mtls-user', pageSize: 10, pageToken: '' };
  expect(await call(store('edge'), StoreServiceClient.prototype.listConversations, conversations)).toBeNull();
  expect(await call(store('tool-service'), StoreServiceClient.prototype.listPlans, conversations)).toBeNull();
  const refused = await call(store('tool-service'), StoreServiceClient.prototype.listConversations, conversations);
  expect(refused?.code).toBe(status.PERMISSION_DENIED);
  expect(refused?.details).toBe('caller tool-service may not call /store.v1.StoreService/ListConversations');
  const broker = (name: string) => new LlmBrokerServiceClient(mesh.broker.addr, as(name));
  expect(await call(broker('orchestrator'), LlmBrokerServiceClient.prototype.listModels, {})).toBeNull();
  expect((await call(broker('tool-service'), LlmBrokerServiceClient.prototype.listModels, {}))?.code).toBe(status.PERMISSION_DENIED);
  // The refusal is the server's, logged with the caller's name.
  await waitFor("the refusal logged", async () => /"caller":"tool-service".*may not call/.test(mesh.broker.log()), { timeoutMs: 5_000 });
});

test('a user run streams through the edge end to end, every hop over mutual TLS', async () => {
  const api = (p: string, init: RequestInit = {}) =>
    fetch(`${mesh.edge.url}${p}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
  const created = await api('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'mtls' }) });
  expect(created.status).toBe(201);
  const { id } = (await created.json()) as { id: string };
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Search the latest news about wind power and plan a summary' }) });
  expect(res.status).toBe(200);
  const events: SseEvent[] = await readSse(res.body!, (e) => TERMINAL.has(e.event));
  expect(events.at(-1)?.event).toBe('run.completed');
  // The orchestrator reached the broker (tokens), the tool-service (a tool call) and the store.
  expect(events.some((e) => e.event === 'token')).toBe(true);
  expect(events.some((e) => e.event === 'tool.called')).toBe(true);
  // The run's outputs were written to the store (asynchronously: they may trail run.completed).
  let agents: string[] = [];
  await waitFor('the outputs stored', async () => {
    const stored = await api(`/api/conversations/${id}?pageSize=200`);
    const { messages } = (await stored.json()) as { messages: { role: string; agent?: string }[] };
    agents = [...new Set(messages.filter((m) => m.role !== 'user').map((m) => m.agent ?? ''))].sort();
    return stored.status === 200 && messages[0]?.role === 'user' && agents.length === 4;
  }, { timeoutMs: 10_000, intervalMs: 200 }).catch(() => undefined);
  expect(agents).toEqual(['critic', 'host', 'planner', 'reporter']);
  const health = await api('/api/health');
  expect(health.status).toBe(200);
});
