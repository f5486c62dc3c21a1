// Seed benchmark, open loop: the brief's load as it arrives, not as the system lets it in.
// Messages arrive as a Poisson process at USERS × MSGS_PER_MIN (the brief: 2.5 a minute per user),
// independent of completions: a user whose run is still going sends into another conversation of
// theirs (created on the spot). They go through the REAL edge (HTTP + SSE) of a whole mesh (Redis,
// FerretDB on PostgreSQL, the emulator, the five services as separate processes); every LLM call
// takes the brief's 5–10 s; the provider (emulator) enforces its own RPM and counts its 429s.
//
// Clients read their streams like browsers: an EventSource-style reader that reconnects to
// `GET /api/conversations/:id/events` with `Last-Event-ID` when a stream breaks, and counts lost,
// duplicated and out-of-order events itself (event ids are `<runId>:<seq>`, seqs consecutive).
// Every latency counts from the message's *scheduled* send time (no coordinated omission).
// Every offered message is reported: those still waiting when the drain period ends are
// `unfinished`, with where they were.
//
// Time is scaled: the emulator's latencies, the quota windows, the arrival rate, the agents'
// deadlines and the shedding limit are all multiplied by TIME_SCALE (a brief-minute lasts
// 60 × TIME_SCALE wall seconds); every figure is reported in the brief's time.
//
// Run: npm run bench -- seed   env, with defaults:
//   USERS 200 · DURATION_S 90 (wall seconds of arrivals) · DRAIN_S 120 (brief-seconds to let runs
//   finish after the last arrival) · TIME_SCALE 0.5 · MSGS_PER_MIN 2.5 · LLM_RPM 500 · LLM_TPM 0 ·
//   LLM_MAX_CONCURRENT 50 · TTFT_MS 1500 · TOKENS_PER_SEC 6 · COMPLETION_TOKENS 30 · REVISE_RATE 0.3 ·
//   SSE_MAX_STREAMS 2000 · MAX_QUEUE_WAIT_S 10 (brief-seconds: the orchestrator's default
//   RUN_MAX_QUEUE_WAIT_MS, scaled; 0: no admission control) · PROGRESS_S 5 (wall seconds between
//   progress lines) · TOOL_CORPUS_SOURCES docs · CONVERSATIONS 2 (per user, made before the load) ·
//   REPEAT_SHARE 0.3 (messages that repeat an earlier one word for word: the LLM cache's hit rate is reported) ·
//   CPU_PROFILE_DIR (unset: each service the launcher starts writes a V8 CPU profile there when it stops) ·
//   REPLICAS 1 (more: that many replicas of every service behind nginx, as under --chaos, with no faults)
//
// `--autoscale`: the same load through the fleet the HPAs of deploy/k8s drive
// (deploy/local/autoscale.js: the production overlay, prometheus-adapter, the real HPA controller,
// one process per Pod, nginx in front of each service). The report adds replicas per service over
// time beside arrivals, completions, queue depth and run time, how long each scale-up took, and
// goodput per replica.
//
// `--chaos`: the same load through a fleet of CHAOS_REPLICAS (2) replicas of every service behind
// nginx, while `kill -9` strikes one replica of each service in turn, then Redis (append-only file)
// and PostgreSQL restart (test/bench/chaos.ts); per fault: runs failed, events lost or duplicated,
// how long errors went on. Goals: no run failed by a kill, < 1 % by a restart, errors over in 30 s.
// Prints progress lines, a human summary; the last line is one JSON object of the figures.
import { setMaxListeners } from 'node:events';
import path from 'node:path';
import { newId, TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import os from 'node:os';
import { fetchText, gauge, linearFit, percentile, runTimingMedians, steadyGoodput, treeCpuSeconds } from './stats';
import { writeSeedReport, type ReportSample } from './seed-report';
import { chaosFaults, faultImpact, runFaults, startChaosInfra, type FaultRecord } from './chaos';
import { mintToken, parseSseBlock, startEmulator, startFerret, startFleet, startMesh, startRedis, testDir, type Proc, type SseEvent } from '../support';

const num = (name: string, def: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`);
  return v;
};
const USERS = Math.max(1, Math.floor(num('USERS', 200)));
const DURATION_S = num('DURATION_S', 90);
const DRAIN_S = num('DRAIN_S', 120);
const TIME_SCALE = num('TIME_SCALE', 0.5);
const MSGS_PER_MIN = num('MSGS_PER_MIN', 2.5);
const LLM_RPM = num('LLM_RPM', 500);
const LLM_TPM = num('LLM_TPM', 0);
const LLM_MAX_CONCURRENT = num('LLM_MAX_CONCURRENT', 50);
const TTFT_MS = num('TTFT_MS', 1500);
const TOKENS_PER_SEC = num('TOKENS_PER_SEC', 6);
const COMPLETION_TOKENS = num('COMPLETION_TOKENS', 30);
const REVISE_RATE = num('REVISE_RATE', 0.3);
const SSE_MAX_STREAMS = num('SSE_MAX_STREAMS', 2000);
const MAX_QUEUE_WAIT_S = num('MAX_QUEUE_WAIT_S', 10);
const PROGRESS_S = num('PROGRESS_S', 5);
/** Conversations each user has before the load starts (setup, not measured); more are made when all are busy. */
const CONVERSATIONS = Math.max(1, Math.floor(num('CONVERSATIONS', 2)));
/** The issue's goals, in brief time. */
const GOALS = { errorRatePct: 1, ttfeP99S: 2, completedP95S: 60, goodputPct: 95 };
const QUESTIONS = [
  'How should I plan a vegetable garden?', 'Explain how a heat pump works.', 'What makes a good code review?',
  'How do I train for a 10k run?', 'Search the latest news about solar panels.', 'How can I learn to bake bread?',
  'Find the best way to store fresh herbs.', 'What should I pack for a week of hiking?',
];
const MAX_RECONNECTS = 10;
/**
 * Share of messages that repeat an earlier message word for word (the rest are new questions): what
 * the LLM response cache can serve (its Planner and Critic calls, when the conversation's history
 * matches too). REPEAT_SHARE, default 0.3.
 */
const REPEAT_SHARE = Math.min(1, num('REPEAT_SHARE', 0.3));
const sentQuestions: string[] = [];
function nextQuestion(n: number): string {
  const repeat = sentQuestions.length > 0 && Math.random() < REPEAT_SHARE;
  const q = repeat ? sentQuestions[Math.floor(Math.random() * sentQuestions.length)]! : `${QUESTIONS[n % QUESTIONS.length]!} (case ${n})`;
  if (!repeat) sentQuestions.push(q);
  return q;
}
const AUTOSCALE = process.argv.slice(2).includes('--autoscale');
const CHAOS = process.argv.slice(2).includes('--chaos');
/** Replicas of every service under `--chaos`. */
const CHAOS_REPLICAS = Math.max(2, Math.floor(num('CHAOS_REPLICAS', 2)));
/** Replicas of every service without faults (1: the mesh as one process per service, no nginx). */
const REPLICAS = CHAOS ? CHAOS_REPLICAS : Math.max(1, Math.floor(num('REPLICAS', 1)));
/** The chaos goals: a killed replica fails no run; a restart of Redis or PostgreSQL < 1 %; errors over within 30 brief-s. */
const CHAOS_GOALS = { restartFailedPct: 1, recoveredWithinS: 30 };
const SERVICES = ['edge', 'orchestrator', 'llm-broker', 'tool-service', 'store'] as const;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const autoscale = AUTOSCALE ? require('../../deploy/local/autoscale.js') : undefined;

/** What the benchmark needs of the system under load: one mesh, or the autoscaled fleet. */
interface System {
  edgeUrl: string;
  /** Metrics addresses (host:port) of the replicas running now. */
  brokers(): string[];
  edges(): string[];
  orchestrators(): string[];
  /** Running replicas per service (the autoscaled fleet only). */
  replicas?(): Record<string, number>;
  /** What each HPA reads and asks for (the autoscaled fleet only). */
  hpas?(): Promise<Record<string, string>>;
  /** Log files of every orchestrator replica that ran. */
  orchestratorLogs(): string[];
  /** The mesh's own processes, for their CPU time (one mesh only: fleets come and go). */
  services?: { name: string; pid: number }[];
  stop(): Promise<void>;
}

type Outcome = 'completed' | 'degraded' | 'shed' | 'failed' | 'cancelled' | 'http_error' | 'stream_error' | 'unfinished';
type Phase = 'sending' | 'edge_queue' | 'queued' | 'streaming' | 'done';
interface Arrival {
  user: number;
  /** Wall ms (performance.now()) when the message was due: every latency counts from here. */
  scheduled: number;
  phase: Phase;
  outcome?: Outcome;
  /** Where an unfinished one was when the drain period ended. */
  unfinishedIn?: Phase;
  status?: number;
  detail?: string;
  firstEventMs?: number;
  firstTokenMs?: number;
  endMs?: number;
  /** Retry-After (s, wall) of a shed answer. */
  retryAfterS?: number;
  /** The first `queued` estimate (ms, wall) and when it came, to compare with the actual wait. */
  queuedEstimateMs?: number;
  queuedAtMs?: number;
  reconnects: number;
  events: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  sseLimited: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const running = (p: Proc) => p.proc.exitCode === null && p.proc.signalCode === null;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const briefS = (wallMs: number) => round(wallMs / 1000 / TIME_SCALE, 2);

/** An HPA's reading, as `kubectl get hpa` shows it: each metric's current/target, and its desired replicas. */
function hpaReading(h: Record<string, any>): string {
  const cur = (h.status?.currentMetrics ?? []) as Record<string, any>[];
  const parts = (h.spec.metrics as Record<string, any>[]).map((m) => {
    if (m.type === 'Resource') {
      const c = cur.find((x) => x.type === 'Resource' && x.resource.name === m.resource.name);
      return `${m.resource.name} ${c?.resource?.current?.averageUtilization ?? '?'}%/${m.resource.target.averageUtilization}%`;
    }
    const c = cur.find((x) => x.type === 'Pods' && x.pods.metric.name === m.pods.metric.name);
    return `${m.pods.metric.name} ${c?.pods?.current?.averageValue ?? '?'}/${m.pods.target.averageValue}`;
  });
  return `${parts.join(', ')} → ${h.status?.desiredReplicas ?? '?'}`;
}

/** The sum of a counter's samples whose labels include `label` (e.g. `result="hit"`). */
function labelled(text: string, name: string, label: string): number {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) && l.includes(label)).reduce((s, l) => s + (Number(l.slice(l.lastIndexOf(' ') + 1)) || 0), 0);
}

interface MemorySample { units: number; heapBytes: number; rssBytes: number }

/** The replicas' heap in use, resident memory and `unitGauge` (active runs, open streams), summed. */
/**
 * The metrics pages of a service's replicas, one fetch each per sample (a scrape costs the service
 * CPU that the benchmark counts as the mesh's). A replica that does not answer (killed by a fault)
 * gives an empty page: it counts for nothing, its work and memory alike.
 */
function metricsPages(addrs: string[]): Promise<string[]> {
  return Promise.all(addrs.map((a) => fetch(`http://${a}/metrics`).then((r) => r.text()).catch(() => '')));
}

/** A gauge summed over replicas' pages. */
const pagesGauge = (pages: string[], name: string) => pages.reduce((s, t) => s + gauge(t, name), 0);

function memorySample(pages: string[], unitGauge: string): MemorySample {
  const sum = (name: string) => pagesGauge(pages, name);
  return { units: sum(unitGauge), heapBytes: sum('nodejs_heap_size_used_bytes'), rssBytes: sum('process_resident_memory_bytes') };
}

/**
 * Memory per unit of work, two ways: the slope of heap in use (and of resident memory) against the
 * units over the samples (a least-squares line; `r2` says how much of the memory's variation the
 * units explain: the garbage collector's sawtooth is noise to it), and an upper bound, the growth
 * from the lowest to the highest sample divided by the peak units (garbage not yet collected counts
 * in it).
 */
function memoryPerUnit(samples: MemorySample[]) {
  const peakUnits = Math.max(0, ...samples.map((s) => s.units));
  const per = (y: (s: MemorySample) => number) => {
    const f = linearFit(samples.map((s) => ({ x: s.units, y: y(s) })));
    const ys = samples.map(y);
    return {
      ...(f ? { slopeKb: round(f.slope / 1024, 1), r2: round(f.r2, 2) } : {}),
      ...(peakUnits > 0 ? { atMostKb: round((Math.max(...ys) - Math.min(...ys)) / peakUnits / 1024, 1) } : {}),
      peakMb: round(Math.max(0, ...ys) / 2 ** 20, 1),
    };
  };
  return { samples: samples.length, peakUnits, heap: per((s) => s.heapBytes), rss: per((s) => s.rssBytes) };
}

function describeMemory(m: ReturnType<typeof memoryPerUnit>, unit: string): string {
  const f = (x: ReturnType<typeof memoryPerUnit>['heap']) =>
    `${x.slopeKb !== undefined && x.r2! >= 0.5 ? `${x.slopeKb} KB per ${unit} (r² ${x.r2}), ` : `no line (r² ${x.r2 ?? '-'}), `}at most ${x.atMostKb ?? '-'} KB per ${unit}, peak ${x.peakMb} MB`;
  return `peak ${m.peakUnits} ${unit}s; heap ${f(m.heap)}; RSS ${f(m.rss)}`;
}


/** The events of one run as a client sees them: ids `<runId>:<seq>`, seqs 1, 2, 3, … */
class EventLedger {
  private seen = new Set<number>();
  private maxSeq = 0;
  lastEventId: string | undefined;
  constructor(private readonly a: Arrival) {}
  add(e: SseEvent): void {
    this.a.events++;
    if (!e.id) return;
    this.lastEventId = e.id;
    if (e.event === 'events.lost') return; // counted below as the seqs that never arrived
    const seq = Number(e.id.slice(e.id.lastIndexOf(':') + 1));
    if (this.seen.has(seq)) { this.a.duplicated++; return; }
    if (seq < this.maxSeq) this.a.outOfOrder++;
    this.seen.add(seq);
    this.maxSeq = Math.max(this.maxSeq, seq);
  }
  /** Seqs below the last one that never arrived. */
  close(): void {
    this.a.lost = this.maxSeq - this.seen.size;
  }
}

interface Client {
  edgeUrl: string;
  token: string;
  signal: AbortSignal;
}

/** Reads one SSE response into the ledger until a terminal event; false when the stream broke first. */
async function readStream(res: Response, a: Arrival, ledger: EventLedger, retry: { ms: number }): Promise<SseEvent | undefined> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return undefined;
      buf += decoder.decode(value, { stream: true });
      let idx: number;
      while ((idx = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        const hint = /^retry: (\d+)$/m.exec(block);
        if (hint) retry.ms = Number(hint[1]);
        const e = parseSseBlock(block);
        if (!e) continue;
        const now = performance.now();
        a.firstEventMs ??= now - a.scheduled;
        ledger.add(e);
        // The estimate of the run's first call, checked against its first token. (A later call's
        // `queued` came after the first token: counting it made the error meaningless.)
        if (e.event === 'queued' && a.queuedEstimateMs === undefined && a.firstTokenMs === undefined) {
          a.queuedEstimateMs = Number((e.data as { estimatedWaitMs?: number }).estimatedWaitMs ?? 0);
          a.queuedAtMs = now - a.scheduled;
          a.phase = 'queued';
        }
        if (e.event === 'token') {
          a.firstTokenMs ??= now - a.scheduled;
          a.phase = 'streaming';
        }
        if (TERMINAL.has(e.event)) return e;
      }
    }
  } catch {
    return undefined;
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** Sends one message and follows its run to the end, reconnecting like EventSource does. */
async function sendMessage(c: Client, conversationId: string, content: string, a: Arrival): Promise<void> {
  const auth = { authorization: `Bearer ${c.token}` };
  const messageId = newId(); // one id across limiter retries: the run starts once
  let queueToken: string | undefined;
  const ledger = new EventLedger(a);
  const retry = { ms: 2000 };
  const finish = (outcome: Outcome, extra: Partial<Arrival> = {}) => {
    Object.assign(a, { outcome, unfinishedIn: outcome === 'unfinished' ? a.phase : undefined, phase: 'done', endMs: performance.now() - a.scheduled, ...extra });
    ledger.close();
  };
  let res: Response;
  for (;;) {
    try {
      res = await fetch(`${c.edgeUrl}/api/conversations/${conversationId}/messages`, {
        method: 'POST', signal: c.signal,
        headers: { ...auth, 'content-type': 'application/json', accept: 'text/event-stream', ...(queueToken ? { 'x-queue-token': queueToken } : {}) },
        body: JSON.stringify({ content, messageId }),
      });
    } catch (err) {
      return finish(c.signal.aborted ? 'unfinished' : 'http_error', { detail: (err as Error).message });
    }
    if (res.status === 503) {
      const body = (await res.json().catch(() => ({}))) as { queueToken?: string; estimatedWaitMs?: number; error?: { code?: string } };
      const retryAfterS = Number(res.headers.get('retry-after') ?? 0);
      if (body.queueToken) {
        // The edge's SSE limiter is full: a browser keeps its place with the token and comes back.
        a.sseLimited = true;
        a.phase = 'edge_queue';
        queueToken = body.queueToken;
        await sleep(Math.min(5_000, Math.max(100, body.estimatedWaitMs ?? retryAfterS * 1000)));
        if (c.signal.aborted) return finish('unfinished');
        continue;
      }
      if (body.error?.code === 'busy') return finish('shed', { status: 503, retryAfterS });
      return finish('http_error', { status: 503, detail: JSON.stringify(body).slice(0, 200) });
    }
    break;
  }
  if (!res.ok || !res.body) {
    const detail = await res.text().catch(() => '');
    return finish('http_error', { status: res.status, detail: detail.slice(0, 200) });
  }
  let terminal = await readStream(res, a, ledger, retry);
  // EventSource: on a broken stream, wait `retry` and reconnect with Last-Event-ID.
  while (!terminal && !c.signal.aborted && a.reconnects < MAX_RECONNECTS) {
    a.reconnects++;
    await sleep(Math.min(retry.ms, 2_000));
    try {
      const again = await fetch(`${c.edgeUrl}/api/conversations/${conversationId}/events`, {
        signal: c.signal, headers: { ...auth, accept: 'text/event-stream', ...(ledger.lastEventId ? { 'last-event-id': ledger.lastEventId } : {}) },
      });
      if (again.ok && again.body) terminal = await readStream(again, a, ledger, retry);
      else await again.body?.cancel();
    } catch { /* try again */ }
  }
  if (!terminal) return finish(c.signal.aborted ? 'unfinished' : 'stream_error', { detail: 'stream ended without a terminal event' });
  const outcome: Outcome = terminal.event === 'run.completed' ? 'completed' : terminal.event === 'degraded' ? 'degraded' : terminal.event === 'run.cancelled' ? 'cancelled' : 'failed';
  finish(outcome, outcome === 'failed' ? { detail: JSON.stringify(terminal.data).slice(0, 200) } : {});
}

async function main() {
  const logDir = testDir('bench-seed');
  const procs: Proc[] = [];
  let system: System | undefined;
  let faults: ReturnType<typeof chaosFaults> = [];
  const jwtSecret = 'seed-bench-secret-0123456789abcdef';
  const minuteMs = 60_000 * TIME_SCALE; // a brief-minute in wall milliseconds
  const abort = new AbortController();
  setMaxListeners(0, abort.signal); // one listener per request in flight: thousands at 500 users
  try {
    // Under --chaos, Redis keeps an append-only file and PostgreSQL is durable: both are restarted.
    const chaosInfra = CHAOS ? await startChaosInfra(logDir) : undefined;
    let infra: { redisUrl: string; mongoUri: string };
    if (chaosInfra) {
      procs.push(...chaosInfra.procs);
      infra = chaosInfra;
    } else {
      const [redis, ferret] = await Promise.all([startRedis({ logDir }), startFerret({ logDir })]);
      procs.push(redis, ferret);
      infra = { redisUrl: redis.url, mongoUri: ferret.uri };
    }
    const emulator = await startEmulator({
      logDir,
      env: {
        EMULATOR_TIME_SCALE: String(TIME_SCALE), EMULATOR_RPM: String(LLM_RPM), EMULATOR_TPM: String(LLM_TPM),
        EMULATOR_TTFT_MS: String(TTFT_MS), EMULATOR_TOKENS_PER_SEC: String(TOKENS_PER_SEC), EMULATOR_COMPLETION_TOKENS: String(COMPLETION_TOKENS),
        EMULATOR_REVISE_RATE: String(REVISE_RATE), EMULATOR_SEED: '2024',
      },
    });
    procs.push(emulator);
    const perService = {
      'llm-broker': {
        LLM_RPM: String(LLM_RPM), LLM_TPM: String(LLM_TPM), LLM_MAX_CONCURRENT: String(LLM_MAX_CONCURRENT), LLM_TIME_SCALE: String(TIME_SCALE),
        // Completions are short here; reserving the default 1024 tokens per call would starve the TPM quota.
        LLM_DEFAULT_MAX_TOKENS: String(Math.max(64, COMPLETION_TOKENS * 4)),
      },
      // The agents' deadline (120 brief-seconds per call, queueing included) is scaled with time.
      // info: the orchestrator's `run timings` lines (where a run's time goes) are summarised below.
      orchestrator: {
        LOG_LEVEL: 'info', AGENT_CALL_TIMEOUT_MS: String(Math.max(1_000, Math.round(120_000 * TIME_SCALE))), AGENT_MAX_TOKENS: String(Math.max(64, COMPLETION_TOKENS * 4)),
        RUN_MAX_QUEUE_WAIT_MS: String(Math.round(MAX_QUEUE_WAIT_S * 1000 * TIME_SCALE)),
      },
      edge: { SSE_MAX_STREAMS: String(SSE_MAX_STREAMS), RATE_LIMIT_PER_MINUTE: '100000' },
      // The search corpus of the project's own documents only: indexing WordNet and /usr/share/doc
      // at start takes minutes of CPU on a busy 2-core machine, and is not what is measured here.
      'tool-service': { TOOL_CORPUS_SOURCES: process.env.TOOL_CORPUS_SOURCES ?? 'docs' },
    };
    const wiring = { logDir, redisUrl: infra.redisUrl, mongoUri: infra.mongoUri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret, env: { LOG_LEVEL: 'warn' }, perService };
    if (AUTOSCALE) {
      console.log('  starting the autoscaled fleet (control plane, prometheus-adapter, each Deployment\'s floor of replicas)…');
      const fleet = await autoscale.startAutoscaledFleet({ ...wiring, dataDir: path.join(logDir, 'data') });
      const seenOrchestrators = new Set<string>();
      const running = (s: string) => fleet.replicas(s).map((r: { replica: { metricsPort: number; addr: string; logFile: string } }) => r.replica);
      system = {
        edgeUrl: fleet.url,
        brokers: () => running('llm-broker').map((r: { metricsPort: number }) => `127.0.0.1:${r.metricsPort}`),
        edges: () => running('edge').map((r: { addr: string }) => r.addr),
        orchestrators: () => running('orchestrator').map((r: { metricsPort: number }) => `127.0.0.1:${r.metricsPort}`),
        replicas: () => Object.fromEntries(SERVICES.map((s) => [s, fleet.replicas(s).length])),
        hpas: async () => {
          const list = (await fleet.api.request('GET', `/apis/autoscaling/v2/namespaces/${fleet.namespace}/horizontalpodautoscalers`)).items as Record<string, any>[];
          return Object.fromEntries(list.map((h) => [h.metadata.name, hpaReading(h)]));
        },
        orchestratorLogs: () => {
          for (const r of running('orchestrator')) seenOrchestrators.add(r.logFile);
          return [...seenOrchestrators];
        },
        stop: () => fleet.stop(),
      };
    } else if (REPLICAS > 1) {
      console.log(`  starting the fleet: ${REPLICAS} replicas of every service behind nginx…`);
      const fleet = await startFleet({ ...wiring, replicas: REPLICAS, prometheus: false });
      system = {
        edgeUrl: fleet.url,
        // The replicas still running (the faults kill some).
        brokers: () => fleet.brokers.filter(running).map((r) => `127.0.0.1:${r.metricsPort}`),
        edges: () => fleet.edges.filter(running).map((r) => r.addr),
        orchestrators: () => fleet.orchestrators.filter(running).map((r) => `127.0.0.1:${r.metricsPort}`),
        orchestratorLogs: () => fleet.orchestrators.map((r) => r.logFile),
        stop: () => fleet.stop(),
      };
      if (chaosInfra) faults = chaosFaults(fleet.services, chaosInfra);
    } else {
      const m = await startMesh(wiring);
      system = {
        edgeUrl: m.edge.url!, brokers: () => [`127.0.0.1:${m.broker.metricsPort}`], edges: () => [m.edge.addr],
        orchestrators: () => [`127.0.0.1:${m.orchestrator.metricsPort}`],
        orchestratorLogs: () => [m.orchestrator.logFile], stop: () => m.stop(),
        services: m.all.map((p) => ({ name: p.name, pid: p.proc.pid! })),
      };
    }
    const edgeUrl = system.edgeUrl;
    const sys = system;

    // Users and their first conversations (setup, not measured); more are made when needed.
    // Twenty at a time, each tried up to five times: setup must not fail on a busy machine.
    const users = await Promise.all(Array.from({ length: USERS }, async (_, i) => ({ token: await mintToken(jwtSecret, `seed-user-${i}`), free: [] as string[] })));
    const todo = users.flatMap((u, i) => Array.from({ length: CONVERSATIONS }, () => [u, i] as const));
    await Promise.all(Array.from({ length: 20 }, async () => {
      for (let job = todo.pop(); job; job = todo.pop()) {
        for (let attempt = 1; ; attempt++) {
          try {
            job[0].free.push(await createConversation(edgeUrl, job[0].token, job[1]));
            break;
          } catch (err) {
            if (attempt >= 5) throw err;
            await sleep(1_000);
          }
        }
      }
    }));

    const arrivals: Arrival[] = [];
    const pending: Promise<void>[] = [];
    // Metrics sampled while the load runs: peaks, and a timeline for the report.
    const peaks = { llmQueue: 0, llmInFlight: 0, openStreams: 0, samples: 0 };
    const timeline: (ReportSample & { hpas?: Record<string, string> })[] = [];
    // Memory against work, summed over replicas: the orchestrators' against their active runs,
    // the edges' against their open streams (the brief budgets ~50 KB per conversation).
    const memory: { orchestrator: MemorySample[]; edge: MemorySample[] } = { orchestrator: [], edge: [] };
    const loadAvgStart = os.loadavg();
    let lastHpas: Record<string, string> | undefined;
    let hpaSampledAt = 0;
    let sampling = true;
    // CPU time over the load, per process with its children (PostgreSQL's backends under it).
    const cpuProcs = [...(sys.services ?? []), ...procs.flatMap((p) => [p, ...('postgres' in p && p.postgres ? [p.postgres as Proc] : [])])
      .map((p) => ({ name: p.name, pid: p.proc.pid! }))].filter((p) => p.pid !== undefined);
    const cpuAtStart = treeCpuSeconds(cpuProcs.map((p) => p.pid));
    const benchCpuAtStart = process.cpuUsage();
    const loadStarted = performance.now();
    // The faults strike one after another while the messages arrive.
    const faultsDone: Promise<FaultRecord[]> = runFaults(faults, { now: () => performance.now() - loadStarted, startMs: 0, windowMs: DURATION_S * 1000, signal: abort.signal, log: (l) => console.log(l) });
    const sampler = (async () => {
      while (sampling) {
        try {
          const [brokerPages, edgePages, orchestratorPages, emu] = await Promise.all([
            metricsPages(sys.brokers()), metricsPages(sys.edges()), metricsPages(sys.orchestrators()),
            fetch(`${emulator.url}/_emulator/stats`).then((r) => r.json() as Promise<{ requests: number; inFlight: number }>),
          ]);
          const q = pagesGauge(brokerPages, 'llm_queue_depth');
          const f = pagesGauge(brokerPages, 'llm_in_flight');
          const open = pagesGauge(edgePages, 'edge_sse_open_streams');
          const orchMem = memorySample(orchestratorPages, 'orchestrator_active_runs');
          const edgeMem = memorySample(edgePages, 'edge_sse_open_streams');
          memory.orchestrator.push(orchMem);
          memory.edge.push(edgeMem);
          peaks.llmQueue = Math.max(peaks.llmQueue, q);
          peaks.llmInFlight = Math.max(peaks.llmInFlight, f);
          peaks.openStreams = Math.max(peaks.openStreams, open);
          peaks.samples++;
          sys.orchestratorLogs();
          if (sys.hpas && performance.now() - hpaSampledAt > 5_000) {
            hpaSampledAt = performance.now();
            lastHpas = await sys.hpas();
          }
          timeline.push({
            ...(lastHpas ? { hpas: lastHpas } : {}),
            tBriefS: briefS(performance.now() - loadStarted), llmQueue: q, llmInFlight: f, inFlightRuns: arrivals.filter((a) => a.phase !== 'done').length,
            upstreamRequests: emu.requests, upstreamInFlight: emu.inFlight,
            ...(sys.replicas ? { replicas: sys.replicas() } : {}),
          });
        } catch { /* a missed sample */ }
        await sleep(500);
      }
    })();
    const progress = setInterval(() => {
      const n = (p: (a: Arrival) => boolean) => arrivals.filter(p).length;
      console.log(`  [${briefS(performance.now() - loadStarted).toFixed(0)} brief-s] arrivals ${arrivals.length}, in flight ${n((a) => a.phase !== 'done')}` +
        ` (queued ${n((a) => a.phase === 'queued')}, edge queue ${n((a) => a.phase === 'edge_queue')}), completed ${n((a) => a.outcome === 'completed')},` +
        ` shed ${n((a) => a.outcome === 'shed')}, degraded ${n((a) => a.outcome === 'degraded')}, errors ${n((a) => ['failed', 'http_error', 'stream_error'].includes(a.outcome ?? ''))}`);
    }, PROGRESS_S * 1000);

    // Poisson arrivals at USERS × MSGS_PER_MIN per brief-minute, scheduled ahead of time: a late
    // send (a busy event loop) still counts its latency from when it was due.
    const ratePerMs = (USERS * MSGS_PER_MIN) / minuteMs;
    const endAt = loadStarted + DURATION_S * 1000;
    let due = loadStarted;
    for (let n = 0; ; n++) {
      due += -Math.log(1 - Math.random()) / ratePerMs;
      if (due >= endAt) break;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const userIdx = Math.floor(Math.random() * USERS);
      const a: Arrival = { user: userIdx, scheduled: due, phase: 'sending', reconnects: 0, events: 0, lost: 0, duplicated: 0, outOfOrder: 0, sseLimited: false };
      arrivals.push(a);
      const u = users[userIdx]!;
      pending.push((async () => {
        // A user whose run is still going writes in another conversation of theirs.
        let conv = u.free.pop();
        try {
          conv ??= await createConversation(edgeUrl, u.token, userIdx, abort.signal);
        } catch (err) {
          Object.assign(a, { outcome: abort.signal.aborted ? 'unfinished' : 'http_error', unfinishedIn: 'sending', phase: 'done', endMs: performance.now() - a.scheduled, detail: `creating a conversation: ${(err as Error).message}` });
          return;
        }
        await sendMessage({ edgeUrl, token: u.token, signal: abort.signal }, conv, nextQuestion(n), a);
        u.free.push(conv);
      })());
    }
    const arrivalsWallS = (performance.now() - loadStarted) / 1000;
    const faultRecords = await faultsDone;
    // Drain: let the runs in flight finish, then stop whatever still waits (reported as unfinished).
    const drainTimer = setTimeout(() => abort.abort(), DRAIN_S * 1000 * TIME_SCALE);
    await Promise.all(pending);
    clearTimeout(drainTimer);
    clearInterval(progress);
    const loadWallS = (performance.now() - loadStarted) / 1000;
    const cpuAtEnd = treeCpuSeconds(cpuProcs.map((p) => p.pid));
    const benchCpu = process.cpuUsage(benchCpuAtStart);
    sampling = false;
    await sampler;

    const emu = JSON.parse(await fetchText(`${emulator.url}/_emulator/stats`)) as { requests: number; completed: number; rateLimited: number; maxInFlight: number };
    const brokerTexts = await Promise.all(sys.brokers().map((a) => fetchText(`http://${a}/metrics`)));
    const brokerSum = (f: (text: string) => number) => brokerTexts.reduce((x, t) => x + f(t), 0);
    const brokerRateLimited = brokerSum((t) => gauge(t, 'llm_upstream_rate_limited_total'));
    const cacheLookups = (result: string) => brokerSum((t) => labelled(t, 'llm_cache_lookups_total', `result="${result}"`));
    const profile = runTimingMedians(sys.orchestratorLogs(), /^((planner|critic|host|reporter)\.r1\.(start|first_token|done)|store\.(history|flush)\.end|total)$/);

    const by = (o: Outcome) => arrivals.filter((a) => a.outcome === o);
    const completed = by('completed');
    const errors = arrivals.filter((a) => ['failed', 'http_error', 'stream_error'].includes(a.outcome ?? ''));
    const unfinished = by('unfinished');
    const pct = (n: number) => round((100 * n) / Math.max(1, arrivals.length), 2);
    const dist = (xs: number[]) => ({ p50: briefS(percentile(xs, 50)), p95: briefS(percentile(xs, 95)), p99: briefS(percentile(xs, 99)), max: briefS(Math.max(0, ...xs)) });
    const defined = (xs: (number | undefined)[]) => xs.filter((x): x is number => x !== undefined);
    // How honest the `queued` estimates were: the actual wait from the queued event to the first
    // token, less the emulator's time to first token (fixed here, TTFT_MS scaled), against the estimate.
    const ttftWallMs = TTFT_MS * TIME_SCALE;
    const estimated = arrivals.filter((a) => a.queuedEstimateMs !== undefined && a.firstTokenMs !== undefined);
    const estimateError = (a: Arrival) => (a.firstTokenMs! - a.queuedAtMs! - ttftWallMs) - a.queuedEstimateMs!;
    const queuedAtS = (a: Arrival) => briefS(a.scheduled - loadStarted + a.queuedAtMs!);
    /** |error| percentiles, mean signed error, and how many waited > 4 brief-s longer (told short) or shorter (told long) than told. */
    const errorSummary = (as: Arrival[]) => {
      const xs = as.map(estimateError);
      return {
        ...dist(xs.map(Math.abs)), n: xs.length, meanSigned: briefS(xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length)),
        toldShortBy4S: xs.filter((x) => briefS(x) > 4).length, toldLongBy4S: xs.filter((x) => briefS(x) < -4).length,
      };
    };
    const unfinishedWhere: Record<string, number> = {};
    for (const a of unfinished) unfinishedWhere[a.unfinishedIn ?? 'sending'] = (unfinishedWhere[a.unfinishedIn ?? 'sending'] ?? 0) + 1;
    const failureKinds: Record<string, number> = {};
    for (const a of errors) {
      const code = /"code":"([^"]+)"/.exec(a.detail ?? '')?.[1] ?? a.detail?.slice(0, 60) ?? '';
      const kind = `${a.outcome}${a.status ? ` ${a.status}` : ''} ${code}`.trim();
      failureKinds[kind] = (failureKinds[kind] ?? 0) + 1;
    }
    // Quota use: upstream requests per brief-minute of the whole load (arrivals + drain) against the RPM.
    const briefMinutes = loadWallS / (minuteMs / 1000);
    const callsPerCompletedRun = round(emu.completed / Math.max(1, completed.length), 2);
    const quotaAllowsRuns = (LLM_RPM * briefMinutes) / Math.max(1, callsPerCompletedRun);
    // The upstream while the messages arrived (the emulator's own counts): how busy its concurrency
    // limit kept it, and how much of its RPM it served. Ramp-up and drain, which the whole-window
    // figure above counts, are outside.
    const whileArriving = timeline.filter((x) => x.tBriefS <= briefS(arrivalsWallS * 1000) && x.upstreamInFlight !== undefined);
    const arrivingSpanMin = whileArriving.length > 1 ? (whileArriving.at(-1)!.tBriefS - whileArriving[0]!.tBriefS) / 60 : 0;
    const upstreamWhileArriving = {
      busyPct: round((100 * whileArriving.reduce((sum, x) => sum + x.upstreamInFlight!, 0)) / Math.max(1, whileArriving.length * LLM_MAX_CONCURRENT), 1),
      rpmUsedPct: arrivingSpanMin > 0 ? round((100 * (whileArriving.at(-1)!.upstreamRequests! - whileArriving[0]!.upstreamRequests!)) / (LLM_RPM * arrivingSpanMin), 1) : 0,
    };
    // Goodput in steady state, from the median run time after the first arrival to the last arrival
    // (stats.ts, steadyGoodput): a saturated upstream's use of its binding limit, or the share of the
    // runs that arrived then that completed when the demand is below the quota. The whole-window
    // figure above also counts the ramp-up and the drain, when the upstream is idle for want of work.
    const steady = steadyGoodput({
      arrivals: arrivals.map((a) => ({ atS: briefS(a.scheduled - loadStarted), completed: a.outcome === 'completed' })),
      fromS: briefS(percentile(completed.map((a) => a.endMs!), 50)), toS: briefS(arrivalsWallS * 1000),
      samples: timeline.filter((x) => x.upstreamInFlight !== undefined).map((x) => ({ tS: x.tBriefS, inFlight: x.upstreamInFlight!, requests: x.upstreamRequests! })),
      rpm: LLM_RPM, maxConcurrent: LLM_MAX_CONCURRENT, callsPerRun: callsPerCompletedRun, offeredPerMinute: USERS * MSGS_PER_MIN,
    });
    // Under --chaos: what each fault cost, from the clients' own records.
    const chaos = CHAOS ? (() => {
      const records = arrivals.map((a) => ({
        scheduledMs: a.scheduled - loadStarted, endedMs: a.endMs === undefined ? undefined : a.scheduled - loadStarted + a.endMs,
        outcome: a.outcome ?? 'unfinished', lost: a.lost, duplicated: a.duplicated,
      }));
      const impact = faultImpact(records, faultRecords).map((i) => {
        const failedPct = round((100 * i.runsFailed) / Math.max(1, i.runs), 2);
        const restart = i.label.startsWith('restart');
        return {
          ...i, atBriefS: briefS(i.atMs), errorsForBriefS: briefS(i.errorsForMs), failedPct,
          met: (restart ? failedPct < CHAOS_GOALS.restartFailedPct : i.runsFailed === 0) && i.eventsLost === 0 && i.eventsDuplicated === 0 &&
            briefS(i.errorsForMs) <= CHAOS_GOALS.recoveredWithinS,
        };
      });
      return { replicas: CHAOS_REPLICAS, goals: CHAOS_GOALS, faults: faultRecords, impact };
    })() : undefined;
    // Where the machine's CPU went during the load: what the mesh costs per completed run, which
    // says how many cores a load needs (the load generator and the emulator count apart).
    const cpuSeconds: Record<string, number> = {};
    for (const p of cpuProcs) {
      const name = p.name.replace(/-\d+$/, ''); // "edge-42197": the name, not its port
      cpuSeconds[name] = round((cpuSeconds[name] ?? 0) + (cpuAtEnd.get(p.pid) ?? 0) - (cpuAtStart.get(p.pid) ?? 0), 1);
    }
    cpuSeconds['load generator'] = round((benchCpu.user + benchCpu.system) / 1e6, 1);
    const meshCpuS = (sys.services ?? []).reduce((sum, p) => sum + (cpuAtEnd.get(p.pid) ?? 0) - (cpuAtStart.get(p.pid) ?? 0), 0);
    const cpu = {
      cores: os.cpus().length, seconds: cpuSeconds,
      machineCoresBusy: round(Object.values(cpuSeconds).reduce((a, b) => a + b, 0) / loadWallS, 2),
      // The five services together (with Redis, the database and the emulator outside it).
      ...(sys.services ? { meshMsPerCompletedRun: Math.round((1000 * meshCpuS) / Math.max(1, completed.length)) } : {}),
    };
    const figures = {
      scenario: 'seed', mode: 'open-loop', users: USERS, ...(AUTOSCALE ? {} : { replicas: REPLICAS }), timeScale: TIME_SCALE, arrivalsWallS: round(arrivalsWallS), loadWallS: round(loadWallS),
      briefMinutes: round(briefMinutes, 2), msgsPerMinPerUser: MSGS_PER_MIN, offeredPerBriefMinute: round(USERS * MSGS_PER_MIN, 1),
      maxQueueWaitBriefS: MAX_QUEUE_WAIT_S,
      limits: { rpm: LLM_RPM, tpm: LLM_TPM, maxConcurrent: LLM_MAX_CONCURRENT, sseMaxStreams: SSE_MAX_STREAMS },
      arrivals: {
        offered: arrivals.length, completed: completed.length, shed: by('shed').length, degraded: by('degraded').length, failed: by('failed').length,
        cancelled: by('cancelled').length, httpErrors: by('http_error').length, streamErrors: by('stream_error').length, unfinished: unfinished.length,
        unfinishedWhere, sseLimited: arrivals.filter((a) => a.sseLimited).length,
      },
      pct: { completed: pct(completed.length), shed: pct(by('shed').length), degraded: pct(by('degraded').length), errors: pct(errors.length), unfinished: pct(unfinished.length) },
      events: {
        received: arrivals.reduce((s, a) => s + a.events, 0), lost: arrivals.reduce((s, a) => s + a.lost, 0),
        duplicated: arrivals.reduce((s, a) => s + a.duplicated, 0), outOfOrder: arrivals.reduce((s, a) => s + a.outOfOrder, 0),
        reconnects: arrivals.reduce((s, a) => s + a.reconnects, 0),
      },
      briefS: {
        firstEvent: dist(defined(arrivals.map((a) => a.firstEventMs))),
        firstToken: dist(defined(arrivals.map((a) => a.firstTokenMs))),
        completedRun: dist(completed.map((a) => a.endMs!)),
        shedAnswer: dist(by('shed').map((a) => a.endMs!)),
        degradedAnswer: dist(by('degraded').map((a) => a.endMs!)),
        retryAfter: dist(by('shed').map((a) => (a.retryAfterS ?? 0) * 1000)),
        queuedEstimateError: {
          ...errorSummary(estimated),
          // Queued before the steady window and in it: the runs let in together at the start come
          // back with their later calls in one wave, which ranks ahead of the first calls queued
          // meanwhile and is the hardest to foresee (docs/benchmarks.md, "The wave foreseen").
          start: steady && errorSummary(estimated.filter((a) => queuedAtS(a) < steady.fromS)),
          steady: steady && errorSummary(estimated.filter((a) => queuedAtS(a) >= steady.fromS)),
        },
      },
      goodput: {
        completedPerBriefMinute: round(completed.length / briefMinutes, 1), callsPerCompletedRun, quotaAllowsRuns: round(quotaAllowsRuns, 0),
        pctOfQuota: round((100 * completed.length) / Math.max(1, quotaAllowsRuns), 1),
        upstreamRequests: emu.requests, upstreamRpmUsedPct: round((100 * emu.requests) / (LLM_RPM * briefMinutes), 1),
        whileArriving: upstreamWhileArriving,
        steady: steady && {
          fromBriefS: round(steady.fromS, 1), toBriefS: round(steady.toS, 1), completedPerBriefMinute: round(steady.completedPerMinute, 1),
          binding: steady.binding, meanCallBriefS: round(steady.meanCallS, 2), allowedRunsPerBriefMinute: round(steady.allowedPerMinute, 1), pct: round(steady.pct, 1),
        },
      },
      llmCache: {
        repeatShare: REPEAT_SHARE,
        hits: cacheLookups('hit'),
        stale: cacheLookups('stale'),
        misses: cacheLookups('miss'),
        hitRatePct: round((100 * cacheLookups('hit')) / Math.max(1, cacheLookups('hit') + cacheLookups('miss')), 1),
        tokensSaved: brokerSum((t) => gauge(t, 'llm_cache_tokens_saved_total')),
      },
      memory: { orchestratorPerActiveRun: memoryPerUnit(memory.orchestrator), edgePerOpenStream: memoryPerUnit(memory.edge) },
      upstream429: emu.rateLimited, brokerUpstream429: brokerRateLimited, upstreamMaxInFlight: emu.maxInFlight,
      peaks: { llmQueue: peaks.llmQueue, llmInFlight: peaks.llmInFlight, edgeOpenStreams: peaks.openStreams, samples: peaks.samples },
      orchestratorProfileMedianMs: profile,
      goals: GOALS,
      met: {
        no429: emu.rateLimited === 0,
        errors: pct(errors.length) < GOALS.errorRatePct,
        noEventsLostOrDuplicated: arrivals.every((a) => a.lost === 0 && a.duplicated === 0),
        ttfeP99: briefS(percentile(defined(arrivals.map((a) => a.firstEventMs)), 99)) < GOALS.ttfeP99S,
        completedP95: completed.length > 0 && briefS(percentile(completed.map((a) => a.endMs!), 95)) < GOALS.completedP95S,
        goodput: steady !== undefined && steady.pct >= GOALS.goodputPct,
      },
      failureKinds, cpu, timeline, logDir, ...(chaos ? { chaos } : {}),
      // How busy the machine was: figures measured beside other work are not the design's.
      machine: { cores: os.cpus().length, loadAvgStart: loadAvgStart.map((x) => round(x, 2)), loadAvgEnd: os.loadavg().map((x) => round(x, 2)) },
    };
    const scaling = AUTOSCALE ? autoscaleReport(timeline, arrivals, loadStarted, briefMinutes, Math.max(5, Math.round(DURATION_S / TIME_SCALE / 12))) : undefined;
    if (scaling) Object.assign(figures, { autoscaling: scaling });
    const ok = (b: boolean) => (b ? 'met' : 'MISSED');
    const d = figures.briefS;
    console.log(`seed benchmark (open loop): ${USERS} users × ${MSGS_PER_MIN} messages per brief-minute, Poisson arrivals for ${DURATION_S} s wall (${round(DURATION_S / (minuteMs / 1000), 2)} brief-minutes), drain ≤ ${DRAIN_S} brief-s`);
    console.log(`  time scale ${TIME_SCALE} (1 brief-minute = ${minuteMs / 1000} s wall); figures in brief time; upstream ${LLM_RPM} RPM, ${LLM_MAX_CONCURRENT} concurrent; admission control: ${MAX_QUEUE_WAIT_S ? `refuses above ${MAX_QUEUE_WAIT_S} brief-s of estimated LLM queue wait` : 'off'}`);
    const A = figures.arrivals;
    console.log(`  arrivals ${A.offered}: completed ${A.completed} (${figures.pct.completed}%), shed with Retry-After ${A.shed} (${figures.pct.shed}%), degraded ${A.degraded}, failed ${A.failed}, HTTP errors ${A.httpErrors}, broken streams ${A.streamErrors}, unfinished ${A.unfinished} ${JSON.stringify(unfinishedWhere)}, waited at the edge's SSE limiter ${A.sseLimited}`);
    console.log(`  goodput over the whole window (ramp-up and drain included): ${figures.goodput.completedPerBriefMinute} completed runs per brief-minute = ${figures.goodput.pctOfQuota}% of what ${LLM_RPM} RPM allows at ${callsPerCompletedRun} calls per run; upstream RPM used ${figures.goodput.upstreamRpmUsedPct}%; upstream 429s ${emu.rateLimited}`);
    if (steady) {
      console.log(`  goodput in steady state (${round(steady.fromS)}–${round(steady.toS)} brief-s): ${round(steady.completedPerMinute, 1)} completed runs per brief-minute; ${round(steady.pct, 1)}% of `
        + (steady.binding === 'demand' ? `the runs that arrived in the window completed (${USERS * MSGS_PER_MIN} offered a brief-minute; the quota allows ${round(steady.allowedPerMinute, 1)})`
          : `what the quota allows, ${round(steady.allowedPerMinute, 1)} at ${callsPerCompletedRun} calls per run: the upstream's use of its ${steady.binding === 'rpm' ? `${LLM_RPM} RPM` : `${LLM_MAX_CONCURRENT} concurrent calls (${round(steady.meanCallS, 2)} s each)`}`));
    } else console.log('  goodput in steady state: no steady window (arrivals ended before the median run completed)');
    console.log(`  while messages arrived: the upstream served ${figures.goodput.whileArriving.busyPct}% of its ${LLM_MAX_CONCURRENT} concurrent calls on average and ${figures.goodput.whileArriving.rpmUsedPct}% of its RPM (the emulator's counts)`);
    console.log(`  first event p50/p95/p99 ${d.firstEvent.p50}/${d.firstEvent.p95}/${d.firstEvent.p99} s; first token ${d.firstToken.p50}/${d.firstToken.p95}/${d.firstToken.p99} s; completed runs ${d.completedRun.p50}/${d.completedRun.p95}/${d.completedRun.p99} s; shed answers ${d.shedAnswer.p50}/${d.shedAnswer.p99} s (Retry-After p50 ${d.retryAfter.p50} s)`);
    console.log(`  queued estimates vs the actual wait (to the first token, less the emulator's ${TTFT_MS / 1000} s to it): |error| p50 ${d.queuedEstimateError.p50} s, p95 ${d.queuedEstimateError.p95} s, mean signed ${d.queuedEstimateError.meanSigned} s (n ${d.queuedEstimateError.n})` +
      (['start', 'steady'] as const).map((w) => {
        const e = d.queuedEstimateError[w];
        return e ? `; queued ${w === 'start' ? 'before' : 'in'} the steady window: |error| p50 ${e.p50} s, p95 ${e.p95} s, mean signed ${e.meanSigned} s, told > 4 s short / long ${e.toldShortBy4S} / ${e.toldLongBy4S} (n ${e.n})` : '';
      }).join(''));
    console.log(`  events: ${figures.events.received} received, ${figures.events.lost} lost, ${figures.events.duplicated} duplicated, ${figures.events.outOfOrder} out of order, ${figures.events.reconnects} reconnects`);
    const C = figures.llmCache;
    console.log(`  LLM response cache (${round(100 * REPEAT_SHARE, 0)}% of messages repeat an earlier one): hit rate ${C.hitRatePct}% of the calls that asked (${C.hits} hits, ${C.stale} stale, ${C.misses} misses), ${C.tokensSaved} tokens saved`);
    console.log(`  peaks: LLM queue ${peaks.llmQueue}, LLM in flight ${peaks.llmInFlight}, edge open streams ${peaks.openStreams}`);
    console.log(`  CPU over the load (s): ${Object.entries(cpu.seconds).map(([n, v]) => `${n} ${v}`).join(', ')}; ${cpu.machineCoresBusy} of ${cpu.cores} cores busy on average`
      + (cpu.meshMsPerCompletedRun !== undefined ? `; the five services ${cpu.meshMsPerCompletedRun} ms per completed run` : ''));
    const M = figures.memory;
    console.log(`  memory: orchestrators ${describeMemory(M.orchestratorPerActiveRun, 'active run')}; edges ${describeMemory(M.edgePerOpenStream, 'open stream')}`);
    console.log(`  goals: 0 upstream 429 ${ok(figures.met.no429)}; errors < 1% (${figures.pct.errors}%) ${ok(figures.met.errors)}; 0 events lost/duplicated ${ok(figures.met.noEventsLostOrDuplicated)}; first event p99 < 2 s ${ok(figures.met.ttfeP99)}; completed p95 < 60 s ${ok(figures.met.completedP95)}; goodput ≥ 95% of what the quota allows in steady state ${ok(figures.met.goodput)}`);
    if (Object.keys(failureKinds).length) console.log(`  failures by kind: ${Object.entries(failureKinds).sort((x, y) => y[1] - x[1]).map(([k, n]) => `${n}× ${k}`).join(' | ')}`);
    if (scaling) {
      const short: Record<string, string> = { edge: 'edge', orchestrator: 'orch', 'llm-broker': 'broker', 'tool-service': 'tools', store: 'store' };
      console.log(`  autoscaling (HPAs of deploy/k8s/overlays/production), per ${scaling.windowBriefS} brief-s:`);
      console.log(`    ${'t (brief s)'.padEnd(12)}${'arrivals'.padStart(9)}${'done'.padStart(6)}${'run p50'.padStart(9)}${'runs'.padStart(6)}${'queue'.padStart(7)}${'calls'.padStart(7)}  ${SERVICES.map((x) => short[x]!.padStart(7)).join('')}`);
      for (const w of scaling.windows) {
        console.log(`    ${String(w.fromBriefS).padEnd(12)}${String(w.arrivals).padStart(9)}${String(w.completed).padStart(6)}${String(w.runP50S ?? '-').padStart(9)}${String(w.runsInFlight).padStart(6)}` +
          `${String(w.llmQueueMax).padStart(7)}${String(w.llmInFlightMean).padStart(7)}  ${SERVICES.map((x) => `${'#'.repeat(w.replicas[x] ?? 0)}`.padStart(7)).join('')}`);
      }
      console.log('    what the HPAs read (current/target → desired replicas), at the end of each window:');
      for (const w of scaling.windows) console.log(`    ${String(w.fromBriefS).padEnd(6)}${SERVICES.map((x) => `${short[x]}: ${w.hpas[x] ?? '?'}`).join(' | ')}`);
      for (const x of SERVICES) {
        const p = scaling.perService[x]!;
        console.log(`    ${x}: ${p.floor} → max ${p.max} (mean ${p.mean})${p.firstScaleUpBriefS !== null ? `, first scale-up at ${p.firstScaleUpBriefS} brief-s, max at ${p.maxReachedBriefS} brief-s` : ', never scaled up'}`);
      }
      const g = scaling.goodputPerReplica;
      console.log(`    goodput ${g.completedPerBriefMinute} completed runs per brief-minute over a mean ${g.meanReplicas} replicas: ${g.perReplica} per replica`);
    }
    if (chaos) {
      console.log(`  chaos (${CHAOS_REPLICAS} replicas of every service): per fault, the runs in flight when it struck or sent before the next one`);
      for (const i of chaos.impact) {
        const f = chaos.faults.find((x) => x.atMs === i.atMs);
        console.log(`    ${i.atBriefS.toFixed(0).padStart(5)} s  ${i.label.padEnd(26)} runs ${String(i.runs).padStart(4)}, failed ${i.runsFailed} (${i.failedPct}%), events lost/duplicated ${i.eventsLost}/${i.eventsDuplicated}, errors for ${i.errorsForBriefS} s${f?.error ? `; the fault itself failed: ${f.error}` : ''} — ${ok(i.met)}`);
      }
    }
    const report = await writeSeedReport({
      title: `Seed benchmark: ${USERS} users, open loop${AUTOSCALE ? ', autoscaled by the HPAs of deploy/k8s' : ''}${CHAOS ? `, with faults (${CHAOS_REPLICAS} replicas of every service)` : REPLICAS > 1 ? `, ${REPLICAS} replicas of every service` : ''}`,
      facts: [
        `${USERS} users × ${MSGS_PER_MIN} messages per brief-minute (Poisson), ${DURATION_S} s wall of arrivals, drain ≤ ${DRAIN_S} brief-s; time scale ${TIME_SCALE}; figures in brief time`,
        `upstream quota ${LLM_RPM} RPM, ${LLM_MAX_CONCURRENT} concurrent; admission control ${MAX_QUEUE_WAIT_S ? `above ${MAX_QUEUE_WAIT_S} brief-s of estimated queue wait` : 'off'}`,
        `machine: ${figures.machine.cores} cores, load average ${figures.machine.loadAvgStart[0]} at the start and ${figures.machine.loadAvgEnd[0]} at the end`,
        `${new Date().toISOString()}; logs in ${logDir}`,
      ],
      limits: { rpm: LLM_RPM, maxConcurrent: LLM_MAX_CONCURRENT },
      timeline,
      arrivals: arrivals.map((a) => ({ tBriefS: briefS(a.scheduled - loadStarted), outcome: a.outcome ?? 'unfinished', runS: a.outcome === 'completed' ? briefS(a.endMs!) : undefined })),
      faults: (chaos?.impact ?? []).map((i) => ({ tBriefS: i.atBriefS, label: `${i.label}: ${i.runsFailed} failed` })),
      outcomes: [['completed', A.completed], ['shed (503 + Retry-After)', A.shed], ['degraded', A.degraded], ['failed', A.failed], ['cancelled', A.cancelled], ['HTTP errors', A.httpErrors], ['broken streams', A.streamErrors], ['unfinished', A.unfinished]],
      goals: [
        ['0 upstream 429s', String(emu.rateLimited), figures.met.no429],
        [`errors < ${GOALS.errorRatePct} %`, `${figures.pct.errors} %`, figures.met.errors],
        ['0 events lost or duplicated', `${figures.events.lost} / ${figures.events.duplicated}`, figures.met.noEventsLostOrDuplicated],
        [`first event p99 < ${GOALS.ttfeP99S} s`, `${d.firstEvent.p99} s`, figures.met.ttfeP99],
        [`completed runs p95 < ${GOALS.completedP95S} s`, `${d.completedRun.p95} s`, figures.met.completedP95],
        [`goodput ≥ ${GOALS.goodputPct} % of what the quota allows (steady state)`, steady ? `${round(steady.pct, 1)} %` : 'no steady window', figures.met.goodput],
      ],
    }, logDir);
    console.log(`  report: ${report.html}${report.png ? ` and ${report.png}` : ` (no PNG: ${report.pngError})`}`);
    console.log(`  logs: ${logDir}`);
    console.log(JSON.stringify({ ...figures, report }));
  } finally {
    abort.abort();
    await system?.stop();
    for (const p of procs.reverse()) await p.stop();
  }
}

