// The public API against in-memory peers: auth, validation, the bad-input batch, run streams,
// resume, the SSE limiter, slow consumers, drain and the OpenAI facade.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import OpenAI from 'openai';
import { createLogger, RUN_EVENTS } from '@agent-mesh/common';
import { ToolChoiceMode, type ChatMessage, type GenerateRequest, type ToolChoice } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { buildApp, type EdgeApp } from './app';
import { devAuth, signToken } from './auth';
import type { AppConfig } from './context';
import type { UserBudgets } from './budgets';
import { memoryRequestLimiter, type RateDecision, type RequestLimiter } from './ratelimit';
import { HttpError } from './errors';
import { cacheStatus } from './routes/embeddings';
import { fakeGateways } from './testing/fakes';

jest.setTimeout(30_000);

const SECRET = 'test-secret-of-sufficient-length';
const cfg = (over: Partial<AppConfig['sse']> = {}): AppConfig => ({
  auth: devAuth(SECRET),
  sse: { maxStreams: 50, heartbeatMs: 15_000, bufferMaxEvents: 1000, bufferMaxBytes: 1 << 20, retryMs: 2000, ...over },
  maxMessageChars: 8000,
  bodyLimitBytes: 65_536, v1BodyLimitBytes: 1 << 20,
  corsOrigins: [],
  llmModel: 'upstream',
});

async function token(sub: string, exp?: number, secret = SECRET): Promise<string> {
  return signToken(secret, sub, exp !== undefined ? { exp } : {});
}

interface Sse {
  id?: string;
  event: string;
  data: any;
  retry?: number;
}

function parseBlocks(text: string): { events: Sse[]; rest: string; comments: string[] } {
  const events: Sse[] = [];
  const comments: string[] = [];
  let rest = text;
  let i: number;
  while ((i = rest.indexOf('\n\n')) >= 0) {
    const block = rest.slice(0, i);
    rest = rest.slice(i + 2);
    const e: Sse = { event: 'message', data: undefined };
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) comments.push(line);
      else if (line.startsWith('id: ')) e.id = line.slice(4);
      else if (line.startsWith('event: ')) e.event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
      else if (line.startsWith('retry: ')) e.retry = Number(line.slice(7));
    }
    if (data.length) {
      e.data = JSON.parse(data.join('\n'));
      events.push(e);
    } else if (e.retry !== undefined) events.push({ event: 'retry', data: null, retry: e.retry });
  }
  return { events, rest, comments };
}

