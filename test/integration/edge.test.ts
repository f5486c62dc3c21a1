// The edge as a real process in the real mesh (Redis, FerretDB, the emulator, all five services):
// auth, ownership, the bad-input batch, a full run, exact resume (same and another replica after
// kill -9), the SSE limiter's queue tokens, and the official openai client against the facade.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import {
  configureEmulator, emulatorStats, promMetric, readSse, startEmulator, startFerret, startMesh, startRedis, startService, testDir, waitFor,
  type EmulatorProc, type FerretProc, type Mesh, type RedisProc, type ServiceProc, type SseEvent,
} from '../support';
import { minimalImage } from '@agent-mesh/emulator';
import Anthropic from '@anthropic-ai/sdk';
import { signToken } from '../../services/edge/src/auth';
import { PEER_METRICS } from '../../services/edge/src/peer-summary';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';

jest.setTimeout(180_000);

const ROOT = path.resolve(__dirname, '../..');
const SECRET = 'edge-integration-secret-long-enough';
let dir: string;
let redis: RedisProc, ferret: FerretProc, emulator: EmulatorProc, mesh: Mesh;
const alice = signToken(SECRET, 'alice');
const bob = signToken(SECRET, 'bob');

beforeAll(async () => {
  for (const svc of ['common', 'store', 'llm-broker', 'tool-service', 'orchestrator', 'edge']) {
    if (svc !== 'common' && !fs.existsSync(path.join(ROOT, `services/${svc}/src/main.ts`))) throw new Error(`services/${svc} has no main.ts yet`);
  }
  execFileSync('npx', ['tsc', '-b', 'services/edge', 'services/orchestrator', 'services/store', 'services/llm-broker', 'services/tool-service', 'test/emulator'], { cwd: ROOT, stdio: 'inherit' });
  dir = testDir('edge');
  [redis, ferret, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    startEmulator({ logDir: dir, env: { EMULATOR_TIME_SCALE: '0.2', EMULATOR_COMPLETION_TOKENS: '30', EMULATOR_REVISE_RATE: '0' } }),
  ]);
  mesh = await startMesh({
    logDir: dir,
    redisUrl: redis.url,
    mongoUri: ferret.uri,
    llmBaseUrl: `${emulator.url}/v1`,
    jwtSecret: SECRET,
    perService: { edge: { RATE_LIMIT_PER_MINUTE: '1000' } },
  });
});

afterAll(async () => {
  await mesh?.stop();
  await Promise.all([emulator, ferret, redis].map((p) => p?.stop()));
});

const startEdge = (env: Record<string, string> = {}) => mesh.addEdge(env);

const call = (base: string, p: string, token: string | null, init: RequestInit = {}) =>
  fetch(`${base}${p}`, {
    ...init,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json', ...(init.headers ?? {}) },
  });
const api = (p: string, init: RequestInit = {}, token: string | null = alice) => call(mesh.edge.url!, p, token, init);

async function newConversation(base = mesh.edge.url!, token = alice): Promise<string> {
  const res = await call(base, '/api/conversations', token, { method: 'POST', body: JSON.stringify({ title: 'edge test' }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

const ids = (events: SseEvent[]) => events.filter((e) => e.id).map((e) => Number(e.id!.split(':')[1]));

test('401 without, with a forged and with an expired token', async () => {
  expect((await api('/api/conversations', {}, null)).status).toBe(401);
  expect((await api('/api/conversations', {}, signToken('forged-secret', 'alice'))).status).toBe(401);
  const expired = await api('/api/conversations', {}, signToken(SECRET, 'alice', { exp: Math.floor(Date.now() / 1000) - 120 }));
  expect(expired.status).toBe(401);
  expect(((await expired.json()) as any).error.message).toMatch(/expired/);
});

test("another user's conversation is 404", async () => {
  const id = await newConversation();
  expect((await api(`/api/conversations/${id}`, {}, bob)).status).toBe(404);
  expect((await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'hi' }) }, bob)).status).toBe(404);
  expect((await api(`/api/conversations/${id}/events`, {}, bob)).status).toBe(404);
});

test('the bad-input batch is answered with 4xx and the services stay healthy', async () => {
  const id = await newConversation();
  const url = `/api/conversations/${id}/messages`;
  const batch: [string, RequestInit, number][] = [
    ['malformed JSON', { method: 'POST', body: '{"content": ' }, 400],
    ['oversized body', { method: 'POST', body: JSON.stringify({ content: 'x'.repeat(70_000) }) }, 413],
    ['wrong type', { method: 'POST', body: JSON.stringify({ content: 42 }) }, 400],
    ['missing content', { method: 'POST', body: '{}' }, 400],
    ['empty content', { method: 'POST', body: JSON.stringify({ content: '' }) }, 400],
    ['content over the limit', { method: 'POST', body: JSON.stringify({ content: 'x'.repeat(8_001) }) }, 400],
    ['invalid UTF-8', { method: 'POST', body: Buffer.concat([Buffer.from('{"content":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]) }, 400],
    ['NUL character', { method: 'POST', body: JSON.stringify({ content: 'a\u0000b' }) }, 400],
    ['wrong content type', { method: 'POST', body: 'content=hi', headers: { 'content-type': 'text/plain' } }, 415],
  ];
  for (const [name, init, code] of batch) {
    const res = await api(url, init);
    const body = (await res.json()) as any;
    expect([name, res.status, typeof body.error.message]).toEqual([name, code, 'string']);
  }
  for (const bad of ['%7B%22%24ne%22%3A1%7D', '%24gt', 'abc', `${id}%00`]) {
    const res = await api(`/api/conversations/${bad}`);
    expect([bad, res.status]).toEqual([bad, 400]);
  }
  expect((await api(`/api/conversations/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}`)).status).toBe(404);
  const health = await api('/api/health');
  const report = (await health.json()) as any;
  expect([health.status, JSON.stringify(report.checks)]).toEqual([200, expect.not.stringContaining('down')]);
  expect(Object.keys(report.checks).sort()).toEqual(['cache', 'database', 'llm', 'orchestrator', 'toolService']);
});

test('a message streams tokens of all four agents to run.completed, ids strictly consecutive', async () => {
  const id = await newConversation();
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Plan a three-day trip to Kyoto' }) });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
  expect(res.headers.get('x-accel-buffering')).toBe('no');
  const events = await readSse(res.body!, (e) => TERMINAL.has(e.event));
  expect(events.at(-1)!.event).toBe('run.completed');
  expect(events[0]!.event).toBe('run.started');
  const seqs = ids(events);
  expect(seqs).toEqual(seqs.map((_, i) => i + 1));
  const agents = new Set(events.filter((e) => e.event === 'token').map((e) => e.data.agent));
  expect([...agents].sort()).toEqual(['critic', 'host', 'planner', 'reporter']);
  // A second tab joining after the end replays the whole log.
  const join = await api(`/api/conversations/${id}/events`);
  const replay = await readSse(join.body!, (e) => TERMINAL.has(e.event));
  expect(ids(replay)).toEqual(seqs);
});

test('resume after the client connection is killed: exactly the next event, no duplicate, no gap', async () => {
  const id = await newConversation();
  const ctl = new AbortController();
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Compare three databases' }), signal: ctl.signal });
  const first = await readSse(res.body!, (e) => ids([e]).length === 1 && ids([e])[0] === 6);
  ctl.abort();
  const last = first.filter((e) => e.id).at(-1)!.id!;
  const resumed = await api(`/api/conversations/${id}/events`, { headers: { 'last-event-id': last } });
  expect(resumed.status).toBe(200);
  const rest = await readSse(resumed.body!, (e) => TERMINAL.has(e.event));
  expect(rest.find((e) => e.id)!.id).toBe(`${last.split(':')[0]}:7`);
  const all = [...ids(first), ...ids(rest)];
  expect(all).toEqual(all.map((_, i) => i + 1));
  expect(rest.at(-1)!.event).toBe('run.completed');
});

test('resume through a second edge replica after kill -9 of the first, mid-run', async () => {
  const edgeA = await startEdge();
  const edgeB = await startEdge();
  const id = await newConversation(edgeA.url!);
  const res = await call(edgeA.url!, `/api/conversations/${id}/messages`, alice, { method: 'POST', body: JSON.stringify({ content: 'Write a haiku about queues' }) });
  const reader = res.body!;
  const first = await readSse(reader, (e) => (ids([e])[0] ?? 0) >= 4).catch(() => [] as SseEvent[]);
  await edgeA.kill();
  const last = first.filter((e) => e.id).at(-1)!.id!;
  const resumed = await call(edgeB.url!, `/api/conversations/${id}/events`, alice, { headers: { 'last-event-id': last } });
  const rest = await readSse(resumed.body!, (e) => TERMINAL.has(e.event));
  const all = [...ids(first), ...ids(rest)];
  expect(all).toEqual(all.map((_, i) => i + 1));
  expect(rest.at(-1)!.event).toBe('run.completed');
});

test('SSE_MAX_STREAMS=1: queue tokens are served in order', async () => {
  const edge = await startEdge({ SSE_MAX_STREAMS: '1' });
  const [a, b, c] = [await newConversation(edge.url!), await newConversation(edge.url!), await newConversation(edge.url!)];
  const send = (conv: string, token?: string) =>
    call(edge.url!, `/api/conversations/${conv}/messages`, alice, {
      method: 'POST',
      body: JSON.stringify({ content: 'Summarise the news' }),
      headers: token ? { 'x-queue-token': token } : {},
    });
  const first = await send(a);
  expect(first.status).toBe(200);
  const q1 = await send(b);
  const q2 = await send(c);
  expect([q1.status, q2.status]).toEqual([503, 503]);
  expect(Number(q1.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  const t1 = (await q1.json()) as any;
  const t2 = (await q2.json()) as any;
  expect([t1.position, t2.position]).toEqual([1, 2]);
  await readSse(first.body!, (e) => TERMINAL.has(e.event));
  await new Promise((r) => setTimeout(r, 200));
  const overtake = await send(c, t2.queueToken);
  expect(overtake.status).toBe(503);
  await overtake.json();
  const second = await send(b, t1.queueToken);
  expect(second.status).toBe(200);
  await readSse(second.body!, (e) => TERMINAL.has(e.event));
  await new Promise((r) => setTimeout(r, 200));
  const third = await send(c, t2.queueToken);
  expect(third.status).toBe(200);
  await readSse(third.body!, (e) => TERMINAL.has(e.event));
});

/** A direct model through the official openai client, whole and streamed (usage included): both answer, with usage. */
async function expectDirectAnswers(client: OpenAI): Promise<void> {
  const whole = await client.chat.completions.create({ model: 'upstream', messages: [{ role: 'user', content: 'Say hello' }] });
  expect(whole.choices[0]!.message.content!.length).toBeGreaterThan(0);
  expect(whole.usage!.total_tokens).toBeGreaterThan(0);
  const stream = await client.chat.completions.create({ model: 'upstream', messages: [{ role: 'user', content: 'Say hello' }], stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  expect(text.length).toBeGreaterThan(0);
  expect(usage!.total_tokens).toBeGreaterThan(0);
}

test('the official openai client works against the facade, streamed and not', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const models = await client.models.list();
  expect(models.data.map((m) => m.id)).toContain('agent-mesh');
  await expectDirectAnswers(client);
  const mesh1 = await client.chat.completions.create({ model: 'agent-mesh', messages: [{ role: 'user', content: 'What is a queue?' }] });
  expect(mesh1.choices[0]!.message.content!.length).toBeGreaterThan(0);
  const meshStream = await client.chat.completions.create({ model: 'agent-mesh', messages: [{ role: 'user', content: 'What is a stack?' }], stream: true });
  let meshText = '';
  for await (const chunk of meshStream) meshText += chunk.choices[0]?.delta?.content ?? '';
  expect(meshText.length).toBeGreaterThan(0);
});

test('the official openai client gets tool calls from the facade, streamed and not, and sends their results back', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const tools: OpenAI.ChatCompletionTool[] = [
    { type: 'function', function: { name: 'search_web', description: 'Search the web', parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } } },
  ];
  const ask: OpenAI.ChatCompletionMessageParam = { role: 'user', content: 'Search the latest news about tidal power' };
  const before = (await emulatorStats(emulator)).toolCalls;

  const plain = await client.chat.completions.create({ model: 'emulator-1', messages: [ask], tools });
  const choice = plain.choices[0]!;
  expect(choice.finish_reason).toBe('tool_calls');
  expect(choice.message.content).toBeNull();
  expect(choice.message.tool_calls).toHaveLength(1);
  const call = choice.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
  expect(call).toMatchObject({ type: 'function', function: { name: 'search_web' } });
  expect(call.id).toMatch(/^call_/);
  expect(JSON.parse(call.function.arguments).query).toMatch(/tidal/i);

  // Two parallel calls, streamed as they are generated, as OpenAI streams them: a call's first
  // chunk has its index, id, type and name, the next ones more of its arguments, the two calls'
  // interleaved (the provider sends their ids and names late: the facade names each call first).
  const stream = await client.chat.completions.create({ model: 'emulator-1+parallel_tool_calls', messages: [ask], tools, stream: true });
  const calls: { id?: string; name: string; args: string; chunks: number }[] = [];
  const order: number[] = [];
  let finish: string | null | undefined;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    for (const d of c?.delta?.tool_calls ?? []) {
      if (!calls[d.index]) expect(d).toMatchObject({ id: expect.stringMatching(/^call_/), type: 'function', function: { name: 'search_web' } });
      else expect(d.id).toBeUndefined();
      const acc = (calls[d.index] ??= { name: '', args: '', chunks: 0 });
      if (d.id) acc.id = d.id;
      acc.name += d.function?.name ?? '';
      acc.args += d.function?.arguments ?? '';
      acc.chunks += 1;
      order.push(d.index);
    }
    if (c?.finish_reason) finish = c.finish_reason;
  }
  expect(finish).toBe('tool_calls');
  expect(calls).toHaveLength(2);
  expect(new Set(calls.map((c) => c.id)).size).toBe(2);
  for (const c of calls) {
    expect(c.name).toBe('search_web');
    expect(JSON.parse(c.args).query).toMatch(/tidal/i);
    expect(c.chunks).toBeGreaterThan(2);
  }
  expect(order.indexOf(1)).toBeLessThan(order.lastIndexOf(0));
  expect((await emulatorStats(emulator)).toolCalls - before).toBe(2);

  // The result goes back as a `tool` message after the assistant's call. The emulator quotes the
  // result and names the function of the call it answers (found through the assistant's tool_calls).
  const assistant: OpenAI.ChatCompletionAssistantMessageParam = {
    role: 'assistant', content: null, tool_calls: [{ id: 'call_weather1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Brest"}' } }],
  };
  const answer = await client.chat.completions.create({
    model: 'emulator-1',
    tools,
    messages: [ask, assistant, { role: 'tool', tool_call_id: 'call_weather1', content: '{"forecast":"spring tides and westerly gales"}' }],
  });
  expect(answer.choices[0]!.finish_reason).toBe('stop');
  expect(answer.choices[0]!.message.tool_calls).toBeUndefined();
  expect(answer.choices[0]!.message.content).toContain('According to the get_weather tool, "spring tides and westerly gales"');

  // OpenAI's rules for the two fields: a 400, not a 500.
  const bad = async (messages: unknown[]) =>
    (await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'emulator-1', messages }) })).status;
  expect(await bad([{ role: 'tool', content: 'x' }])).toBe(400);
  expect(await bad([{ role: 'user', content: 'x', tool_calls: [{ id: 'a', type: 'function', function: { name: 'f', arguments: '{}' } }] }])).toBe(400);
  expect(await bad([{ role: 'assistant', content: null, tool_calls: [{ id: 'a', type: 'function', function: { name: 'f' } }] }])).toBe(400);
});

