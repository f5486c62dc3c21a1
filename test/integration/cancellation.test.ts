// A caller that gives up ends every call made on its behalf, through real processes: an HTTP
// client that closes a /v1 stream ends the edge's broker call and the broker's upstream request;
// a run cancelled through the edge ends its broker call and the upstream request, or its tool call
// and the tool's own outbound request (search_web against a search API that never answers); and a
// run's deadline (RUN_TIMEOUT_MS) ends the call it has in flight, upstream included. Observed from
// the emulator's own counters (requests in flight, requests whose client went away), the broker's
// llm_in_flight and the search API's connections.
import http from 'node:http';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import {
  configureEmulator, emulatorStats, mintToken, promMetric, readSse, waitFor, type EmulatorProc, type Mesh,
} from '../support';
import { startTestMesh, type TestMesh } from '../support/mesh';

jest.setTimeout(120_000);

const SECRET = 'cancellation-test-secret-long-enough';
/** Short, so that a run meets its deadline while its first call streams (a call here lasts ~1 min). */
const RUN_TIMEOUT_MS = 5_000;
let dir: string;
let emulator: EmulatorProc, mesh: Mesh;
let t: TestMesh;
/** A SearxNG stand-in that never answers: it records each request and when its connection closed. */
const search = { requests: 0, closedAt: [] as number[] };
let searchServer: http.Server;
let token: string;

beforeAll(async () => {
  searchServer = http.createServer((req) => {
    search.requests += 1;
    req.socket.once('close', () => search.closedAt.push(Date.now()));
  });
  await new Promise<void>((resolve) => searchServer.listen(0, '127.0.0.1', resolve));
  const searchUrl = `http://127.0.0.1:${(searchServer.address() as { port: number }).port}`;
  ({ emulator, mesh } = t = await startTestMesh({
    name: 'cancellation', jwtSecret: SECRET,
    // Slow answers (200 tokens at 3 a second): every call is still streaming when its caller gives up.
    emulatorEnv: { EMULATOR_TOKENS_PER_SEC: '3', EMULATOR_COMPLETION_TOKENS: '200', EMULATOR_TTFT_MS: '200', EMULATOR_REVISE_RATE: '0' },
    perService: {
      orchestrator: { RUN_TIMEOUT_MS: String(RUN_TIMEOUT_MS), AGENT_OVERLAP: 'false' },
      'tool-service': { SEARCH_URL: searchUrl, TOOL_CORPUS_SOURCES: 'docs' },
    },
  }));
  token = await mintToken(SECRET, 'cancel-user');
});

afterAll(async () => {
  searchServer?.closeAllConnections();
  searchServer?.close();
  await t?.stop();
});

