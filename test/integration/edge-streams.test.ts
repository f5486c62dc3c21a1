// The edge's stream guarantees as real processes in the real mesh: heartbeats as SSE comments, a
// slow consumer cut off with a reason while another client on the same edge gets everything (and
// the slow one resumes exactly), graceful drain on SIGTERM with jittered reconnect advice and a
// lossless resume on a second edge, the SSE limiter's estimated wait against the real wait, and
// the per-user request limit shared by two edges through Redis.
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import {
  readSse, startEmulator, startFerret, startMesh, startRedis, startService, testDir,
  type EmulatorProc, type FerretProc, type Mesh, type RedisProc, type ServiceProc, type SseEvent,
} from '../support';
import { signToken } from '../../services/edge/src/auth';
import { TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';

jest.setTimeout(240_000);

const ROOT = path.resolve(__dirname, '../..');
const SECRET = 'edge-streams-secret-long-enough';
const alice = signToken(SECRET, 'alice');
let dir: string;
let redis: RedisProc, ferret: FerretProc, emulator: EmulatorProc, mesh: Mesh;

/** Runs of a few seconds: long enough to see heartbeats and to act mid-run. */
const STEADY = { timeScale: 1, ttftMs: 300, tokensPerSec: 40, completionTokens: 30, reviseRate: 0 };

async function configureEmulator(cfg: Record<string, number>): Promise<void> {
  const res = await fetch(`${emulator.url}/_emulator/config`, { method: 'POST', body: JSON.stringify(cfg) });
  expect(res.status).toBe(200);
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-b', 'services/edge', 'services/orchestrator', 'services/store', 'services/llm-broker', 'services/tool-service', 'test/emulator'], { cwd: ROOT, stdio: 'inherit' });
  dir = testDir('edge-streams');
  [redis, ferret, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    startEmulator({ logDir: dir, env: { EMULATOR_REVISE_RATE: '0' } }),
  ]);
  await configureEmulator(STEADY);
  mesh = await startMesh({
    env: { SSE_HEARTBEAT_ADAPTIVE: 'false' },
    logDir: dir,
    redisUrl: redis.url,
    mongoUri: ferret.uri,
    llmBaseUrl: `${emulator.url}/v1`,
    jwtSecret: SECRET,
    perService: {
      edge: { RATE_LIMIT_PER_MINUTE: '100000', SSE_HEARTBEAT_MS: '200' },
      // The slow-consumer run is long (thousands of token events): keep its whole log.
      orchestrator: { AGENT_MAX_TOKENS: '16000', RUN_LOG_MAX_EVENTS: '200000' },
    },
  });
});

afterAll(async () => {
  await mesh?.stop();
  await Promise.all([emulator, ferret, redis].map((p) => p?.stop()));
});

const startEdge = (env: Record<string, string> = {}) => mesh.addEdge(env);