/** The events' sequence_number, in the order they came. */
const sequenceNumbersOf = (events: { sequence_number: number }[]) => events.map((e) => e.sequence_number);

test('the Responses API through the official client: text streamed and not, a function call and its output sent back', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const whole = await client.responses.create({ model: 'emulator-1', instructions: 'Be brief.', input: 'Why is the sea salty?' });
  expect(whole.status).toBe('completed');
  expect(whole.output_text.length).toBeGreaterThan(20);
  expect(whole.usage!.input_tokens).toBeGreaterThan(5);
  expect(whole.usage!.total_tokens).toBe(whole.usage!.input_tokens + whole.usage!.output_tokens);

  let text = '';
  let completed: OpenAI.Responses.Response | undefined;
  for await (const e of await client.responses.create({ model: 'emulator-1', input: 'Why is the sea salty?', stream: true })) {
    if (e.type === 'response.output_text.delta') text += e.delta;
    if (e.type === 'response.completed') completed = e.response;
  }
  expect(text.length).toBeGreaterThan(20);
  expect(completed!.output).toMatchObject([{ type: 'message', content: [{ type: 'output_text', text }] }]);
  expect(completed!.usage!.output_tokens).toBeGreaterThan(0);

  const tools: OpenAI.Responses.FunctionTool[] = [
    { type: 'function', name: 'search_web', description: 'Search the web', parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] }, strict: false },
  ];
  const question = 'Search the latest news about tidal power';
  const asked = await client.responses.create({ model: 'emulator-1', input: question, tools });
  const call = asked.output.find((i): i is OpenAI.Responses.ResponseFunctionToolCall => i.type === 'function_call')!;
  expect(call).toMatchObject({ name: 'search_web', status: 'completed' });
  expect(JSON.parse(call.arguments).query).toMatch(/tidal/i);

  // Streamed, two parallel calls: one output item at a time, the first named streaming its
  // arguments as they are generated, the other whole after it; response.completed lists them as streamed.
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ model: 'emulator-1+parallel_tool_calls', input: question, tools, stream: true })) events.push(e);
  const added = events.filter((e): e is OpenAI.Responses.ResponseOutputItemAddedEvent => e.type === 'response.output_item.added');
  expect(added.map((e) => [e.output_index, e.item.type])).toEqual([[0, 'function_call'], [1, 'function_call']]);
  const argDeltas = (i: number) => events.filter((e): e is OpenAI.Responses.ResponseFunctionCallArgumentsDeltaEvent => e.type === 'response.function_call_arguments.delta' && e.output_index === i);
  expect(argDeltas(0).length).toBeGreaterThan(2);
  // The first item's deltas come before the second item is added: one item at a time.
  expect(events.indexOf(argDeltas(0).at(-1)!)).toBeLessThan(events.indexOf(added[1]!));
  const streamedCalls = events.find((e): e is OpenAI.Responses.ResponseCompletedEvent => e.type === 'response.completed')!.response.output as OpenAI.Responses.ResponseFunctionToolCall[];
  expect(streamedCalls).toHaveLength(2);
  expect(new Set(streamedCalls.map((c) => c.call_id)).size).toBe(2);
  for (const [i, c] of streamedCalls.entries()) {
    expect(c).toMatchObject({ type: 'function_call', id: added[i]!.item.id, name: 'search_web', status: 'completed' });
    expect(argDeltas(i).map((e) => e.delta).join('')).toBe(c.arguments);
    expect(JSON.parse(c.arguments).query).toMatch(/tidal/i);
  }
  expect(sequenceNumbersOf(events)).toEqual(events.map((_, i) => i));
  // The call, as the answer gave it, and its output go back as input items.
  const answer = await client.responses.create({
    model: 'emulator-1',
    tools,
    input: [{ role: 'user', content: question }, call, { type: 'function_call_output', call_id: call.call_id, output: '{"news":"a new tidal lagoon opened"}' }],
  });
  // The emulator quotes the tool result it was given.
  expect(answer.output_text).toContain('According to the web results, "a new tidal lagoon opened"');
});

