// A user's data is theirs: GET /api/conversations/:id/export returns all of a conversation as
// one document, DELETE /api/conversations/:id erases it everywhere (FerretDB and Redis), cancelling
// its active run first, idempotently; another user's id is 404 for both. Real mesh, real stores.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import Redis from 'ioredis';
import { MongoClient } from 'mongodb';
import { createClient, unary, TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import { PlanStatus, StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import {
  configureEmulator, readSse, type EmulatorProc, type FerretProc, type Mesh, type RedisProc, type SseEvent,
} from '../support';
import { startTestMesh, type TestMesh } from '../support/mesh';
import { signToken } from '../../services/edge/src/auth';
import { keys } from '../../services/orchestrator/src/runs/keys';

jest.setTimeout(180_000);

const ROOT = path.resolve(__dirname, '../..');
const SECRET = 'erasure-integration-secret-long-enough';
const alice = signToken(SECRET, 'alice');
const bob = signToken(SECRET, 'bob');
let redis: RedisProc, ferret: FerretProc, emulator: EmulatorProc, mesh: Mesh;
let t: TestMesh;
let kv: Redis;
let mongo: MongoClient;
let store: StoreServiceClient;

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-b', 'services/edge', 'services/orchestrator', 'services/store', 'services/llm-broker', 'services/tool-service', 'test/emulator'], { cwd: ROOT, stdio: 'inherit' });
  ({ redis, ferret, emulator, mesh } = t = await startTestMesh({
    name: 'erasure', jwtSecret: SECRET,
    emulatorEnv: { EMULATOR_TIME_SCALE: '0.1', EMULATOR_COMPLETION_TOKENS: '20', EMULATOR_REVISE_RATE: '0' },
    perService: { 'tool-service': { TOOL_CORPUS_SOURCES: 'docs' } },
  }));
  kv = new Redis(redis.url);
  mongo = await MongoClient.connect(ferret.uri);
  store = createClient(StoreServiceClient, mesh.store.addr);
}, 300_000);

afterAll(async () => {
  store?.close();
  await mongo?.close();
  kv?.disconnect();
  await t?.stop();
});

const api = (p: string, init: RequestInit = {}, token = alice) =>
  fetch(`${mesh.edge.url}${p}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });

async function newConversation(): Promise<string> {
  const res = await api('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'to be erased' }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** Posts a message; returns its stream's events up to `until` (and the rest of the stream as a promise). */
async function send(id: string, content: string): Promise<ReadableStream<Uint8Array>> {
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content }) });
  expect(res.status).toBe(200);
  return res.body!;
}

/** Every Redis key that names one of these ids. */
async function keysNaming(ids: string[]): Promise<string[]> {
  const all = await kv.keys('*');
  return all.filter((k) => ids.some((id) => k.includes(id)));
}

const docs = (collection: string, filter: object) => mongo.db().collection(collection).countDocuments(filter);

test('export returns all of a conversation; erase removes it everywhere, cancelling its active run; idempotent; 404 for another user', async () => {
  const id = await newConversation();
  // A completed run: messages, a run record with usage, a retained event log.
  const first = await readSse(await send(id, 'Search the latest news about solar power'), (e) => TERMINAL.has(e.event));
  expect(first.at(-1)!.event).toBe('run.completed');
  const firstRunId = (first.find((e) => e.event === 'run.started')!.data as { runId: string }).runId;
  // A plan made in the conversation (as the plan tool saves it).
  const planId = '6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f';
  await unary(store.savePlan.bind(store), {
    userId: 'alice',
    plan: { id: planId, userId: '', conversationId: id, title: 'plan', steps: ['a', 'b'], status: PlanStatus.PLAN_STATUS_DRAFT, createdAtMs: 0, updatedAtMs: 0 },
  });

  const exp = await api(`/api/conversations/${id}/export`);
  expect(exp.status).toBe(200);
  expect(exp.headers.get('content-disposition')).toBe(`attachment; filename="conversation-${id}.json"`);
  const doc = (await exp.json()) as any;
  expect(doc.conversation.id).toBe(id);
  expect(doc.messages.filter((m: any) => m.role === 'user').map((m: any) => m.content)).toEqual(['Search the latest news about solar power']);
  expect(doc.messages.some((m: any) => m.agent === 'reporter')).toBe(true);
  expect(doc.runs).toHaveLength(1);
  expect(doc.runs[0]).toMatchObject({ id: firstRunId, status: 'completed' });
  expect(doc.runs[0].usage.totalTokens).toBeGreaterThan(0);
  expect(doc.plans.map((p: any) => [p.id, p.status])).toEqual([[planId, 'draft']]);
  expect(doc.runLogs).toHaveLength(1);
  expect(doc.runLogs[0].events.map((e: any) => e.type)).toEqual(first.filter((e) => e.id).map((e) => e.event));

  // Someone else's id: 404 for both, and nothing happens to it.
  expect((await api(`/api/conversations/${id}/export`, {}, bob)).status).toBe(404);
  expect((await api(`/api/conversations/${id}`, { method: 'DELETE' }, bob)).status).toBe(404);
  expect((await api(`/api/conversations/${id}`)).status).toBe(200);

  // A second run, slowed down so that it is still running when the conversation is erased.
  await configureEmulator(emulator, { ttftMs: 20_000 });
  let second: SseEvent[];
  let secondRunId: string;
  try {
    const body = await send(id, 'Plan a summary of wind power');
    const reader = readSse(body, (e) => TERMINAL.has(e.event));
    await new Promise((r) => setTimeout(r, 1_000));
    const del = await api(`/api/conversations/${id}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    second = await reader;
  } finally {
    await configureEmulator(emulator, { ttftMs: 400 });
  }
  secondRunId = (second.find((e) => e.event === 'run.started')!.data as { runId: string }).runId;
  expect(second.at(-1)!.event).toBe('run.cancelled');

  // Gone from the API, the database and Redis.
  expect((await api(`/api/conversations/${id}`)).status).toBe(404);
  expect((await api(`/api/conversations/${id}/export`)).status).toBe(404);
  expect((await (await api('/api/conversations')).json() as any).conversations.map((c: any) => c.id)).not.toContain(id);
  expect(await docs('conversations', { _id: id })).toBe(0);
  expect(await docs('messages', { conversationId: id })).toBe(0);
  expect(await docs('runs', { conversationId: id })).toBe(0);
  expect(await docs('plans', { _id: planId })).toBe(0);
  const userMessageIds = doc.messages.filter((m: any) => m.role === 'user').map((m: any) => m.id);
  expect(await keysNaming([id, firstRunId, secondRunId, ...userMessageIds])).toEqual([]);
  expect(await kv.zscore(keys.leases, secondRunId)).toBeNull();

  // Idempotent for its owner; still 404 for anyone else; the erased id cannot be written into.
  expect((await api(`/api/conversations/${id}`, { method: 'DELETE' })).status).toBe(204);
  expect((await api(`/api/conversations/${id}`, { method: 'DELETE' }, bob)).status).toBe(404);
  expect((await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'hello?' }) })).status).toBe(404);
  expect(await docs('messages', { conversationId: id })).toBe(0);
});

test('erasing a conversation never seen is 404, a malformed id 400', async () => {
  expect((await api('/api/conversations/7d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a', { method: 'DELETE' })).status).toBe(404);
  expect((await api('/api/conversations/not-a-uuid', { method: 'DELETE' })).status).toBe(400);
  expect((await api('/api/conversations/not-a-uuid/export')).status).toBe(400);
});