/**
 * The autoscaled run over time, in windows of `windowS` brief-seconds: arrivals, completions and
 * their median run time, the LLM queue and calls in flight, and each service's replicas at the
 * window's end; when each service first scaled up, and goodput per replica.
 */
function autoscaleReport(timeline: { tBriefS: number; llmQueue: number; llmInFlight: number; inFlightRuns: number; replicas?: Record<string, number>; hpas?: Record<string, string> }[],
  arrivals: Arrival[], loadStarted: number, briefMinutes: number, windowS: number) {
  const at = (a: Arrival, ms: number) => briefS(a.scheduled + ms - loadStarted);
  const end = Math.max(...timeline.map((t) => t.tBriefS), 0);
  const windows = [];
  for (let from = 0; from < end; from += windowS) {
    const to = from + windowS;
    const samples = timeline.filter((t) => t.tBriefS >= from && t.tBriefS < to);
    if (!samples.length) continue;
    const done = arrivals.filter((a) => a.outcome === 'completed' && at(a, a.endMs!) >= from && at(a, a.endMs!) < to);
    windows.push({
      fromBriefS: from,
      arrivals: arrivals.filter((a) => at(a, 0) >= from && at(a, 0) < to).length,
      completed: done.length,
      runP50S: done.length ? briefS(percentile(done.map((a) => a.endMs!), 50)) : null,
      runsInFlight: Math.max(...samples.map((t) => t.inFlightRuns)),
      llmQueueMax: Math.max(...samples.map((t) => t.llmQueue)),
      llmInFlightMean: round(samples.reduce((x, t) => x + t.llmInFlight, 0) / samples.length, 1),
      replicas: samples[samples.length - 1]!.replicas ?? {},
      hpas: samples[samples.length - 1]!.hpas ?? {},
    });
  }
  const perService = Object.fromEntries(SERVICES.map((s) => {
    const series = timeline.filter((t) => t.replicas).map((t) => ({ t: t.tBriefS, n: t.replicas![s]! }));
    const floor = series[0]?.n ?? 0;
    const max = Math.max(floor, ...series.map((x) => x.n));
    const mean = series.reduce((x, y) => x + y.n, 0) / Math.max(1, series.length);
    return [s, {
      floor, max, mean: round(mean, 2),
      firstScaleUpBriefS: series.find((x) => x.n > floor)?.t ?? null,
      maxReachedBriefS: max > floor ? series.find((x) => x.n === max)!.t : null,
    }];
  }));
  const completed = arrivals.filter((a) => a.outcome === 'completed').length;
  const meanTotal = Object.values(perService).reduce((x, p) => x + p.mean, 0);
  return {
    windowBriefS: windowS, windows, perService,
    goodputPerReplica: { completedPerBriefMinute: round(completed / briefMinutes, 1), meanReplicas: round(meanTotal, 1), perReplica: round(completed / briefMinutes / Math.max(1, meanTotal), 2) },
  };
}

async function createConversation(edgeUrl: string, token: string, i: number, signal?: AbortSignal): Promise<string> {
  // PUT with an id of ours: idempotent, so nginx sends it to another edge if the first dies holding it.
  const res = await fetch(`${edgeUrl}/api/conversations/${newId()}`, {
    method: 'PUT', signal, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ title: `seed ${i}` }),
  });
  if (res.status !== 201) throw new Error(`HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
  return ((await res.json()) as { id: string }).id;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