/** Reads an SSE response until `until` matches or the stream ends; returns the events. */
async function readEvents(res: Response, until: (e: Sse) => boolean = () => false): Promise<Sse[]> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  const all: Sse[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return all;
      buf += dec.decode(value, { stream: true });
      const p = parseBlocks(buf);
      buf = p.rest;
      for (const e of p.events) {
        all.push(e);
        if (until(e)) return all;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

describe('edge app (fake peers)', () => {
  let edge: EdgeApp;
  let gw: ReturnType<typeof fakeGateways>;
  let base: string;
  let alice: string;
  let bob: string;

  /** Records the Generate requests the edge sends the (fake) broker until `restore`. */
  const recordGenerate = () => {
    const seen: GenerateRequest[] = [];
    const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
    gw.fakeBroker.generate = (req, signal, gate) => {
      seen.push(req as GenerateRequest);
      return generate(req, signal, gate);
    };
    return { seen, restore: () => { gw.fakeBroker.generate = generate; } };
  };

  const setup = async (over: Partial<AppConfig['sse']> = {}, perMinute = 0) => {
    gw = fakeGateways();
    edge = await buildApp({ cfg: cfg(over), gateways: gw, logger: createLogger('edge-test', 'silent'), requestLimiter: memoryRequestLimiter(perMinute), publicDir: '/nonexistent' });
    await edge.app.listen({ port: 0, host: '127.0.0.1' });
    const a = edge.app.server.address() as { port: number };
    base = `http://127.0.0.1:${a.port}`;
    alice = await token('alice');
    bob = await token('bob');
  };
  const teardown = async () => {
    edge.drain();
    await edge.app.close();
  };
  const auth = (t: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${t}`, ...extra });
  const json = (t: string) => auth(t, { 'content-type': 'application/json' });
  const createConversation = async (t = alice): Promise<string> => {
    const res = await fetch(`${base}/api/conversations`, { method: 'POST', headers: json(t), body: JSON.stringify({ title: 't' }) });
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: string }).id;
  };
  const send = (id: string, content = 'hello', t = alice, headers: Record<string, string> = {}) =>
    fetch(`${base}/api/conversations/${id}/messages`, { method: 'POST', headers: { ...json(t), ...headers }, body: JSON.stringify({ content }) });

  /**
   * The fake broker thinks in these pieces, then answers "Done.", recording each request, until
   * `restore`; its Done says nothing was cleared when the call asked for context editing.
   */
  const thinkingBroker = (pieces: { text?: string; signature?: string; redactedData?: string }[]) => {
    const generate = gw.fakeBroker.generate;
    const seen: GenerateRequest[] = [];
    gw.fakeBroker.generate = async function* (req: GenerateRequest) {
      seen.push(req);
      for (const p of pieces) yield { update: { $case: 'thinking', thinking: { text: '', signature: '', redactedData: '', ...p } } };
      yield { update: { $case: 'delta', delta: { content: 'Done.', logprobs: [] } } };
      const applied = req.contextManagementJson ? { contextManagementJson: JSON.stringify({ applied_edits: [] }) } : {};
      yield { update: { $case: 'done', done: { finishReason: 'stop', usage: { promptTokens: 5, completionTokens: 40, totalTokens: 45 }, toolCalls: [], model: 'upstream', queueWaitMs: 0, cache: 0, cachedUsage: undefined, upstream: 'default', content: '', logprobs: [], ...applied } } };
    } as typeof generate;
    return { seen, restore: () => { gw.fakeBroker.generate = generate; } };
  };

  describe('contract', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());

    test('401 without, with a forged and with an expired token, each saying which', async () => {
      const none = await fetch(`${base}/api/conversations`);
      expect(none.status).toBe(401);
      expect(((await none.json()) as any).error.message).toMatch(/missing/);
      const forged = await fetch(`${base}/api/conversations`, { headers: auth(await token('alice', undefined, 'another-secret-entirely')) });
      expect(forged.status).toBe(401);
      expect(((await forged.json()) as any).error.message).toMatch(/signature/);
      const expired = await fetch(`${base}/api/conversations`, { headers: auth(await token('alice', Math.floor(Date.now() / 1000) - 60)) });
      expect(expired.status).toBe(401);
      expect(((await expired.json()) as any).error.message).toMatch(/expired/);
      const garbage = await fetch(`${base}/api/conversations`, { headers: auth('not.a.jwt') });
      expect(garbage.status).toBe(401);
    });

    test('pages carry the security headers of the UI\'s policy, JSON answers an API\'s (never stored, never framed, nothing loaded)', async () => {
      const pages = [await fetch(`${base}/docs`), await fetch(`${base}/no/such/route`)];
      expect(pages.map((r) => r.status)).toEqual([200, 404]);
      for (const res of pages) {
        const csp = res.headers.get('content-security-policy') ?? '';
        expect(csp.split(';')).toEqual(expect.arrayContaining(["default-src 'self'", "img-src 'self' data:", "style-src 'self' 'unsafe-inline'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'self'"]));
        expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
        expect(res.headers.get('cross-origin-opener-policy')).toBe('same-origin');
        expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      }
      // A JSON answer, a refusal, a /v1 answer.
      const json = [
        await fetch(`${base}/api/health`),
        await fetch(`${base}/api/conversations`),
        await fetch(`${base}/v1/models`, { headers: auth(alice) }),
      ];
      expect(json.map((r) => r.status)).toEqual([200, 401, 200]);
      for (const res of json) {
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        expect(res.headers.get('cache-control')).toBe('no-store');
        expect(res.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
        expect(res.headers.get('x-frame-options')).toBe('DENY');
        expect(res.headers.get('cross-origin-opener-policy')).toBeNull();
      }
      for (const res of [...pages, ...json]) {
        expect(res.headers.get('x-content-type-options')).toBe('nosniff');
        expect(res.headers.get('strict-transport-security')).toMatch(/^max-age=\d+; includeSubDomains$/);
        expect(res.headers.get('cross-origin-resource-policy')).toBe('same-site');
      }
      // A /v1 stream (a hijacked reply) carries those that apply to a stream, as a run's stream does.
      const v1 = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...auth(alice), 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'upstream', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(v1.headers.get('content-type')).toMatch(/^text\/event-stream/);
      expect(v1.headers.get('x-content-type-options')).toBe('nosniff');
      expect(v1.headers.get('strict-transport-security')).toMatch(/max-age=/);
      expect(v1.headers.get('cross-origin-resource-policy')).toBe('same-site');
      expect(v1.headers.get('content-security-policy')).toBeNull();
      await v1.text();
    });

    test('create, list, read; another user gets 404', async () => {
      const id = await createConversation();
      const list = (await (await fetch(`${base}/api/conversations`, { headers: auth(alice) })).json()) as any;
      expect(list.conversations.map((c: any) => c.id)).toContain(id);
      const one = await fetch(`${base}/api/conversations/${id}`, { headers: auth(alice) });
      expect(one.status).toBe(200);
      expect(((await one.json()) as any).messages).toEqual([]);
      const other = await fetch(`${base}/api/conversations/${id}`, { headers: auth(bob) });
      expect(other.status).toBe(404);
      const otherMsg = await send(id, 'hi', bob);
      expect(otherMsg.status).toBe(404);
    });

    test('PUT creates a conversation with the client\'s id, once however often it is sent; another user\'s id is 409', async () => {
      const id = randomUUID();
      const put = (t: string, title: string) => fetch(`${base}/api/conversations/${id}`, { method: 'PUT', headers: json(t), body: JSON.stringify({ title }) });
      const first = await put(alice, 'first');
      expect(first.status).toBe(201);
      expect(await first.json()).toMatchObject({ id, title: 'first' });
      const again = await put(alice, 'again');
      expect(again.status).toBe(201);
      expect(await again.json()).toMatchObject({ id, title: 'first' });
      const list = (await (await fetch(`${base}/api/conversations`, { headers: auth(alice) })).json()) as any;
      expect(list.conversations.filter((c: any) => c.id === id)).toHaveLength(1);
      expect((await put(bob, 'mine')).status).toBe(409);
      expect((await fetch(`${base}/api/conversations/not-a-uuid`, { method: 'PUT', headers: json(alice), body: '{}' })).status).toBe(400);
    });

    test('the bad-input batch answers 4xx with a message, and health stays 200', async () => {
      const id = await createConversation();
      const url = `${base}/api/conversations/${id}/messages`;
      const cases: [string, RequestInit, number, RegExp][] = [
        ['malformed JSON', { body: '{"content": ', headers: json(alice) }, 400, /JSON/i],
        ['wrong type', { body: JSON.stringify({ content: 123 }), headers: json(alice) }, 400, /body\/content must be string/],
        ['missing content', { body: JSON.stringify({}), headers: json(alice) }, 400, /content/],
        ['empty content', { body: JSON.stringify({ content: '' }), headers: json(alice) }, 400, /content/],
        ['blank content', { body: JSON.stringify({ content: '   ' }), headers: json(alice) }, 400, /empty/],
        ['content over the limit', { body: JSON.stringify({ content: 'x'.repeat(8001) }), headers: json(alice) }, 400, /content/],
        ['oversized body', { body: JSON.stringify({ content: 'x'.repeat(70_000) }), headers: json(alice) }, 413, /large/i],
        ['invalid UTF-8', { body: Buffer.from([0x7b, 0x22, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), headers: json(alice) }, 400, /UTF-8/],
        ['wrong content type', { body: 'content=hi', headers: auth(alice, { 'content-type': 'application/x-www-form-urlencoded' }) }, 415, /.+/],
        ['NUL in content', { body: JSON.stringify({ content: 'a\u0000b' }), headers: json(alice) }, 400, /NUL/],
        ['array body', { body: '[1,2]', headers: json(alice) }, 400, /body/],
        ['bad messageId', { body: JSON.stringify({ content: 'hi', messageId: { $ne: 1 } }), headers: json(alice) }, 400, /messageId/],
      ];
      for (const [name, init, code, msg] of cases) {
        const res = await fetch(url, { method: 'POST', ...init });
        const body = (await res.json()) as any;
        expect([name, res.status]).toEqual([name, code]);
        expect([name, body.error.message]).toEqual([name, expect.stringMatching(msg)]);
      }
      for (const bad of ['%7B%22%24ne%22%3A1%7D', '%24gt', 'not-a-uuid', '1', `${id}x`]) {
        const res = await fetch(`${base}/api/conversations/${bad}`, { headers: auth(alice) });
        expect([bad, res.status]).toEqual([bad, 400]);
        expect(((await res.json()) as any).error.message).toBe('params/id must be a UUID');
      }
      const q = await fetch(`${base}/api/conversations?pageSize=abc`, { headers: auth(alice) });
      expect(q.status).toBe(400);
      const health = await fetch(`${base}/api/health`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as any).checks.llm.status).toBe('up');
    });

    test('a message streams every event with <runId>:<seq> ids to run.completed', async () => {
      const id = await createConversation();
      const res = await send(id);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      expect(res.headers.get('cache-control')).toBe('no-cache, no-transform');
      expect(res.headers.get('x-accel-buffering')).toBe('no');
      expect(res.headers.get('content-encoding')).toBeNull();
      // Security headers that apply to a stream; none of the document-only ones.
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('strict-transport-security')).toMatch(/max-age=/);
      expect(res.headers.get('cross-origin-resource-policy')).toBe('same-site');
      expect(res.headers.get('content-security-policy')).toBeNull();
      expect(res.headers.get('x-frame-options')).toBeNull();
      const events = await readEvents(res);
      expect(events[0]).toEqual({ event: 'retry', data: null, retry: 2000 });
      const run = events.slice(1);
      expect(run[0]!.event).toBe('run.started');
      expect(run.at(-1)!.event).toBe('run.completed');
      const runId = run[0]!.data.runId;
      expect(run.map((e) => e.id)).toEqual(run.map((_, i) => `${runId}:${i + 1}`));
      const agents = new Set(run.filter((e) => e.event === 'token').map((e) => e.data.agent));
      expect([...agents]).toEqual(['planner', 'critic', 'host', 'reporter']);
    });

    test('a second message while a run is active is refused with 409', async () => {
      gw.fakeOrchestrator.intervalMs = 50;
      const id = await createConversation();
      const first = await send(id);
      expect(first.status).toBe(200);
      const second = await send(id, 'again');
      expect(second.status).toBe(409);
      expect(((await second.json()) as any).error.code).toBe('run_in_progress');
      await first.body!.cancel();
      gw.fakeOrchestrator.intervalMs = 5;
    });

    test('resume after the client connection is killed gives exactly the next event; disconnect is not cancel', async () => {
      gw.fakeOrchestrator.intervalMs = 20;
      const id = await createConversation();
      const res = await send(id);
      const before = (await readEvents(res, (e) => e.id?.endsWith(':5') ?? false)).filter((e) => e.id);
      expect(before).toHaveLength(5);
      const lastId = before.at(-1)!.id!;
      // The watch of the dropped client ends; the run does not.
      await new Promise((r) => setTimeout(r, 100));
      const runId = lastId.split(':')[0]!;
      expect(gw.fakeOrchestrator.cancelled).not.toContain(runId);
      const resumed = await fetch(`${base}/api/conversations/${id}/events`, { headers: auth(alice, { 'last-event-id': lastId }) });
      expect(resumed.status).toBe(200);
      const after = (await readEvents(resumed)).filter((e) => e.id);
      expect(after[0]!.id).toBe(`${runId}:6`);
      const seqs = [...before, ...after].map((e) => Number(e.id!.split(':')[1]));
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
      expect(after.at(-1)!.event).toBe('run.completed');
      expect(gw.fakeOrchestrator.openWatches).toBe(0);
      gw.fakeOrchestrator.intervalMs = 5;
    });

    test('a resume while the run log cannot be read (a Redis failover) gets its stream, which picks up once it can', async () => {
      gw.fakeOrchestrator.intervalMs = 20;
      const id = await createConversation();
      const res = await send(id);
      const before = (await readEvents(res, (e) => e.id?.endsWith(':5') ?? false)).filter((e) => e.id);
      const lastId = before.at(-1)!.id!;
      // Four failed reads: the request's own, then re-opens 200, 400 and 800 ms apart (1.4 s of failover).
      gw.fakeOrchestrator.failWatches = 4;
      const asked = gw.fakeOrchestrator.watchesAsked;
      const resumed = await fetch(`${base}/api/conversations/${id}/events`, { headers: auth(alice, { 'last-event-id': lastId }) });
      expect(resumed.status).toBe(200);
      const after = (await readEvents(resumed)).filter((e) => e.id);
      expect(gw.fakeOrchestrator.watchesAsked - asked).toBe(5);
      const seqs = [...before, ...after].map((e) => Number(e.id!.split(':')[1]));
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
      expect(after.at(-1)!.event).toBe('run.completed');
      // Without a Last-Event-ID the run is unknown: the client is told to come back.
      gw.fakeOrchestrator.failWatches = 1;
      const unknown = await fetch(`${base}/api/conversations/${id}/events`, { headers: auth(alice) });
      expect(unknown.status).toBe(503);
      expect(((await unknown.json()) as any).error.code).toBe('redis_unavailable');
      expect(unknown.headers.get('retry-after')).toBe('2');
      gw.fakeOrchestrator.intervalMs = 5;
    });

    test('EventSource style: ?access_token= and ?lastEventId= on the events route; invalid Last-Event-ID is 400', async () => {
      const id = await createConversation();
      await readEvents(await send(id));
      const run = gw.fakeStore.conversations.get(id)!.lastRunId;
      const res = await fetch(`${base}/api/conversations/${id}/events?access_token=${alice}&lastEventId=${run}:20`);
      expect(res.status).toBe(200);
      const evs = (await readEvents(res)).filter((e) => e.id);
      expect(evs[0]!.id).toBe(`${run}:21`);
      const bad = await fetch(`${base}/api/conversations/${id}/events`, { headers: auth(alice, { 'last-event-id': 'garbage' }) });
      expect(bad.status).toBe(400);
      // The query token is accepted on the SSE routes only.
      const list = await fetch(`${base}/api/conversations?access_token=${alice}`);
      expect(list.status).toBe(401);
    });

    test('events.lost is forwarded explicitly before the retained events', async () => {
      const id = await createConversation();
      await readEvents(await send(id));
      gw.fakeOrchestrator.retainedFromSeq = 10;
      const res = await fetch(`${base}/api/conversations/${id}/events`, { headers: auth(alice) });
      const evs = (await readEvents(res)).filter((e) => e.id);
      gw.fakeOrchestrator.retainedFromSeq = 1;
      expect(evs[0]!.event).toBe('events.lost');
      expect(evs[0]!.data).toEqual({ afterSeq: 0, firstAvailableSeq: 10 });
      expect(evs[1]!.id!.endsWith(':10')).toBe(true);
    });

    test('cancel answers 202 with the run id', async () => {
      gw.fakeOrchestrator.intervalMs = 50;
      const id = await createConversation();
      const res = await send(id);
      const cancel = await fetch(`${base}/api/conversations/${id}/cancel`, { method: 'POST', headers: auth(alice) });
      expect(cancel.status).toBe(202);
      const body = (await cancel.json()) as any;
      expect(body.cancelled).toBe(true);
      const evs = await readEvents(res);
      expect(evs.at(-1)!.event).toBe('run.cancelled');
      gw.fakeOrchestrator.intervalMs = 5;
    });

    test('docs, metrics and models', async () => {
      const docs = (await (await fetch(`${base}/docs/json`)).json()) as any;
      expect(Object.keys(docs.paths)).toEqual(expect.arrayContaining(['/api/conversations', '/api/conversations/{id}/messages', '/v1/chat/completions']));
      expect((await fetch(`${base}/docs`)).headers.get('content-type')).toMatch(/html/);
      const prom = await (await fetch(`${base}/metrics`)).text();
      expect(prom).toMatch(/edge_http_requests_total/);
      expect(prom).toMatch(/edge_sse_open_streams/);
      const m = (await (await fetch(`${base}/api/metrics`, { headers: auth(alice) })).json()) as any;
      expect(m.requests.total).toBeGreaterThan(0);
      expect(m.llm.available).toBe(false);
      expect(m).toHaveProperty('cpu.processPercent');
      expect(m).toHaveProperty('memory.rssBytes');
    });

    test('the run event catalogue: the streams\' OpenAPI description lists every event, the web UI imports /run-events.js', async () => {
      const docs = (await (await fetch(`${base}/docs/json`)).json()) as any;
      const described: string = docs.paths['/api/conversations/{id}/messages'].post.responses['200'].description;
      for (const [type, e] of Object.entries(RUN_EVENTS)) expect(described).toContain(`${type}${e.terminal ? ' (terminal)' : ''}: ${e.doc}`);
      const res = await fetch(`${base}/run-events.js`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/javascript/);
      const js = await res.text();
      const terminal = JSON.parse(/export const TERMINAL = new Set\((.*)\);/.exec(js)![1]!);
      expect(terminal.sort()).toEqual(['degraded', 'run.cancelled', 'run.completed', 'run.failed']);
    });

    test('the OpenAI client works against the facade, streamed and not, both models', async () => {
      const client = new OpenAI({ apiKey: alice, baseURL: `${base}/v1`, maxRetries: 0 });
      const models = await client.models.list();
      expect(models.data.map((m) => m.id)).toEqual(['agent-mesh', 'upstream', 'model-a', 'model-b']);
      const direct = await client.chat.completions.create({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] });
      expect(direct.choices[0]!.message.content).toBe('Hello from the broker');
      expect(direct.usage!.total_tokens).toBe(9);
      const stream = await client.chat.completions.create({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } });
      let text = '';
      let usage;
      for await (const c of stream) {
        text += c.choices[0]?.delta?.content ?? '';
        if (c.usage) usage = c.usage;
      }
      expect(text).toBe('Hello from the broker');
      expect(usage).toEqual({ prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 });
      const mesh = await client.chat.completions.create({ model: 'agent-mesh', messages: [{ role: 'user', content: 'plan my week' }] });
      expect(mesh.choices[0]!.message.content).toBe('reporter-0 reporter-1 reporter-2 ');
      expect(mesh.usage!.total_tokens).toBe(22);
      // The agents' calls the provider's prompt cache read (run.completed's usage) are said as OpenAI says them.
      expect(mesh.usage!.prompt_tokens_details).toEqual({ cached_tokens: 4 });
      const meshStream = await client.chat.completions.create({ model: 'agent-mesh', messages: [{ role: 'user', content: 'plan' }], stream: true });
      let meshText = '';
      for await (const c of meshStream) meshText += c.choices[0]?.delta?.content ?? '';
      expect(meshText).toBe('reporter-0 reporter-1 reporter-2 ');
      // What a chat client sends with every call (sampling, a length limit) is taken, and left to the agents;
      // what shapes the answer, which a run's cannot be, is refused by name.
      const sampled = await client.chat.completions.create({ model: 'agent-mesh', messages: [{ role: 'user', content: 'plan' }], temperature: 0.7, top_p: 0.9, max_tokens: 500, seed: 3, presence_penalty: 0.1, response_format: { type: 'text' } });
      expect(sampled.choices[0]!.message.content).toBe('reporter-0 reporter-1 reporter-2 ');
      const shapes: Record<string, unknown>[] = [
        { response_format: { type: 'json_object' } }, { stop: 'END' }, { logit_bias: { '50256': -100 } }, { reasoning_effort: 'low' }, { verbosity: 'low' }, { top_k: 5 },
      ];
      for (const shape of shapes) {
        const refused = await client.chat.completions.create({ model: 'agent-mesh', messages: [{ role: 'user', content: 'plan' }], ...shape } as OpenAI.ChatCompletionCreateParamsNonStreaming).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
        const param = Object.keys(shape)[0]!;
        expect((refused as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
        expect((refused as Error).message).toContain(`body/${param} is not taken by the agent-mesh model, whose agents make their own calls (its answer is the Reporter's)`);
      }
      const unauth = new OpenAI({ apiKey: 'nope', baseURL: `${base}/v1`, maxRetries: 0 });
      await expect(unauth.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
      await expect(client.chat.completions.create({ model: 'upstream', messages: [] })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    });
  });

  describe('the OpenAI facade and the end of a broker call', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());

    test('answers at `done`, streamed or not, without waiting for the call\'s end, and reads the call on to its end instead of cancelling it', async () => {
      const ends: string[] = [];
      let endCall: (() => void) | undefined;
      gw.fakeBroker.generate = async function* (_req, signal) {
        yield { update: { $case: 'delta', delta: { content: 'Hi', logprobs: [] } } };
        yield {
          update: {
            $case: 'done',
            done: { finishReason: 'stop', usage: { promptTokens: 5, completionTokens: 1, totalTokens: 6 }, toolCalls: [], model: 'm', queueWaitMs: 0, cache: 0, cachedUsage: undefined, upstream: 'default', content: '', logprobs: [] },
          },
        };
        // The call's end (its status) comes only when the test says so.
        await new Promise<void>((resolve) => (endCall = resolve));
        ends.push(signal.aborted ? 'cancelled' : 'ended');
      };
      for (const stream of [false, true]) {
        endCall = undefined;
        const res = await fetch(`${base}/v1/chat/completions`, {
          method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', stream, messages: [{ role: 'user', content: 'hi' }] }),
        });
        const body = await Promise.race([res.text(), new Promise<string>((r) => setTimeout(() => r('still waiting for the call\'s end'), 2_000))]);
        expect(res.status).toBe(200);
        expect(body).toContain(stream ? 'data: [DONE]' : '"content":"Hi"');
        expect(ends).toHaveLength(stream ? 1 : 0); // the call has not ended…
        // …but is read on past `done` (once the answer is written), not stopped there.
        for (let i = 0; i < 100 && !endCall; i++) await new Promise((r) => setTimeout(r, 10));
        expect(endCall).toBeDefined();
        expect(ends).toHaveLength(stream ? 1 : 0);
        endCall!();
        await new Promise((r) => setTimeout(r, 20));
        expect(ends).toEqual(stream ? ['ended', 'ended'] : ['ended']);
      }
    });

    test('writes the answer before it resumes the call past `done`', async () => {
      // What follows `done` in the call (the inline broker's settlement) is not on the answer's path.
      let response: import('node:http').ServerResponse | undefined;
      const onRequest = (_req: unknown, res: import('node:http').ServerResponse) => (response = res);
      edge.app.server.prependListener('request', onRequest);
      const answered: boolean[] = [];
      gw.fakeBroker.generate = async function* () {
        yield { update: { $case: 'delta', delta: { content: 'Hi', logprobs: [] } } };
        yield {
          update: {
            $case: 'done',
            done: { finishReason: 'stop', usage: { promptTokens: 5, completionTokens: 1, totalTokens: 6 }, toolCalls: [], model: 'm', queueWaitMs: 0, cache: 0, cachedUsage: undefined, upstream: 'default', content: '', logprobs: [] },
          },
        };
        answered.push(response?.writableEnded ?? false);
      };
      try {
        const res = await fetch(`${base}/v1/chat/completions`, {
          method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] }),
        });
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ choices: [{ message: { content: 'Hi' } }] });
        await new Promise((r) => setTimeout(r, 20));
        expect(answered).toEqual([true]);
      } finally {
        edge.app.server.removeListener('request', onRequest);
      }
    });
  });

  describe('the OpenAI facade\'s parameters', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());
    const ask = (extra: Record<string, unknown>) => fetch(`${base}/v1/chat/completions`, {
      method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }], ...extra }),
    });
    const refusal = async (res: Response) => {
      expect(res.status).toBe(400);
      const { error } = (await res.json()) as { error: { message: string; type: string } };
      expect(error.type).toBe('invalid_request_error');
      return error.message;
    };

    test('the other OpenAI parameters, at the value that changes nothing, are accepted', async () => {
      const res = await ask({
        n: 1, presence_penalty: 0, frequency_penalty: 0, logprobs: false, tool_choice: 'auto',
        parallel_tool_calls: true, response_format: { type: 'text' }, store: false, service_tier: 'auto',
      });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ object: 'chat.completion', choices: [{ index: 0 }] });
    });

    test('at any other value they are refused, each saying what it may be, not ignored', async () => {
      expect(await refusal(await ask({ n: 17 }))).toBe('body/n must be <= 16');
      expect(await refusal(await ask({ n: 0 }))).toBe('body/n must be >= 1');
      expect(await refusal(await ask({ store: true }))).toBe('body/store must be false or null');
    });

    test('cache_control on content parts and tools (as LiteLLM takes it) reaches the broker as breakpoints; more than 4, a ttl other than 5m or 1h, or the agent-mesh model are refused', async () => {
      const ephemeral = { type: 'ephemeral' };
      const { seen, restore } = recordGenerate();
      try {
        const res = await ask({
          messages: [
            { role: 'system', content: [{ type: 'text', text: 'Rules.', cache_control: { type: 'ephemeral', ttl: '1h' } }, { type: 'text', text: ' More.' }] },
            { role: 'user', content: [{ type: 'text', text: 'hi', cache_control: ephemeral }] },
          ],
          // The tools are read first: an hour's breakpoint there may come before the system's.
          tools: [{ type: 'function', function: { name: 'search' }, cache_control: { type: 'ephemeral', ttl: '1h' } }, { type: 'function', function: { name: 'now' } }],
        });
        expect(res.status).toBe(200);
        expect(seen[0]).toMatchObject({
          // A system message is one block: its breakpoint marks its end.
          messages: [{ role: 'system', content: 'Rules. More.', cacheTtl: '1h' }, { role: 'user', content: 'hi', cacheTtl: '5m' }],
          tools: [{ name: 'search', cacheTtl: '1h' }, { name: 'now', cacheTtl: '' }],
        });
        expect(seen[0]!.messages.every((m) => m.parts === undefined)).toBe(true);
      } finally {
        restore();
      }
      const five = Array.from({ length: 5 }, (_, i) => ({ type: 'text', text: `part ${i}`, cache_control: ephemeral }));
      expect(await refusal(await ask({ messages: [{ role: 'user', content: five }] })))
        .toBe('body: at most 4 content parts and tools may carry cache_control (5 do: messages[0].content[0], messages[0].content[1], messages[0].content[2], messages[0].content[3], messages[0].content[4])');
      expect(await refusal(await ask({ messages: [{ role: 'user', content: [{ type: 'text', text: 'a', cache_control: { type: 'ephemeral', ttl: '10m' } }] }] })))
        .toBe('body/messages/0/content/0/cache_control/ttl must be "5m" or "1h"');
      // An hour's breakpoint after one of 5 minutes, in the order the prompt is read (a tool's before any message's).
      const hourAfter = await ask({ messages: [{ role: 'user', content: [{ type: 'text', text: 'a', cache_control: { type: 'ephemeral', ttl: '1h' } }] }], tools: [{ type: 'function', function: { name: 'search' }, cache_control: ephemeral }] });
      expect(hourAfter.status).toBe(400);
      expect(((await hourAfter.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'invalid_cache_control', message: expect.stringMatching(/^body: a cache_control with ttl 1h must not come after one with ttl 5m/) });
      expect(await refusal(await ask({ model: 'agent-mesh', messages: [{ role: 'user', content: [{ type: 'text', text: 'a', cache_control: ephemeral }] }] })))
        .toBe('body/messages/0/content/0/cache_control is not taken by the agent-mesh model, whose agents write their own prompts');
    });

    test('tool_choice reaches the broker as asked; other than auto it needs tools, and a named function must be one of them', async () => {
      const seen: (ToolChoice | undefined)[] = [];
      const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
      gw.fakeBroker.generate = (req, signal, gate) => {
        seen.push((req as GenerateRequest).toolChoice);
        return generate(req, signal, gate);
      };
      try {
        const tools = [{ type: 'function', function: { name: 'search_web', parameters: { type: 'object' } } }];
        for (const tool_choice of [undefined, 'auto', 'none', 'required', { type: 'function', function: { name: 'search_web' } }]) {
          expect((await ask({ tools, tool_choice })).status).toBe(200);
        }
        expect(seen).toEqual([
          undefined, undefined,
          { mode: ToolChoiceMode.TOOL_CHOICE_MODE_NONE, functionName: '' },
          { mode: ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED, functionName: '' },
          { mode: ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, functionName: 'search_web' },
        ]);
        expect(await refusal(await ask({ tool_choice: 'required' }))).toBe('body/tool_choice other than "auto" is only allowed when body/tools are given');
        expect(await refusal(await ask({ tools, tool_choice: { type: 'function', function: { name: 'get_weather' } } })))
          .toBe('body/tool_choice names the function "get_weather", which is not one of body/tools');
        expect(await refusal(await ask({ tools, tool_choice: { type: 'function' } }))).toBe("body/tool_choice must have required property 'function'");
        expect(await refusal(await ask({ tools, tool_choice: 'sometimes' }))).toBe('body/tool_choice must be "auto" or "none" or "required" or null');
        expect(await refusal(await ask({ model: 'agent-mesh', tools })))
          .toBe('body/tools and body/tool_choice are not taken by the agent-mesh model, whose agents use their own tools');
        expect(seen).toHaveLength(5);
      } finally {
        gw.fakeBroker.generate = generate;
      }
    });

    test('stop, top_p, top_k, seed, the penalties, response_format, parallel_tool_calls, reasoning_effort, logit_bias and verbosity reach the broker as asked (a single stop string as a list of one)', async () => {
      type Seen = Pick<GenerateRequest, 'stop' | 'topP' | 'topK' | 'seed' | 'presencePenalty' | 'frequencyPenalty' | 'responseFormatJson' | 'parallelToolCalls' | 'reasoningEffort' | 'logitBias' | 'verbosity' | 'endUser'>;
      const seen: Seen[] = [];
      const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
      gw.fakeBroker.generate = (req, signal, gate) => {
        const { stop, topP, topK, seed, presencePenalty, frequencyPenalty, responseFormatJson, parallelToolCalls, reasoningEffort, logitBias, verbosity, endUser } = req as GenerateRequest;
        seen.push({ stop, topP, topK, seed, presencePenalty, frequencyPenalty, responseFormatJson, parallelToolCalls, reasoningEffort, logitBias, verbosity, endUser });
        return generate(req, signal, gate);
      };
      const none = { topP: undefined, topK: undefined, seed: undefined, presencePenalty: undefined, frequencyPenalty: undefined, responseFormatJson: '', parallelToolCalls: undefined, reasoningEffort: undefined, logitBias: {}, verbosity: undefined, endUser: undefined };
      const schema = { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object', properties: { text: { type: 'string' } } }, strict: true } };
      try {
        for (const extra of [
          {}, { stop: null, top_p: null, seed: null, presence_penalty: null, frequency_penalty: null, response_format: null },
          { stop: '\n\n', top_p: 0.9, top_k: 40, seed: 42, presence_penalty: 0.5, frequency_penalty: -1 }, { stop: ['END', 'STOP'], response_format: { type: 'json_object' } },
          { response_format: schema }, { parallel_tool_calls: true }, { parallel_tool_calls: false },
          { reasoning_effort: 'high', logit_bias: { '50256': -100, '1734': 2.5 } }, { reasoning_effort: null, logit_bias: null, verbosity: null }, { verbosity: 'low' },
          // metadata tags the trace, and is not sent on.
          { metadata: { team: 'search', job: 'nightly' }, modalities: ['text'] },
          { user: 'user-42' },
        ]) {
          expect((await ask(extra)).status).toBe(200);
        }
        expect(seen).toEqual([
          { ...none, stop: [] },
          { ...none, stop: [] },
          { ...none, stop: ['\n\n'], topP: 0.9, topK: 40, seed: 42, presencePenalty: 0.5, frequencyPenalty: -1 },
          { ...none, stop: ['END', 'STOP'], responseFormatJson: '{"type":"json_object"}' },
          { ...none, stop: [], responseFormatJson: JSON.stringify(schema) },
          { ...none, stop: [] },
          { ...none, stop: [], parallelToolCalls: false },
          { ...none, stop: [], reasoningEffort: 'high', logitBias: { '50256': -100, '1734': 2.5 } },
          { ...none, stop: [] },
          { ...none, stop: [], verbosity: 'low' },
          { ...none, stop: [] },
          { ...none, stop: [], endUser: 'user-42' },
        ]);
        expect(await refusal(await ask({ presence_penalty: 3 }))).toBe('body/presence_penalty must be <= 2');
        expect(await refusal(await ask({ response_format: { type: 'xml' } }))).toBe('body/response_format/type must be "text" or "json_object" or "json_schema"');
        expect(await refusal(await ask({ response_format: { type: 'json_schema' } }))).toBe("body/response_format must have required property 'json_schema'");
        expect(await refusal(await ask({ stop: ['a', 'b', 'c', 'd', 'e'] }))).toBe('body/stop must NOT have more than 4 items');
        expect(await refusal(await ask({ stop: '' }))).toBe('body/stop must NOT have fewer than 1 characters');
        expect(await refusal(await ask({ top_p: 1.5 }))).toBe('body/top_p must be <= 1');
        expect(await refusal(await ask({ top_k: -1 }))).toBe('body/top_k must be >= 0');
        expect(await refusal(await ask({ seed: 1.5 }))).toBe('body/seed must be integer,null');
        expect(await refusal(await ask({ reasoning_effort: 'extreme' }))).toBe('body/reasoning_effort must be "none" or "minimal" or "low" or "medium" or "high" or "xhigh" or null');
        expect(await refusal(await ask({ logit_bias: { hello: 1 } }))).toBe('body/logit_bias key "hello" must be a token id (up to 9 digits)');
        expect(await refusal(await ask({ logit_bias: { '1734': 101 } }))).toBe('body/logit_bias/1734 must be <= 100');
        expect(await refusal(await ask({ verbosity: 'terse' }))).toBe('body/verbosity must be "low" or "medium" or "high" or null');
        expect(await refusal(await ask({ modalities: ['text', 'audio'] }))).toBe('body/modalities must be ["text"] or null');
        // metadata checked as OpenAI checks it.
        expect(await refusal(await ask({ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }))).toBe('body/metadata must NOT have more than 16 properties');
        expect(await refusal(await ask({ metadata: { ['k'.repeat(65)]: 'v' } }))).toBe(`body/metadata key "${'k'.repeat(65)}" must NOT have more than 64 characters`);
        expect(await refusal(await ask({ metadata: { team: 'x'.repeat(513) } }))).toBe('body/metadata/team must NOT have more than 512 characters');
        expect(await refusal(await ask({ metadata: { team: 7 } }))).toBe('body/metadata/team must be string');
      } finally {
        gw.fakeBroker.generate = generate;
      }
    });

    test('a parameter OpenAI\'s API does not have is refused by name', async () => {
      expect(await refusal(await ask({ temprature: 0 }))).toBe('body has a parameter this API does not take: "temprature" (refused rather than ignored)');
    });

    test('each refusal names the parameter at fault in `param`, as OpenAI\'s errors do', async () => {
      const tools = [{ type: 'function', function: { name: 'search_web', parameters: { type: 'object' } } }];
      const cases: [Record<string, unknown>, string | null][] = [
        [{ n: 17 }, 'n'],
        [{ top_logprobs: 2 }, 'logprobs'],
        [{ temprature: 0 }, 'temprature'],
        [{ messages: [{ role: 'user', content: 'hi' }, { role: 'wizard', content: 'hi' }] }, 'messages[1].role'],
        [{ messages: [{ role: 'tool', content: 'sunny' }] }, 'messages[0].tool_call_id'],
        [{ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }] }] }, 'messages[0].content[0].type'],
        [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'ftp://example.com/a.png' } }] }] }, 'messages[0].content[0].image_url.url'],
        [{ response_format: { type: 'json_schema' } }, 'response_format.json_schema'],
        [{ messages: [{ role: 'user', content: 'a\u0000b' }] }, 'messages[0].content'],
        [{ messages: [{ role: 'user', content: 'hi', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }] }, 'messages[0].tool_calls'],
        [{ tool_choice: 'required' }, 'tool_choice'],
        [{ tools, tool_choice: { type: 'function', function: { name: 'get_weather' } } }, 'tool_choice.function.name'],
        [{ model: 'agent-mesh', tools }, 'tools'],
        [{ model: 'agent-mesh', messages: [{ role: 'system', content: 'be brief' }] }, 'messages'],
      ];
      const params = [];
      for (const [extra] of cases) {
        const res = await ask(extra);
        expect(res.status).toBe(400);
        params.push(((await res.json()) as { error: { param: string | null } }).error.param);
      }
      expect(params).toEqual(cases.map(([, param]) => param));
      // A body that is not JSON is about no one parameter.
      const garbled = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: json(alice), body: '{"model":' });
      expect(garbled.status).toBe(400);
      expect(((await garbled.json()) as { error: { param: string | null } }).error.param).toBeNull();
    });

    test('logprobs: each token\'s figures reach the client, in the answer and in the chunk that carries it; top_logprobs only with logprobs', async () => {
      const asked: Pick<GenerateRequest, 'logprobs' | 'topLogprobs'>[] = [];
      const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
      const figures = (token: string) => [{ token, logprob: -0.25, bytes: [...Buffer.from(token)], topLogprobs: [{ token, logprob: -0.25, bytes: [...Buffer.from(token)], topLogprobs: [] }] }];
      gw.fakeBroker.generate = async function* (req, signal, gate) {
        const { logprobs, topLogprobs } = req as GenerateRequest;
        asked.push({ logprobs, topLogprobs });
        for await (const m of generate(req, signal, gate)) {
          const u = m.update;
          yield logprobs && u?.$case === 'delta' ? { update: { ...u, delta: { ...u.delta, logprobs: figures(u.delta.content) } } } : m;
        }
      };
      type Entry = { token: string; logprob: number; bytes: number[]; top_logprobs: Entry[] };
      try {
        const whole = (await (await ask({ logprobs: true, top_logprobs: 1 })).json()) as { choices: { message: { content: string }; logprobs: { content: Entry[]; refusal: null } }[] };
        const { message, logprobs } = whole.choices[0]!;
        expect(logprobs.content.map((e) => e.token).join('')).toBe(message.content);
        expect(logprobs.content[0]).toEqual({ token: 'Hello', logprob: -0.25, bytes: [...Buffer.from('Hello')], top_logprobs: [{ token: 'Hello', logprob: -0.25, bytes: [...Buffer.from('Hello')] }] });
        const chunks = (await (await ask({ logprobs: true, stream: true })).text()).split('\n\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)) as { choices: { delta: { content?: string }; logprobs: { content: Entry[] } | null }[] });
        const withText = chunks.flatMap((c) => c.choices).filter((c) => c.delta.content);
        expect(withText.map((c) => c.logprobs?.content.map((e) => e.token).join(''))).toEqual(withText.map((c) => c.delta.content));
        const plain = (await (await ask({})).json()) as { choices: { logprobs: unknown }[] };
        expect(plain.choices[0]!.logprobs).toBeNull();
        expect(asked).toEqual([{ logprobs: true, topLogprobs: 1 }, { logprobs: true, topLogprobs: undefined }, { logprobs: undefined, topLogprobs: undefined }]);
      } finally {
        gw.fakeBroker.generate = generate;
      }
      expect(await refusal(await ask({ top_logprobs: 2 }))).toBe("body must have required property 'logprobs' when body/top_logprobs is given");
      expect(await refusal(await ask({ logprobs: false, top_logprobs: 2 }))).toBe('body/logprobs must be true when body/top_logprobs is given');
      expect(await refusal(await ask({ logprobs: true, top_logprobs: 21 }))).toBe('body/top_logprobs must be <= 20');
      expect(await refusal(await ask({ model: 'agent-mesh', logprobs: true }))).toBe("body/logprobs is not available for the agent-mesh model, whose answer is a run's");
      expect((await ask({ top_logprobs: null })).status).toBe(200);
    });

    describe('n choices', () => {
      const seeds = () => {
        const seen: (number | undefined)[] = [];
        const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
        gw.fakeBroker.generate = (req, signal, gate) => {
          seen.push((req as GenerateRequest).seed);
          return generate(req, signal, gate);
        };
        return { seen, restore: () => { gw.fakeBroker.generate = generate; } };
      };

      test('each is a call of its own (choice i with seed + i), answered as choices 0…n-1 with the usage added up', async () => {
        const { seen, restore } = seeds();
        try {
          const res = await ask({ n: 3, seed: 7 });
          expect(res.status).toBe(200);
          expect(res.headers.get('x-mesh-cache')).toBeNull();
          const body = (await res.json()) as { choices: { index: number; message: { content: string }; finish_reason: string }[]; usage: unknown };
          expect(body.choices).toEqual([0, 1, 2].map((index) => expect.objectContaining({ index, message: expect.objectContaining({ content: 'Hello from the broker' }), finish_reason: 'stop' })));
          expect(body.usage).toEqual({ prompt_tokens: 15, completion_tokens: 12, total_tokens: 27 });
          expect(seen.sort()).toEqual([7, 8, 9]);
          // At the largest seed there is, the next choices wrap to the smallest.
          seen.length = 0;
          expect((await ask({ n: 2, seed: Number.MAX_SAFE_INTEGER })).status).toBe(200);
          expect(seen.sort((a, b) => a! - b!)).toEqual([Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]);
        } finally {
          restore();
        }
      });

      test('the reasoning tokens a provider reports are in the usage, added up over the choices', async () => {
        const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
        gw.fakeBroker.generate = async function* (req, signal, gate) {
          for await (const m of generate(req, signal, gate)) {
            const u = m.update;
            yield u?.$case === 'done' ? { update: { ...u, done: { ...u.done, usage: { promptTokens: 5, completionTokens: 24, totalTokens: 29, reasoningTokens: 20 } } } } : m;
          }
        };
        try {
          const one = (await (await ask({})).json()) as { usage: unknown };
          expect(one.usage).toEqual({ prompt_tokens: 5, completion_tokens: 24, total_tokens: 29, completion_tokens_details: { reasoning_tokens: 20 } });
          const two = (await (await ask({ n: 2 })).json()) as { usage: unknown };
          expect(two.usage).toEqual({ prompt_tokens: 10, completion_tokens: 48, total_tokens: 58, completion_tokens_details: { reasoning_tokens: 40 } });
        } finally {
          gw.fakeBroker.generate = generate;
        }
      });

      test('streamed: every chunk says its choice, each choice finishes, then one usage and one [DONE]', async () => {
        const res = await ask({ n: 2, stream: true, stream_options: { include_usage: true } });
        expect(res.status).toBe(200);
        const chunks = (await res.text()).split('\n\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
        expect(chunks.at(-1)).toBe('[DONE]');
        const parsed = chunks.slice(0, -1).map((c) => JSON.parse(c) as { choices: { index: number; delta: { content?: string }; finish_reason: string | null }[]; usage?: unknown });
        for (const index of [0, 1]) {
          const mine = parsed.flatMap((c) => c.choices).filter((c) => c.index === index);
          expect(mine.map((c) => c.delta.content ?? '').join('')).toBe('Hello from the broker');
          expect(mine.filter((c) => c.finish_reason !== null).map((c) => c.finish_reason)).toEqual(['stop']);
        }
        expect(parsed.filter((c) => c.usage).map((c) => c.usage)).toEqual([{ prompt_tokens: 10, completion_tokens: 8, total_tokens: 18 }]);
        expect(parsed.at(-1)!.choices).toEqual([]);
      });

      test('one choice that fails fails the request, and the other calls are cancelled', async () => {
        const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
        const others: string[] = [];
        let calls = 0;
        gw.fakeBroker.generate = async function* (req, signal, gate) {
          if (calls++ === 1) {
            await new Promise((r) => setTimeout(r, 5));
            throw new HttpError(503, 'upstream_unavailable', 'the provider is down');
          }
          try {
            for await (const m of generate(req, signal, gate)) {
              yield m;
              await new Promise((r) => setTimeout(r, 20));
            }
          } finally {
            others.push(signal.aborted ? 'cancelled' : 'completed');
          }
        };
        try {
          const res = await ask({ n: 3 });
          expect(res.status).toBe(503);
          expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_unavailable');
          await new Promise((r) => setTimeout(r, 50));
          expect(others).toEqual(['cancelled', 'cancelled']);
        } finally {
          gw.fakeBroker.generate = generate;
        }
      });

      test('refused where one answer is all there is: the agent-mesh model, and the response cache asked for', async () => {
        expect(await refusal(await ask({ model: 'agent-mesh', n: 2 }))).toBe('body/n must be 1 for the agent-mesh model, whose run gives one answer');
        const cached = await fetch(`${base}/v1/chat/completions`, {
          method: 'POST', headers: { ...json(alice), 'x-mesh-cache': 'on' }, body: JSON.stringify({ model: 'upstream', n: 2, messages: [{ role: 'user', content: 'hi' }] }),
        });
        expect(await refusal(cached)).toBe('body/n greater than 1 asks for different answers: the response cache (x-mesh-cache: on) replays one');
        // At temperature 0 the cache is on by default: with n > 1 it is off, each choice asked.
        const { seen, restore } = seeds();
        try {
          const res = await ask({ n: 2, temperature: 0 });
          expect(res.status).toBe(200);
          expect(res.headers.get('x-mesh-cache')).toBeNull();
          expect(seen).toHaveLength(2);
        } finally {
          restore();
        }
      });
    });

    test('a user\'s images reach the broker as parts, in order among the text; the content is their text', async () => {
      const seen: ChatMessage[][] = [];
      const generate = gw.fakeBroker.generate.bind(gw.fakeBroker);
      gw.fakeBroker.generate = (req, signal, gate) => {
        seen.push((req as GenerateRequest).messages);
        return generate(req, signal, gate);
      };
      // Bigger than the other routes' body limit (64 KiB): an image as a data: URL.
      const png = `data:image/png;base64,${Buffer.alloc(100_000, 7).toString('base64')}`;
      try {
        const question = { role: 'user', content: [{ type: 'text', text: 'what is ' }, { type: 'image_url', image_url: { url: png, detail: 'low' } }, { type: 'text', text: 'and ' }, { type: 'image_url', image_url: { url: 'https://example.com/a.png', detail: 'auto' } }] };
        expect((await ask({ messages: [{ role: 'system', content: 'Be brief.' }, question] })).status).toBe(200);
        expect((await ask({ messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] })).status).toBe(200);
        expect(seen[0]).toMatchObject([
          { role: 'system', content: 'Be brief.' },
          {
            role: 'user',
            content: 'what is and ',
            parts: { parts: [{ text: 'what is ', imageUrl: '' }, { text: '', imageUrl: png, imageDetail: 'low' }, { text: 'and ', imageUrl: '' }, { text: '', imageUrl: 'https://example.com/a.png', imageDetail: '' }] },
          },
        ]);
        expect(seen[0]![0]!.parts).toBeUndefined();
        // Text parts alone are the content, as before.
        expect(seen[1]).toMatchObject([{ role: 'user', content: 'hi' }]);
        expect(seen[1]![0]!.parts).toBeUndefined();
      } finally {
        gw.fakeBroker.generate = generate;
      }
    });

    test('an audio part, an image anywhere but a user message, an image by a URL no provider reads, and an image for the agent-mesh model are refused, not dropped from the question', async () => {
      const image = { type: 'image_url', image_url: { url: 'https://example.com/a.png' } };
      expect(await refusal(await ask({ messages: [{ role: 'user', content: [{ type: 'text', text: 'hear this' }, { type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }] }] })))
        .toBe('body/messages/0/content/1/type must be "text" or "image_url"');
      expect(await refusal(await ask({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: [image] }] }))).toBe('body/messages/1/content/0/type must be "text"');
      expect(await refusal(await ask({ messages: [{ role: 'system', content: [image] }, { role: 'user', content: 'hi' }] }))).toBe('body/messages/0/content/0/type must be "text"');
      expect(await refusal(await ask({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/svg+xml;base64,AAAA' } }] }] })))
        .toBe('body/messages/0/content/0/image_url/url must be an http(s) URL or a data: URL of a base64 PNG, JPEG, GIF or WebP image');
      expect(await refusal(await ask({ messages: [{ role: 'user', content: [{ ...image, image_url: { url: image.image_url.url, detail: 'ultra' } }] }] })))
        .toBe('body/messages/0/content/0/image_url/detail must be "auto" or "low" or "high"');
      expect(await refusal(await ask({ model: 'agent-mesh', messages: [{ role: 'user', content: [{ type: 'text', text: 'what is this?' }, image] }] })))
        .toBe('body/messages/0/content holds an image: the agent-mesh model\'s agents read text');
    });

    test('a message is checked against its role alone', async () => {
      expect(await refusal(await ask({ messages: [{ role: 'wizard', content: 'hi' }] })))
        .toBe('body/messages/0/role must be "system" or "developer" or "user" or "assistant" or "tool"');
      expect(await refusal(await ask({ messages: [{ role: 'tool', content: 'sunny' }] }))).toBe("body/messages/0 must have required property 'tool_call_id'");
      expect(await refusal(await ask({ messages: [{ role: 'user', content: 42 }] }))).toBe('body/messages/0/content must be string; body/messages/0/content must be null; body/messages/0/content must be array');
    });
  });

  describe('the model list (/v1/models)', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());

    test('the agents, the default alias, then the broker\'s upstreams\' models, in OpenAI\'s and Anthropic\'s shapes at once; one by id, or 404', async () => {
      const res = await fetch(`${base}/v1/models`, { headers: { 'x-api-key': alice } });
      expect(res.status).toBe(200);
      const list = (await res.json()) as { object: string; data: Record<string, unknown>[]; has_more: boolean; first_id: string; last_id: string };
      expect(list.data.map((m) => [m['id'], m['owned_by']])).toEqual([['agent-mesh', 'agent-mesh'], ['upstream', 'agent-mesh'], ['model-a', 'default'], ['model-b', 'backup']]);
      expect(list).toMatchObject({ object: 'list', has_more: false, first_id: 'agent-mesh', last_id: 'model-b' });
      expect(list.data[2]).toMatchObject({ object: 'model', type: 'model', display_name: 'model-a', created: expect.any(Number), created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
      expect(await (await fetch(`${base}/v1/models/model-b`, { headers: auth(alice) })).json()).toMatchObject({ id: 'model-b', owned_by: 'backup' });
      const missing = await fetch(`${base}/v1/models/gpt-nope`, { headers: auth(alice) });
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('model_not_found');
      expect((await fetch(`${base}/v1/models`)).status).toBe(401);
      // A path parameter longer than the router takes (200) is the 400 of an id of the wrong form, in the route's shape.
      const long = await fetch(`${base}/v1/models/${'x'.repeat(201)}`, { headers: auth(alice) });
      expect(long.status).toBe(400);
      expect(((await long.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
      const conversation = await fetch(`${base}/api/conversations/${'x'.repeat(201)}`, { headers: auth(alice) });
      expect(conversation.status).toBe(400);
      expect(((await conversation.json()) as { error: { code: string } }).error.code).toBe('invalid_argument');
    });
  });

  describe('embeddings (/v1/embeddings)', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());
    const embed = (body: unknown, t = alice) => fetch(`${base}/v1/embeddings`, { method: 'POST', headers: json(t), body: JSON.stringify(body) });

    test('each input form goes to the broker as texts or token ids, and the vectors come back in OpenAI\'s shape, as numbers or base64', async () => {
      gw.fakeBroker.embedded = [];
      const res = await embed({ model: 'text-embedding-3-small', input: ['hello', 'hi'], dimensions: 2, user: 'u-1' });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        object: 'list',
        data: [{ object: 'embedding', index: 0, embedding: [0, 5] }, { object: 'embedding', index: 1, embedding: [1, 2] }],
        model: 'text-embedding-3-small',
        usage: { prompt_tokens: 7, total_tokens: 7 },
      });
      expect(gw.fakeBroker.embedded[0]).toEqual({
        userId: 'alice', model: 'text-embedding-3-small', dimensions: 2, endUser: 'u-1', cache: false, vectorsAsBytes: true,
        inputs: [{ input: { $case: 'text', text: 'hello' } }, { input: { $case: 'text', text: 'hi' } }],
      });
      expect(res.headers.get('x-mesh-cache')).toBeNull();
      expect((await embed({ model: 'm', input: [[1, 2, 3], [4]] })).status).toBe(200);
      expect(gw.fakeBroker.embedded[1]!.inputs).toEqual([{ input: { $case: 'tokens', tokens: { ids: [1, 2, 3] } } }, { input: { $case: 'tokens', tokens: { ids: [4] } } }]);
      // One text, and one list of token ids, are one input each.
      for (const input of ['one text', [7, 8]]) {
        expect(((await (await embed({ model: 'm', input })).json()) as { data: unknown[] }).data).toHaveLength(1);
      }
      // base64: little-endian float32, as OpenAI's SDK reads it (it asks base64 by default).
      const client = new OpenAI({ apiKey: alice, baseURL: `${base}/v1`, maxRetries: 0 });
      const viaSdk = await client.embeddings.create({ model: 'm', input: ['abc', 'de'] });
      expect(viaSdk.data.map((d) => d.embedding)).toEqual([[0, 3, 0.5], [1, 2, 0.5]]);
      const raw = (await (await embed({ model: 'm', input: 'abcd', encoding_format: 'base64' })).json()) as { data: { embedding: string }[] };
      const bytes = Buffer.from(raw.data[0]!.embedding, 'base64');
      expect([0, 1, 2].map((i) => bytes.readFloatLE(i * 4))).toEqual([0, 4, 0.5]);
    });

    test('a broker that predates vectors_as_bytes answers values: the same vectors, as numbers and as base64', async () => {
      const both = async () => Promise.all([
        embed({ model: 'm', input: ['abc', 'de'] }).then((r) => r.json()),
        embed({ model: 'm', input: ['abc', 'de'], encoding_format: 'base64' }).then((r) => r.json()),
      ]);
      const asBytes = await both();
      gw.fakeBroker.vectorsAsValuesOnly = true;
      try {
        expect(await both()).toEqual(asBytes);
      } finally {
        gw.fakeBroker.vectorsAsValuesOnly = false;
      }
      expect((asBytes[0] as { data: { embedding: number[] }[] }).data.map((d) => d.embedding)).toEqual([[0, 3, 0.5], [1, 2, 0.5]]);
    });

    test('x-mesh-cache: on asks the broker\'s cache; the answer says hit, partial or miss by the vectors that came from it', async () => {
      gw.fakeBroker.embedded = [];
      const cached = (n: number) => {
        gw.fakeBroker.embedCached = n;
        return fetch(`${base}/v1/embeddings`, { method: 'POST', headers: { ...json(alice), 'x-mesh-cache': 'on' }, body: JSON.stringify({ model: 'm', input: ['a', 'b'] }) });
      };
      try {
        const said: (string | null)[] = [];
        for (const n of [0, 1, 2]) said.push((await cached(n)).headers.get('x-mesh-cache'));
        expect(said).toEqual(['miss', 'partial', 'hit']);
        // Vectors past their lifetime, served while the provider refuses, say so whatever else came from the cache.
        const two = [{ values: [1], f32le: Buffer.alloc(0) }, { values: [2], f32le: Buffer.alloc(0) }];
        expect([cacheStatus({ embeddings: two, cachedInputs: 2, cachedStale: true }), cacheStatus({ embeddings: two, cachedInputs: 1, cachedStale: true })]).toEqual(['stale', 'stale']);
        expect(gw.fakeBroker.embedded.map((r) => r.cache)).toEqual([true, true, true]);
        const off = await fetch(`${base}/v1/embeddings`, { method: 'POST', headers: { ...json(alice), 'x-mesh-cache': 'off' }, body: JSON.stringify({ model: 'm', input: 'a' }) });
        expect([off.status, off.headers.get('x-mesh-cache'), gw.fakeBroker.embedded.at(-1)!.cache]).toEqual([200, null, false]);
        const bad = await fetch(`${base}/v1/embeddings`, { method: 'POST', headers: { ...json(alice), 'x-mesh-cache': 'always' }, body: JSON.stringify({ model: 'm', input: 'a' }) });
        expect(bad.status).toBe(400);
        expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/x-mesh-cache/);
        expect(gw.fakeBroker.embedded).toHaveLength(4);
      } finally {
        gw.fakeBroker.embedCached = 0;
      }
    });

    test('bad input is a 400 naming what is wrong, and nothing reaches the broker; no token is a 401', async () => {
      gw.fakeBroker.embedded = [];
      const bad: [unknown, RegExp][] = [
        [{ input: 'x' }, /model/],
        [{ model: 'm' }, /input/],
        [{ model: 'm', input: '' }, /input/],
        [{ model: 'm', input: [] }, /input/],
        [{ model: 'm', input: [[]] }, /input/],
        [{ model: 'm', input: [-1] }, /input/],
        [{ model: 'm', input: ['a', 2] }, /input/],
        [{ model: 'm', input: Array.from({ length: 2049 }, () => 'a') }, /input/],
        [{ model: 'm', input: 'a', encoding_format: 'int8' }, /encoding_format/],
        [{ model: 'm', input: 'a', dimensions: 0 }, /dimensions/],
        [{ model: 'm', input: 'a', dimensions: 1.5 }, /dimensions/],
        [{ model: 'm', input: 'a', temperature: 0 }, /temperature|additional/],
      ];
      for (const [body, says] of bad) {
        const res = await embed(body);
        expect([JSON.stringify(body).slice(0, 60), res.status]).toEqual([JSON.stringify(body).slice(0, 60), 400]);
        const { error } = (await res.json()) as { error: { message: string; type: string } };
        expect(error.type).toBe('invalid_request_error');
        expect(error.message).toMatch(says);
      }
      expect(gw.fakeBroker.embedded).toHaveLength(0);
      expect((await fetch(`${base}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'm', input: 'a' }) })).status).toBe(401);
    });
  });

  describe('the Responses API (/v1/responses)', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());
    const respond = (extra: Record<string, unknown>) => fetch(`${base}/v1/responses`, {
      method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', input: 'hi', ...extra }),
    });
    const refusal = async (res: Response) => {
      expect(res.status).toBe(400);
      return ((await res.json()) as { error: { message: string } }).error.message;
    };

    test('answers a response: the text as one output message, the usage in its terms, what was asked echoed', async () => {
      const res = await respond({ instructions: 'Be brief.', max_output_tokens: 50, metadata: { team: 'search' } });
      expect(res.status).toBe(200);
      const r = (await res.json()) as Record<string, any>;
      expect(r).toMatchObject({
        object: 'response', status: 'completed', error: null, incomplete_details: null, instructions: 'Be brief.', max_output_tokens: 50, model: 'upstream', store: true, previous_response_id: null, metadata: { team: 'search' },
        output: [{ type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'Hello from the broker', annotations: [] }] }],
        usage: { input_tokens: 5, output_tokens: 4, total_tokens: 9, output_tokens_details: { reasoning_tokens: 0 } },
      });
      expect(r['id']).toMatch(/^resp_[0-9a-f]{32}$/);
      expect(r['output'][0].id).toMatch(/^msg_/);
    });

    test('top_logprobs only with include message.output_text.logprobs, which asks the broker for them: refused by name', async () => {
      expect(await refusal(await respond({ top_logprobs: 2 }))).toBe("body must have required property 'include' when body/top_logprobs is given");
      expect(await refusal(await respond({ top_logprobs: 2, include: ['reasoning.encrypted_content'] }))).toBe('body/include must contain "message.output_text.logprobs" when body/top_logprobs is given');
      expect(await refusal(await respond({ include: ['message.output_text.logprob'] }))).toBe('body/include/0 must be "reasoning.encrypted_content" or "message.output_text.logprobs"');
      const { seen, restore } = recordGenerate();
      try {
        for (const extra of [{ top_logprobs: 0 }, { include: ['message.output_text.logprobs'] }, { include: ['message.output_text.logprobs'], top_logprobs: 3 }]) expect((await respond(extra)).status).toBe(200);
        expect(seen.map((r) => [r.logprobs, r.topLogprobs])).toEqual([[undefined, undefined], [true, undefined], [true, 3]]);
      } finally {
        restore();
      }
    });

    test('background needs store: refused by name', async () => {
      expect(await refusal(await respond({ background: true, store: false }))).toBe('body/store must be true or null when body/background is true');
      expect((await respond({ background: false, stream: true, store: false })).status).toBe(200);
    });

    test('input items become the chat: instructions first, images in user parts, function calls on one assistant message, their outputs as tool results', async () => {
      const { seen, restore } = recordGenerate();
      try {
        const tools = [{ type: 'function', name: 'search_web', description: 'Search', parameters: { type: 'object' } }];
        const res = await respond({
          instructions: 'Be brief.',
          input: [
            { role: 'user', content: [{ type: 'input_text', text: 'what is ' }, { type: 'input_image', image_url: 'https://example.com/a.png', detail: 'low' }] },
            { type: 'function_call', call_id: 'c1', name: 'search_web', arguments: '{"q":"a"}' },
            { type: 'function_call', call_id: 'c2', name: 'search_web', arguments: '{"q":"b"}' },
            { type: 'function_call_output', call_id: 'c1', output: 'A' },
            { type: 'function_call_output', call_id: 'c2', output: 'B' },
            { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'It is A and B.' }] },
          ],
          tools, tool_choice: { type: 'function', name: 'search_web' }, parallel_tool_calls: false, temperature: 0.5, top_p: 0.9,
          text: { format: { type: 'json_schema', name: 'answer', schema: { type: 'object' } }, verbosity: 'low' }, reasoning: { effort: 'low' },
        });
        expect(res.status).toBe(200);
        expect(seen[0]).toMatchObject({
          messages: [
            { role: 'system', content: 'Be brief.' },
            { role: 'user', content: 'what is ', parts: { parts: [{ text: 'what is ', imageUrl: '' }, { imageUrl: 'https://example.com/a.png', imageDetail: 'low' }] } },
            { role: 'assistant', content: '', toolCalls: [{ id: 'c1', name: 'search_web', argumentsJson: '{"q":"a"}' }, { id: 'c2', name: 'search_web', argumentsJson: '{"q":"b"}' }] },
            { role: 'tool', content: 'A', toolCallId: 'c1' },
            { role: 'tool', content: 'B', toolCallId: 'c2' },
            { role: 'assistant', content: 'It is A and B.' },
          ],
          tools: [{ name: 'search_web', description: 'Search', parametersJsonSchema: '{"type":"object"}' }],
          toolChoice: { mode: ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, functionName: 'search_web' },
          parallelToolCalls: false, temperature: 0.5, hasTemperature: true, topP: 0.9, verbosity: 'low', reasoningEffort: 'low',
          responseFormatJson: JSON.stringify({ type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object' } } }),
        });
      } finally {
        restore();
      }
    });

    test('a function call\'s output as content parts: its text parts are the tool result; its images follow the run of outputs in one user message, each call\'s said', async () => {
      const { seen, restore } = recordGenerate();
      try {
        const image = (n: number) => ({ type: 'input_image', image_url: `https://example.com/${n}.png` });
        const res = await respond({
          input: [
            { role: 'user', content: 'Show me the charts.' },
            { type: 'function_call', call_id: 'c1', name: 'view', arguments: '{}' },
            { type: 'function_call', call_id: 'c2', name: 'view', arguments: '{}' },
            { type: 'function_call', call_id: 'c3', name: 'view', arguments: '{}' },
            { type: 'function_call_output', call_id: 'c1', output: [{ type: 'input_text', text: 'Two charts: ' }, image(1), { type: 'input_text', text: 'rain, wind' }, image(2)] },
            { type: 'function_call_output', call_id: 'c2', output: [image(3)] },
            { type: 'function_call_output', call_id: 'c3', output: [{ type: 'input_text', text: 'nothing to show' }] },
            { role: 'user', content: 'Which is wetter?' },
          ],
        });
        expect(res.status).toBe(200);
        const url = (n: number) => ({ imageUrl: `https://example.com/${n}.png` });
        expect(seen[0]!.messages).toMatchObject([
          { role: 'user', content: 'Show me the charts.' },
          { role: 'assistant', toolCalls: [{ id: 'c1' }, { id: 'c2' }, { id: 'c3' }] },
          { role: 'tool', toolCallId: 'c1', content: 'Two charts: rain, wind' },
          { role: 'tool', toolCallId: 'c2', content: '(an image, in the user message after the results)' },
          { role: 'tool', toolCallId: 'c3', content: 'nothing to show' },
          {
            role: 'user',
            parts: { parts: [{ text: 'The function call c1 returned 2 images:' }, url(1), url(2), { text: 'The function call c2 returned an image:' }, url(3)] },
          },
          { role: 'user', content: 'Which is wetter?' },
        ]);
        expect(seen[0]!.messages).toHaveLength(7);
        // Kept as given: the input items list it so.
        const items = await fetch(`${base}/v1/responses/${((await res.json()) as { id: string }).id}/input_items?order=asc`, { headers: { authorization: `Bearer ${alice}` } });
        expect(((await items.json()) as { data: Record<string, unknown>[] }).data[4]).toMatchObject({ type: 'function_call_output', output: [{ type: 'input_text', text: 'Two charts: ' }, image(1), { type: 'input_text' }, image(2)] });
        // A file is not a part it takes (nor a message's).
        expect((await respond({ input: [{ type: 'function_call_output', call_id: 'c1', output: [{ type: 'input_file', file_id: 'file-1' }] }] })).status).toBe(400);
      } finally {
        restore();
      }
    });

    test('streamed: the response\'s events in order, numbered, the text in deltas, then response.completed with the usage', async () => {
      const res = await respond({ stream: true });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/event-stream');
      const events = await readEvents(res);
      expect(events.map((e) => e.event)).toEqual([
        'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
        ...Array(4).fill('response.output_text.delta'),
        'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
      ]);
      const data = events.map((e) => e.data as Record<string, any>);
      expect(data.map((d) => d['sequence_number'])).toEqual(data.map((_, i) => i));
      expect(data.every((d, i) => d['type'] === events[i]!.event)).toBe(true);
      expect(data.filter((d) => d['type'] === 'response.output_text.delta').map((d) => d['delta']).join('')).toBe('Hello from the broker');
      const id = data[0]!['response'].id;
      expect(data.at(-1)!['response']).toMatchObject({ id, status: 'completed', usage: { input_tokens: 5, output_tokens: 4 }, output: [{ type: 'message', content: [{ text: 'Hello from the broker' }] }] });
    });

    test('kept unless store is false: previous_response_id continues from the conversation (not the instructions) of the caller\'s own responses; GET reads one back, DELETE deletes it', async () => {
      const { seen, restore } = recordGenerate();
      try {
        const first = (await (await respond({ instructions: 'Be brief.', input: 'hi' })).json()) as Record<string, any>;
        expect(first['store']).toBe(true);
        const res = await respond({ previous_response_id: first['id'], input: 'and then?', instructions: 'Be kind.' });
        expect(res.status).toBe(200);
        const second = (await res.json()) as Record<string, any>;
        expect(second).toMatchObject({ previous_response_id: first['id'], store: true });
        expect(seen[1]!.messages).toMatchObject([
          { role: 'system', content: 'Be kind.' },
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'Hello from the broker' },
          { role: 'user', content: 'and then?' },
        ]);
        expect(seen[1]!.messages).toHaveLength(4);
        // A chain: the third call sees both earlier turns.
        await respond({ previous_response_id: second['id'], input: 'last' });
        expect(seen[2]!.messages.map((m) => m.content)).toEqual(['hi', 'Hello from the broker', 'and then?', 'Hello from the broker', 'last']);

        const read = await fetch(`${base}/v1/responses/${first['id']}`, { headers: { authorization: `Bearer ${alice}` } });
        expect(read.status).toBe(200);
        expect(await read.json()).toEqual(first);
        // Another user's id is not there for bob: not readable, not continued from, not deletable.
        expect((await fetch(`${base}/v1/responses/${first['id']}`, { headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);
        const bobs = await fetch(`${base}/v1/responses`, { method: 'POST', headers: json(bob), body: JSON.stringify({ model: 'upstream', input: 'hi', previous_response_id: first['id'] }) });
        expect(bobs.status).toBe(400);
        expect(((await bobs.json()) as { error: Record<string, unknown> }).error).toMatchObject({ code: 'previous_response_not_found', param: 'previous_response_id', message: `Previous response with id '${first['id']}' not found.` });
        expect((await fetch(`${base}/v1/responses/${first['id']}`, { method: 'DELETE', headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);

        const del = await fetch(`${base}/v1/responses/${first['id']}`, { method: 'DELETE', headers: { authorization: `Bearer ${alice}` } });
        expect(await del.json()).toEqual({ id: first['id'], object: 'response', deleted: true });
        expect((await fetch(`${base}/v1/responses/${first['id']}`, { headers: { authorization: `Bearer ${alice}` } })).status).toBe(404);
        expect((await fetch(`${base}/v1/responses/${first['id']}`, { method: 'DELETE', headers: { authorization: `Bearer ${alice}` } })).status).toBe(404);
        expect((await respond({ previous_response_id: first['id'] })).status).toBe(400);
        expect((await fetch(`${base}/v1/responses/resp_nope`, { headers: { authorization: `Bearer ${alice}` } })).status).toBe(400);
        expect((await fetch(`${base}/v1/responses/${second['id']}`)).status).toBe(401);

        // store: false keeps nothing.
        const unkept = (await (await respond({ store: false })).json()) as Record<string, any>;
        expect(unkept['store']).toBe(false);
        expect(gw.fakeStore.responses.has(unkept['id'])).toBe(false);
        expect((await respond({ previous_response_id: unkept['id'] })).status).toBe(400);
      } finally {
        restore();
      }
    });

    test('reasoning, as Codex asks for it (summary, include, prompt_cache_key): an upstream\'s thinking is a reasoning item before the message, its text the summary, the block its encrypted_content; passed back, the block goes on', async () => {
      const { seen, restore } = thinkingBroker([{ text: 'Weigh ' }, { text: 'it.', signature: 'sig-1' }, { redactedData: 'opaque' }]);
      const codex = { reasoning: { effort: 'medium', summary: 'auto' }, include: ['reasoning.encrypted_content'], prompt_cache_key: 'conversation-7', store: false, parallel_tool_calls: false, tool_choice: 'auto' };
      try {
        const whole = (await (await respond(codex)).json()) as { output: Record<string, any>[]; reasoning: unknown };
        expect(whole.reasoning).toEqual({ effort: 'medium', summary: 'auto' });
        expect(whole.output.map((o) => o['type'])).toEqual(['reasoning', 'reasoning', 'message']);
        expect(whole.output[0]).toMatchObject({ summary: [{ type: 'summary_text', text: 'Weigh it.' }] });
        expect(whole.output[1]!['summary']).toEqual([]);
        expect(whole.output[0]!['id']).toMatch(/^rs_/);
        expect(seen[0]).toMatchObject({ reasoningEffort: 'medium', promptCacheKey: 'conversation-7' });
        // Without include, no encrypted_content; without a summary asked for, an empty one.
        const bare = (await (await respond({ reasoning: { effort: 'low' } })).json()) as { output: Record<string, any>[] };
        expect(bare.output[0]).toEqual({ type: 'reasoning', id: bare.output[0]!['id'], summary: [] });
        // Passed back (as Codex does, without ids): the blocks are the assistant turn's thinking, before its call.
        const [thought, redacted] = whole.output;
        const turn = [
          { role: 'user', content: 'Search the news' },
          { type: 'reasoning', summary: thought!['summary'], encrypted_content: thought!['encrypted_content'] },
          { type: 'reasoning', summary: [], encrypted_content: redacted!['encrypted_content'] },
          { type: 'function_call', call_id: 'c1', name: 'search_web', arguments: '{}' },
          { type: 'function_call_output', call_id: 'c1', output: 'none' },
          // One the caller kept no content of is left out.
          { type: 'reasoning', summary: [] },
        ];
        expect((await respond({ ...codex, input: turn, tools: [{ type: 'function', name: 'search_web', parameters: { type: 'object' } }] })).status).toBe(200);
        expect(seen.at(-1)!.messages.map((m) => ({ role: m.role, thinking: m.thinking, calls: m.toolCalls.map((c) => c.id) }))).toEqual([
          { role: 'user', thinking: [], calls: [] },
          { role: 'assistant', thinking: [{ text: 'Weigh it.', signature: 'sig-1', redactedData: '' }, { text: '', signature: '', redactedData: 'opaque' }], calls: ['c1'] },
          { role: 'tool', thinking: [], calls: [] },
        ]);
        // Kept, the blocks stay with the conversation even when not shown: previous_response_id passes them back.
        const kept = (await (await respond({ reasoning: { effort: 'low' }, input: 'Search the news' })).json()) as { id: string };
        expect((await respond({ previous_response_id: kept.id, input: 'And now?' })).status).toBe(200);
        expect(seen.at(-1)!.messages[1]).toMatchObject({ role: 'assistant', content: 'Done.', thinking: [{ text: 'Weigh it.', signature: 'sig-1' }, { redactedData: 'opaque' }] });
        // Streamed: the reasoning item, its summary streamed as it is written, then the message.
        const events = await readEvents(await respond({ ...codex, stream: true }));
        const kinds = events.map((e) => e.event).filter((k) => k !== 'response.output_text.delta');
        expect(kinds).toEqual([
          'response.created', 'response.in_progress',
          'response.output_item.added', 'response.reasoning_summary_part.added', 'response.reasoning_summary_text.delta', 'response.reasoning_summary_text.delta',
          'response.reasoning_summary_text.done', 'response.reasoning_summary_part.done', 'response.output_item.done',
          'response.output_item.added', 'response.output_item.done',
          'response.output_item.added', 'response.content_part.added', 'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
        ]);
        const data = events.map((e) => e.data as Record<string, any>);
        expect(data.filter((d) => d['type'] === 'response.reasoning_summary_text.delta').map((d) => [d['output_index'], d['summary_index'], d['delta']])).toEqual([[0, 0, 'Weigh '], [0, 0, 'it.']]);
        const items = data.filter((d) => d['type'] === 'response.output_item.done').map((d) => d['item']);
        expect(items.slice(0, 2)).toEqual(whole.output.slice(0, 2).map((o) => ({ ...o, id: expect.stringMatching(/^rs_/) })));
        expect(data.at(-1)!['response'].output.slice(0, 2)).toEqual(items.slice(0, 2));
      } finally {
        restore();
      }
      // What this gateway did not give is refused by name: another include, and reasoning it cannot read.
      expect(await refusal(await respond({ include: ['file_search_call.results'] }))).toBe('body/include/0 must be "reasoning.encrypted_content" or "message.output_text.logprobs"');
      const forged = await respond({ input: [{ type: 'reasoning', summary: [], encrypted_content: Buffer.from('{"type":"other"}').toString('base64url') }, { role: 'user', content: 'hi' }] });
      expect(await refusal(await respond({ instructions: 'Be brief.', input: [{ type: 'reasoning', summary: [] }] })))
        .toBe('body/input holds reasoning items alone: they go with the turn they were part of, and leave nothing to answer');
      expect(await refusal(forged)).toBe('body/input/0/encrypted_content is not reasoning this gateway gave (an answer\'s reasoning item, with include: ["reasoning.encrypted_content"])');
    });

    test('streamed, the response is kept before response.completed tells its id; a store that cannot keep it leaves the answer whole, with store false', async () => {
      const events = await readEvents(await respond({ stream: true }));
      const done = events.at(-1)!.data as { response: { id: string; store: boolean } };
      expect(done.response.store).toBe(true);
      expect(JSON.parse(gw.fakeStore.responses.get(done.response.id)!.responseJson)).toEqual(done.response);
      gw.fakeStore.failSaves = true;
      try {
        const res = await respond({});
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ store: false, output: [{ content: [{ text: 'Hello from the broker' }] }] });
        const streamed = await readEvents(await respond({ stream: true }));
        expect(streamed.at(-1)).toMatchObject({ event: 'response.completed', data: { response: { store: false, status: 'completed' } } });
      } finally {
        gw.fakeStore.failSaves = false;
      }
    });

    test('input_items: the conversation a kept response was sent, ids given, newest first by default, in pages', async () => {
      const first = (await (await respond({ instructions: 'Be brief.', input: [{ role: 'user', content: 'hi' }, { type: 'function_call_output', call_id: 'c1', output: 'sunny', id: 'fco_mine' }] })).json()) as { id: string };
      const second = (await (await respond({ input: 'and then?', previous_response_id: first.id })).json()) as { id: string };
      const list = async (id: string, query = '') => {
        const res = await fetch(`${base}/v1/responses/${id}/input_items${query}`, { headers: { authorization: `Bearer ${alice}` } });
        return { status: res.status, body: (await res.json()) as { data: Record<string, any>[]; first_id: string; last_id: string; has_more: boolean; object: string; error?: { code: string } } };
      };
      const asc = (await list(second.id, '?order=asc')).body;
      expect(asc.object).toBe('list');
      // The first call's input, its answer, then the second's input (not its own answer; not the instructions).
      expect(asc.data.map((d) => [d['type'], d['role'] ?? d['call_id'], d['content']?.[0]?.text ?? d['output']])).toEqual([
        ['message', 'user', 'hi'], ['function_call_output', 'c1', 'sunny'], ['message', 'assistant', 'Hello from the broker'], ['message', 'user', 'and then?'],
      ]);
      expect(asc.data[1]!['id']).toBe('fco_mine');
      expect(asc.data[0]!['id']).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(asc.data[0]!['content']).toEqual([{ type: 'input_text', text: 'hi' }]);
      expect(asc.has_more).toBe(false);
      // Ids are kept: the same on every read.
      expect((await list(second.id, '?order=asc')).body.data.map((d) => d['id'])).toEqual(asc.data.map((d) => d['id']));
      const page1 = (await list(second.id, '?limit=3')).body;
      expect(page1.data.map((d) => d['id'])).toEqual(asc.data.map((d) => d['id']).reverse().slice(0, 3));
      expect(page1).toMatchObject({ first_id: page1.data[0]!['id'], last_id: page1.data[2]!['id'], has_more: true });
      const page2 = (await list(second.id, `?limit=3&after=${page1.last_id}`)).body;
      expect(page2.data.map((d) => d['id'])).toEqual([asc.data[0]!['id']]);
      expect(page2.has_more).toBe(false);
      expect((await list(second.id, '?after=msg_nope')).body.error?.code).toBe('invalid_after');
      expect((await list(second.id, '?limit=0')).status).toBe(400);
      expect((await fetch(`${base}/v1/responses/${second.id}/input_items`, { headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);
    });

    test('input_tokens: the broker counts the prompt (instructions, input, the conversation of previous_response_id), no call made', async () => {
      const count = (body: Record<string, unknown>) => fetch(`${base}/v1/responses/input_tokens`, { method: 'POST', headers: json(alice), body: JSON.stringify(body) });
      const { seen, restore } = recordGenerate();
      try {
        // The fake broker: 3 a message and a word a token.
        const res = await count({ instructions: 'Be brief.', input: 'how do tides work' });
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({ object: 'response.input_tokens', input_tokens: 3 + 2 + 3 + 4 });
        expect(seen).toHaveLength(0);
        const kept = (await (await respond({ input: 'hi' })).json()) as { id: string };
        // hi, and the answer's "Hello from the broker", then the new input.
        expect(await (await count({ model: 'upstream', input: 'and then', previous_response_id: kept.id })).json()).toEqual({ object: 'response.input_tokens', input_tokens: (3 + 1) + (3 + 4) + (3 + 2) });
        const missing = await count({ input: 'hi', previous_response_id: `resp_${'0'.repeat(32)}` });
        expect(missing.status).toBe(400);
        expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('previous_response_not_found');
        expect(await refusal(await count({ input: 'hi', max_output_tokens: 5 }))).toBe('body has a parameter this API does not take: "max_output_tokens" (refused rather than ignored)');
        expect((await fetch(`${base}/v1/responses/input_tokens`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"input":"hi"}' })).status).toBe(401);
      } finally {
        restore();
      }
    });

    test('what this API does not do is refused by name: hosted tools, an unknown reasoning summary, unknown parameters', async () => {
      expect(await refusal(await respond({ tools: [{ type: 'web_search_preview' }] }))).toBe('body/tools/0/type must be "function"');
      expect(await refusal(await respond({ reasoning: { effort: 'low', summary: 'brief' } }))).toBe('body/reasoning/summary must be "auto" or "concise" or "detailed" or null');
      expect(await refusal(await respond({ temprature: 0 }))).toBe('body has a parameter this API does not take: "temprature" (refused rather than ignored)');
      expect(await refusal(await respond({ input: [{ role: 'assistant', content: [{ type: 'input_image', image_url: 'https://example.com/a.png' }] }] })))
        .toBe("body/input holds an image in a message with role 'assistant': only a user message may");
      expect(await refusal(await respond({ input: [] }))).toBe('body/input must NOT have fewer than 1 items');
      expect(await refusal(await respond({ tool_choice: 'required' }))).toBe('body/tool_choice other than "auto" is only allowed when body/tools are given');
    });
  });

  describe('the Anthropic Messages API (/v1/messages)', () => {
    beforeAll(() => setup());
    afterAll(() => teardown());
    const message = (extra: Record<string, unknown>, headers: Record<string, string> = json(alice)) => fetch(`${base}/v1/messages`, {
      method: 'POST', headers, body: JSON.stringify({ model: 'upstream', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }], ...extra }),
    });
    const anthropicError = async (res: Response, status: number) => {
      expect(res.status).toBe(status);
      const body = (await res.json()) as { type: string; error: { type: string; message: string } };
      expect(body.type).toBe('error');
      return body.error;
    };

    /** The fake broker answers `text`, then a Done with `done` over a plain one's fields, until `restore`. */
    const answerWith = (text: string, done: { stopSequence?: string; usage: Record<string, number> }) => {
      const generate = gw.fakeBroker.generate;
      gw.fakeBroker.generate = async function* () {
        yield { update: { $case: 'delta', delta: { content: text, logprobs: [] } } };
        yield {
          update: {
            $case: 'done',
            done: { finishReason: 'stop', toolCalls: [], model: 'upstream', queueWaitMs: 0, cache: 0, cachedUsage: undefined, upstream: 'default', content: '', logprobs: [], ...done },
          },
        };
      } as typeof generate;
      return { restore: () => { gw.fakeBroker.generate = generate; } };
    };

    test('an answer a stop sequence ended says which, where the upstream said (stop_reason stop_sequence), streamed or not', async () => {
      const { restore } = answerWith('one two', { stopSequence: 'three', usage: { promptTokens: 5, completionTokens: 2, totalTokens: 7 } });
      try {
        const whole = (await (await message({ stop_sequences: ['three'] })).json()) as Record<string, unknown>;
        expect(whole).toMatchObject({ stop_reason: 'stop_sequence', stop_sequence: 'three', content: [{ type: 'text', text: 'one two' }] });
        const events = await readEvents(await message({ stop_sequences: ['three'], stream: true }));
        expect(events.find((e) => e.event === 'message_delta')!.data).toMatchObject({ delta: { stop_reason: 'stop_sequence', stop_sequence: 'three' } });
      } finally {
        restore();
      }
      // Without one: end_turn, stop_sequence null.
      expect(await (await message({})).json()).toMatchObject({ stop_reason: 'end_turn', stop_sequence: null });
    });

    test('prompt-cache breakpoints (cache_control) go on to the broker where they are; more than 4, or a ttl Anthropic has not, are refused as Anthropic refuses them', async () => {
      const ephemeral = { type: 'ephemeral' };
      const { seen, restore } = recordGenerate();
      try {
        const res = await message({
          system: [{ type: 'text', text: 'Long instructions.', cache_control: { type: 'ephemeral', ttl: '1h' } }, { type: 'text', text: 'Today.' }],
          messages: [
            { role: 'user', content: [{ type: 'text', text: 'a', cache_control: ephemeral }, { type: 'text', text: 'b' }] },
            { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'search_web', input: {}, cache_control: ephemeral }] },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'none' }, { type: 'text', text: 'and?' }] },
          ],
          tools: [{ name: 'search_web', input_schema: { type: 'object' }, cache_control: { type: 'ephemeral', ttl: '1h' } }],
        });
        expect(res.status).toBe(200);
        expect(seen[0]).toMatchObject({
          messages: [
            // A system message a block, so that the breakpoint stays on the first.
            { role: 'system', content: 'Long instructions.', cacheTtl: '1h' },
            { role: 'system', content: 'Today.', cacheTtl: '' },
            // A breakpoint before the last part: the parts go as parts, each with its own.
            { role: 'user', content: 'ab', parts: { parts: [{ text: 'a', cacheTtl: '5m' }, { text: 'b', cacheTtl: '' }] }, cacheTtl: '' },
            // An assistant's on the message's end (its calls are its last blocks).
            { role: 'assistant', content: '', toolCalls: [{ id: 'toolu_1' }], cacheTtl: '5m' },
            { role: 'tool', content: 'none', cacheTtl: '' },
            { role: 'user', content: 'and?', cacheTtl: '' },
          ],
          tools: [{ name: 'search_web', cacheTtl: '1h' }],
        });
        expect(seen[0]!.messages[0]!.parts).toBeUndefined();
      } finally {
        restore();
      }
      const five = Array.from({ length: 5 }, (_, i) => ({ type: 'text', text: `part ${i}`, cache_control: ephemeral }));
      expect(await anthropicError(await message({ messages: [{ role: 'user', content: five }] }), 400))
        .toEqual({ type: 'invalid_request_error', message: 'body: a maximum of 4 blocks with cache_control may be provided. Found 5.' });
      expect((await anthropicError(await message({ system: [{ type: 'text', text: 'a', cache_control: ephemeral }], messages: [{ role: 'user', content: [{ type: 'text', text: 'b', cache_control: { type: 'ephemeral', ttl: '1h' } }] }] }), 400)).message)
        .toBe("body: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`.");
      expect((await anthropicError(await message({ messages: [{ role: 'user', content: [{ type: 'text', text: 'a', cache_control: { type: 'ephemeral', ttl: '2h' } }] }] }), 400)).message)
        .toBe('body/messages/0/content/0/cache_control/ttl must be "5m" or "1h"');
      expect((await anthropicError(await message({ tools: [{ name: 't', input_schema: { type: 'object' }, cache_control: { type: 'persistent' } }] }), 400)).message)
        .toBe('body/tools/0/cache_control/type must be "ephemeral"');
    });

    test("the anthropic-beta header's betas go on to the broker (lower case, each once, a repeated header's too); a name that cannot be one, or more than 32, is Anthropic's 400 naming the header", async () => {
      const { seen, restore } = thinkingBroker([]);
      try {
        expect((await message({}, { ...json(alice), 'anthropic-beta': 'Context-1M-2025-08-07 , interleaved-thinking-2025-05-14,context-1m-2025-08-07,' })).status).toBe(200);
        expect(seen[0]!.anthropicBetas).toEqual(['context-1m-2025-08-07', 'interleaved-thinking-2025-05-14']);
        const repeated = new Headers(json(alice));
        repeated.append('anthropic-beta', 'context-1m-2025-08-07');
        repeated.append('anthropic-beta', 'token-efficient-tools-2025-02-19');
        expect((await fetch(`${base}/v1/messages`, { method: 'POST', headers: repeated, body: JSON.stringify({ model: 'upstream', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }) })).status).toBe(200);
        expect(seen[1]!.anthropicBetas).toEqual(['context-1m-2025-08-07', 'token-efficient-tools-2025-02-19']);
        expect((await message({})).status).toBe(200);
        expect(seen[2]!.anthropicBetas).toEqual([]);
        expect(await anthropicError(await message({}, { ...json(alice), 'anthropic-beta': 'context-1m-2025-08-07, not a beta' }), 400)).toEqual({
          type: 'invalid_request_error', message: 'headers/anthropic-beta: "not a beta" is not a beta\'s name (letters, digits, \'.\', \'_\' and \'-\', at most 100 characters)',
        });
        const many = Array.from({ length: 33 }, (_, i) => `beta-${i}`).join(',');
        expect((await anthropicError(await message({}, { ...json(alice), 'anthropic-beta': many }), 400)).message).toBe('headers/anthropic-beta: 33 betas; at most 32');
        expect(seen).toHaveLength(3);
      } finally {
        restore();
      }
    });

    test('extended thinking: the budget and an assistant\'s thinking blocks go on to the broker; the thinking comes back first, as blocks with their signatures, whole or streamed as Anthropic streams them', async () => {
      const { seen, restore: stopThinking } = thinkingBroker([{ text: 'Weigh ' }, { text: 'it.' }, { signature: 'sig-1' }, { redactedData: 'opaque' }]);
      const thinking = { type: 'enabled', budget_tokens: 1024 };
      const turns = [
        { role: 'user', content: 'Search the news' },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'They want news.', signature: 'sig-0' }, { type: 'redacted_thinking', data: 'opaque-0' }, { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: {} }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'none' }] },
      ];
      try {
        const whole = (await (await message({ max_tokens: 2048, thinking, messages: turns })).json()) as Record<string, unknown>;
        expect(whole.content).toEqual([
          { type: 'thinking', thinking: 'Weigh it.', signature: 'sig-1' },
          { type: 'redacted_thinking', data: 'opaque' },
          { type: 'text', text: 'Done.' },
        ]);
        expect(seen[0]).toMatchObject({ thinkingBudgetTokens: 1024, maxTokens: 2048 });
        expect(seen[0]!.messages[1]!.thinking).toEqual([{ text: 'They want news.', signature: 'sig-0', redactedData: '' }, { text: '', signature: '', redactedData: 'opaque-0' }]);
        expect(seen[0]!.messages[0]!.thinking).toEqual([]);
        const events = await readEvents(await message({ max_tokens: 2048, thinking, stream: true }));
        const blocks = events.filter((e) => e.event.startsWith('content_block')).map((e) => e.data as Record<string, unknown>);
        // Context editing, as Claude Code asks it beside thinking: passed on, and what was cleared said back.
        const contextManagement = { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] };
        const edited = (await (await message({ max_tokens: 2048, thinking, context_management: contextManagement })).json()) as Record<string, unknown>;
        expect(JSON.parse(seen.at(-1)!.contextManagementJson!)).toEqual(contextManagement);
        expect(edited.context_management).toEqual({ applied_edits: [] });
        const editedEvents = await readEvents(await message({ max_tokens: 2048, thinking, context_management: contextManagement, stream: true }));
        expect(editedEvents.find((e) => e.event === 'message_delta')!.data).toMatchObject({ context_management: { applied_edits: [] } });
        expect(seen[0]!.contextManagementJson).toBeUndefined();
        // Adaptive thinking and its effort, as current Claude Code sends them (a budget of 0 beside): passed on as such.
        expect((await message({ max_tokens: 2048, thinking: { type: 'adaptive', budget_tokens: 0 }, output_config: { effort: 'high' } })).status).toBe(200);
        expect(seen.at(-1)).toMatchObject({ thinkingAdaptive: true, effort: 'high' });
        expect(seen.at(-1)!.thinkingBudgetTokens).toBeUndefined();
        expect(blocks).toEqual([
          { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } },
          { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'Weigh ' } },
          { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'it.' } },
          { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'sig-1' } },
          { type: 'content_block_stop', index: 0 },
          { type: 'content_block_start', index: 1, content_block: { type: 'redacted_thinking', data: 'opaque' } },
          { type: 'content_block_stop', index: 1 },
          { type: 'content_block_start', index: 2, content_block: { type: 'text', text: '' } },
          { type: 'content_block_delta', index: 2, delta: { type: 'text_delta', text: 'Done.' } },
          { type: 'content_block_stop', index: 2 },
        ]);
      } finally {
        stopThinking();
      }
      // Without thinking, the broker is not asked for it.
      const { seen: plain, restore } = recordGenerate();
      try {
        expect((await message({ thinking: { type: 'disabled' } })).status).toBe(200);
        expect(plain[0]!.thinkingBudgetTokens).toBeUndefined();
      } finally {
        restore();
      }
      // Refused as Anthropic refuses them: a budget under 1,024 or not under max_tokens.
      expect((await anthropicError(await message({ max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1000 } }), 400)).message).toBe('body/thinking/budget_tokens must be >= 1024');
      expect((await anthropicError(await message({ max_tokens: 1024, thinking }), 400)).message).toBe('body: `max_tokens` must be greater than `thinking.budget_tokens`');
    });

    test('structured output (output_config.format) reaches the broker as a strict json_schema response format, beside the effort; a format of another type is refused', async () => {
      const { seen, restore } = recordGenerate();
      const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false };
      try {
        expect((await message({ output_config: { effort: 'low', format: { type: 'json_schema', schema } } })).status).toBe(200);
        expect(JSON.parse(seen[0]!.responseFormatJson)).toEqual({ type: 'json_schema', json_schema: { name: 'output', schema, strict: true } });
        expect(seen[0]!.effort).toBe('low');
        expect((await message({ output_config: { format: null } })).status).toBe(200);
        expect(seen[1]!.responseFormatJson).toBe('');
      } finally {
        restore();
      }
      expect((await anthropicError(await message({ output_config: { format: { type: 'json_object', schema: {} } } }), 400)).message).toBe('body/output_config/format/type must be "json_schema"');
    });

    test('extended thinking on /v1/chat/completions, as LiteLLM takes and gives it: `thinking` and an assistant\'s `thinking_blocks` go on; the answer\'s thinking is `reasoning_content` and `thinking_blocks`, streamed as text then each block whole', async () => {
      const { seen, restore } = thinkingBroker([{ text: 'Weigh ' }, { text: 'it.', signature: 'sig-1' }, { redactedData: 'opaque' }]);
      const chat = (extra: Record<string, unknown>) => fetch(`${base}/v1/chat/completions`, {
        method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', max_completion_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 }, ...extra }),
      });
      const blocks = [{ type: 'thinking', thinking: 'Weigh it.', signature: 'sig-1' }, { type: 'redacted_thinking', data: 'opaque' }];
      try {
        const passedBack = [
          { role: 'user', content: 'Search the news' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'search_web', arguments: '{}' } }], thinking_blocks: [{ type: 'thinking', thinking: 'They want news.', signature: 'sig-0' }] },
          { role: 'tool', tool_call_id: 'call_1', content: 'none' },
        ];
        const whole = (await (await chat({ messages: passedBack })).json()) as { choices: { message: Record<string, unknown> }[] };
        expect(whole.choices[0]!.message).toMatchObject({ content: 'Done.', reasoning_content: 'Weigh it.', thinking_blocks: blocks });
        expect(seen[0]).toMatchObject({ thinkingBudgetTokens: 1024, maxTokens: 2048 });
        expect(seen[0]!.messages[1]!.thinking).toEqual([{ text: 'They want news.', signature: 'sig-0', redactedData: '' }]);
        const streamed = await (await chat({ messages: [{ role: 'user', content: 'hi' }], stream: true })).text();
        const deltas = streamed.split('\n\n').filter((b) => b.startsWith('data: {'))
          .map((b) => (JSON.parse(b.slice(6)) as { choices: { delta: Record<string, unknown> }[] }).choices[0]!.delta)
          .filter((d) => d.reasoning_content || d.thinking_blocks);
        expect(deltas).toEqual([{ reasoning_content: 'Weigh ' }, { reasoning_content: 'it.' }, { thinking_blocks: [blocks[0]] }, { thinking_blocks: [blocks[1]] }]);
      } finally {
        restore();
      }
      // The budget is part of the answer: not under max_completion_tokens, refused before the broker.
      const over = await chat({ messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 1024 });
      expect(over.status).toBe(400);
      expect(((await over.json()) as { error: { code: string } }).error.code).toBe('invalid_thinking');
    });

    test('usage in Anthropic\'s terms: input_tokens are the prompt less what the provider read from its prompt cache and wrote to it, the writes by lifetime (and in OpenAI\'s, the part read)', async () => {
      const { restore } = answerWith('ok', { usage: { promptTokens: 2_000, completionTokens: 2, totalTokens: 2_002, cacheReadTokens: 1_900, cacheWriteTokens: 60, cacheWrite1hTokens: 20 } });
      const usage = { input_tokens: 40, cache_creation_input_tokens: 60, cache_read_input_tokens: 1_900, cache_creation: { ephemeral_5m_input_tokens: 40, ephemeral_1h_input_tokens: 20 }, output_tokens: 2 };
      try {
        expect(await (await message({})).json()).toMatchObject({ usage });
        const events = await readEvents(await message({ stream: true }));
        expect(events.find((e) => e.event === 'message_delta')!.data).toMatchObject({ usage });
        // OpenAI's terms: the whole prompt, and the part its cache served.
        const chat = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] }) });
        expect(((await chat.json()) as { usage: unknown }).usage).toEqual({ prompt_tokens: 2_000, completion_tokens: 2, total_tokens: 2_002, prompt_tokens_details: { cached_tokens: 1_900 } });
        const response = await fetch(`${base}/v1/responses`, { method: 'POST', headers: json(alice), body: JSON.stringify({ model: 'upstream', input: 'hi', store: false }) });
        expect(((await response.json()) as { usage: unknown }).usage).toMatchObject({ input_tokens: 2_000, input_tokens_details: { cached_tokens: 1_900 } });
      } finally {
        restore();
      }
    });

    test('count_tokens: the broker counts the request as it would be sent (system, turns, tools), no call made; errors Anthropic\'s', async () => {
      const count = (body: Record<string, unknown>, headers: Record<string, string> = { 'x-api-key': alice, 'content-type': 'application/json' }) =>
        fetch(`${base}/v1/messages/count_tokens?beta=true`, { method: 'POST', headers, body: JSON.stringify(body) });
      const { seen, restore } = recordGenerate();
      try {
        const res = await count({
          model: 'upstream', system: 'Be brief.',
          messages: [{ role: 'user', content: 'what is the weather' }, { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'get_weather', input: {} }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't1', content: 'sunny' }] }],
          tools: [{ name: 'get_weather', input_schema: { type: 'object' } }],
        });
        expect(res.status).toBe(200);
        // The fake broker: 3 a message and a word a token (system 2, user 4, the call's assistant 0, the result 1), 10 a tool.
        expect(await res.json()).toEqual({ input_tokens: 4 * 3 + 2 + 4 + 0 + 1 + 10 });
        expect(seen).toHaveLength(0);
        expect((await count({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] }, json(alice))).status).toBe(200);
        // What Claude Code sends beside its prompt changes nothing in the count.
        const beside = { thinking: { type: 'adaptive', budget_tokens: 0 }, output_config: { effort: 'high' }, context_management: { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] } };
        const plain = (await (await count({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] })).json()) as unknown;
        expect(await (await count({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }], ...beside })).json()).toEqual(plain);
        expect(await anthropicError(await count({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] }, { 'content-type': 'application/json' }), 401)).toMatchObject({ type: 'authentication_error' });
        expect(await anthropicError(await count({ model: 'upstream', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }), 400)).toMatchObject({ type: 'invalid_request_error' });
        expect(await anthropicError(await count({ model: 'upstream', messages: [] }), 400)).toMatchObject({ message: 'body/messages must NOT have fewer than 1 items' });
        expect(await anthropicError(await count({ model: 'agent-mesh', messages: [{ role: 'user', content: 'hi' }] }), 400)).toMatchObject({ message: expect.stringContaining('agent-mesh') });
      } finally {
        restore();
      }
    });

    test('answers a message: the text as a block, the stop reason and usage in Anthropic\'s terms; the token as a bearer or as x-api-key', async () => {
      const res = await message({});
      expect(res.status).toBe(200);
      const m = (await res.json()) as Record<string, unknown>;
      expect(m).toMatchObject({
        type: 'message', role: 'assistant', model: 'upstream', content: [{ type: 'text', text: 'Hello from the broker' }], stop_reason: 'end_turn', stop_sequence: null,
        usage: { input_tokens: 5, output_tokens: 4 },
      });
      expect(m['id']).toMatch(/^msg_/);
      expect((await message({}, { 'x-api-key': alice, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' })).status).toBe(200);
    });

    test('errors are Anthropic\'s: a missing key, a bad body, a parameter it does not take', async () => {
      expect(await anthropicError(await message({}, { 'content-type': 'application/json' }), 401)).toMatchObject({ type: 'authentication_error' });
      expect(await anthropicError(await message({ max_tokens: 0 }), 400)).toEqual({ type: 'invalid_request_error', message: 'body/max_tokens must be >= 1' });
      expect((await anthropicError(await message({ top_k: 0.5 }), 400)).message).toBe('body/top_k must be integer');
      expect((await anthropicError(await message({ top_logprobs: 5 }), 400)).message).toBe('body has a parameter this API does not take: "top_logprobs" (refused rather than ignored)');
      expect((await anthropicError(await message({ thinking: { type: 'sometimes' } }), 400)).message).toBe('body/thinking/type must be "enabled" or "adaptive" or "disabled"');
      expect((await anthropicError(await message({ tools: [{ type: 'web_search_20250305', name: 'web_search', input_schema: { type: 'object' } }] }), 400)).message).toBe('body/tools/0/type must be "custom"');
      expect((await anthropicError(await message({ tool_choice: { type: 'tool' } }), 400)).message).toBe("body/tool_choice must have required property 'name'");
    });

    test('the turns become the chat: system first, tool results as tool messages before the turn\'s text, tool_use as an assistant\'s calls, images as parts', async () => {
      const { seen, restore } = recordGenerate();
      try {
        const res = await message({
          system: [{ type: 'text', text: 'Be brief.' }],
          messages: [
            { role: 'user', content: [{ type: 'text', text: 'what is this?' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0K' } }] },
            { role: 'assistant', content: [{ type: 'text', text: 'Let me look.' }, { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: { q: 'a' } }] },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: 'nothing' }], is_error: true }, { type: 'text', text: 'and now?' }] },
          ],
          tools: [{ name: 'search_web', description: 'Search', input_schema: { type: 'object' } }],
          tool_choice: { type: 'any', disable_parallel_tool_use: true },
          stop_sequences: ['END'], temperature: 0.5, top_k: 40, metadata: { user_id: 'u-1' },
        });
        expect(res.status).toBe(200);
        expect(seen[0]).toMatchObject({
          messages: [
            { role: 'system', content: 'Be brief.' },
            { role: 'user', content: 'what is this?', parts: { parts: [{ text: 'what is this?', imageUrl: '' }, { imageUrl: 'data:image/png;base64,iVBORw0K' }] } },
            { role: 'assistant', content: 'Let me look.', toolCalls: [{ id: 'toolu_1', name: 'search_web', argumentsJson: '{"q":"a"}' }] },
            { role: 'tool', content: 'Error: nothing', toolCallId: 'toolu_1' },
            { role: 'user', content: 'and now?' },
          ],
          tools: [{ name: 'search_web', description: 'Search', parametersJsonSchema: '{"type":"object"}' }],
          toolChoice: { mode: ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED },
          parallelToolCalls: false, stop: ['END'], temperature: 0.5, topK: 40, maxTokens: 100,
        });
      } finally {
        restore();
      }
    });

    test('streamed: Anthropic\'s events in order, the text in text_delta blocks, the stop reason and usage in message_delta', async () => {
      const res = await message({ stream: true });
      expect(res.status).toBe(200);
      const events = await readEvents(res);
      expect(events.map((e) => e.event)).toEqual([
        'message_start', 'ping', 'content_block_start', ...Array(4).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop',
      ]);
      const data = events.map((e) => e.data as Record<string, any>);
      expect(data.every((d, i) => d['type'] === events[i]!.event)).toBe(true);
      expect(data.filter((d) => d['type'] === 'content_block_delta').map((d) => d['delta'].text).join('')).toBe('Hello from the broker');
      expect(data.at(-2)).toMatchObject({ delta: { stop_reason: 'end_turn' }, usage: { input_tokens: 5, output_tokens: 4 } });
    });
  });

  describe('SSE limiter', () => {
    beforeAll(() => setup({ maxStreams: 1 }));
    afterAll(() => teardown());

    test('over the limit: 503 with Retry-After and a queue token; tokens are served in order', async () => {
      gw.fakeOrchestrator.intervalMs = 30;
      const a = await createConversation();
      const b = await createConversation();
      const c = await createConversation();
      const first = await send(a);
      expect(first.status).toBe(200);
      const q1 = await send(b);
      expect(q1.status).toBe(503);
      expect(Number(q1.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      const t1 = (await q1.json()) as any;
      expect(t1).toMatchObject({ position: 1, queueToken: expect.any(String), estimatedWaitMs: expect.any(Number) });
      const q2 = await send(c);
      const t2 = (await q2.json()) as any;
      expect(t2.position).toBe(2);
      await readEvents(first); // the first stream ends: a slot frees
      // The second in line may not overtake the first.
      const early = await send(c, 'hello', alice, { 'x-queue-token': t2.queueToken });
      expect(early.status).toBe(503);
      expect(((await early.json()) as any).position).toBe(2);
      const served = await send(b, 'hello', alice, { 'x-queue-token': t1.queueToken });
      expect(served.status).toBe(200);
      await readEvents(served);
      const next = await send(c, 'hello', alice, { 'x-queue-token': t2.queueToken });
      expect(next.status).toBe(200);
      await readEvents(next);
      gw.fakeOrchestrator.intervalMs = 5;
    });
  });

  describe('slow consumers and drain', () => {
    beforeAll(() => setup({ bufferMaxEvents: 50, bufferMaxBytes: 64 * 1024 }));
    afterAll(() => teardown());

    test('a client that stops reading is disconnected with stream.overflow; another is unaffected', async () => {
      const big = 'x'.repeat(4096);
      gw.fakeOrchestrator.intervalMs = 0;
      gw.fakeOrchestrator.script = (runId, conversationId, messageId) => [
        { type: 'run.started', data: { runId, conversationId, messageId } },
        ...Array.from({ length: 3000 }, () => ({ type: 'token', data: { agent: 'reporter', round: 1, text: big } })),
        { type: 'run.completed', data: { runId, answer: '', rounds: 1, usage: {}, cost: {} } },
      ];
      const slowId = await createConversation();
      const fastId = await createConversation();
      // The slow client: a raw request whose response is never read.
      const slow = http.request(`${base}/api/conversations/${slowId}/messages`, { method: 'POST', headers: json(alice) });
      slow.end(JSON.stringify({ content: 'flood me' }));
      const slowRes = await new Promise<http.IncomingMessage>((resolve) => slow.once('response', resolve));
      slowRes.pause();
      const fast = await send(fastId);
      const fastEvents = await readEvents(fast);
      expect(fastEvents.at(-1)!.event).toBe('run.completed');
      expect(fastEvents.filter((e) => e.event === 'token')).toHaveLength(3000);
      // The slow one was cut off on the edge's side …
      const overflows = async () => (await edge.ctx.stats.sseOverflows.get()).values[0]?.value ?? 0;
      for (let i = 0; i < 100 && (await overflows()) < 1; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await overflows()).toBe(1);
      // … and what it eventually reads ends without the run's end (it must resume instead).
      let received = '';
      slowRes.on('data', (d: Buffer) => (received += d.toString()));
      slowRes.resume();
      await new Promise<void>((resolve) => {
        slowRes.once('close', () => resolve());
        slowRes.once('error', () => resolve());
      });
      expect(received).not.toContain('event: run.completed');
      expect(edge.ctx.streams.size).toBe(0);
    });

    test('drain tells open streams to reconnect with a jittered retry, then refuses new requests', async () => {
      gw.fakeOrchestrator.intervalMs = 200;
      gw.fakeOrchestrator.script = (r, c, m) => [{ type: 'run.started', data: { runId: r, conversationId: c, messageId: m } }, { type: 'token', data: {} }, { type: 'token', data: {} }];
      const id = await createConversation();
      const res = await send(id);
      const reading = readEvents(res);
      await new Promise((r) => setTimeout(r, 300));
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      edge.drain();
      const evs = await reading;
      const last = evs.at(-1)!;
      expect(last.event).toBe('reconnect');
      expect(last.data.retryMs).toBeGreaterThanOrEqual(500);
      expect(last.data.retryMs).toBeLessThanOrEqual(5000);
      const refused = await fetch(`${base}/api/conversations`, { headers: auth(alice) });
      expect(refused.status).toBe(503);
      // The probes: not ready any more, but alive.
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
    });
  });

  describe('per-user rate limit', () => {
    // 12 a minute paced with the default burst fraction 0.25: a burst of 3, then one every 6.7 s.
    beforeAll(() => setup({}, 12));
    afterAll(() => teardown());

    test('over the limit: 429 with Retry-After, per user', async () => {
      for (let i = 0; i < 3; i++) expect((await fetch(`${base}/api/conversations`, { headers: auth(alice) })).status).toBe(200);
      const res = await fetch(`${base}/api/conversations`, { headers: auth(alice) });
      expect(res.status).toBe(429);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await fetch(`${base}/api/conversations`, { headers: auth(bob) })).status).toBe(200);
    });
  });
});