test('background responses through the official client: queued at once and read back ended; cancelled through another edge, which stops the call where it runs; an edge that shuts down writes its call failed', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const created = await client.responses.create({ model: 'emulator-1', input: 'Why is the sea salty?', background: true });
  expect(created).toMatchObject({ status: 'queued', background: true, output: [] });
  const ended = async (c: OpenAI, id: string) => {
    let read: OpenAI.Responses.Response | undefined;
    await waitFor(`${id} ended`, async () => !['queued', 'in_progress'].includes((read = await c.responses.retrieve(id)).status!), { timeoutMs: 30_000, intervalMs: 100 });
    return read!;
  };
  const done = await ended(client, created.id);
  expect(done).toMatchObject({ id: created.id, status: 'completed', background: true, error: null });
  expect(done.output_text.length).toBeGreaterThan(20);
  expect(done.usage!.output_tokens).toBeGreaterThan(0);
  // A later call continues from it; a cancel after its end answers it as it is.
  const next = await client.responses.create({ model: 'emulator-1', input: 'And rivers?', previous_response_id: created.id, store: false });
  expect(next.usage!.input_tokens).toBeGreaterThan(done.usage!.input_tokens);
  expect((await client.responses.cancel(created.id)).status).toBe('completed');
  // What OpenAI refuses too: a cancel of a response not in the background, background without store.
  const plain = await client.responses.create({ model: 'emulator-1', input: 'Hi', store: true });
  await expect(client.responses.cancel(plain.id)).rejects.toBeInstanceOf(OpenAI.ConflictError);
  await expect(client.responses.create({ model: 'emulator-1', input: 'Hi', background: true, store: false })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
  expect((await api(`/v1/responses/${done.id}/cancel`, { method: 'POST' }, bob)).status).toBe(404);

  // A call that stalls at the provider for 12 s once its first tokens came: cancelled through
  // another edge, it is stopped on the edge that runs it (the provider sees its request aborted).
  await configureEmulator(emulator, { stallMs: 60_000 });
  const other = await startEdge();
  const closing = await startEdge();
  try {
    const elsewhere = new OpenAI({ apiKey: alice, baseURL: `${other.url}/v1`, maxRetries: 0 });
    const before = (await emulatorStats(emulator)).aborted;
    const stalled = await client.responses.create({ model: 'emulator-1+stall', input: 'Why is the sky blue?', background: true });
    await waitFor('in progress', async () => (await client.responses.retrieve(stalled.id)).status === 'in_progress', { timeoutMs: 10_000, intervalMs: 50 });
    const cancelled = await elsewhere.responses.cancel(stalled.id);
    expect(cancelled).toMatchObject({ id: stalled.id, status: 'cancelled', output: [] });
    await waitFor('the provider call aborted', async () => (await emulatorStats(emulator)).aborted > before, { timeoutMs: 5_000, intervalMs: 50 });
    expect((await client.responses.retrieve(stalled.id)).status).toBe('cancelled');
    await expect(client.responses.create({ model: 'emulator-1', input: 'More', previous_response_id: stalled.id })).resolves.toMatchObject({ status: 'completed' });

    // An edge shut down while its call stalls: given the drain's time, then stopped and written failed.
    const onClosing = new OpenAI({ apiKey: alice, baseURL: `${closing.url}/v1`, maxRetries: 0 });
    const cut = await onClosing.responses.create({ model: 'emulator-1+stall', input: 'Why is the grass green?', background: true });
    await waitFor('in progress', async () => (await client.responses.retrieve(cut.id)).status === 'in_progress', { timeoutMs: 10_000, intervalMs: 50 });
    // A pending response is not continued from.
    await expect(client.responses.create({ model: 'emulator-1', input: 'More', previous_response_id: cut.id })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await closing.stop();
    expect(await client.responses.retrieve(cut.id)).toMatchObject({ status: 'failed', error: { code: 'server_shutdown' } });
  } finally {
    await configureEmulator(emulator, { stallMs: 10_000 });
    await Promise.all([other.stop(), closing.stop()]);
  }
});

test('a background response streamed through the official client: from queued to completed; a caller who left resumes it from another edge after the last event it had, reads it all again once ended, and sees a cancel end it; only background responses stream again', async () => {
  await configureEmulator(emulator, { stallMs: 1_500 });
  const other = await startEdge();
  try {
    const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
    const elsewhere = new OpenAI({ apiKey: alice, baseURL: `${other.url}/v1`, maxRetries: 0 });
    const abortedBefore = (await emulatorStats(emulator)).aborted;
    // The caller leaves at its first token: the provider then stalls 1.5 s, and the call runs on.
    const first: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await client.responses.create({ model: 'emulator-1+stall', input: 'Why is the sea salty?', background: true, stream: true })) {
      first.push(event);
      if (event.type === 'response.output_text.delta') break;
    }
    expect(first.map((e) => e.type)).toEqual(['response.created', 'response.queued', 'response.in_progress', 'response.output_item.added', 'response.content_part.added', 'response.output_text.delta']);
    const created = (first[0] as OpenAI.Responses.ResponseCreatedEvent).response;
    expect(created).toMatchObject({ status: 'queued', background: true, output: [] });
    // Resumed through another edge, after the last event it had: the rest, live, to the end.
    const rest: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await elsewhere.responses.retrieve(created.id, { stream: true, starting_after: first.at(-1)!.sequence_number })) rest.push(event);
    const all = [...first, ...rest];
    expect(all.map((e) => e.sequence_number)).toEqual(all.map((_, i) => i));
    expect(rest.at(-1)).toMatchObject({ type: 'response.completed', response: { id: created.id, status: 'completed' } });
    const deltas = all.filter((e): e is OpenAI.Responses.ResponseTextDeltaEvent => e.type === 'response.output_text.delta');
    expect(deltas.length).toBeGreaterThan(5);
    const kept = await client.responses.retrieve(created.id);
    expect(kept).toMatchObject({ status: 'completed', background: true });
    expect(deltas.map((e) => e.delta).join('')).toBe(kept.output_text);
    expect((await emulatorStats(emulator)).aborted).toBe(abortedBefore);
    // Once ended, from the first edge (which ran it), all of it again, as it was sent.
    const again: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await client.responses.retrieve(created.id, { stream: true })) again.push(event);
    expect(again).toEqual(all);

    // Only a background response streams again (409, as its cancel); another user's is 404; a cursor of the wrong form a 400.
    const plain = await client.responses.create({ model: 'emulator-1', input: 'Hi', store: true });
    await expect(client.responses.retrieve(plain.id, { stream: true })).rejects.toBeInstanceOf(OpenAI.ConflictError);
    expect((await api(`/v1/responses/${created.id}?stream=true`, {}, bob)).status).toBe(404);
    expect((await api(`/v1/responses/${created.id}?stream=true&starting_after=-1`)).status).toBe(400);

    // A stream followed from another edge ends with the response's cancel.
    await configureEmulator(emulator, { stallMs: 60_000 });
    const stalled: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await client.responses.create({ model: 'emulator-1+stall', input: 'Why is the sky blue?', background: true, stream: true })) {
      stalled.push(event);
      if (event.type === 'response.output_text.delta') break;
    }
    const stalledId = (stalled[0] as OpenAI.Responses.ResponseCreatedEvent).response.id;
    // Its edge exports it as running.
    const running = async () => Number(/^edge_background_responses\{[^}]*\} (\d+)$/m.exec(await (await fetch(`${mesh.edge.url}/metrics`)).text())?.[1]);
    expect(await running()).toBe(1);
    const followed = (async () => {
      const seen: OpenAI.Responses.ResponseStreamEvent[] = [];
      for await (const event of await elsewhere.responses.retrieve(stalledId, { stream: true, starting_after: 1 })) seen.push(event);
      return seen;
    })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await elsewhere.responses.cancel(stalledId);
    const seen = await followed;
    expect(seen[0]!.sequence_number).toBe(2);
    expect(seen.at(-1)).toMatchObject({ type: 'error', code: 'response_cancelled' });
    await waitFor('no background response running', async () => (await running()) === 0, { timeoutMs: 5_000, intervalMs: 50 });
  } finally {
    await configureEmulator(emulator, { stallMs: 10_000 });
    await other.stop();
  }
});

