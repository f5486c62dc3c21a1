// Test-side access to the local stack (deploy/local/stack.js): real Redis, FerretDB, Jaeger,
// the emulator and the services as separate processes on free ports.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TERMINAL_EVENTS } from '@agent-mesh/common';
import { CallerRole } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js');

export interface Proc {
  name: string;
  proc: import('node:child_process').ChildProcess;
  logFile: string;
  log(): string;
  stop(graceMs?: number): Promise<unknown>;
  kill(): Promise<void>;
}
export interface RedisProc extends Proc { port: number; url: string }
export interface PostgresProc extends Proc { port: number; url: string; dataDir: string }
export interface FerretProc extends Proc { port: number; uri: string; backend: 'postgresql' | 'sqlite'; postgres?: PostgresProc }
export interface JaegerProc extends Proc { otlpEndpoint: string; queryUrl: string }
export interface EmulatorProc extends Proc { port: number; url: string }
export interface ServiceProc extends Proc { port: number; addr: string; metricsPort: number; url?: string }
export interface Mesh {
  store: ServiceProc; broker: ServiceProc; tools: ServiceProc; orchestrator: ServiceProc; edge: ServiceProc;
  all: ServiceProc[];
  /** Another edge replica wired like the first, with `env` on top; stopped with the mesh. */
  addEdge(env?: Record<string, string>): Promise<ServiceProc>;
  stop(): Promise<void>;
}

/** A fresh folder for one test file's logs and data (kept on failure for reading). */
export function testDir(name: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `mesh-${name}-`));
}

export const freePort: () => Promise<number> = stack.freePort;
export const waitFor: (what: string, check: () => Promise<boolean> | boolean, opts?: { timeoutMs?: number; intervalMs?: number }) => Promise<void> = stack.waitFor;
export const grpcServing: (addr: string) => Promise<boolean> = stack.grpcServing;
export const startRedis: (o: { logDir: string; port?: number; appendOnly?: boolean; dataDir?: string }) => Promise<RedisProc> = stack.startRedis;

/**
 * A real Redis for one test file: started before its tests (then `ready` runs, to make its clients)
 * and stopped after them, each client `ready` returned disconnected first.
 */