const call = (base: string, p: string, init: RequestInit = {}, token = alice) =>
  fetch(`${base}${p}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });

async function newConversation(base: string): Promise<string> {
  const res = await call(base, '/api/conversations', { method: 'POST', body: JSON.stringify({ title: 'streams' }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

// Each run asks its own question: an identical one would be answered from the LLM response cache
// (the Planner's and the Critic's calls), with fewer, larger events than the tests here rely on.
let asked = 0;
const send = (base: string, id: string, headers: Record<string, string> = {}) =>
  call(base, `/api/conversations/${id}/messages`, { method: 'POST', body: JSON.stringify({ content: `Plan a small conference (${++asked})` }), headers });

const seqOf = (e: SseEvent | Raw) => (e.id ? Number(e.id.split(':')[1]) : undefined);
const seqs = (events: (SseEvent | Raw)[]) => events.map(seqOf).filter((s): s is number => s !== undefined);
const consecutive = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An SSE block with its raw fields, comments and retry hint kept (readSse drops those). */
interface Raw { id?: string; event?: string; data?: any; retry?: number; comment?: string }

function parseRaw(text: string): Raw[] {
  const out: Raw[] = [];
  for (const block of text.split('\n\n')) {
    if (!block) continue;
    const r: Raw = {};
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) r.comment = line.slice(1).trim();
      else if (line.startsWith('id: ')) r.id = line.slice(4);
      else if (line.startsWith('event: ')) r.event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
      else if (line.startsWith('retry: ')) r.retry = Number(line.slice(7));
    }
    if (data.length) r.data = JSON.parse(data.join('\n'));
    out.push(r);
  }
  return out;
}

/** Reads a whole response body as raw SSE blocks (until the server ends it or `until` matches). */
async function readRaw(res: Response, until: (r: Raw) => boolean = () => false): Promise<Raw[]> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  const all: Raw[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      const i = buf.lastIndexOf('\n\n');
      if (i < 0) continue;
      const blocks = parseRaw(buf.slice(0, i + 2));
      buf = buf.slice(i + 2);
      for (const b of blocks) {
        all.push(b);
        if (until(b)) return all;
      }
    }
  } catch {
    // The server closed the connection (drain, overflow): what was read is the answer.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return all;
}

async function promCounter(edgeUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${edgeUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

test('heartbeats arrive as SSE comments between the events of a run', async () => {
  const id = await newConversation(mesh.edge.url!);
  const started = Date.now();
  const res = await send(mesh.edge.url!, id);
  expect(res.status).toBe(200);
  const blocks = await readRaw(res, (r) => TERMINAL.has(r.event ?? ''));
  const lastedMs = Date.now() - started;
  const beats = blocks.filter((b) => b.comment === 'hb');
  console.log(`heartbeats: ${beats.length} in a run of ${lastedMs} ms (SSE_HEARTBEAT_MS=200)`);
  expect(blocks[0]!.retry).toBeGreaterThan(0); // the retry hint comes first
  expect(blocks.at(-1)!.event).toBe('run.completed');
  expect(lastedMs).toBeGreaterThan(1_000);
  // Generous: at least a third of the beats that fit into the run (a busy machine delays timers).
  expect(beats.length).toBeGreaterThanOrEqual(Math.max(2, Math.floor(lastedMs / 200 / 3)));
  // Comments sit between events, not inside them: the first beat comes after the first event.
  const firstEvent = blocks.findIndex((b) => b.event);
  expect(blocks.findIndex((b) => b.comment === 'hb')).toBeGreaterThan(firstEvent);
});

/**
 * A reader that stops reading right after its request, with the kernel's buffers for it kept small:
 * a small receive buffer, and a small segment size, from which the sender sizes its own buffer
 * (loopback's usual 64 KB segments give the sender megabytes). The kernel then holds ~100 KB for
 * it instead of ~4 MB. It reads everything when a line arrives on its stdin and writes it out.
 */
const SLOW_READER = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
print("sent", flush=True)
sys.stdin.readline()
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        sys.stdout.buffer.write(d)
except ConnectionError:
    pass
sys.stdout.buffer.flush()
`;

function slowReader(port: number, request: string): { sent: Promise<void>; readAll: () => Promise<Buffer> } {
  const child = spawn('python3', ['-c', SLOW_READER, String(port), request], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Buffer[] = [];
  let sawSent!: () => void;
  let failed!: (e: Error) => void;
  // Rejected if python3 cannot start or the reader exits before its request is sent (it cannot
  // connect): the test then fails at once with why, not at its timeout.
  const sent = new Promise<void>((resolve, reject) => ((sawSent = resolve), (failed = reject)));
  child.once('error', (e) => failed(e));
  child.stdout.on('data', (d: Buffer) => {
    out.push(d);
    if (Buffer.concat(out).includes('sent\n')) sawSent();
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  void exited.then((code) => failed(new Error(`the slow reader exited (${code}) before its request was sent`)));
  return {
    sent,
    readAll: async () => {
      child.stdin.end('\n');
      expect(await exited).toBe(0);
      const all = Buffer.concat(out);
      return all.subarray(all.indexOf('sent\n') + 5);
    },
  };
}

test('a slow consumer is cut off with a reason, another client gets everything, the slow one resumes exactly', async () => {
  const edge = await startEdge({ SSE_BUFFER_MAX_BYTES: '1024', SSE_BUFFER_MAX_EVENTS: '2' });
  // A long run (thousands of token events, hundreds of KB), more than the kernel buffers for the
  // slow reader below.
  await configureEmulator({ timeScale: 1, ttftMs: 100, tokensPerSec: 20_000, completionTokens: 12_000, reviseRate: 0 });
  try {
    const id = await newConversation(edge.url!);
    const fastRes = await send(edge.url!, id);
    expect(fastRes.status).toBe(200);
    let sawStart!: () => void;
    const started = new Promise<void>((r) => (sawStart = r));
    const fast = readSse(fastRes.body!, (e) => {
      if (e.event === 'run.started') sawStart();
      return TERMINAL.has(e.event);
    });
    await started;

    const slow = slowReader(Number(new URL(edge.url!).port),
      `GET /api/conversations/${id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice}\r\nAccept: text/event-stream\r\n\r\n`);
    await slow.sent;
    const before = await promCounter(edge.url!, 'edge_sse_overflows_total');
    let fastEvents: number | undefined;
    void fast.then((evs) => (fastEvents = evs.length));
    const deadline = Date.now() + 60_000;
    while ((await promCounter(edge.url!, 'edge_sse_overflows_total')) <= before) {
      if (Date.now() > deadline) throw new Error('the slow consumer was never disconnected');
      if (fastEvents !== undefined && Date.now() > deadline - 55_000) {
        throw new Error(`the run ended (${fastEvents} events) and the slow consumer was never disconnected`);
      }
      await sleep(100);
    }
    // Read what the socket holds: the events it got, then the reason, then the end.
    const raw = await slow.readAll();
    const text = dechunk(raw);
    // A block cut off mid-way (the connection closed) is not an event: parse whole blocks only.
    const blocks = parseRaw(text.slice(0, text.lastIndexOf('\n\n') + 2));
    const got = seqs(blocks);
    const overflow = blocks.find((b) => b.event === 'stream.overflow');
    expect(overflow?.data.reason).toBe('slow_consumer');
    expect(got).toEqual(consecutive(1, got.length));
    const last = blocks.filter((b) => b.id).at(-1)?.id;

    const all = await fast;
    expect(all.at(-1)!.event).toBe('run.completed');
    const fastSeqs = seqs(all);
    expect(fastSeqs).toEqual(consecutive(1, fastSeqs.length));
    expect(got.length).toBeLessThan(fastSeqs.length);

    const resumed = await call(edge.url!, `/api/conversations/${id}/events`, { headers: last ? { 'last-event-id': last } : {} });
    expect(resumed.status).toBe(200);
    const rest = seqs(await readSse(resumed.body!, (e) => TERMINAL.has(e.event)));
    expect([...got, ...rest]).toEqual(fastSeqs);
    console.log(`slow consumer: cut after ${got.length} of ${fastSeqs.length} events (${text.length} bytes read), resumed with the ${rest.length} others`);
  } finally {
    await configureEmulator(STEADY);
  }
});

/** The body of a raw HTTP/1.1 response with chunked transfer encoding (a cut-off last chunk kept). */
function dechunk(response: Buffer): string {
  let at = response.indexOf('\r\n\r\n') + 4;
  const parts: Buffer[] = [];
  while (at < response.length) {
    const nl = response.indexOf('\r\n', at);
    if (nl < 0) break;
    const size = parseInt(response.subarray(at, nl).toString('latin1'), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(response.subarray(nl + 2, nl + 2 + size));
    at = nl + 2 + size + 2;
  }
  return Buffer.concat(parts).toString('utf8');
}

test('graceful drain: SIGTERM tells each stream to reconnect with jittered advice, exits in its grace, clients resume on another edge', async () => {
  const graceMs = 5_000;
  const a = await startEdge({ SHUTDOWN_GRACE_MS: String(graceMs) });
  const b = await startEdge();
  const convs = await Promise.all([1, 2, 3, 4].map(() => newConversation(a.url!)));
  const responses = await Promise.all(convs.map((c) => send(a.url!, c)));
  expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200]);
  let seen = 0;
  let allStarted!: () => void;
  const started = new Promise<void>((r) => (allStarted = r));
  const reads = responses.map((r) => {
    let counted = false;
    return readRaw(r, (blk) => {
      if (!counted && (seqOf(blk) ?? 0) >= 3) {
        counted = true;
        if (++seen === responses.length) allStarted();
      }
      return blk.event === 'reconnect' || TERMINAL.has(blk.event ?? '');
    });
  });
  await started;
  const t0 = Date.now();
  a.proc.kill('SIGTERM');
  const firsts = await Promise.all(reads);
  const exit = (await (a as ServiceProc & { exited: Promise<{ code: number | null }> }).exited) as { code: number | null };
  const exitedAfterMs = Date.now() - t0;
  expect(exit.code).toBe(0);
  expect(exitedAfterMs).toBeLessThan(graceMs + 2_000);

  const reconnects = firsts.map((f) => f.at(-1)!);
  for (const r of reconnects) {
    expect(r.event).toBe('reconnect');
    expect(r.retry).toBeGreaterThan(0);
    expect(r.data.reason).toBe('draining');
  }
  const retries = reconnects.map((r) => r.retry!);
  expect(new Set(retries).size).toBeGreaterThan(1);
  console.log(`drain: retry advice ${retries.join(', ')} ms; edge exited ${exitedAfterMs} ms after SIGTERM (grace ${graceMs} ms)`);

  await Promise.all(
    convs.map(async (c, i) => {
      const before = seqs(firsts[i]!);
      const last = firsts[i]!.filter((x) => x.id).at(-1)!.id!;
      expect(reconnects[i]!.data.lastEventId).toBe(last);
      const res = await call(b.url!, `/api/conversations/${c}/events`, { headers: { 'last-event-id': last } });
      expect(res.status).toBe(200);
      const rest = await readSse(res.body!, (e) => TERMINAL.has(e.event));
      expect(rest.at(-1)!.event).toBe('run.completed');
      const all = [...before, ...seqs(rest)];
      expect(all).toEqual(consecutive(1, all.length));
    }),
  );
});

test("the SSE limiter's estimated wait is honest against the measured wait", async () => {
  const edge = await startEdge({ SSE_MAX_STREAMS: '2' });
  // Warm-up: a few runs so the limiter has measured stream durations.
  await Promise.all([1, 2].map(async () => {
    const res = await send(edge.url!, await newConversation(edge.url!));
    await readSse(res.body!, (e) => TERMINAL.has(e.event));
  }));
  const clients = 8;
  const convs = await Promise.all(Array.from({ length: clients }, () => newConversation(edge.url!)));
  const figures: { position: number; estimatedMs: number; actualMs: number }[] = [];
  await Promise.all(
    convs.map(async (c, i) => {
      await sleep(i * 30); // arrive in order
      let token: string | undefined;
      let first: { at: number; position: number; estimatedMs: number } | undefined;
      for (;;) {
        const res = await send(edge.url!, c, token ? { 'x-queue-token': token } : {});
        if (res.status === 200) {
          if (first) figures.push({ position: first.position, estimatedMs: first.estimatedMs, actualMs: Date.now() - first.at });
          const events = await readSse(res.body!, (e) => TERMINAL.has(e.event));
          expect(events.at(-1)!.event).toBe('run.completed');
          return;
        }
        expect(res.status).toBe(503);
        const body = (await res.json()) as { queueToken: string; position: number; estimatedWaitMs: number };
        token = body.queueToken;
        first ??= { at: Date.now(), position: body.position, estimatedMs: body.estimatedWaitMs };
        await sleep(100);
      }
    }),
  );
  expect(figures.length).toBeGreaterThanOrEqual(clients - 2 - 1);
  const errors = figures.map((f) => f.actualMs - f.estimatedMs);
  const meanAbs = errors.reduce((s, e) => s + Math.abs(e), 0) / errors.length;
  const meanActual = figures.reduce((s, f) => s + f.actualMs, 0) / figures.length;
  console.log(
    `SSE limiter estimate vs actual wait (ms): ${figures.map((f) => `#${f.position} est ${f.estimatedMs} / got ${f.actualMs}`).join('; ')}; ` +
      `mean |error| ${Math.round(meanAbs)} ms of a mean wait of ${Math.round(meanActual)} ms`,
  );
  // Generous: within half the mean wait plus 2 s (polling, run-length jitter on a slow machine).
  expect(meanAbs).toBeLessThan(0.5 * meanActual + 2_000);
});

test('per-user request limit: shared by two edges through Redis, 429 with Retry-After', async () => {
  // 8 a minute: a burst of 2 (burst fraction 0.25), then one every 10 s.
  const [x, y] = await Promise.all([startEdge({ RATE_LIMIT_PER_MINUTE: '8' }), startEdge({ RATE_LIMIT_PER_MINUTE: '8' })]);
  const carol = signToken(SECRET, `carol-${Date.now()}`);
  const dave = signToken(SECRET, `dave-${Date.now()}`);
  expect((await call(x.url!, '/api/conversations', {}, carol)).status).toBe(200);
  expect((await call(y.url!, '/api/conversations', {}, carol)).status).toBe(200);
  const refused = await call(x.url!, '/api/conversations', {}, carol);
  expect(refused.status).toBe(429);
  expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
  expect((await call(y.url!, '/api/conversations', {}, carol)).status).toBe(429);
  expect((await call(y.url!, '/api/conversations', {}, dave)).status).toBe(200);
  // Every decision was made in Redis: none on an edge's local share (an edge just started made
  // some there before it waited for its first Redis connection, and gave carol a third request).
  for (const e of [x, y]) expect(await (await fetch(`${e.url}/metrics`)).text()).toMatch(/^edge_rate_limit_local_decisions_total(\{[^}]*\})? 0$/m);
});