test('kept responses through the official client, in the store: previous_response_id carries the conversation (a function call\'s output sent alone), retrieve and delete, another user\'s 404; listed and erased all together', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const tools: OpenAI.Responses.FunctionTool[] = [
    { type: 'function', name: 'search_web', description: 'Search the web', parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] }, strict: false },
  ];
  const asked = await client.responses.create({ model: 'emulator-1', instructions: 'Be brief.', input: 'Search the latest news about tidal power', tools });
  expect((asked as unknown as { store: boolean }).store).toBe(true);
  const call = asked.output.find((i): i is OpenAI.Responses.ResponseFunctionToolCall => i.type === 'function_call')!;
  // Only the output goes back: the question and the call come from the kept response.
  const answer = await client.responses.create({
    model: 'emulator-1',
    tools,
    previous_response_id: asked.id,
    input: [{ type: 'function_call_output', call_id: call.call_id, output: '{"news":"a new tidal lagoon opened"}' }],
  });
  expect(answer.previous_response_id).toBe(asked.id);
  expect(answer.output_text).toContain('According to the web results, "a new tidal lagoon opened"');

  // A text turn after it: the provider is sent the whole conversation (its prompt is longer than the same input alone).
  const alone = await client.responses.create({ model: 'emulator-1', input: 'Thanks, and the tides?', store: false });
  const next = await client.responses.create({ model: 'emulator-1', input: 'Thanks, and the tides?', previous_response_id: answer.id });
  expect(next.usage!.input_tokens).toBeGreaterThan(alone.usage!.input_tokens + 20);

  // Streamed, it is kept too: the id in response.completed can be read back at once.
  let streamedId = '';
  for await (const e of await client.responses.create({ model: 'emulator-1', input: 'Why is the sea salty?', previous_response_id: next.id, stream: true })) {
    if (e.type === 'response.completed') streamedId = e.response.id;
  }
  expect((await client.responses.retrieve(streamedId)).previous_response_id).toBe(next.id);

  // Its input items, as the client pages them (newest first): the question, the call, its output.
  const items: OpenAI.Responses.ResponseItem[] = [];
  for await (const item of client.responses.inputItems.list(answer.id, { limit: 2 })) items.push(item);
  expect(items.map((i) => i.type)).toEqual(['function_call_output', 'function_call', 'message']);
  expect(new Set(items.map((i) => i.id)).size).toBe(3);

  // input_tokens counts what the provider then bills, the kept conversation included.
  const counted = await api('/v1/responses/input_tokens', { method: 'POST', body: JSON.stringify({ model: 'emulator-1', input: 'And the moon?', previous_response_id: next.id }) });
  const billed = await client.responses.create({ model: 'emulator-1', input: 'And the moon?', previous_response_id: next.id, store: false });
  expect(await counted.json()).toEqual({ object: 'response.input_tokens', input_tokens: billed.usage!.input_tokens });

  const read = await client.responses.retrieve(answer.id);
  expect(read.output_text).toBe(answer.output_text);
  expect(read.usage).toEqual(answer.usage);
  // store: false keeps nothing.
  await expect(client.responses.retrieve(alone.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);

  const other = new OpenAI({ apiKey: bob, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  await expect(other.responses.retrieve(answer.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  await expect(other.responses.delete(answer.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  await expect(other.responses.create({ model: 'emulator-1', input: 'hi', previous_response_id: answer.id })).rejects.toMatchObject({ status: 400, code: 'previous_response_not_found', param: 'previous_response_id' });

  await client.responses.delete(answer.id);
  await expect(client.responses.retrieve(answer.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  await expect(client.responses.create({ model: 'emulator-1', input: 'hi', previous_response_id: answer.id })).rejects.toMatchObject({ status: 400, code: 'previous_response_not_found' });
  // What was kept before it still stands: its successor carries the conversation itself.
  expect((await client.responses.retrieve(next.id)).id).toBe(next.id);

  // The caller finds what is kept for them without its ids, newest first, and erases it all at once.
  const listAll = async (token: string): Promise<{ id: string; createdAt: string }[]> => {
    const all: { id: string; createdAt: string }[] = [];
    let pageToken: string | null = null;
    do {
      const res = await api(`/api/responses?pageSize=2${pageToken ? `&pageToken=${pageToken}` : ''}`, {}, token);
      expect(res.status).toBe(200);
      const page = (await res.json()) as { responses: { id: string; createdAt: string }[]; nextPageToken: string | null };
      all.push(...page.responses);
      pageToken = page.nextPageToken;
    } while (pageToken && all.length < 1_000);
    return all;
  };
  const listed = await listAll(alice);
  const ids = listed.map((r) => r.id);
  expect(ids).toEqual(expect.arrayContaining([asked.id, next.id, streamedId]));
  for (const gone of [answer.id, alone.id, billed.id]) expect(ids).not.toContain(gone);
  expect(new Set(ids).size).toBe(ids.length);
  const times = listed.map((r) => Date.parse(r.createdAt));
  expect(times).toEqual([...times].sort((a, b) => b - a));
  expect(ids.indexOf(streamedId)).toBeLessThan(ids.indexOf(next.id));
  expect(ids.indexOf(next.id)).toBeLessThan(ids.indexOf(asked.id));
  expect((await listAll(bob)).map((r) => r.id)).not.toContain(next.id);

  const erased = await api('/api/responses', { method: 'DELETE' });
  expect(erased.status).toBe(200);
  expect(await erased.json()).toEqual({ deleted: listed.length });
  expect(await listAll(alice)).toEqual([]);
  await expect(client.responses.retrieve(next.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  await expect(client.responses.create({ model: 'emulator-1', input: 'hi', previous_response_id: streamedId })).rejects.toMatchObject({ status: 400, code: 'previous_response_not_found' });
  expect(await (await api('/api/responses', { method: 'DELETE' })).json()).toEqual({ deleted: 0 });
  expect((await api('/api/responses', {}, null)).status).toBe(401);
});

/** Anthropic's count_tokens of a request (what Claude Code asks before each turn), then the request itself: the count is what the provider bills. */
async function expectCountsBilled(base: string): Promise<void> {
  const client = new Anthropic({ apiKey: alice, baseURL: base, maxRetries: 0 });
  const upstream = (await emulatorStats(emulator)).requests;
  const prompt = {
    model: 'emulator-1', system: 'You are a careful assistant.',
    tools: [{ name: 'search_web', description: 'Search the web', input_schema: { type: 'object' as const, properties: { query: { type: 'string' } }, required: ['query'] } }],
    messages: [
      { role: 'user' as const, content: 'Search the latest news about tidal power' },
      { role: 'assistant' as const, content: [{ type: 'tool_use' as const, id: 'toolu_1', name: 'search_web', input: { query: 'tidal power' } }] },
      { role: 'user' as const, content: [{ type: 'tool_result' as const, tool_use_id: 'toolu_1', content: 'a new tidal lagoon opened' }] },
    ],
  };
  const counted = await client.messages.countTokens(prompt);
  expect((await emulatorStats(emulator)).requests).toBe(upstream);
  const answered = await client.messages.create({ ...prompt, max_tokens: 100 });
  expect(counted.input_tokens).toBe(answered.usage.input_tokens);
}

test('the model list through both official clients: the agents, the alias, and the broker\'s upstream\'s models', async () => {
  const openai = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const listed: OpenAI.Models.Model[] = [];
  for await (const m of openai.models.list()) listed.push(m);
  const ids = listed.map((m) => m.id);
  expect(ids.slice(0, 2)).toEqual(['agent-mesh', 'upstream']);
  expect(ids.length).toBeGreaterThan(2);
  const served = listed[2]!;
  expect(served.owned_by).not.toBe('agent-mesh');
  expect(await openai.models.retrieve(served.id)).toMatchObject({ id: served.id, owned_by: served.owned_by });
  await expect(openai.models.retrieve('gpt-nope')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  const anthropic = new Anthropic({ apiKey: alice, baseURL: mesh.edge.url, maxRetries: 0 });
  const models: Anthropic.ModelInfo[] = [];
  for await (const m of anthropic.models.list()) models.push(m);
  expect(models.map((m) => m.id)).toEqual(ids);
  expect(models[2]).toMatchObject({ type: 'model', display_name: served.id });
});

test('count_tokens through the official Anthropic client: the prompt\'s tokens as the provider then bills them, no provider call', async () => {
  await expectCountsBilled(mesh.edge.url!);
});

test('the Anthropic Messages API through the official Anthropic client (its key as x-api-key): text streamed and not, a tool call and its result sent back, Anthropic\'s errors', async () => {
  const client = new Anthropic({ apiKey: alice, baseURL: mesh.edge.url, maxRetries: 0 });
  const whole = await client.messages.create({ model: 'emulator-1', max_tokens: 200, system: 'Be brief.', messages: [{ role: 'user', content: 'Why is the sea salty?' }] });
  expect(whole).toMatchObject({ type: 'message', role: 'assistant', stop_reason: 'end_turn' });
  expect(whole.content[0]).toMatchObject({ type: 'text' });
  expect((whole.content[0] as Anthropic.TextBlock).text.length).toBeGreaterThan(20);
  expect(whole.usage.input_tokens).toBeGreaterThan(5);

  const stream = client.messages.stream({ model: 'emulator-1', max_tokens: 200, messages: [{ role: 'user', content: 'Why is the sea salty?' }] });
  let text = '';
  stream.on('text', (t) => (text += t));
  const final = await stream.finalMessage();
  expect(text.length).toBeGreaterThan(20);
  expect(final.content).toHaveLength(1);
  expect(final.content[0]).toMatchObject({ type: 'text', text });
  expect(final.usage.output_tokens).toBeGreaterThan(0);

  const tools: Anthropic.Tool[] = [{ name: 'search_web', description: 'Search the web', input_schema: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } }];
  const question = 'Search the latest news about tidal power';
  const asked = await client.messages.create({ model: 'emulator-1', max_tokens: 200, tools, messages: [{ role: 'user', content: question }] });
  expect(asked.stop_reason).toBe('tool_use');
  const use = asked.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')!;
  expect(use.name).toBe('search_web');
  expect(String((use.input as { query: string }).query)).toMatch(/tidal/i);
  // Streamed: the tool_use block's input as the model generates it (several input_json_delta), as the client assembles it.
  const inputDeltas: string[] = [];
  const streamedUse = client.messages.stream({ model: 'emulator-1', max_tokens: 200, tools, messages: [{ role: 'user', content: question }] });
  streamedUse.on('streamEvent', (e) => {
    if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta') inputDeltas.push(e.delta.partial_json);
  });
  const used = await streamedUse.finalMessage();
  expect(used.stop_reason).toBe('tool_use');
  expect(used.content).toEqual([{ type: 'tool_use', id: expect.stringMatching(/^call_/), name: 'search_web', input: { query: expect.stringMatching(/tidal/i) } }]);
  expect(inputDeltas.length).toBeGreaterThan(2);
  expect(JSON.parse(inputDeltas.join(''))).toEqual((used.content[0] as Anthropic.ToolUseBlock).input);
  const answer = await client.messages.create({
    model: 'emulator-1', max_tokens: 200, tools,
    messages: [{ role: 'user', content: question }, { role: 'assistant', content: asked.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '{"news":"a new tidal lagoon opened"}' }] }],
  });
  expect((answer.content[0] as Anthropic.TextBlock).text).toContain('"a new tidal lagoon opened"');

  await expect(client.messages.create({ model: 'gpt-nope+model_not_found', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] })).rejects.toBeInstanceOf(Anthropic.NotFoundError);
  // top_k is Anthropic's: this mesh's OpenAI-protocol upstream cannot take it, and says so.
  const refused = await client.messages.create({ model: 'emulator-1', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }], ...({ top_k: 5 } as object) }).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
  expect((refused as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: expect.stringContaining('top_k is not supported by the openai protocol') } });
  await expect(new Anthropic({ apiKey: 'not-a-token', baseURL: mesh.edge.url, maxRetries: 0 }).messages.create({ model: 'emulator-1', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }))
    .rejects.toBeInstanceOf(Anthropic.AuthenticationError);
});

test('extended thinking through the official Anthropic client, to an Anthropic upstream: the thinking streamed with its signature, passed back in a tool-use loop as the provider requires; an OpenAI upstream refuses it', async () => {
  // An edge whose broker (inline) speaks Anthropic's Messages API to the emulator, which checks thinking as Anthropic does.
  const edge = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key' });
  try {
    const client = new Anthropic({ apiKey: alice, baseURL: edge.url!, maxRetries: 0 });
    const tools: Anthropic.Tool[] = [{ name: 'search_web', description: 'Search the web', input_schema: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } }];
    const ask = { model: 'claude-emulated', max_tokens: 2048, thinking: { type: 'enabled' as const, budget_tokens: 1024 }, tools };
    const question: Anthropic.MessageParam = { role: 'user', content: 'Search the latest news about tidal power' };
    const thought: string[] = [];
    const stream = client.messages.stream({ ...ask, messages: [question] });
    stream.on('thinking', (delta) => thought.push(delta));
    const asked = await stream.finalMessage();
    expect(asked.stop_reason).toBe('tool_use');
    const thinking = asked.content[0] as Anthropic.ThinkingBlock;
    expect(thinking).toMatchObject({ type: 'thinking', signature: expect.stringMatching(/.{16}/) });
    expect(thought.length).toBeGreaterThan(1);
    expect(thought.join('')).toBe(thinking.thinking);
    const use = asked.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')!;
    const result: Anthropic.MessageParam = { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '{"news":"a new tidal lagoon opened"}' }] };
    // The loop goes on with the assistant's turn as it came, thinking first: answered, thinking again.
    const answer = await client.messages.create({ ...ask, messages: [question, { role: 'assistant', content: asked.content }, result] });
    expect(answer.content[0]!.type).toBe('thinking');
    expect(answer.content.find((b): b is Anthropic.TextBlock => b.type === 'text')!.text).toContain('"a new tidal lagoon opened"');
    // The provider refuses the loop without the thinking block, and with its text altered: what a gateway that drops or rewrites it would meet.
    const without = await client.messages.create({ ...ask, messages: [question, { role: 'assistant', content: asked.content.slice(1) }, result] }).catch((e: unknown) => e);
    expect(without).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((without as Error).message)).toMatch(/Expected `thinking` or `redacted_thinking`, but found `tool_use`/);
    const altered = [{ ...thinking, thinking: `${thinking.thinking} (edited)` }, ...asked.content.slice(1)];
    const tampered = await client.messages.create({ ...ask, messages: [question, { role: 'assistant', content: altered }, result] }).catch((e: unknown) => e);
    expect(tampered).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((tampered as Error).message)).toMatch(/signature/i);
    // Context editing as Claude Code asks it with thinking on (the client sends its beta header to
    // the edge; the broker sends it on to the provider, which refuses the field without it): the
    // loop goes on, and what was cleared is said back. A tool result cleared past a small trigger
    // lowers the input tokens billed.
    const editing = { edits: [{ type: 'clear_thinking_20251015' as const, keep: 'all' as const }] };
    const loop: Anthropic.Beta.BetaMessageParam[] = [question, { role: 'assistant', content: asked.content as Anthropic.Beta.BetaContentBlockParam[] }, result];
    const edited = await client.beta.messages.create({ ...ask, betas: ['context-management-2025-06-27'], context_management: editing, messages: loop });
    expect(edited.content[0]!.type).toBe('thinking');
    expect(edited.context_management).toEqual({ applied_edits: [] });
    const clearing = { edits: [...editing.edits, { type: 'clear_tool_uses_20250919' as const, trigger: { type: 'input_tokens' as const, value: 50 }, keep: { type: 'tool_uses' as const, value: 0 } }] };
    const cleared = await client.beta.messages.create({ ...ask, betas: ['context-management-2025-06-27'], context_management: clearing, messages: loop });
    expect(cleared.context_management?.applied_edits).toEqual([expect.objectContaining({ type: 'clear_tool_uses_20250919', cleared_tool_uses: 1, cleared_input_tokens: expect.any(Number) })]);
    expect(cleared.usage.input_tokens).toBeLessThan(edited.usage.input_tokens);
    // Without thinking, Anthropic refuses the thinking edit: relayed as its 400.
    const unthought = await client.beta.messages.create({ model: ask.model, max_tokens: 200, betas: ['context-management-2025-06-27'], context_management: editing, messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(unthought).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((unthought as Error).message)).toContain('requires `thinking` to be enabled');
    // Adaptive thinking with its effort, as current Claude Code sends them by default (a budget of 0 beside): the model thinks as much as the effort says.
    const adaptively = (effort: string, thinking?: object) => client.messages.create({
      model: ask.model, max_tokens: 2048, messages: [{ role: 'user', content: 'Why is the sea salty?' }], ...({ output_config: { effort }, ...(thinking ? { thinking } : {}) } as object),
    } as Anthropic.MessageCreateParamsNonStreaming);
    const [low, max] = [await adaptively('low', { type: 'adaptive', budget_tokens: 0 }), await adaptively('max', { type: 'adaptive' })];
    expect([low.content.map((b) => b.type), max.content.map((b) => b.type)]).toEqual([['thinking', 'text'], ['thinking', 'text']]);
    expect((max.content[0] as Anthropic.ThinkingBlock).thinking.length).toBeGreaterThan((low.content[0] as Anthropic.ThinkingBlock).thinking.length);
    // The highest efforts need thinking: the provider's refusal, relayed.
    const unthinking = await adaptively('max').catch((e: unknown) => e);
    expect(unthinking).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((unthinking as Error).message)).toContain("output_config.effort 'max' is not supported when thinking is disabled");
    // Not streamed: the same blocks, whole.
    const whole = await client.messages.create({ ...ask, tools: undefined, messages: [{ role: 'user', content: 'Why is the sea salty?' }] });
    expect(whole.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    expect(whole.usage.output_tokens).toBeGreaterThan(0);

    // The same loop through the official openai client on /v1/chat/completions, as LiteLLM takes
    // it: `thinking` asked, the thinking given as reasoning_content and thinking_blocks, the blocks
    // passed back on the assistant message (fields the client does not type: sent as given).
    const openai = new OpenAI({ apiKey: alice, baseURL: `${edge.url!}/v1`, maxRetries: 0 });
    type Thinking = { reasoning_content?: string; thinking_blocks?: { type: string; thinking: string; signature: string }[] };
    const chatAsk = {
      model: 'claude-emulated', max_completion_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 },
      tools: [{ type: 'function' as const, function: { name: 'search_web', description: 'Search the web', parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } } }],
    };
    const chatQuestion = { role: 'user' as const, content: 'Search the latest news about tidal power' };
    const called = (await openai.chat.completions.create({ ...chatAsk, messages: [chatQuestion] } as OpenAI.ChatCompletionCreateParamsNonStreaming)).choices[0]!.message as OpenAI.ChatCompletionMessage & Thinking;
    expect(called.tool_calls).toHaveLength(1);
    expect(called.thinking_blocks).toEqual([{ type: 'thinking', thinking: called.reasoning_content, signature: expect.stringMatching(/.{16}/) }]);
    const chatResult = { role: 'tool' as const, tool_call_id: called.tool_calls![0]!.id, content: '{"news":"a new tidal lagoon opened"}' };
    const goOn = (assistant: Record<string, unknown>) => openai.chat.completions.create({ ...chatAsk, messages: [chatQuestion, assistant, chatResult] } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const answered = (await goOn({ role: 'assistant', content: called.content, tool_calls: called.tool_calls, thinking_blocks: called.thinking_blocks })).choices[0]!.message as OpenAI.ChatCompletionMessage & Thinking;
    expect(answered.content).toContain('"a new tidal lagoon opened"');
    expect(answered.reasoning_content!.length).toBeGreaterThan(20);
    await expect(goOn({ role: 'assistant', content: called.content, tool_calls: called.tool_calls })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    // Streamed: the thinking's text as it is written, then its block whole, signed.
    const chunks = await openai.chat.completions.create({ ...chatAsk, tools: undefined, stream: true, messages: [{ role: 'user', content: 'Why is the sea salty?' }] } as OpenAI.ChatCompletionCreateParamsStreaming);
    let reasoning = '';
    const streamedBlocks: unknown[] = [];
    for await (const c of chunks) {
      const d = c.choices[0]?.delta as (OpenAI.ChatCompletionChunk.Choice.Delta & Thinking) | undefined;
      reasoning += d?.reasoning_content ?? '';
      streamedBlocks.push(...(d?.thinking_blocks ?? []));
    }
    expect(reasoning.length).toBeGreaterThan(20);
    expect(streamedBlocks).toEqual([{ type: 'thinking', thinking: reasoning, signature: expect.stringMatching(/.{16}/) }]);
  } finally {
    await edge.stop();
  }
  // This mesh's broker speaks OpenAI's protocol, which has no thinking: refused, saying so, before the provider is asked.
  const upstream = (await emulatorStats(emulator)).requests;
  const refused = await new Anthropic({ apiKey: alice, baseURL: mesh.edge.url, maxRetries: 0 }).messages
    .create({ model: 'emulator-1', max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 }, messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
  expect(String((refused as Error).message)).toContain('thinking is not supported by the openai protocol');
  const noEditing = await new Anthropic({ apiKey: alice, baseURL: mesh.edge.url, maxRetries: 0 }).beta.messages
    .create({ model: 'emulator-1', max_tokens: 200, betas: ['context-management-2025-06-27'], context_management: { edits: [{ type: 'clear_tool_uses_20250919' }] }, messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
  expect(String((noEditing as Error).message)).toContain('context_management is not supported by the openai protocol');
  expect((await emulatorStats(emulator)).requests).toBe(upstream);
});

test("the client's Anthropic betas through the official Anthropic client: sent on to an Anthropic upstream (with context editing's where the mesh adds it), one the provider does not know refused by it with its message; an OpenAI upstream not sent them", async () => {
  const edge = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key' });
  const hi: Anthropic.Beta.BetaMessageParam[] = [{ role: 'user', content: 'Why do ferries run late?' }];
  const seen = async () => (await emulatorStats(emulator)).byBeta;
  const grew = (after: Record<string, number>, before: Record<string, number>) =>
    Object.fromEntries(Object.keys(after).filter((b) => after[b] !== before[b]).map((b) => [b, after[b]! - (before[b] ?? 0)]));
  try {
    const client = new Anthropic({ apiKey: alice, baseURL: edge.url!, maxRetries: 0 });
    const before = await seen();
    const whole = await client.beta.messages.create({ model: 'claude-emulated', max_tokens: 100, betas: ['context-1m-2025-08-07', 'token-efficient-tools-2025-02-19'], messages: hi });
    expect(whole.content[0]!.type).toBe('text');
    // Streamed, with context editing asked for without its beta: the mesh adds it beside the client's.
    const streamed = await client.beta.messages
      .stream({ model: 'claude-emulated', max_tokens: 100, betas: ['context-1m-2025-08-07'], context_management: { edits: [{ type: 'clear_tool_uses_20250919' }] }, messages: hi })
      .finalMessage();
    expect(streamed.context_management).toEqual({ applied_edits: [] });
    expect(grew(await seen(), before)).toEqual({ 'context-1m-2025-08-07': 2, 'token-efficient-tools-2025-02-19': 1, 'context-management-2025-06-27': 1 });
    const requests = (await emulatorStats(emulator)).requests;
    const unknown = await client.beta.messages.create({ model: 'claude-emulated', max_tokens: 100, betas: ['context-1m-2025-08-07', 'not-a-beta-2099-01-01'], messages: hi }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(Anthropic.BadRequestError);
    expect((unknown as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({
      type: 'error', error: { type: 'invalid_request_error', message: expect.stringContaining('Unexpected value(s) `not-a-beta-2099-01-01` for the `anthropic-beta` header') },
    });
    expect((await emulatorStats(emulator)).requests).toBe(requests + 1);
    // A name that cannot be one: the edge's 400, the provider not asked.
    const malformed = await client.beta.messages.create({ model: 'claude-emulated', max_tokens: 100, betas: ['not a beta'], messages: hi }).catch((e: unknown) => e);
    expect(malformed).toBeInstanceOf(Anthropic.BadRequestError);
    expect((malformed as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({ error: { message: expect.stringContaining('headers/anthropic-beta: "not a beta" is not a beta\'s name') } });
    expect((await emulatorStats(emulator)).requests).toBe(requests + 1);
  } finally {
    await edge.stop();
  }
  // A provider that takes fewer betas (LLM_ANTHROPIC_BETAS): the others are left out and the call
  // answered; context editing's beta, the broker's own, still sent.
  const narrow = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key', LLM_ANTHROPIC_BETAS: 'context-1m-2025-08-07' });
  try {
    const client = new Anthropic({ apiKey: alice, baseURL: narrow.url!, maxRetries: 0 });
    const before = await seen();
    const betas = ['context-1m-2025-08-07', 'not-a-beta-2099-01-01', 'token-efficient-tools-2025-02-19'];
    expect((await client.beta.messages.create({ model: 'claude-emulated', max_tokens: 100, betas, messages: hi })).content[0]!.type).toBe('text');
    const edited = await client.beta.messages.create({ model: 'claude-emulated', max_tokens: 100, betas, context_management: { edits: [{ type: 'clear_tool_uses_20250919' }] }, messages: hi });
    expect(edited.context_management).toEqual({ applied_edits: [] });
    expect(grew(await seen(), before)).toEqual({ 'context-1m-2025-08-07': 2, 'context-management-2025-06-27': 1 });
  } finally {
    await narrow.stop();
  }
  // This mesh's upstream speaks OpenAI's protocol: answered, and not named a beta.
  const before = await seen();
  const openai = await new Anthropic({ apiKey: alice, baseURL: mesh.edge.url, maxRetries: 0 }).beta.messages.create({ model: 'emulator-1', max_tokens: 100, betas: ['context-1m-2025-08-07'], messages: hi });
  expect(openai.content[0]!.type).toBe('text');
  expect(await seen()).toEqual(before);
});

test('Codex\'s Responses requests through the official openai client (reasoning effort and summary, include, prompt_cache_key, store false): to an Anthropic upstream, adaptive thinking as reasoning items passed back in a tool-use loop; to an OpenAI one, answered as asked', async () => {
  const codex = {
    instructions: 'You are a coding agent.', tool_choice: 'auto' as const, parallel_tool_calls: false, store: false, include: ['reasoning.encrypted_content' as const],
    reasoning: { effort: 'medium' as const, summary: 'auto' as const }, prompt_cache_key: '0f4c2a9e-codex-session',
    tools: [{ type: 'function' as const, name: 'search_web', description: 'Search the web', strict: false, parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } }],
  };
  const question = { type: 'message' as const, role: 'user' as const, content: [{ type: 'input_text' as const, text: 'Search the latest news about tidal power' }] };
  /** A streamed response as Codex reads it: the items done, the summary's deltas, the end. */
  const streamed = async (client: OpenAI, model: string, input: OpenAI.Responses.ResponseInputItem[]) => {
    const items: OpenAI.Responses.ResponseOutputItem[] = [];
    let summary = '';
    let completed: OpenAI.Responses.Response | undefined;
    for await (const e of await client.responses.create({ ...codex, model, input, stream: true })) {
      if (e.type === 'response.output_item.done') items.push(e.item);
      else if (e.type === 'response.reasoning_summary_text.delta') summary += e.delta;
      else if (e.type === 'response.completed') completed = e.response;
    }
    return { items, summary, completed: completed! };
  };
  const edge = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key' });
  try {
    const client = new OpenAI({ apiKey: alice, baseURL: `${edge.url!}/v1`, maxRetries: 0 });
    const asked = await streamed(client, 'claude-emulated', [question]);
    expect(asked.items.map((i) => i.type)).toEqual(['reasoning', 'function_call']);
    const reasoning = asked.items[0] as OpenAI.Responses.ResponseReasoningItem;
    expect(reasoning.summary).toEqual([{ type: 'summary_text', text: asked.summary }]);
    expect(asked.summary.length).toBeGreaterThan(20);
    expect(reasoning.encrypted_content).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect(asked.completed.output).toEqual(asked.items);
    const call = asked.items[1] as OpenAI.Responses.ResponseFunctionToolCall;
    const output = { type: 'function_call_output' as const, call_id: call.call_id, output: '{"news":"a new tidal lagoon opened"}' };
    // Passed back as Codex passes its history back (the reasoning item without its id): the provider checks the thinking's signature, and answers.
    const { id: _id, ...passed } = reasoning;
    const answered = await streamed(client, 'claude-emulated', [question, passed as OpenAI.Responses.ResponseReasoningItem, call, output]);
    expect(answered.items.map((i) => i.type)).toEqual(['reasoning', 'message']);
    const said = answered.items[1] as OpenAI.Responses.ResponseOutputMessage;
    expect((said.content[0] as OpenAI.Responses.ResponseOutputText).text).toContain('"a new tidal lagoon opened"');
    // Without the reasoning, the provider refuses the loop (its tool-use rule), relayed as its 400.
    const without = await client.responses.create({ ...codex, model: 'claude-emulated', input: [question, call, output] }).catch((e: unknown) => e);
    expect(without).toBeInstanceOf(OpenAI.BadRequestError);
    expect(String((without as Error).message)).toMatch(/Expected `thinking` or `redacted_thinking`/);
    // minimal effort: no thinking, no reasoning item.
    const minimal = await client.responses.create({ ...codex, model: 'claude-emulated', tools: undefined, reasoning: { effort: 'minimal' }, input: 'Why is the sea salty?' });
    expect(minimal.output.map((i) => i.type)).toEqual(['message']);
  } finally {
    await edge.stop();
  }
  // The mesh's own upstream speaks OpenAI's protocol (Chat Completions): the same request answered, its reasoning in the usage, no reasoning items.
  const plain = await streamed(new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 }), 'emulator-1', [question]);
  expect(plain.items.map((i) => i.type)).not.toContain('reasoning');
  expect(plain.completed.status).toBe('completed');
  expect(plain.completed.usage!.output_tokens_details.reasoning_tokens).toBeGreaterThan(0);
});

test('a function call\'s output with an image (as Codex\'s view_image tool gives one), through the official openai client to either upstream: the text is the tool result, the image reaches the provider after it, billed', async () => {
  const png = `data:image/png;base64,${minimalImage('image/png', 512, 512).toString('base64')}`;
  const tools = [{ type: 'function' as const, name: 'view_image', description: 'Look at an image file', strict: false, parameters: { type: 'object', properties: { path: { type: 'string' } } } }];
  const call = { type: 'function_call' as const, call_id: 'call_view1', name: 'view_image', arguments: '{"path":"chart.png"}' };
  // This client's types know an output as a string only; OpenAI's API takes parts too, and Codex sends them.
  const input = (output: Record<string, string>[]): OpenAI.Responses.ResponseInputItem[] => [
    { role: 'user', content: 'What does chart.png show?' }, call, { type: 'function_call_output', call_id: call.call_id, output: output as unknown as string },
  ];
  const ask = async (baseURL: string, model: string) => {
    const client = new OpenAI({ apiKey: alice, baseURL, maxRetries: 0 });
    const textOnly = await client.responses.create({ model, tools, store: false, input: input([{ type: 'input_text', text: 'attached: chart.png' }]) });
    const images = (await emulatorStats(emulator)).images;
    const shown = await client.responses.create({ model, tools, store: false, input: input([{ type: 'input_text', text: 'attached: chart.png' }, { type: 'input_image', image_url: png, detail: 'auto' }]) });
    expect((await emulatorStats(emulator)).images).toBe(images + 1);
    // The provider quotes the tool result it was given: the text part.
    expect(shown.output_text).toContain('"attached: chart.png"');
    expect(shown.usage!.input_tokens).toBeGreaterThan(textOnly.usage!.input_tokens + 50);
  };
  const edge = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key' });
  try {
    await ask(`${edge.url!}/v1`, 'claude-emulated');
  } finally {
    await edge.stop();
  }
  await ask(`${mesh.edge.url}/v1`, 'emulator-1');
});

test('log probabilities through the Responses API (include message.output_text.logprobs, top_logprobs), as the official openai client reads them: each output_text\'s tokens, the streamed deltas\' their own, the same figures either way', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  // This client's types (openai 5.23) know neither this include nor top_logprobs; it sends them as given.
  const asked = { model: 'emulator-1', input: 'How do tides work?', include: ['message.output_text.logprobs'], top_logprobs: 2, store: false, temperature: 0 } as unknown as OpenAI.Responses.ResponseCreateParamsNonStreaming;
  const whole = await client.responses.create(asked);
  const text = whole.output[0] as OpenAI.Responses.ResponseOutputMessage;
  const part = text.content[0] as OpenAI.Responses.ResponseOutputText;
  expect(part.logprobs!.map((l) => l.token).join('')).toBe(part.text);
  expect(part.logprobs!.length).toBeGreaterThan(5);
  expect(part.logprobs!.every((l) => l.logprob <= 0 && l.top_logprobs.length === 2)).toBe(true);
  expect(whole).toMatchObject({ top_logprobs: 2 });
  const deltas: OpenAI.Responses.ResponseTextDeltaEvent[] = [];
  let done: OpenAI.Responses.ResponseTextDoneEvent | undefined;
  let completed: OpenAI.Responses.Response | undefined;
  for await (const e of await client.responses.create({ ...asked, stream: true })) {
    if (e.type === 'response.output_text.delta') deltas.push(e);
    else if (e.type === 'response.output_text.done') done = e;
    else if (e.type === 'response.completed') completed = e.response;
  }
  for (const d of deltas) expect(d.logprobs.map((l) => l.token).join('')).toBe(d.delta);
  expect(deltas.flatMap((d) => d.logprobs)).toEqual(part.logprobs);
  expect(done!.logprobs).toEqual(part.logprobs);
  expect(((completed!.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText).logprobs).toEqual(part.logprobs);
  // Not asked for: none.
  const plain = await client.responses.create({ model: 'emulator-1', input: 'How do tides work?', store: false });
  expect((plain.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0]).not.toHaveProperty('logprobs');
});

test('structured output through both official clients, to either upstream: Anthropic\'s output_config.format and OpenAI\'s json_schema response format each answered with JSON that fits the schema', async () => {
  const schema = { type: 'object', properties: { city: { type: 'string' }, population: { type: 'integer' } }, required: ['city', 'population'], additionalProperties: false };
  const fits = (text: string) => expect(JSON.parse(text)).toEqual({ city: expect.any(String), population: expect.any(Number) });
  const ask = async (baseURL: string, model: string) => {
    const anthropic = await new Anthropic({ apiKey: alice, baseURL, maxRetries: 0 }).messages.create({
      model, max_tokens: 300, messages: [{ role: 'user', content: 'Name a large city.' }], output_config: { format: { type: 'json_schema', schema } },
    } as Anthropic.MessageCreateParamsNonStreaming);
    fits((anthropic.content[0] as Anthropic.TextBlock).text);
    const openai = await new OpenAI({ apiKey: alice, baseURL: `${baseURL}/v1`, maxRetries: 0 }).chat.completions.create({
      model, messages: [{ role: 'user', content: 'Name a large city.' }], response_format: { type: 'json_schema', json_schema: { name: 'city', schema, strict: true } },
    });
    fits(openai.choices[0]!.message.content!);
  };
  const edge = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key' });
  try {
    await ask(edge.url!, 'claude-emulated');
    // JSON mode has no counterpart in Anthropic's API: refused, saying so, before the provider is asked.
    const upstream = (await emulatorStats(emulator)).requests;
    const jsonMode = await new OpenAI({ apiKey: alice, baseURL: `${edge.url!}/v1`, maxRetries: 0 }).chat.completions
      .create({ model: 'claude-emulated', messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_object' } }).catch((e: unknown) => e);
    expect(jsonMode).toBeInstanceOf(OpenAI.BadRequestError);
    expect(String((jsonMode as Error).message)).toContain('response_format is not supported by the anthropic protocol');
    expect((await emulatorStats(emulator)).requests).toBe(upstream);
  } finally {
    await edge.stop();
  }
  await ask(mesh.edge.url!, 'emulator-1');
});

test('n choices through the official client: one upstream call each, each its own seeded answer, streamed and not', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const messages = [{ role: 'user' as const, content: 'Why do cats purr?' }];
  const calls = async () => { const m = (await emulatorStats(emulator)).byMode; return m.stream + m.whole; };
  const before = await calls();
  const three = await client.chat.completions.create({ model: 'emulator-1', messages, n: 3, seed: 40 });
  expect(await calls()).toBe(before + 3);
  expect(three.choices.map((c) => c.index)).toEqual([0, 1, 2]);
  const texts = three.choices.map((c) => c.message.content!);
  expect(new Set(texts).size).toBe(3);
  expect(three.choices.every((c) => c.finish_reason === 'stop')).toBe(true);
  // The usage adds the three calls up, as the provider counted them.
  const one = await client.chat.completions.create({ model: 'emulator-1', messages, seed: 41 });
  expect(one.choices[0]!.message.content).toBe(texts[1]);
  expect(three.usage!.prompt_tokens).toBe(3 * one.usage!.prompt_tokens);
  // Streamed, each chunk says its choice: the same seeds give the same answers.
  const stream = await client.chat.completions.create({ model: 'emulator-1', messages, n: 3, seed: 40, stream: true, stream_options: { include_usage: true } });
  const streamed = ['', '', ''];
  const finished: (string | null)[] = [null, null, null];
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      streamed[c.index] += c.delta.content ?? '';
      if (c.finish_reason) finished[c.index] = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  expect(streamed).toEqual(texts);
  expect(finished).toEqual(['stop', 'stop', 'stop']);
  expect(usage).toEqual(three.usage);
});

test('logprobs through the official client: each token\'s figures, the same streamed and not', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const ask = { model: 'emulator-1', messages: [{ role: 'user' as const, content: 'Why is the sea salty?' }], seed: 12, logprobs: true, top_logprobs: 2 };
  const whole = await client.chat.completions.create(ask);
  const figures = whole.choices[0]!.logprobs!.content!;
  expect(figures.map((t) => t.token).join('')).toBe(whole.choices[0]!.message.content);
  expect(figures.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2)).toBe(true);
  const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
  for await (const chunk of await client.chat.completions.create({ ...ask, stream: true })) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  expect(streamed).toEqual(figures);
});

test('reasoning_effort through the official client: the reasoning tokens in the usage, as OpenAI counts them', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const ask = { model: 'emulator-1', messages: [{ role: 'user' as const, content: 'Why is the sky blue?' }], seed: 13 };
  const plain = await client.chat.completions.create(ask);
  const thought = await client.chat.completions.create({ ...ask, reasoning_effort: 'medium' });
  expect(thought.choices[0]!.message.content).toBe(plain.choices[0]!.message.content);
  const reasoning = thought.usage!.completion_tokens_details!.reasoning_tokens!;
  expect(reasoning).toBeGreaterThan(0);
  expect(thought.usage!.completion_tokens).toBe(plain.usage!.completion_tokens + reasoning);
  expect(plain.usage!.completion_tokens_details!.reasoning_tokens).toBe(0);
});

test('images through the official client: a picture of 6 MB as a data: URL (past gRPC\'s default limit) billed as OpenAI bills it, streamed and not; one the provider cannot read is a 400 that says why', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 });
  const png = Buffer.concat([minimalImage('image/png', 1024, 1024), Buffer.alloc(4_500_000, 1)]);
  const question = 'What is in this picture?';
  const ask = (url?: string) => ({
    model: 'emulator-1',
    seed: 14,
    messages: [{ role: 'user' as const, content: [{ type: 'text' as const, text: question }, ...(url ? [{ type: 'image_url' as const, image_url: { url } }] : [])] }],
  });
  const plain = await client.chat.completions.create(ask());
  const images = (await emulatorStats(emulator)).images;
  const seen = await client.chat.completions.create(ask(`data:image/png;base64,${png.toString('base64')}`));
  // 1024 × 1024: 768 × 768 in 2 × 2 tiles.
  expect(seen.usage!.prompt_tokens).toBe(plain.usage!.prompt_tokens + 85 + 170 * 4);
  expect(seen.choices[0]!.message.content).toBe(plain.choices[0]!.message.content);
  let streamedUsage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of await client.chat.completions.create({ ...ask(`data:image/png;base64,${png.toString('base64')}`), stream: true, stream_options: { include_usage: true } })) streamedUsage = chunk.usage ?? streamedUsage;
  expect(streamedUsage).toEqual(seen.usage);
  expect((await emulatorStats(emulator)).images).toBe(images + 2);
  const bad = await client.chat.completions.create(ask(`data:image/png;base64,${Buffer.from('not an image').toString('base64')}`)).catch((e: unknown) => e);
  expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
  expect((bad as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('upstream_rejected');
  expect((bad as Error).message).toMatch(/unsupported image/);
});