export function redisForFile<C extends { disconnect(): void }>(name: string, ready: (url: string) => Promise<C[]> | C[]): { clients: C[] } {
  const held = { clients: [] as C[] };
  let redis: RedisProc | undefined;
  beforeAll(async () => {
    redis = await startRedis({ logDir: testDir(name) });
    held.clients = await ready(redis.url);
  });
  afterAll(async () => {
    for (const c of held.clients) c.disconnect();
    await redis?.stop();
  });
  return held;
}
export const startPostgres: (o: { logDir: string; port?: number; dataDir?: string; durable?: boolean }) => Promise<PostgresProc> = stack.startPostgres;
/** FerretDB on PostgreSQL (its own cluster unless `postgres` is given) or, with `backend: 'sqlite'`, on SQLite. */
export const startFerret: (o: { logDir: string; port?: number; dataDir?: string; backend?: 'postgresql' | 'sqlite'; postgres?: PostgresProc; postgresUrl?: string; durable?: boolean }) => Promise<FerretProc> = stack.startFerret;
export const startJaeger: (o: { logDir: string }) => Promise<JaegerProc> = stack.startJaeger;
export const startEmulator: (o: { logDir: string; port?: number; env?: Record<string, string> }) => Promise<EmulatorProc> = stack.startEmulator;
export const startService: (name: string, o: { logDir: string; port?: number; env?: Record<string, string>; instance?: string }) => Promise<ServiceProc> = stack.startService;
export const startMesh: (o: {
  logDir: string; redisUrl: string; mongoUri: string; otlpEndpoint?: string; llmBaseUrl: string; llmApiKey?: string; jwtSecret: string;
  env?: Record<string, string>; perService?: Record<string, Record<string, string>>;
  /** The edge's PROMETHEUS_URL and JAEGER_QUERY_URL (the ops figures, runs' traces). */
  prometheusUrl?: string; jaegerQueryUrl?: string;
}) => Promise<Mesh> = stack.startMesh;
/** A replica of the fleet (deploy/local/fleet.js): `service` is its name, `replica` e.g. `edge-1`. */
export interface FleetReplica extends ServiceProc { service: string; replica: string }
export interface Fleet {
  /** nginx in front of the edges. */
  url: string;
  prometheus?: Proc & { port: number; url: string };
  stores: FleetReplica[]; brokers: FleetReplica[]; tools: FleetReplica[]; orchestrators: FleetReplica[]; edges: FleetReplica[];
  services: FleetReplica[];
  stop(): Promise<void>;
}
/** N replicas of every service behind nginx, with Prometheus unless `prometheus: false`. */
export const startFleet: (o: {
  replicas?: number; logDir: string; redisUrl: string; mongoUri: string; otlpEndpoint?: string; llmBaseUrl: string; llmApiKey?: string; jwtSecret: string;
  env?: Record<string, string>; perService?: Record<string, Record<string, string>>;
  prometheus?: false | { scrapeInterval?: string; evaluationInterval?: string };
  /** The edges' JAEGER_QUERY_URL (their PROMETHEUS_URL is the fleet's Prometheus). */
  jaegerQueryUrl?: string;
}) => Promise<Fleet> = require('../../deploy/local/fleet.js').startFleet;
/** A throwaway CA and a certificate per service in `dir` (openssl); `perService`: each one's GRPC_TLS_* and GRPC_ALLOWED_CALLERS (the mesh's own callers). */
export const makeMeshTls: (dir: string) => {
  dir: string; ca: string; perService: Record<string, Record<'GRPC_TLS_CA' | 'GRPC_TLS_CERT' | 'GRPC_TLS_KEY', string> & { GRPC_ALLOWED_CALLERS?: string }>;
} = stack.makeMeshTls;
/** `scope`: the token's `scope` claim (`ops`: may read the operations figures). */
export const mintToken: (secret: string, sub: string, o?: { expiresInS?: number; scope?: string }) => Promise<string> = stack.mintToken;