const api = (p: string, init: RequestInit = {}) =>
  fetch(`${mesh.edge.url}${p}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });

/** Nothing in flight anywhere: the upstream's requests and the broker's calls. */
async function settled(): Promise<void> {
  await waitFor('no upstream request and no broker call in flight', async () =>
    (await emulatorStats(emulator)).inFlight === 0 && (await promMetric(mesh.broker, 'llm_in_flight')) === 0, { timeoutMs: 15_000 });
}

/** Waits until `n` more upstream requests are streaming than `before`, and the broker holds them. */
async function streaming(before: number, n = 1): Promise<void> {
  await waitFor('the upstream request streaming', async () =>
    (await emulatorStats(emulator)).inFlight >= before + n && (await promMetric(mesh.broker, 'llm_in_flight')) >= n, { timeoutMs: 15_000 });
}

async function newConversation(): Promise<string> {
  const res = await api('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'cancellation' }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

test('an HTTP client that closes a /v1 stream ends the broker call and the upstream request', async () => {
  await settled();
  const before = await emulatorStats(emulator);
  const ctl = new AbortController();
  const res = await api('/v1/chat/completions', {
    method: 'POST', signal: ctl.signal,
    body: JSON.stringify({ model: 'upstream', stream: true, messages: [{ role: 'user', content: 'Tell me a long story about rivers and bridges' }] }),
  });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  let text = '';
  while (!text.includes('"content"')) text += new TextDecoder().decode((await reader.read()).value);
  await streaming(before.inFlight);
  ctl.abort();
  await waitFor('the upstream sees its client go', async () => (await emulatorStats(emulator)).aborted > before.aborted, { timeoutMs: 10_000 });
  await settled();
  const after = await emulatorStats(emulator);
  expect(after.aborted - before.aborted).toBe(1);
  expect(after.completed).toBe(before.completed);
});

test('a run cancelled through the edge ends its broker call and the upstream request', async () => {
  await settled();
  const before = await emulatorStats(emulator);
  const id = await newConversation();
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Plan a long walk along the coast' }) });
  expect(res.status).toBe(200);
  const reading = readSse(res.body!, (e) => TERMINAL.has(e.event));
  await streaming(before.inFlight);
  const cancel = await api(`/api/conversations/${id}/cancel`, { method: 'POST' });
  expect(cancel.status).toBe(202);
  expect((await reading).at(-1)?.event).toBe('run.cancelled');
  await waitFor('the upstream sees its client go', async () => (await emulatorStats(emulator)).aborted > before.aborted, { timeoutMs: 10_000 });
  await settled();
  expect((await emulatorStats(emulator)).completed).toBe(before.completed);
});

test("a run's deadline ends the call it has in flight, upstream included, and the run fails as timed out", async () => {
  await settled();
  const before = await emulatorStats(emulator);
  const id = await newConversation();
  const t0 = Date.now();
  const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Compare three ways to cross a river' }) });
  expect(res.status).toBe(200);
  const events = await readSse(res.body!, (e) => TERMINAL.has(e.event));
  const elapsed = Date.now() - t0;
  const end = events.at(-1)!;
  expect([end.event, end.data.code]).toEqual(['run.failed', 'timeout']);
  // Not before the deadline; and long before the call's own timeout (AGENT_CALL_TIMEOUT_MS, 2 min) or its answer (~1 min).
  expect(elapsed).toBeGreaterThanOrEqual(RUN_TIMEOUT_MS - 1_000);
  expect(elapsed).toBeLessThan(RUN_TIMEOUT_MS + 20_000);
  await waitFor('the upstream sees its client go', async () => (await emulatorStats(emulator)).aborted > before.aborted, { timeoutMs: 10_000 });
  await settled();
  expect((await emulatorStats(emulator)).completed).toBe(before.completed);
});

test('a run cancelled during a tool call ends the tool call and the tool\'s own request', async () => {
  await settled();
  // Quick agents now: the Host reaches its tool call well within the run's deadline.
  await configureEmulator(emulator, { tokensPerSec: 400, completionTokens: 20, ttftMs: 50 });
  try {
    const id = await newConversation();
    const res = await api(`/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: 'Search the latest news about tidal power' }) });
    expect(res.status).toBe(200);
    const seen: string[] = [];
    const reading = readSse(res.body!, (e) => (seen.push(e.event), TERMINAL.has(e.event)));
    await waitFor('search_web waiting on the search API', () => search.requests > 0 && seen.includes('tool.called'), { timeoutMs: 15_000 });
    expect(search.closedAt).toEqual([]);
    const cancelledAt = Date.now();
    const cancel = await api(`/api/conversations/${id}/cancel`, { method: 'POST' });
    expect(cancel.status).toBe(202);
    expect((await reading).at(-1)?.event).toBe('run.cancelled');
    await waitFor('the search API sees its client go', () => search.closedAt.length > 0, { timeoutMs: 10_000 });
    // Ended by the cancel, not by the tool's own timeout (search_web: 10 s).
    expect(search.closedAt[0]! - cancelledAt).toBeLessThan(5_000);
    expect(seen).not.toContain('tool.result');
  } finally {
    await configureEmulator(emulator, { tokensPerSec: 3, completionTokens: 200, ttftMs: 200 });
  }
});