test('a /v1 caller that does not stream gets a non-streamed upstream call; one that streams, a streamed one', async () => {
  const complete = (stream: boolean) =>
    api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'emulator-1', stream, messages: [{ role: 'user', content: 'How do tides work?' }] }) });
  const modes = async () => (await emulatorStats(emulator)).byMode;
  const before = await modes();
  const whole = (await (await complete(false)).json()) as any;
  expect(whole.choices[0].message.content.length).toBeGreaterThan(0);
  expect(whole.choices[0].finish_reason).toBe('stop');
  expect(whole.usage.completion_tokens).toBeGreaterThan(0);
  expect(await modes()).toEqual({ stream: before.stream, whole: before.whole + 1 });
  const streamed = await (await complete(true)).text();
  expect(streamed).toContain('"finish_reason":"stop"');
  expect(await modes()).toEqual({ stream: before.stream + 1, whole: before.whole + 1 });
});

test('metrics: Prometheus text and the JSON summary with the services', async () => {
  const prom = await (await fetch(`${mesh.edge.url}/metrics`)).text();
  expect(prom).toMatch(/edge_http_requests_total/);
  const m = (await (await api('/api/metrics')).json()) as any;
  expect(m.requests.total).toBeGreaterThan(0);
  expect(m.services.llmBroker.available).toBe(true);
  expect(m.services.store.available).toBe(true);
  // Every figure of the brief is a number while its service is up (runs happened above).
  const figures: Record<string, unknown> = {
    'requests.total': m.requests.total, 'requests.active': m.requests.active, 'requests.queued': m.requests.queued, 'requests.rps': m.requests.rps,
    'responseTimeMs.avg': m.responseTimeMs.avg, 'responseTimeMs.p95': m.responseTimeMs.p95, 'responseTimeMs.p99': m.responseTimeMs.p99,
    errorRate: m.errorRate, timeoutRate: m.timeoutRate,
    'cpu.processPercent': m.cpu.processPercent, 'memory.rssBytes': m.memory.rssBytes, 'memory.heapUsedPercent': m.memory.heapUsedPercent,
    'connections.open': m.connections.open, 'connections.sseStreams': m.connections.sseStreams,
    'llm.queueLength': m.llm.queueLength, 'llm.upstreamErrorRate': m.llm.upstreamErrorRate, 'llm.inFlight': m.llm.inFlight,
    'llm.admissions': m.llm.admissions, 'llm.effectiveLimits.rpm': m.llm.effectiveLimits?.rpm, 'llm.effectiveLimits.concurrency': m.llm.effectiveLimits?.concurrency,
    'database.queryTimeMs.avg': m.database.queryTimeMs?.avg, 'database.queryTimeMs.p95': m.database.queryTimeMs?.p95,
    'database.pool.usagePercent': m.database.pool.usagePercent,
    'runs.activeRuns': m.runs.activeRuns, 'tools.calls': m.tools.calls,
  };
  const notNumbers = Object.entries(figures).filter(([, v]) => typeof v !== 'number' || !Number.isFinite(v));
  expect(notNumbers).toEqual([]);
  expect(m.llm.admissions).toBeGreaterThan(0);
  expect(m.database.queryTimeMs.avg).toBeGreaterThan(0);
});