/** Reads an SSE response body into events until `until` returns true or the stream ends. */
export async function readSse(
  body: ReadableStream<Uint8Array>,
  until: (e: SseEvent) => boolean = () => false,
): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let idx: number;
      while ((idx = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        const e = parseSseBlock(block);
        if (e) {
          events.push(e);
          if (until(e)) return events;
        }
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return events;
}

export interface SseEvent { id?: string; event: string; data: any; comment?: string }

export function parseSseBlock(block: string): SseEvent | undefined {
  let id: string | undefined;
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return undefined;
  const text = data.join('\n');
  let parsed: unknown = text;
  try { parsed = JSON.parse(text); } catch { /* plain text */ }
  return { id, event, data: parsed };
}

/** The emulator's admin API (`/_emulator/stats`, `/_emulator/config`), for tests and benchmarks. */
export interface EmulatorStats {
  requests: number; completed: number; rateLimited: number; failed: number; aborted: number; cut: number; hung: number;
  /** Requests refused as malformed or over a limit of the model (400). */
  invalid: number;
  inFlight: number; maxInFlight: number; promptTokens: number; completionTokens: number; admissions: number[];
  /** Answers that were tool calls. */
  toolCalls: number;
  /** TPM tokens charged for finished requests, as the provider's limit counts them. */
  tokensCharged: number;
  /** With separate input and output limits (EMULATOR_OTPM): what each counted of finished requests. */
  inputTokensCharged: number;
  outputTokensCharged: number;
  /** Injected refusals (404, 429 insufficient_quota, 503, reset) and how often each behaviour applied. */
  refused: number; behaviours: Record<string, number>;
  /** The referee: most requests admitted within any one rate window. */
  maxPerWindow: number;
  /** Admitted requests that asked for a stream, and those that asked for the whole answer. */
  byMode: { stream: number; whole: number };
  /** Admitted chat requests by each Anthropic beta their `anthropic-beta` header named. */
  byBeta: Record<string, number>;
  /** Images in the prompts of admitted requests. */
  images: number;
  /** Admitted requests that named their end user (`user`, Anthropic's `metadata.user_id`). */
  users: number;
}
export async function emulatorStats(emulator: { url: string }): Promise<EmulatorStats> {
  return (await (await fetch(`${emulator.url}/_emulator/stats`)).json()) as EmulatorStats;
}
export async function configureEmulator(emulator: { url: string }, patch: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${emulator.url}/_emulator/config`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(patch) });
  if (!res.ok) throw new Error(`emulator config refused: ${res.status} ${await res.text()}`);
}

/** One sample of a Prometheus metric from a service's metrics port (0 when absent). */
export async function promMetric(service: { metricsPort: number }, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${service.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(labels));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** A Planner-style `Generate` request asking `question`, with `over` on top. */
export function generateRequest(
  question: string,
  over: Partial<import('@agent-mesh/common/gen/llmbroker/v1/llm_broker').GenerateRequest> = {},
): import('@agent-mesh/common/gen/llmbroker/v1/llm_broker').GenerateRequest {
  return {
    userId: '00000000-0000-4000-8000-000000000001',
    runId: '',
    callerRole: CallerRole.CALLER_ROLE_PLANNER,
    runStarted: false,
    model: '',
    messages: [
      { role: 'system', content: 'You are the Planner. Round: 1', name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [] },
      { role: 'user', content: question, name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [] },
    ],
    tools: [],
    toolsJson: '',
    maxTokens: 0,
    temperature: 0,
    hasTemperature: false,
    cache: false,
    noStream: false,
    answerInDone: false,
    streamToolCalls: false,
    toolChoice: undefined,
    stop: [],
    anthropicBetas: [],
    responseFormatJson: '',
    logitBias: {},
    ...over,
  };
}

/** One Generate call run to its end: every message, and the refusal (returned, not thrown). */
export interface GenerateOutcome {
  messages: import('@agent-mesh/common/gen/llmbroker/v1/llm_broker').GenerateResponse[];
  error?: import('@grpc/grpc-js').ServiceError;
  ms: number;
}
export async function runGenerate(
  client: import('@agent-mesh/common/gen/llmbroker/v1/llm_broker').LlmBrokerServiceClient,
  req: import('@agent-mesh/common/gen/llmbroker/v1/llm_broker').GenerateRequest,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<GenerateOutcome> {
  const { Metadata } = await import('@grpc/grpc-js');
  const t0 = Date.now();
  const call = client.generate(req, new Metadata(), { deadline: Date.now() + (opts.timeoutMs ?? 60_000) });
  opts.signal?.addEventListener('abort', () => call.cancel(), { once: true });
  const messages: GenerateOutcome['messages'] = [];
  try {
    for await (const m of call as AsyncIterable<GenerateOutcome['messages'][number]>) messages.push(m);
    return { messages, ms: Date.now() - t0 };
  } catch (err) {
    return { messages, error: err as import('@grpc/grpc-js').ServiceError, ms: Date.now() - t0 };
  }
}

/** Metric names a PromQL expression reads (label matchers, grouping clauses, strings and functions removed). */
export function metricsIn(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, '')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = [...bare.matchAll(/\b([a-zA-Z_:][\w:]*)\b(?!\s*\()/g)].map((m) => m[1]!);
  const keywords = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
  return names.filter((n) => !keywords.has(n));
}

/**
 * Metric names the services define (`name: '…'` / the broker's `gauge('…'`), plus the
 * prom-client default metrics the rules and dashboard use and Prometheus' own `up`.
 */
export function exportedMetricNames(): Set<string> {
  const root = path.resolve(__dirname, '../../services');
  const names = new Set(['up', 'process_cpu_seconds_total', 'nodejs_heap_size_used_bytes', 'process_resident_memory_bytes']);
  const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return ['node_modules', 'dist', 'gen'].includes(e.name) ? [] : walk(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [p] : [];
  });
  for (const file of walk(root)) {
    for (const m of fs.readFileSync(file, 'utf8').matchAll(/(?:name: |gauge\()'([a-z_]+)'/g)) names.add(m[1]!);
  }
  return names;
}

/**
 * A user's run read the way a browser's EventSource reads it: the POST's stream first; when a
 * connection ends before a terminal event, reconnect through nginx to the events route with
 * Last-Event-ID. `events` fills as they arrive; `connections` counts the connections used.
 */
export class EventSourceRun {
  readonly events: SseEvent[] = [];
  connections = 0;
  readonly done: Promise<void>;
  private lastId: string | undefined;

  /** `call(path, init, user)`: a request through the system's front door as `user`. */
  constructor(
    private readonly call: (path: string, init: RequestInit, user: string) => Promise<Response>,
    readonly user: string, readonly conversationId: string, readonly content: string,
  ) {
    this.done = this.run();
  }

  get seqs(): number[] { return this.events.flatMap((e) => (e.id ? [Number(e.id.split(':')[1])] : [])); }
  get terminal(): SseEvent | undefined { return this.events.find((e) => TERMINAL_EVENTS.has(e.event)); }

  private async run(): Promise<void> {
    let res = await this.call(`/api/conversations/${this.conversationId}/messages`, { method: 'POST', body: JSON.stringify({ content: this.content }) }, this.user);
    for (;;) {
      if (res.status !== 200) throw new Error(`${this.user}: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
      this.connections += 1;
      await this.read(res);
      if (this.terminal) return;
      if (this.connections > 10) {
        throw new Error(`${this.user}: no terminal event after ${this.connections} connections (each: events, last event, ms): ${this.history.join('; ')}`);
      }
      await new Promise((r) => setTimeout(r, 200));
      res = await this.call(`/api/conversations/${this.conversationId}/events`, { headers: this.lastId ? { 'last-event-id': this.lastId } : {} }, this.user);
    }
  }

  /** Each connection's story, for a failure's message: events relayed, how it ended, how long it lasted. */
  private readonly history: string[] = [];

  private async read(res: Response): Promise<void> {
    const t0 = Date.now();
    const before = this.events.length;
    let last: SseEvent | undefined;
    let broke = '';
    try {
      await readSse(res.body!, (e) => {
        this.events.push(e);
        last = e;
        if (e.id) this.lastId = e.id;
        return TERMINAL_EVENTS.has(e.event);
      });
    } catch (err) {
      // The connection broke (its edge died or drained): reconnect.
      broke = ` broke: ${(err as Error).message}`;
    }
    const ended = last ? `${last.event}${last.id ? ` ${last.id.split(':')[1]}` : ''} ${JSON.stringify(last.data).slice(0, 160)}` : 'no event';
    this.history.push(`${this.events.length - before}, ${ended}${broke}, ${Date.now() - t0}`);
  }
}