describe('the rate limit and the budget of a call that spends tokens', () => {
  test('are asked at once and passed beside the call (its admission to the quota), the rate limit first; a user refused lately is checked before the call', async () => {
    const asked: string[] = [];
    let answerLimit: ((d: RateDecision) => void) | undefined;
    const requestLimiter: RequestLimiter = {
      check: () => {
        asked.push('rate limit');
        return new Promise<RateDecision>((resolve) => (answerLimit = resolve));
      },
    };
    const budgets: UserBudgets = {
      check: async () => {
        asked.push('budget');
        return { ok: false, window: { budget: 'day', used: 10, limit: 10, resetsAtMs: Date.now() + 60_000 }, retryAfterMs: 60_000 };
      },
      usage: async () => [],
    };
    const gateways = fakeGateways();
    const edge = await buildApp({ cfg: cfg(), gateways, logger: createLogger('edge-test', 'silent'), requestLimiter, budgets, publicDir: '/nonexistent' });
    const waitUntil = async (done: () => boolean) => {
      for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
    };
    try {
      await edge.app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = edge.app.server.address() as { port: number };
      const call = async () => fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await token('alice')}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] }),
      });
      const first = call();
      // The budget is asked while the rate limit has not answered yet, and the call goes on to the
      // broker with both as its gate.
      await waitUntil(() => asked.length === 2 && gateways.fakeBroker.gated === 1);
      expect(asked).toEqual(['rate limit', 'budget']);
      expect(gateways.fakeBroker.gated).toBe(1);
      answerLimit!({ ok: false, retryAfterMs: 2_000 });
      const refused = await first;
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('2');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
      expect(gateways.fakeBroker.calls).toBe(0);

      // Refused lately: the next call waits for its checks before it goes anywhere.
      const second = call();
      await waitUntil(() => asked.length === 4);
      await new Promise((r) => setTimeout(r, 50));
      expect(gateways.fakeBroker.gated).toBe(1);
      answerLimit!({ ok: true });
      const overBudget = await second;
      expect(overBudget.status).toBe(429);
      expect(((await overBudget.json()) as { error: { code: string } }).error.code).toBe('budget_exceeded');
      expect(gateways.fakeBroker.gated).toBe(1);
      expect(gateways.fakeBroker.calls).toBe(0);
    } finally {
      edge.drain();
      await edge.app.close();
    }
  });
});