test("the metric names /api/metrics reads are the ones the services export", async () => {
  const ports = { broker: mesh.broker.metricsPort, store: mesh.store.metricsPort, orchestrator: mesh.orchestrator.metricsPort, tools: mesh.tools.metricsPort };
  for (const [svc, names] of Object.entries(PEER_METRICS)) {
    const real = new Set(((await (await fetch(`http://127.0.0.1:${ports[svc as keyof typeof ports]}/metrics.json`)).json()) as { name: string }[]).map((x) => x.name));
    const missing = Object.values(names).filter((n) => !real.has(n));
    expect([svc, missing]).toEqual([svc, []]);
  }
});

describe('/v1/chat/completions with a misbehaving provider', () => {
  const complete = (model: string, stream: boolean) =>
    api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'How do tides work?' }] }) });

  test('a model the provider does not serve is a 404, as OpenAI answers it', async () => {
    const res = await complete('gpt-nope+model_not_found', false);
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).error.message).toMatch(/The model `gpt-nope` does not exist/);
  });

  test('a provider error after tokens streamed: an OpenAI-style error event, never finish_reason "stop"; not streamed: a 503', async () => {
    const res = await complete('emulator-1+stream_error', true);
    expect(res.status).toBe(200);
    const text = await res.text();
    const payloads = text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
    expect(payloads.some((p) => p.includes('"content":"') && !p.includes('"content":""'))).toBe(true);
    const last = JSON.parse(payloads.at(-1)!) as { error?: { message: string } };
    expect(last.error?.message).toBeTruthy();
    expect(text).not.toContain('"finish_reason":"stop"');
    expect((await complete('emulator-1+stream_error', false)).status).toBe(503);
  });

  test('through the Responses API: a streamed failure after text ends it response.failed with the error (as OpenAI, and Codex reads it), never response.completed; a model the provider does not serve is a 404', async () => {
    const respond = (model: string, stream: boolean) => api('/v1/responses', { method: 'POST', body: JSON.stringify({ model, stream, input: 'How do tides work?' }) });
    const res = await respond('emulator-1+stream_error', true);
    expect(res.status).toBe(200);
    const frames = (await res.text()).split('\n\n').filter((b) => b.startsWith('event: '));
    const events = frames.map((b) => b.split('\n')[0]!.slice(7));
    expect(events).toContain('response.output_text.delta');
    expect(events.at(-1)).toBe('response.failed');
    expect(events).not.toContain('response.completed');
    const failed = JSON.parse(frames.at(-1)!.split('\n')[1]!.slice(6)) as { response: { status: string; output: unknown[]; error: { code: string; message: string } } };
    expect(failed.response).toMatchObject({ status: 'failed', output: [], error: { code: expect.any(String), message: expect.stringMatching(/./) } });
    // Kept as it ended, as OpenAI keeps a failed response: read back failed, with the same error.
    const kept = await api(`/v1/responses/${(failed.response as unknown as { id: string }).id}`);
    expect(await kept.json()).toEqual(failed.response);
    expect((await respond('emulator-1+stream_error', false)).status).toBe(503);
    expect((await respond('gpt-nope+model_not_found', false)).status).toBe(404);
  });
});

