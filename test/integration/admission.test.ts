// Admission control through the real mesh: with an upstream that allows one call at a time and
// six a minute, a run admitted first streams, and its first call tells the gate what one more run
// would wait: the next message is refused at once with HTTP 503, Retry-After and "try again in
// N s", before anything is stored. A run the gate lets in (here: its state wiped, as after its
// TTL) whose first call the broker estimates far over RUN_MAX_QUEUE_WAIT_MS ends `degraded`.
import {
  readSse, type Mesh,
} from '../support';
import { startTestMesh, type TestMesh } from '../support/mesh';
import { signToken } from '../../services/edge/src/auth';
import Redis from 'ioredis';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import { GATE_KEY } from '../../services/orchestrator/src/runs/admission';

jest.setTimeout(180_000);

const SECRET = 'admission-integration-secret-long-enough';
let mesh: Mesh;
let t: TestMesh;
const token = signToken(SECRET, 'carol');

beforeAll(async () => {
  ({ mesh } = t = await startTestMesh({
    name: 'admission', jwtSecret: SECRET,
    emulatorEnv: { EMULATOR_TTFT_MS: '2000', EMULATOR_COMPLETION_TOKENS: '30', EMULATOR_REVISE_RATE: '0' },
    perService: {
      'llm-broker': { LLM_MAX_CONCURRENT: '1', LLM_RPM: '6' },
      orchestrator: { RUN_MAX_QUEUE_WAIT_MS: '2000' },
      // The project's documents only: a quick start; search is not what is tested here.
      'tool-service': { TOOL_CORPUS_SOURCES: 'docs' },
    },
  }));
});

afterAll(async () => {
  await t?.stop();
});

const api = (p: string, init: RequestInit = {}) => fetch(`${mesh.edge.url}${p}`, {
  ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
});
async function conversation(): Promise<string> {
  const res = await api('/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'admission' }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}
const send = (id: string, content: string) => api(`/api/conversations/${id}/messages`, {
  method: 'POST', headers: { accept: 'text/event-stream' }, body: JSON.stringify({ content }),
});

it('streams the admitted run, refuses the next with 503 + Retry-After, and degrades a run let in that would wait too long', async () => {
  const [a, b, c] = [await conversation(), await conversation(), await conversation()];

  const first = await send(a, 'How do I plan a garden?');
  expect(first.status).toBe(200);
  const firstEvents = await readSse(first.body!, (e) => e.event === 'token');
  expect(firstEvents.at(-1)?.event).toBe('token'); // holds the only upstream slot now

  const started = Date.now();
  const refused = await send(c, 'What should I pack for a hike?');
  expect(refused.status).toBe(503);
  expect(Date.now() - started).toBeLessThan(5_000);
  const retryAfter = Number(refused.headers.get('retry-after'));
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  const body = (await refused.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe('busy');
  expect(body.error.message).toBe(`Service busy, please try again in ${retryAfter} s.`);
  // Refused before the run existed: the message was not stored.
  const stored = (await (await api(`/api/conversations/${c}`)).json()) as { messages: unknown[] };
  expect(stored.messages).toEqual([]);

  const redis = new Redis(t.redis.url);
  try {
    await redis.del(GATE_KEY);
  } finally {
    redis.disconnect();
  }
  const second = await send(b, 'How does a heat pump work?');
  expect(second.status).toBe(200);
  const secondEvents = await readSse(second.body!, (e) => TERMINAL.has(e.event));
  const degraded = secondEvents.at(-1)!;
  expect(degraded.event).toBe('degraded');
  expect(degraded.data).toMatchObject({ reason: 'queue_wait', retryable: true });
  expect(degraded.data.retryAfterMs).toBeGreaterThanOrEqual(1000);
  expect(degraded.data.message).toMatch(/^Service busy, please try again in \d+ s\.$/);

  const shed = await (await fetch(`http://127.0.0.1:${mesh.orchestrator.metricsPort}/metrics`)).text();
  expect(shed).toMatch(/orchestrator_runs_shed_total\{at="queue"[^}]*\} 1\b/);
  expect(shed).toMatch(/orchestrator_runs_shed_total\{at="start"[^}]*\} [1-9]/);
});