describe('the Redis commands of a call\'s rate limit and budget', () => {
  // The Redis client (coalesceWrites) writes a command when the turn of the event loop that issued it ends.
  test.each([
    ['leave before the body is read and the handler runs, for a broker over gRPC', false, ['written', 'handler']],
    ['leave with the inline broker\'s admission, issued by the handler', true, ['handler', 'written']],
  ])('%s', async (_what, gateBeside, expected) => {
    const order: string[] = [];
    const written = () => new Promise<void>((resolve) => setImmediate(() => (order.push('written'), resolve())));
    const requestLimiter: RequestLimiter = { check: async () => (await written(), { ok: true }) };
    const budgets: UserBudgets = { check: async () => ({ ok: true }), usage: async () => [] };
    const gateways = fakeGateways();
    const broker = gateways.fakeBroker;
    gateways.broker = {
      gateBeside,
      countTokens: (req) => broker.countTokens(req),
      listModels: () => broker.listModels(),
      embed: (req, signal, gate) => broker.embed(req, signal, gate),
      generate: (req, signal, gate) => {
        order.push('handler');
        return broker.generate(req, signal, gate);
      },
    };
    const edge = await buildApp({ cfg: cfg(), gateways, logger: createLogger('edge-test', 'silent'), requestLimiter, budgets, publicDir: '/nonexistent' });
    try {
      await edge.app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = edge.app.server.address() as { port: number };
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await token('alice')}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(res.status).toBe(200);
      expect(order).toEqual(expected);
    } finally {
      edge.drain();
      await edge.app.close();
    }
  });
});