/** Embeddings through the official client (which asks base64 and decodes it): unit vectors, one per input, the same as floats; a model the provider does not serve is a 404. */
async function expectEmbeddings(client: OpenAI): Promise<void> {
  const asked = ['How do tides work?', 'What is a queue?'];
  const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: asked });
  expect(r.data.map((d) => [d.index, d.embedding.length])).toEqual([[0, 1536], [1, 1536]]);
  for (const d of r.data) expect(Math.hypot(...d.embedding)).toBeCloseTo(1, 3);
  expect(r.usage.prompt_tokens).toBeGreaterThan(4);
  const floats = await client.embeddings.create({ model: 'text-embedding-3-small', input: asked[1]!, encoding_format: 'float', dimensions: 256 });
  expect(floats.data[0]!.embedding).toHaveLength(256);
  const whole = await client.embeddings.create({ model: 'text-embedding-3-small', input: asked[1]!, encoding_format: 'float' });
  expect(whole.data[0]!.embedding).toEqual(r.data[1]!.embedding);
  const missing = await client.embeddings.create({ model: 'text-embedding-nope+model_not_found', input: 'x' }).catch((e: unknown) => e);
  expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
}

test('embeddings through the official openai client, in the broker service\'s quota', async () => {
  const admitted = await promMetric(mesh.broker, 'llm_admissions_total');
  const upstream = (await emulatorStats(emulator)).requests;
  await expectEmbeddings(new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 }));
  // Three answered, and the refused one reached the provider too.
  expect((await emulatorStats(emulator)).requests).toBe(upstream + 4);
  expect(await promMetric(mesh.broker, 'llm_admissions_total')).toBe(admitted + 4);
});