/**
 * What a fleet's services logged at warn level or above (and the edges' stream resumes), from the
 * JSON log files in `dir`, with repeats counted: for a failed end-to-end test to say what the
 * services saw. At most `max` distinct lines.
 */
export function logDigest(dir: string, max = 60): string {
  const counts = new Map<string, number>();
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.log')).sort()) {
    for (const line of fs.readFileSync(path.join(dir, file), 'utf8').split('\n')) {
      let e: { level?: number; msg?: string; err?: unknown; reason?: unknown; attempt?: unknown; runId?: string };
      try { e = JSON.parse(line) as typeof e; } catch { continue; }
      if ((e.level ?? 0) < 40 && !/resuming|taking over|handed over/.test(e.msg ?? '')) continue;
      const err = typeof e.err === 'string' ? e.err : (e.err as { message?: string } | undefined)?.message;
      const key = `${file.replace(/-\d+\.log$/, '')}: ${e.msg}${err ? ` (${err.slice(0, 160)})` : ''}${e.reason ? ` [${String(e.reason)}]` : ''}${e.runId ? ` run ${e.runId.slice(0, 8)}` : ''}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  const lines = [...counts].map(([k, n]) => `${n}× ${k}`);
  return lines.slice(0, max).join('\n') + (lines.length > max ? `\n… ${lines.length - max} more` : '');
}