describe('a /v1 call of a user over budget', () => {
  // The route passes the budget check before its upstream call (beside the inline broker's admission):
  // refused either way, nothing reaches the broker, and the pipeline model starts no conversation.
  test.each([['a direct model', 'upstream'], ['the agent pipeline', 'agent-mesh']])('is refused with 429 for %s, before anything starts', async (_what, model) => {
    const budgets: UserBudgets = {
      check: async () => ({ ok: false, window: { budget: 'minute', used: 7, limit: 5, resetsAtMs: Date.now() + 30_000 }, retryAfterMs: 30_000 }),
      usage: async () => [],
    };
    const gateways = fakeGateways();
    const edge = await buildApp({ cfg: cfg(), gateways, logger: createLogger('edge-test', 'silent'), budgets, publicDir: '/nonexistent' });
    try {
      await edge.app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = edge.app.server.address() as { port: number };
      for (const stream of [false, true]) {
        const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${await token('alice')}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'hi' }] }),
        });
        expect(res.status).toBe(429);
        expect(res.headers.get('retry-after')).toBe('30');
        expect(((await res.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'budget_exceeded', message: expect.stringMatching(/^your per-minute token budget is used up \(7 of 5 tokens\)/) });
      }
      expect(gateways.fakeBroker.calls).toBe(0);
      expect(gateways.fakeStore.conversations.size).toBe(0);
    } finally {
      edge.drain();
      await edge.app.close();
    }
  });
});