test('embeddings with x-mesh-cache: on: each input\'s vector reused from the broker\'s cache, the header says hit, partial or miss', async () => {
  const client = new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0, defaultHeaders: { 'x-mesh-cache': 'on' } });
  const asked = (input: string[]) => client.embeddings.create({ model: 'text-embedding-3-small', input, encoding_format: 'float' }).withResponse();
  const upstream = async () => (await emulatorStats(emulator)).requests;
  const before = await upstream();
  const first = await asked(['a cached question', 'another cached question']);
  expect(first.response.headers.get('x-mesh-cache')).toBe('miss');
  const again = await asked(['another cached question', 'a cached question']);
  expect(again.response.headers.get('x-mesh-cache')).toBe('hit');
  expect(again.data.usage.prompt_tokens).toBe(0);
  expect(again.data.data.map((d) => d.embedding)).toEqual([first.data.data[1]!.embedding, first.data.data[0]!.embedding]);
  expect(await upstream()).toBe(before + 1);
  const some = await asked(['a cached question', 'a question not asked before']);
  expect(some.response.headers.get('x-mesh-cache')).toBe('partial');
  expect(some.data.usage.prompt_tokens).toBeGreaterThan(0);
  expect(await upstream()).toBe(before + 2);
  // Not asked for: nothing said, the provider asked.
  const plain = await new OpenAI({ apiKey: alice, baseURL: `${mesh.edge.url}/v1`, maxRetries: 0 }).embeddings.create({ model: 'text-embedding-3-small', input: 'a cached question' }).withResponse();
  expect(plain.response.headers.get('x-mesh-cache')).toBeNull();
  expect(await upstream()).toBe(before + 3);
});

describe('an edge that runs the broker itself (EDGE_INLINE_BROKER)', () => {
  let inline: ServiceProc;
  const edgeMetric = (name: string, labels = '') => promMetric({ metricsPort: Number(new URL(inline.url!).port) }, name, labels);
  const complete = (model: string, stream: boolean) =>
    call(inline.url!, '/v1/chat/completions', alice, { method: 'POST', body: JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'How do tides work?' }] }) });

  beforeAll(async () => {
    inline = await startEdge({ EDGE_INLINE_BROKER: 'true', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'local-dev-key' });
  });

  test('/v1 calls the provider from the edge, not through the broker service, within the same global quota', async () => {
    const viaBroker = await promMetric(mesh.broker, 'llm_admissions_total');
    const upstream = (await emulatorStats(emulator)).requests;
    await expectDirectAnswers(new OpenAI({ apiKey: alice, baseURL: `${inline.url}/v1`, maxRetries: 0 }));
    // Both calls reached the provider, admitted by the edge's own broker; the service admitted none.
    expect((await emulatorStats(emulator)).requests).toBe(upstream + 2);
    expect(await edgeMetric('llm_admissions_total')).toBe(2);
    expect(await promMetric(mesh.broker, 'llm_admissions_total')).toBe(viaBroker);
    // One quota: the edge's limiter shares it through Redis with the broker service's, and each sees the other.
    expect(await edgeMetric('llm_quota_shared')).toBe(1);
    await waitFor('both replicas in the shared quota', async () => (await edgeMetric('llm_live_replicas')) === 2 && (await promMetric(mesh.broker, 'llm_live_replicas')) === 2);
  });

  test('embeddings are served by the edge\'s own broker, in the same quota', async () => {
    const viaBroker = await promMetric(mesh.broker, 'llm_admissions_total');
    const admitted = await edgeMetric('llm_admissions_total');
    await expectEmbeddings(new OpenAI({ apiKey: alice, baseURL: `${inline.url}/v1`, maxRetries: 0 }));
    expect(await edgeMetric('llm_admissions_total')).toBe(admitted + 4);
    expect(await promMetric(mesh.broker, 'llm_admissions_total')).toBe(viaBroker);
  });

  test('count_tokens is counted by the edge\'s own broker, as the service counts it', async () => {
    await expectCountsBilled(inline.url!);
  });

  test('refusals are answered as through the broker service: 404 for a model the provider does not serve, an error event after tokens, 503 not streamed', async () => {
    const missing = await complete('gpt-nope+model_not_found', false);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as any).error.message).toMatch(/The model `gpt-nope` does not exist/);
    const res = await complete('emulator-1+stream_error', true);
    expect(res.status).toBe(200);
    const payloads = (await res.text()).split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
    expect((JSON.parse(payloads.at(-1)!) as { error?: { message: string } }).error?.message).toBeTruthy();
    expect((await complete('emulator-1+stream_error', false)).status).toBe(503);
    // The agents still go through the broker service: a run through this edge completes.
    const id = await newConversation(inline.url!);
    const run = await call(inline.url!, `/api/conversations/${id}/messages`, alice, { method: 'POST', body: JSON.stringify({ content: 'What is a queue?' }) });
    expect((await readSse(run.body!, (e) => TERMINAL.has(e.event))).at(-1)!.event).toBe('run.completed');
  });
});

describe('/v1/chat/completions and the response cache', () => {
  const complete = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    api('/v1/chat/completions', { method: 'POST', headers, body: JSON.stringify({ model: 'emulator-1', messages: [{ role: 'user', content: `What makes bread rise? (${Date.now()})` }], ...body }) });
  const requests = async () => (await emulatorStats(emulator)).requests;

  test('at temperature 0: miss, then a hit answered x-mesh-cache: hit with the same content, no upstream call and usage 0, streamed or not', async () => {
    const body = { messages: [{ role: 'user', content: `What makes bread rise? (${Date.now()})` }], temperature: 0 };
    const first = await complete(body);
    expect(first.status).toBe(200);
    expect(first.headers.get('x-mesh-cache')).toBe('miss');
    const answer = (await first.json()) as any;
    expect(answer.usage.total_tokens).toBeGreaterThan(0);
    const before = await requests();
    const again = await complete(body);
    expect(again.headers.get('x-mesh-cache')).toBe('hit');
    const hit = (await again.json()) as any;
    expect(hit.choices[0].message.content).toBe(answer.choices[0].message.content);
    expect(hit.usage).toEqual({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
    const streamed = await complete({ ...body, stream: true });
    expect(streamed.headers.get('x-mesh-cache')).toBe('hit');
    const text = (await streamed.text()).split('\n\n').filter((b) => b.startsWith('data: {')).map((b) => JSON.parse(b.slice(6)) as any);
    expect(text.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toBe(answer.choices[0].message.content);
    expect(await requests()).toBe(before);
  });

  test('without temperature 0 the cache is not asked unless x-mesh-cache: on; x-mesh-cache: off always reaches the provider; another value is a 400', async () => {
    const messages = [{ role: 'user', content: `Why is the sky blue? (${Date.now()})` }];
    const before = await requests();
    const plain = await complete({ messages });
    expect(plain.headers.get('x-mesh-cache')).toBeNull();
    expect((await complete({ messages }, { 'x-mesh-cache': 'on' })).headers.get('x-mesh-cache')).toBe('miss');
    expect((await complete({ messages }, { 'x-mesh-cache': 'on' })).headers.get('x-mesh-cache')).toBe('hit');
    expect((await complete({ messages, temperature: 0 }, { 'x-mesh-cache': 'off' })).headers.get('x-mesh-cache')).toBeNull();
    expect(await requests()).toBe(before + 3);
    expect((await complete({ messages }, { 'x-mesh-cache': 'maybe' })).status).toBe(400);
  });
});

// Last: it stops MongoDB (FerretDB) for good.
test('edge_http_requests_active counts each request once: back to the scrape alone once every kind of request has ended', async () => {
  const active = async () => {
    const text = await (await fetch(`${mesh.edge.url}/metrics`)).text();
    return Number(/^edge_http_requests_active(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1]);
  };
  const id = await newConversation();
  const v1 = (stream: boolean) =>
    api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'emulator-1', stream, messages: [{ role: 'user', content: `Why is the sky blue? ${Math.random()}` }] }) });
  await Promise.all([
    api('/api/conversations').then((r) => r.text()), // JSON
    api('/api/conversations/nope').then((r) => r.text()), // 400
    api('/api/conversations', {}, null).then((r) => r.text()), // 401, refused by the auth hook
    api('/api/ops/figures').then((r) => r.text()), // 403 (no ops scope)
    fetch(`${mesh.edge.url}/api/conversations`, { method: 'OPTIONS', headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'POST' } }).then((r) => r.text()), // CORS preflight
    fetch(`${mesh.edge.url}/nowhere`).then((r) => r.text()), // 404
    api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'hi' }) }, bob).then((r) => r.text()), // a stream route's refusal
    api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Plan a picnic' }) }).then((r) => readSse(r.body!, (e) => TERMINAL.has(e.event))), // a run's stream
    v1(false).then((r) => r.text()),
    v1(true).then((r) => r.text()),
    (async () => { // a run's stream its client leaves, then joins again and leaves again
      const id2 = await newConversation();
      const ac = new AbortController();
      const r = await fetch(`${mesh.edge.url}/api/conversations/${id2}/messages`, {
        method: 'POST', signal: ac.signal, headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: JSON.stringify({ content: 'Plan a long trip' }),
      });
      await r.body!.getReader().read();
      ac.abort();
      const again = new AbortController();
      const j = await fetch(`${mesh.edge.url}/api/conversations/${id2}/events`, { signal: again.signal, headers: { authorization: `Bearer ${alice}` } });
      await j.body!.getReader().read();
      again.abort();
    })(),
    api(`/api/conversations/${id}/events`, {}, bob).then((r) => r.text()), // a join's refusal
    (async () => { // a /v1 stream its client leaves
      const ac = new AbortController();
      const r = await fetch(`${mesh.edge.url}/v1/chat/completions`, {
        method: 'POST', signal: ac.signal, headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'emulator-1', stream: true, messages: [{ role: 'user', content: `Tell a long story ${Math.random()}` }] }),
      });
      await r.body!.getReader().read();
      ac.abort();
    })(),
  ]);
  // The scrape that reads the gauge is a request being served: 1 when nothing else is.
  await waitFor('no other request in flight', async () => (await active()) === 1, { timeoutMs: 15_000, intervalMs: 200 }).catch(() => undefined);
  expect(await active()).toBe(1);
});

test('/api/health is 503 with the database down while MongoDB is stopped, and 200 before', async () => {
  const before = await api('/api/health', {}, null);
  expect(before.status).toBe(200);
  await ferret.stop();
  let report: { status: string; checks: Record<string, { status: string }> } | undefined;
  await waitFor('health 503', async () => {
    const res = await api('/api/health', {}, null);
    if (res.status !== 503) return false;
    report = (await res.json()) as typeof report;
    return true;
  }, { timeoutMs: 30_000, intervalMs: 500 });
  expect(report?.status).toBe('unhealthy');
  expect(report?.checks['database']?.status).toBe('down');
  expect(report?.checks['cache']?.status).toBe('up');
  expect(report?.checks['llm']?.status).toBe('up');
});
