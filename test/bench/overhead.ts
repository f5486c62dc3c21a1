// Benchmark `overhead`: the latency and throughput a gateway adds in front of one fast, constant
// upstream (the emulator), for the mesh (edge facade → llm-broker → emulator, and an edge running the broker itself) side by side with
// Portkey's gateway and LiteLLM's proxy, all against the same emulator in one run, with the
// emulator called directly as the baseline. Requests are identical small chat completions,
// non-streamed and streamed; with BENCH_MODES=embeddings, OpenAI embeddings calls (two short texts,
// vectors as base64, as OpenAI's SDKs ask for them) instead, or beside them.
//
// Phases, per mode (non-stream, stream):
//   1. latency: one request at a time, targets interleaved round-robin (so drift hits all alike);
//      added latency = a target's percentile − the direct baseline's percentile;
//   2. saturation: a fixed number of concurrent callers for a bounded time, per target; requests
//      completed per second. In rounds (BENCH_ROUNDS), each round every target once, the order
//      turned by one each round (so that no target is always the first; each still follows the
//      same other, a rotation): the figure is the median round, and every round is reported. The emulator counts the calls of each saturation phase it got streamed
//      and whole: the JSON's `upstreamRequests` says how each target called the upstream per row.
//      Each round also reports the CPU time per completed call (user + system from /proc, each
//      process with its descendants) of the target's own processes, of those it uses beside them
//      (the mesh's Redis and Jaeger), of the emulator and of the load generator: all share the CPUs.
//      The mesh's throughput is also compared with each peer's round by round (the ratio within a
//      round, then their median), which cancels most of the host's drift between rounds.
//   2b. latency under load, open loop: requests sent at a mean rate (BENCH_LOAD_RPS) whatever the
//      answers, each one's latency counted from its scheduled send time, per target in turn (in
//      rounds, the order turned each round, the samples pooled); those unanswered 10 s after the
//      last send are reported. Where the sequential phase sees every process asleep between calls
//      (~100 ms apart per target), this is a gateway among other traffic: calls ~1000/rps ms apart.
//      The arrivals are a Poisson process, as in the other open-loop benchmarks, seeded by round so
//      that every target is offered the same schedule. (Until 2026-12-08 they came every 20 ms
//      exactly: with calls of ~20 ms, each call's arrival then met its predecessor's last
//      millisecond, or just missed it, by a phase that a tenth of a millisecond moved, and the
//      median swung with it: BENCH_LOAD_ARRIVALS=periodic keeps that schedule.)
//   An open-loop pass's calls unanswered 10 s after its last send are called off (their connections
//      closed): LiteLLM, overrun by the streamed open loop, went on serving its backlog for 20 s and
//      more into the passes after its own. After each open-loop pass and each saturation round (and
//      before the sequential phase), the benchmark waits until the machine is quiet (fewer than
//      BENCH_QUIET_CPUS, 0.1, busy over half a second; at most 20 s), so that no pass runs beside
//      what the one before it left running (a peer's backlog, its logging): how long each wait
//      took, per target, is in the output and the JSON.
//   3. a probe of the machine: a Redis round trip back to back and after 20 ms idle (the mesh
//      makes one before each upstream call; in the sequential phase every process sleeps between calls).
// What ships is measured: the mesh traces every call to a Jaeger started here and logs at `info`.
// Peers are pinned to exact versions (recorded in the JSON), installed on first use under
// ~/.cache/agent-mesh/peers/<name>-<version> (idempotent); one that cannot be installed or started
// is reported as such, never with a made-up figure.
// Prints a human summary and, as its LAST line, one JSON object of the figures.
//
// Options (env): BENCH_LATENCY_REQUESTS (non-streamed, 4000: the p99 of 150 calls was one or two calls; of 400, the 4th slowest, whose ratio
// to a peer's moved ×0.69–×1.89 between runs of one build; of 1,000, the 10th slowest, still ×0.30–1.89 over thirteen runs, its
// bootstrap interval spanning ×1 in most; each p99 ratio comes with that interval), BENCH_LATENCY_REQUESTS_STREAM (1000: streamed,
// the peers are tens of milliseconds apart and 1,000 calls settle the ratio), BENCH_CONCURRENCY (32), BENCH_SECONDS (8),
// BENCH_ROUNDS (3: one round's figure moved by ±15 % between runs on a 2-CPU machine), BENCH_WARMUP_SECONDS (15: each
// target's warm-up at saturation per mode, before its figures; 0: none. After 5 s the inline edge's
// rps still rose over the three rounds, 1,226 / 1,284 / 1,338, while Portkey's held flat),
// BENCH_TARGETS (comma list of mesh,mesh-inline,portkey,litellm,direct; default all), BENCH_EDGE_WAIT_S (1200),
// BENCH_LOAD_RPS (50; 0: no open-loop phase), BENCH_LOAD_ARRIVALS (poisson; periodic: one every 1000/rps ms),
// BENCH_LOAD_SECONDS (6 per target and round), BENCH_LOAD_ROUNDS (5:
// 1,500 calls per target and mode, the p99 the 15th slowest; of 3 rounds, 900 calls, a run's p99 ratio
// moved ×0.51–1.78 between runs of one build, its interval as wide as ×0.97–2.26),
// BENCH_LOG_LEVEL (the mesh's LOG_LEVEL, info), BENCH_TRACING (1: the mesh exports its traces to
// Jaeger, as it ships; 0: off), BENCH_MODES (comma list of nonstream,stream,embeddings: the rows, in
// that order; default nonstream,stream), BENCH_LATENCY_REQUESTS_EMBED (1000: embeddings calls, sequential).
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { Agent, request } from 'undici';
import { bootstrapInterval, machineCpuSeconds, percentile, seededRandom, treeCpuSeconds } from './stats';
import { emulatorStats, mintToken, startEmulator, startFerret, startJaeger, startMesh, startRedis, testDir, type Mesh, type Proc } from '../support';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js') as {
  freePort(): Promise<number>;
  launch(name: string, cmd: string, args: string[], o: { env?: Record<string, string>; logDir: string; cwd?: string }): Proc;
  waitFor(what: string, check: () => Promise<boolean>, o: { timeoutMs?: number; intervalMs?: number; proc?: Proc['proc'] }): Promise<void>;
};

const LATENCY_REQUESTS: Record<Mode, number> = {
  nonstream: Number(process.env.BENCH_LATENCY_REQUESTS ?? 4000),
  stream: Number(process.env.BENCH_LATENCY_REQUESTS_STREAM ?? 1000),
  embeddings: Number(process.env.BENCH_LATENCY_REQUESTS_EMBED ?? 1000),
};
const LATENCY_WARMUP_CALLS = 15;
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 15);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const EDGE_WAIT_S = Number(process.env.BENCH_EDGE_WAIT_S ?? 1200);
const ONLY = new Set((process.env.BENCH_TARGETS ?? 'mesh,mesh-inline,portkey,litellm,direct').split(',').map((s) => s.trim()));
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? 'info';
const LOAD_RPS = Number(process.env.BENCH_LOAD_RPS ?? 50);
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 6);
const LOAD_ROUNDS = Math.max(1, Number(process.env.BENCH_LOAD_ROUNDS ?? 5));
const LOAD_ARRIVALS = (process.env.BENCH_LOAD_ARRIVALS ?? 'poisson') as 'poisson' | 'periodic';
if (LOAD_ARRIVALS !== 'poisson' && LOAD_ARRIVALS !== 'periodic') throw new Error(`BENCH_LOAD_ARRIVALS: ${String(LOAD_ARRIVALS)}: expected poisson or periodic`);
const TRACING = process.env.BENCH_TRACING !== '0';
const QUIET_CPUS = Number(process.env.BENCH_QUIET_CPUS ?? 0.1);
const QUIET_WINDOW_MS = 500;
const QUIET_MAX_MS = 20_000;
const PEERS = path.join(process.env.MESH_CACHE ?? path.join(os.homedir(), '.cache', 'agent-mesh'), 'peers');
const MODEL = 'emulator-1';
/** The embeddings row's model: every target passes it to the emulator, which serves it. */
const EMBED_MODEL = 'text-embedding-3-small';
const API_KEY = 'bench-key';
const EMULATOR_ENV = {
  // Fast and constant: what is measured is the gateways, not the model.
  EMULATOR_TTFT_MS: '10',
  EMULATOR_TOKENS_PER_SEC: '2000',
  EMULATOR_COMPLETION_TOKENS: '16',
  EMULATOR_SEED: '3',
};

const ALL_MODES = ['nonstream', 'stream', 'embeddings'] as const;
type Mode = (typeof ALL_MODES)[number];
const MODES: Mode[] = (() => {
  const asked = (process.env.BENCH_MODES ?? 'nonstream,stream').split(',').map((m) => m.trim());
  const unknown = asked.filter((m) => !(ALL_MODES as readonly string[]).includes(m));
  if (unknown.length > 0 || asked.length === 0) throw new Error(`BENCH_MODES: ${unknown.join(', ') || '(empty)'}: expected a comma list of ${ALL_MODES.join(', ')}`);
  return ALL_MODES.filter((m) => asked.includes(m));
})();

interface Target {
  name: 'direct' | 'mesh' | 'mesh-inline' | 'portkey' | 'litellm';
  url: string;
  headers: Record<string, string>;
  /** Per concurrent caller of the saturation phase, in place of `headers` (the mesh: a user each). */
  callerHeaders?: Record<string, string>[];
  model: string;
  /** Its processes on the call's path (each with its descendants), and those it uses beside (the mesh: Redis, Jaeger). */
  pids: { own: number[]; beside?: number[] };
}

interface LatencyFigures { n: number; errors: number; p50: number; p99: number; ttftP50?: number; ttftP99?: number }
/** Open-loop figures of one target and mode, every round's samples pooled: latencies from each request's scheduled send time. */
interface LoadFigures { rps: number; arrivals: 'poisson' | 'periodic'; seconds: number; rounds: number; offered: number; completed: number; errors: number; unfinished: number; p50: number; p99: number }
/**
 * CPU time per completed call (ms, user + system, from /proc): the target's own processes, those it
 * uses beside them (the mesh's Redis and Jaeger), the emulator, and the load generator.
 */
interface CpuPerCall { own: number; beside: number; emulator: number; client: number }
interface RoundFigures { completed: number; errors: number; rps: number; p50: number; cpuMsPerCall: CpuPerCall }
/** The median round's rps, p50 and CPU per call (each the median of the rounds' own), the sums, and every round in the order run. */
interface SaturationFigures { concurrency: number; seconds: number; completed: number; errors: number; rps: number; p50: number; cpuMsPerCall: CpuPerCall; rounds: RoundFigures[] }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

// One keep-alive pool for every target, sized for the saturation phase.
const dispatcher = new Agent({ connections: CONCURRENCY * 2, keepAliveTimeout: 30_000, pipelining: 1 });

/** The mesh's Redis (for the round-trip probe). */
let meshRedisUrl: string | undefined;

/**
 * The machine's cost of a Redis round trip (PING, µs, p50 and p90 of 200), back to back and after
 * 20 ms of idleness: the sequential phase's case, where every process on the path sleeps between
 * calls and a round trip includes waking them. Every call of the mesh makes one such round trip
 * before its upstream call (the user's limits and the quota's admission); the peers make none.
 */
async function redisRoundTrips(url: string): Promise<{ backToBackUs: { p50: number; p90: number }; afterIdleUs: { p50: number; p90: number } }> {
  const r = new Redis(url, { lazyConnect: true });
  await r.connect();
  try {
    const probe = async (idleMs: number) => {
      const us: number[] = [];
      for (let i = 0; i < 220; i += 1) {
        if (idleMs > 0) await sleep(idleMs);
        const t = process.hrtime.bigint();
        await r.ping();
        if (i >= 20) us.push(Number(process.hrtime.bigint() - t) / 1000);
      }
      return { p50: Math.round(percentile(us, 50)), p90: Math.round(percentile(us, 90)) };
    };
    return { backToBackUs: await probe(0), afterIdleUs: await probe(20) };
  } finally {
    r.disconnect();
  }
}

const body = (stream: boolean, i: number) =>
  JSON.stringify({
    model: MODEL,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
    max_tokens: 32,
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: `In two sentences, why do gateways add latency? (#${i % 50})` },
    ],
  });

const embedBody = (i: number) =>
  JSON.stringify({ model: EMBED_MODEL, encoding_format: 'base64', input: [`Why do gateways add latency? (#${i % 50})`, 'A second, shorter text.'] });

/** One completion (or embeddings call); resolves to its latency (and time to first content for streams), or throws. */
async function complete(t: Target, mode: Mode, i: number, caller = 0, signal?: AbortSignal): Promise<{ ms: number; ttftMs?: number }> {
  const started = performance.now();
  const res = await request(`${t.url}/${mode === 'embeddings' ? 'embeddings' : 'chat/completions'}`, {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json', ...(t.callerHeaders?.[caller] ?? t.headers) },
    body: mode === 'embeddings' ? embedBody(i) : body(mode === 'stream', i).replace(`"${MODEL}"`, JSON.stringify(t.model)),
    dispatcher,
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  if (res.statusCode !== 200) {
    const text = await res.body.text().catch(() => '');
    throw new Error(`${t.name} ${res.statusCode}: ${text.slice(0, 200)}`);
  }
  if (mode === 'embeddings') {
    const json = (await res.body.json()) as { data?: Array<{ embedding?: string | number[] }> };
    if (json.data?.length !== 2 || !json.data.every((d) => (d.embedding?.length ?? 0) > 0)) throw new Error(`${t.name}: not two vectors in the answer`);
    return { ms: performance.now() - started };
  }
  if (mode === 'nonstream') {
    const json = (await res.body.json()) as { choices?: Array<{ message?: { content?: string } }> };
    if (!json.choices?.[0]?.message?.content) throw new Error(`${t.name}: no content in the answer`);
    return { ms: performance.now() - started };
  }
  let ttftMs: number | undefined;
  let text = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    text += decoder.decode(chunk, { stream: true });
    if (ttftMs === undefined && /"content":"[^"]/.test(text)) ttftMs = performance.now() - started;
  }
  if (!text.includes('[DONE]')) throw new Error(`${t.name}: stream ended without [DONE]`);
  if (ttftMs === undefined) throw new Error(`${t.name}: stream carried no content`);
  return { ms: performance.now() - started, ttftMs };
}

async function latencyPhase(targets: Target[], mode: Mode): Promise<Map<string, LatencyFigures & { samples: number[] }>> {
  const samples = new Map(targets.map((t) => [t.name, { ms: [] as number[], ttft: [] as number[], errors: 0, lastError: '' }]));
  for (let i = 0; i < LATENCY_WARMUP_CALLS + LATENCY_REQUESTS[mode]; i += 1) {
    for (const t of targets) {
      const s = samples.get(t.name)!;
      try {
        const r = await complete(t, mode, i);
        if (i < LATENCY_WARMUP_CALLS) continue;
        s.ms.push(r.ms);
        if (r.ttftMs !== undefined) s.ttft.push(r.ttftMs);
      } catch (err) {
        if (i >= LATENCY_WARMUP_CALLS) s.errors += 1;
        s.lastError = (err as Error).message;
      }
    }
  }
  const out = new Map<string, LatencyFigures & { samples: number[] }>();
  for (const [name, s] of samples) {
    if (s.errors > 0) console.log(`  ${name} ${mode}: ${s.errors} errors (last: ${s.lastError})`);
    out.set(name, {
      n: s.ms.length,
      errors: s.errors,
      p50: r2(percentile(s.ms, 50)),
      p99: r2(percentile(s.ms, 99)),
      ...(mode === 'stream' ? { ttftP50: r2(percentile(s.ttft, 50)), ttftP99: r2(percentile(s.ttft, 99)) } : {}),
      samples: s.ms,
    });
  }
  return out;
}

/**
 * One open-loop pass: LOAD_RPS requests a second for LOAD_SECONDS, sent on schedule whatever the
 * answers (callers' users in turn), each latency counted from its scheduled send time. Returns the
 * latencies, the errors, and how many were still unanswered 10 s after the last send: those are
 * then called off (their connections closed), so that a target does not go on serving its backlog
 * during the next one's pass.
 */
async function openLoopPass(t: Target, mode: Mode, round: number): Promise<{ ms: number[]; errors: number; unfinished: number; lastError: string }> {
  const offsets = arrivalOffsets(round);
  const n = offsets.length;
  const ms: number[] = [];
  let errors = 0;
  let lastError = '';
  const sent: Promise<void>[] = [];
  const abandon = new AbortController();
  let over = false;
  const start = performance.now() + 20;
  for (let i = 0; i < n; i += 1) {
    const at = start + offsets[i]!;
    const wait = at - performance.now();
    if (wait > 0) await sleep(wait);
    sent.push(
      complete(t, mode, i, i % CONCURRENCY, abandon.signal).then(
        () => void (over || ms.push(performance.now() - at)),
        (err: unknown) => {
          if (over) return;
          errors += 1;
          lastError = (err as Error).message;
        },
      ),
    );
  }
  await Promise.race([Promise.all(sent), sleep(10_000)]);
  over = true;
  const result = { ms: [...ms], errors, unfinished: n - ms.length - errors, lastError };
  abandon.abort();
  await Promise.allSettled(sent);
  return result;
}

/**
 * When each request of a round's pass is sent (ms from its start): a Poisson process at LOAD_RPS
 * over LOAD_SECONDS, drawn from the round's seed (every target offered the same), or one every
 * 1000 / LOAD_RPS ms (periodic).
 */
function arrivalOffsets(round: number): number[] {
  const periodMs = 1000 / LOAD_RPS;
  if (LOAD_ARRIVALS === 'periodic') return Array.from({ length: Math.round(LOAD_RPS * LOAD_SECONDS) }, (_, i) => i * periodMs);
  const random = seededRandom(20261208 + round);
  const offsets: number[] = [];
  for (let at = -Math.log(1 - random()) * periodMs; at < LOAD_SECONDS * 1000; at += -Math.log(1 - random()) * periodMs) offsets.push(at);
  return offsets;
}

async function openLoopPhase(targets: Target[], mode: Mode): Promise<Map<string, LoadFigures & { samples: number[] }>> {
  const pooled = new Map(targets.map((t) => [t.name, { ms: [] as number[], errors: 0, unfinished: 0, lastError: '' }]));
  for (let round = 0; round < LOAD_ROUNDS; round += 1) {
    for (let k = 0; k < targets.length; k += 1) {
      const t = targets[(k + round) % targets.length]!;
      const r = await openLoopPass(t, mode, round);
      await settleAfter(t, mode, 'load');
      const p = pooled.get(t.name)!;
      p.ms.push(...r.ms);
      p.errors += r.errors;
      p.unfinished += r.unfinished;
      if (r.lastError) p.lastError = r.lastError;
    }
  }
  const out = new Map<string, LoadFigures & { samples: number[] }>();
  for (const [name, p] of pooled) {
    if (p.errors > 0) console.log(`  ${name} ${mode} under load: ${p.errors} errors (last: ${p.lastError})`);
    out.set(name, {
      rps: LOAD_RPS, arrivals: LOAD_ARRIVALS, seconds: LOAD_SECONDS, rounds: LOAD_ROUNDS, offered: Array.from({ length: LOAD_ROUNDS }, (_, r) => arrivalOffsets(r).length).reduce((a, b) => a + b, 0),
      completed: p.ms.length, errors: p.errors, unfinished: p.unfinished, p50: r2(percentile(p.ms, 50)), p99: r2(percentile(p.ms, 99)),
      samples: p.ms,
    });
  }
  return out;
}

/**
 * The 90 % bootstrap interval of the ratio of two targets' added p99 (over the direct baseline), from
 * each one's latencies [own, peer, direct]; undefined when one of them has none.
 */
function p99RatioInterval(groups: number[][]): [number, number] | undefined {
  if (!groups.every((g) => g.length > 0)) return undefined;
  return bootstrapInterval(groups, ([o, q, d]) => (percentile(o!, 99) - percentile(d!, 99)) / (percentile(q!, 99) - percentile(d!, 99))).map(r2) as [number, number];
}

/**
 * Waits until the machine is quiet: over a window of QUIET_WINDOW_MS, fewer than QUIET_CPUS CPUs
 * busy (what a pass left running: a peer's backlog, its logging, a collection), for at most
 * QUIET_MAX_MS. Each pass then starts from the same idle machine, whatever ran before it. Returns
 * how long it waited (ms) and whether the machine got quiet.
 */
async function settle(): Promise<{ ms: number; quiet: boolean }> {
  const started = performance.now();
  while (performance.now() - started < QUIET_MAX_MS) {
    const a = machineCpuSeconds();
    await sleep(QUIET_WINDOW_MS);
    const b = machineCpuSeconds();
    const busyCpus = ((b.busy - a.busy) * 1000) / QUIET_WINDOW_MS;
    if (busyCpus < QUIET_CPUS) return { ms: Math.round(performance.now() - started), quiet: true };
  }
  return { ms: Math.round(performance.now() - started), quiet: false };
}

/** The settle waits after each of a target's passes, per mode and phase (ms, in the order run), and how many ended unquiet. */
const settled: Record<string, Record<string, { load: number[]; saturation: number[]; unquiet: number }>> = {};
async function settleAfter(t: Target, mode: Mode, phase: 'load' | 'saturation'): Promise<void> {
  const s = await settle();
  const rec = ((settled[t.name] ??= {})[mode] ??= { load: [], saturation: [], unquiet: 0 });
  rec[phase].push(s.ms);
  if (!s.quiet) {
    rec.unquiet += 1;
    console.log(`  the machine was still busy ${QUIET_MAX_MS / 1000} s after ${t.name}'s ${phase} pass (${mode}); going on`);
  }
}

/** CPU seconds so far of a target's processes, of those beside it, of the emulator, and of this process. */
function cpuNow(t: Target, emulatorPid: number): CpuPerCall {
  const beside = t.pids.beside ?? [];
  const tree = treeCpuSeconds([...t.pids.own, ...beside, emulatorPid]);
  const sum = (pids: number[]) => pids.reduce((n, pid) => n + (tree.get(pid) ?? 0), 0);
  const mine = process.cpuUsage();
  return { own: sum(t.pids.own), beside: sum(beside), emulator: t.pids.own.includes(emulatorPid) ? 0 : sum([emulatorPid]), client: (mine.user + mine.system) / 1e6 };
}

async function saturationPhase(t: Target, mode: Mode, emulatorPid: number, seconds = SECONDS): Promise<RoundFigures> {
  const cpuBefore = cpuNow(t, emulatorPid);
  const until = performance.now() + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  let lastError = '';
  let i = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, caller) => {
      while (performance.now() < until) {
        try {
          latencies.push((await complete(t, mode, (i += 1), caller)).ms);
        } catch (err) {
          errors += 1;
          lastError = (err as Error).message;
          await sleep(10); // a failing target must not turn into a busy loop
        }
      }
    }),
  );
  const cpuAfter = cpuNow(t, emulatorPid);
  if (errors > 0) console.log(`  ${t.name} ${mode} saturation: ${errors} errors (last: ${lastError})`);
  const perCall = (k: keyof CpuPerCall) => r3(((cpuAfter[k] - cpuBefore[k]) * 1000) / Math.max(1, latencies.length));
  return {
    completed: latencies.length, errors, rps: r1(latencies.length / seconds), p50: r2(percentile(latencies, 50)),
    cpuMsPerCall: { own: perCall('own'), beside: perCall('beside'), emulator: perCall('emulator'), client: perCall('client') },
  };
}

function saturationOf(rounds: RoundFigures[]): SaturationFigures {
  const sum = (f: (r: RoundFigures) => number) => rounds.reduce((n, r) => n + f(r), 0);
  return {
    concurrency: CONCURRENCY, seconds: SECONDS, completed: sum((r) => r.completed), errors: sum((r) => r.errors),
    rps: r1(percentile(rounds.map((r) => r.rps), 50)), p50: r2(percentile(rounds.map((r) => r.p50), 50)),
    cpuMsPerCall: {
      own: percentile(rounds.map((r) => r.cpuMsPerCall.own), 50), beside: percentile(rounds.map((r) => r.cpuMsPerCall.beside), 50),
      emulator: percentile(rounds.map((r) => r.cpuMsPerCall.emulator), 50), client: percentile(rounds.map((r) => r.cpuMsPerCall.client), 50),
    },
    rounds,
  };
}

// ---------- peers: install on first use (cached), start on a free loopback port ----------

function run(cmd: string, args: string[], cwd: string, logFile: string): boolean {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 20 * 60_000 });
  fs.appendFileSync(logFile, `$ ${cmd} ${args.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}\n`);
  return r.status === 0;
}

/**
 * Portkey's streamed answers fail ("TypeError: immutable", a 500) with @hono/node-server newer
 * than 1.14.2, which its `^1.3.3` range lets npm pick (Portkey-AI/gateway#1389): pin that one.
 */
const PORTKEY_HONO = '1.14.2';
/** The peers' exact versions: a run is comparable with another only at the same pins. */
const PORTKEY_VERSION = '1.15.2';
const LITELLM_VERSION = '1.108.7'; // the newest whose [proxy] extra resolves (1.110's needs litellm-proxy, not published)

function installPortkey(logDir: string): string {
  const dir = path.join(PEERS, `portkey-${PORTKEY_VERSION}`);
  const entry = path.join(dir, 'node_modules/@portkey-ai/gateway/build/start-server.js');
  const hono = path.join(dir, 'node_modules/@hono/node-server/package.json');
  const version = (file: string) => (fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version : undefined);
  const pinned = () => version(hono) === PORTKEY_HONO && version(path.join(dir, 'node_modules/@portkey-ai/gateway/package.json')) === PORTKEY_VERSION;
  if (fs.existsSync(entry) && pinned()) return entry;
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(logDir, 'portkey-install.log');
  if (!fs.existsSync(path.join(dir, 'package.json')) && !run('npm', ['init', '-y'], dir, log)) throw new Error(`npm init failed (see ${log})`);
  const pkgs = [`@portkey-ai/gateway@${PORTKEY_VERSION}`, `@hono/node-server@${PORTKEY_HONO}`];
  if (!run('npm', ['install', '--no-audit', '--no-fund', '--save-exact', ...pkgs], dir, log) || !fs.existsSync(entry) || !pinned()) {
    throw new Error(`npm install ${pkgs.join(' ')} failed (see ${log})`);
  }
  return entry;
}

function installLitellm(logDir: string): string {
  const dir = path.join(PEERS, `litellm-${LITELLM_VERSION}`);
  const bin = path.join(dir, 'venv/bin/litellm');
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(logDir, 'litellm-install.log');
  if (!run('python3', ['-m', 'venv', path.join(dir, 'venv')], dir, log)) throw new Error(`python3 -m venv failed (see ${log})`);
  if (!run(path.join(dir, 'venv/bin/pip'), ['install', '-q', `litellm[proxy]==${LITELLM_VERSION}`], dir, log) || !fs.existsSync(bin)) {
    throw new Error(`pip install 'litellm[proxy]==${LITELLM_VERSION}' failed (see ${log})`);
  }
  return bin;
}

/** Portkey's server listens on every interface and has no host option: pin it to loopback. */
function loopbackPreload(): string {
  const file = path.join(PEERS, 'loopback.cjs');
  const code = `// Written by test/bench/overhead.ts: forces servers in this process onto 127.0.0.1.
const net = require('node:net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number') {
    if (typeof args[1] === 'string' || (args.length > 2 && args[1] === undefined)) args[1] = '127.0.0.1';
    else args.splice(1, 0, '127.0.0.1');
  }
  else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined) args[0] = { ...args[0], host: '127.0.0.1' };
  return listen.apply(this, args);
};
`;
  fs.mkdirSync(PEERS, { recursive: true });
  if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== code) fs.writeFileSync(file, code);
  return file;
}

/**
 * Portkey 1.15 on Node 20 still answers every streamed completion with a 500: it appends its
 * `x-portkey-*` headers to a Response whose headers are immutable (Portkey-AI/gateway#1389, #1550;
 * fixes proposed in #1390 and #1551 skip or copy them). This preload does what #1390 does — the
 * append of a header that cannot be set is skipped — so Portkey's streaming path can be measured.
 * The summary says it was applied.
 */
function portkeyHeadersPreload(): string {
  const file = path.join(PEERS, 'portkey-immutable-headers.cjs');
  const code = `// Written by test/bench/overhead.ts: see portkeyHeadersPreload() there.
for (const name of ['append', 'set', 'delete']) {
  const original = Headers.prototype[name];
  Headers.prototype[name] = function (...args) {
    try {
      return original.apply(this, args);
    } catch (err) {
      if (err instanceof TypeError && err.message === 'immutable') return undefined;
      throw err;
    }
  };
}
`;
  fs.mkdirSync(PEERS, { recursive: true });
  if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== code) fs.writeFileSync(file, code);
  return file;
}

async function startPortkey(logDir: string, emulatorUrl: string, procs: Proc[]): Promise<Target> {
  const entry = installPortkey(logDir);
  const port = await stack.freePort();
  const p = stack.launch(`portkey-${port}`, process.execPath, ['--require', loopbackPreload(), '--require', portkeyHeadersPreload(), entry, `--port=${port}`, '--headless'], {
    logDir,
    cwd: path.dirname(entry),
    env: { NODE_ENV: 'production' },
  });
  procs.push(p);
  await stack.waitFor('portkey', async () => (await fetch(`http://127.0.0.1:${port}/`)).ok, { timeoutMs: 60_000, proc: p.proc });
  return {
    name: 'portkey',
    url: `http://127.0.0.1:${port}/v1`,
    model: MODEL,
    headers: { authorization: `Bearer ${API_KEY}`, 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${emulatorUrl}/v1` },
    pids: { own: [p.proc.pid!] },
  };
}

async function startLitellm(logDir: string, emulatorUrl: string, procs: Proc[]): Promise<Target> {
  const bin = installLitellm(logDir);
  const port = await stack.freePort();
  const cfg = path.join(logDir, 'litellm.yaml');
  fs.writeFileSync(
    cfg,
    [
      'model_list:',
      `  - model_name: ${MODEL}`,
      '    litellm_params:',
      `      model: openai/${MODEL}`,
      `      api_base: ${emulatorUrl}/v1`,
      `      api_key: ${API_KEY}`,
      `  - model_name: ${EMBED_MODEL}`,
      '    litellm_params:',
      `      model: openai/${EMBED_MODEL}`,
      `      api_base: ${emulatorUrl}/v1`,
      `      api_key: ${API_KEY}`,
      'litellm_settings:',
      '  telemetry: false',
      '  num_retries: 0',
      '  set_verbose: false',
      '',
    ].join('\n'),
  );
  // LiteLLM refuses to start without a master key; it is then the bearer token its clients send.
  const masterKey = `sk-bench-${randomBytes(16).toString('hex')}`;
  const p = stack.launch(`litellm-${port}`, bin, ['--config', cfg, '--host', '127.0.0.1', '--port', String(port), '--num_workers', '1'], {
    logDir,
    cwd: logDir,
    // No network here: use the bundled model price map instead of fetching it.
    env: { LITELLM_MASTER_KEY: masterKey, LITELLM_LOCAL_MODEL_COST_MAP: 'True', LITELLM_LOG: 'ERROR', LITELLM_TELEMETRY: 'False', NO_DOCS: 'True' },
  });
  procs.push(p);
  await stack.waitFor('litellm', async () => (await fetch(`http://127.0.0.1:${port}/health/liveliness`)).ok, { timeoutMs: 180_000, intervalMs: 500, proc: p.proc });
  return { name: 'litellm', url: `http://127.0.0.1:${port}/v1`, model: MODEL, headers: { authorization: `Bearer ${masterKey}` }, pids: { own: [p.proc.pid!] } };
}

/**
 * The mesh as it ships: Redis, FerretDB (on PostgreSQL), Jaeger and the five services, tracing on,
 * logging at info; its edge (`mesh`: edge → llm-broker over gRPC, the default) and a second edge
 * that runs the broker itself (`mesh-inline`: EDGE_INLINE_BROKER), each as asked by BENCH_TARGETS.
 */
// A quota high enough never to queue: the upstream is fast and unlimited here.
const BROKER_ENV = { LLM_API_KEY: API_KEY, LLM_MODEL: MODEL, LLM_MAX_CONCURRENT: '10000', LLM_RPM: '100000000', LLM_TPM: '0', LLM_QUEUE_MAX: '100000' };

async function startMeshTargets(logDir: string, emulatorUrl: string, procs: Proc[], meshes: Mesh[]): Promise<Target[]> {
  const redis = await startRedis({ logDir });
  procs.push(redis);
  meshRedisUrl = redis.url;
  const ferret = await startFerret({ logDir });
  procs.push(ferret);
  const jaeger = TRACING ? await startJaeger({ logDir }) : undefined;
  if (jaeger) procs.push(jaeger);
  const secret = 'bench-secret-0123456789abcdef0123456789';
  const mesh = await startMesh({
    logDir,
    redisUrl: redis.url,
    mongoUri: ferret.uri,
    llmBaseUrl: `${emulatorUrl}/v1`,
    jwtSecret: secret,
    ...(jaeger ? { otlpEndpoint: jaeger.otlpEndpoint } : {}),
    env: { LOG_LEVEL },
    perService: {
      'llm-broker': BROKER_ENV,
      // The per-user rate limit is checked, as it ships, with a limit that no caller here reaches.
      edge: { EDGE_HOST: '127.0.0.1', RATE_LIMIT_PER_MINUTE: '10000000', LLM_MODEL: MODEL },
    },
  });
  meshes.push(mesh);
  // A user per concurrent caller: one user's daily token budget (USER_TOKENS_PER_DAY, 1,000,000 as
  // shipped) is used up by the rounds of saturation, and then every call is a 429.
  const callerHeaders = await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, c) => ({ authorization: `Bearer ${await mintToken(secret, `00000000-0000-4000-8000-${String(c).padStart(12, '0')}`)}` })),
  );
  const headers = callerHeaders[0]!;
  const targets: Target[] = [];
  const beside = [redis.proc.pid!, ...(jaeger ? [jaeger.proc.pid!] : [])];
  if (ONLY.has('mesh')) targets.push({ name: 'mesh', url: `${mesh.edge.url}/v1`, model: MODEL, headers, callerHeaders, pids: { own: [mesh.edge.proc.pid!, mesh.broker.proc.pid!], beside } });
  if (ONLY.has('mesh-inline')) {
    // A second edge of the same mesh that runs the broker itself (EDGE_INLINE_BROKER), in the same quota.
    const inline = await mesh.addEdge({ EDGE_INLINE_BROKER: 'true', LLM_BASE_URL: `${emulatorUrl}/v1`, ...BROKER_ENV });
    targets.push({ name: 'mesh-inline', url: `${inline.url}/v1`, model: MODEL, headers, callerHeaders, pids: { own: [inline.proc.pid!], beside } });
  }
  return targets;
}

/** The edge is being finished by someone else: retry its facade for a while before giving up. */
async function facadeWorks(t: Target): Promise<string | undefined> {
  const deadline = Date.now() + EDGE_WAIT_S * 1000;
  let last = '';
  for (let attempt = 1; ; attempt += 1) {
    try {
      for (const mode of MODES) await complete(t, mode, 0);
      return undefined;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) return last;
    console.log(`  mesh facade not answering yet (attempt ${attempt}: ${last}); retrying in 60 s`);
    await sleep(60_000);
  }
}

async function main(): Promise<void> {
  const logDir = testDir('bench-overhead');
  const procs: Proc[] = [];
  const meshes: Mesh[] = [];
  const unavailable: Record<string, string> = {};
  const cleanup = async () => {
    for (const m of meshes) await m.stop().catch(() => undefined);
    for (const p of procs.reverse()) await p.stop(5_000).catch(() => undefined);
    await dispatcher.close().catch(() => undefined);
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    console.log(`overhead benchmark — logs in ${logDir}`);
    const emulator = await startEmulator({ logDir, env: EMULATOR_ENV });
    procs.push(emulator);
    const targets: Target[] = [];
    if (ONLY.has('direct')) targets.push({ name: 'direct', url: `${emulator.url}/v1`, model: MODEL, headers: { authorization: `Bearer ${API_KEY}` }, pids: { own: [emulator.proc.pid!] } });
    const starters: Array<[string, () => Promise<Target[]>]> = [
      ['mesh', () => startMeshTargets(logDir, emulator.url, procs, meshes)],
      ['portkey', async () => [await startPortkey(logDir, emulator.url, procs)]],
      ['litellm', async () => [await startLitellm(logDir, emulator.url, procs)]],
    ];
    for (const [name, start] of starters) {
      if (!ONLY.has(name) && !(name === 'mesh' && ONLY.has('mesh-inline'))) continue;
      try {
        console.log(`starting ${name} …`);
        for (const t of await start()) {
          const broken = name === 'mesh' ? await facadeWorks(t) : await complete(t, MODES[0]!, 0).then(() => undefined, (e: Error) => e.message);
          if (broken) throw new Error(`${t.name} does not answer a completion: ${broken}`);
          targets.push(t);
        }
      } catch (err) {
        unavailable[name] = (err as Error).message.split('\n')[0]!.slice(0, 300);
        console.log(`  ${name} unavailable: ${unavailable[name]}`);
      }
    }

    const cpus = os.cpus().length;
    console.log(
      `\nemulator: TTFT ${EMULATOR_ENV.EMULATOR_TTFT_MS} ms, ${EMULATOR_ENV.EMULATOR_TOKENS_PER_SEC} tokens/s, ~${EMULATOR_ENV.EMULATOR_COMPLETION_TOKENS} completion tokens, no limits; ` +
        `time scale 1 (real time); ${cpus} CPUs shared by the load generator, the emulator and the gateways`,
    );
    const latency: Record<string, Record<string, LatencyFigures>> = {};
    const saturation: Record<string, Record<string, SaturationFigures>> = {};
    const underLoad: Record<string, Record<string, LoadFigures>> = {};
    // Each target's sequential and under-load latencies per mode (for the intervals of the p99 ratios; not in the JSON).
    const latencySamples: Record<string, Record<string, number[]>> = {};
    const underLoadSamples: Record<string, Record<string, number[]>> = {};
    // How each target called the emulator in each row (its saturation phase, alone on the emulator).
    const upstreamRequests: Record<string, Record<string, { stream: number; whole: number }>> = {};
    const warmup: Record<string, Record<string, number>> = {};
    for (const mode of MODES) {
      // Every target is measured warm, as a gateway serving traffic is: before its first figure of
      // a mode, it serves that mode at saturation for WARMUP_SECONDS (its JIT compiles the hot
      // paths, its pools fill); the warm-up's rps is reported and counts for nothing.
      for (const t of WARMUP_SECONDS > 0 ? targets : []) {
        console.log(`warm-up (${mode}) ${t.name}: ${CONCURRENCY} concurrent callers for ${WARMUP_SECONDS} s …`);
        (warmup[t.name] ??= {})[mode] = (await saturationPhase(t, mode, emulator.proc.pid!, WARMUP_SECONDS)).rps;
        console.log(`  ${warmup[t.name]![mode]} rps`);
      }
      await settle();
      console.log(`latency (${mode}): ${LATENCY_REQUESTS[mode]} sequential requests per target, interleaved …`);
      const l = await latencyPhase(targets, mode);
      for (const [name, { samples, ...f }] of l) {
        (latency[name] ??= {})[mode] = f;
        (latencySamples[name] ??= {})[mode] = samples;
      }
      if (LOAD_RPS > 0) {
        console.log(`latency under load (${mode}): ${LOAD_RPS} requests/s offered open-loop (${LOAD_ARRIVALS} arrivals) for ${LOAD_SECONDS} s per target, ${LOAD_ROUNDS} rounds …`);
        for (const [name, { samples, ...f }] of await openLoopPhase(targets, mode)) {
          (underLoad[name] ??= {})[mode] = f;
          (underLoadSamples[name] ??= {})[mode] = samples;
        }
      }
      const rounds = new Map<string, RoundFigures[]>(targets.map((t) => [t.name, []]));
      for (let round = 0; round < ROUNDS; round += 1) {
        for (let k = 0; k < targets.length; k += 1) {
          const t = targets[(k + round) % targets.length]!;
          console.log(`saturation (${mode}, round ${round + 1}/${ROUNDS}) ${t.name}: ${CONCURRENCY} concurrent callers for ${SECONDS} s …`);
          const before = (await emulatorStats(emulator)).byMode;
          rounds.get(t.name)!.push(await saturationPhase(t, mode, emulator.proc.pid!));
          await settleAfter(t, mode, 'saturation');
          const after = (await emulatorStats(emulator)).byMode;
          const u = ((upstreamRequests[t.name] ??= {})[mode] ??= { stream: 0, whole: 0 });
          u.stream += after.stream - before.stream;
          u.whole += after.whole - before.whole;
        }
      }
      for (const [name, r] of rounds) (saturation[name] ??= {})[mode] = saturationOf(r);
    }

    const redisRtt = meshRedisUrl ? await redisRoundTrips(meshRedisUrl) : undefined;

    // Added latency over the direct baseline, and the mesh's ratios to each peer.
    const base = latency.direct;
    const added: Record<string, Record<string, { p50: number; p99: number; ttftP50?: number }>> = {};
    for (const t of targets) {
      if (t.name === 'direct' || !base) continue;
      for (const mode of MODES) {
        const f = latency[t.name]?.[mode];
        const b = base[mode];
        if (!f || !b || f.n === 0) continue;
        (added[t.name] ??= {})[mode] = {
          p50: r2(f.p50 - b.p50),
          p99: r2(f.p99 - b.p99),
          ...(mode === 'stream' && f.ttftP50 !== undefined && b.ttftP50 !== undefined ? { ttftP50: r2(f.ttftP50 - b.ttftP50) } : {}),
        };
      }
    }
    // Under load: over the direct baseline at the same offered rate.
    const addedUnderLoad: Record<string, Record<string, { p50: number; p99: number }>> = {};
    for (const t of targets) {
      for (const mode of MODES) {
        const f = underLoad[t.name]?.[mode];
        const b = underLoad.direct?.[mode];
        if (t.name === 'direct' || !f || !b || f.completed === 0) continue;
        (addedUnderLoad[t.name] ??= {})[mode] = { p50: r2(f.p50 - b.p50), p99: r2(f.p99 - b.p99) };
      }
    }
    // meshRatios[mesh target][peer][mode]
    // rpsPaired: each round's rps ratio (both targets ran in that round, minutes apart at most), then
    // their median: the host's speed drifts between rounds (every target's rounds move together),
    // and a ratio within a round cancels most of that drift.
    const ratios: Record<string, Record<string, Record<string, {
      addedP50: number; addedP99: number; addedP99Interval?: [number, number]; rps: number; rpsPaired: number; rpsByRound: number[];
      underLoadAddedP50?: number; underLoadAddedP99?: number; underLoadAddedP99Interval?: [number, number];
    }>>> = {};
    for (const own of ['mesh', 'mesh-inline']) {
      for (const peer of ['portkey', 'litellm']) {
        if (!added[own] || !added[peer]) continue;
        for (const mode of MODES) {
          const m = added[own][mode];
          const p = added[peer]![mode];
          const ms = saturation[own]?.[mode];
          const ps = saturation[peer]?.[mode];
          if (!m || !p || !ms || !ps) continue;
          // < 1 = the mesh adds less latency / > 1 = the mesh serves more requests per second.
          const ratio = (a: number, b: number) => (b > 0 ? r2(a / b) : NaN);
          const byRound = ms.rounds.map((r, i) => ratio(r.rps, ps.rounds[i]?.rps ?? 0));
          const ml = addedUnderLoad[own]?.[mode];
          const pl = addedUnderLoad[peer]?.[mode];
          // How much each p99 ratio could move between runs: the samples drawn again (90 % interval).
          const addedP99Interval = p99RatioInterval([own, peer, 'direct'].map((n) => latencySamples[n]?.[mode] ?? []));
          const underLoadAddedP99Interval = p99RatioInterval([own, peer, 'direct'].map((n) => underLoadSamples[n]?.[mode] ?? []));
          ((ratios[own] ??= {})[peer] ??= {})[mode] = {
            addedP50: ratio(m.p50, p.p50), addedP99: ratio(m.p99, p.p99), ...(addedP99Interval ? { addedP99Interval } : {}),
            rps: ratio(ms.rps, ps.rps), rpsPaired: r2(percentile(byRound, 50)), rpsByRound: byRound,
            ...(ml && pl ? { underLoadAddedP50: ratio(ml.p50, pl.p50), underLoadAddedP99: ratio(ml.p99, pl.p99), ...(underLoadAddedP99Interval ? { underLoadAddedP99Interval } : {}) } : {}),
          };
        }
      }
    }

    console.log(`\n== overhead: added latency over calling the emulator directly (ms), and throughput at saturation (rps: the median of ${ROUNDS} rounds) ==`);
    const pad = (s: string | number, n: number) => String(s).padStart(n);
    console.log(`${'target'.padEnd(11)} ${'mode'.padEnd(10)} ${pad('p50', 8)} ${pad('p99', 8)} ${pad('+p50', 8)} ${pad('+p99', 8)} ${pad('ttft50', 8)} ${pad('rps', 8)} ${pad('errors', 7)}`);
    for (const t of targets) {
      for (const mode of MODES) {
        const l = latency[t.name]?.[mode];
        const s = saturation[t.name]?.[mode];
        const a = added[t.name]?.[mode];
        console.log(
          `${t.name.padEnd(11)} ${mode.padEnd(10)} ${pad(l?.p50 ?? '-', 8)} ${pad(l?.p99 ?? '-', 8)} ${pad(a?.p50 ?? '-', 8)} ${pad(a?.p99 ?? '-', 8)} ` +
            `${pad(l?.ttftP50 ?? '-', 8)} ${pad(s?.rps ?? '-', 8)} ${pad((l?.errors ?? 0) + (s?.errors ?? 0), 7)}`,
        );
      }
    }
    if (LOAD_RPS > 0) {
      console.log(`latency under load: ${LOAD_RPS} requests/s offered open-loop (${LOAD_ARRIVALS} arrivals, the same for every target), ${LOAD_SECONDS} s × ${LOAD_ROUNDS} rounds per target (ms from each request's scheduled send time; + over direct at the same rate)`);
      for (const t of targets) {
        const line = MODES.map((m) => {
          const f = underLoad[t.name]?.[m];
          const a = addedUnderLoad[t.name]?.[m];
          return f ? `${m} p50 ${f.p50} p99 ${f.p99}${a ? ` (+${a.p50} / +${a.p99})` : ''}, ${f.completed} of ${f.offered} answered, ${f.errors} errors, ${f.unfinished} unfinished` : `${m} -`;
        });
        console.log(`under load, ${t.name}: ${line.join(' | ')}`);
      }
    }
    for (const t of targets) {
      console.log(`rps by round, ${t.name}: ${MODES.map((m) => `${m} ${(saturation[t.name]?.[m]?.rounds ?? []).map((r) => r.rps).join(' / ')}`).join('; ')}`);
    }
    console.log('CPU per call at saturation (ms, the median round; user + system from /proc): the target\'s own processes + those beside them (the mesh\'s Redis and Jaeger); the emulator; the load generator');
    for (const t of targets) {
      const line = MODES.map((m) => {
        const c = saturation[t.name]?.[m]?.cpuMsPerCall;
        return c ? `${m} ${c.own}${t.pids.beside ? ` + ${c.beside}` : ''}; emulator ${c.emulator}; client ${c.client}` : `${m} -`;
      });
      console.log(`cpu per call, ${t.name}: ${line.join(' | ')}`);
    }
    for (const [own, byPeer] of Object.entries(ratios)) {
      for (const [peer, byMode] of Object.entries(byPeer)) {
        for (const [mode, r] of Object.entries(byMode)) {
          console.log(
            `${own} vs ${peer} (${mode}): added p50 ×${r.addedP50}, added p99 ×${r.addedP99}${r.addedP99Interval ? ` (90 % bootstrap interval ×${r.addedP99Interval.join('–')})` : ''} (< 1 = less overhead), rps ×${r.rps} (> 1 = more throughput); ` +
              `rps round by round ×${r.rpsByRound.join(' / ')} (median ×${r.rpsPaired})` +
              (r.underLoadAddedP50 !== undefined
                ? `; under load added p50 ×${r.underLoadAddedP50}, p99 ×${r.underLoadAddedP99}${r.underLoadAddedP99Interval ? ` (interval ×${r.underLoadAddedP99Interval.join('–')})` : ''}`
                : ''),
          );
        }
      }
    }
    for (const t of targets) {
      const u = upstreamRequests[t.name] ?? {};
      console.log(`upstream calls the emulator saw from ${t.name}'s saturation phases: ${MODES.map((m) => `${m}: ${u[m]?.stream ?? 0} streamed, ${u[m]?.whole ?? 0} whole`).join('; ')}`);
    }
    for (const t of targets) {
      const s = settled[t.name] ?? {};
      console.log(
        `the machine got quiet (< ${QUIET_CPUS} CPUs busy over ${QUIET_WINDOW_MS} ms) after ${t.name}'s passes in: ` +
          MODES.map((m) => `${m}: load ${s[m]?.load.join('/') ?? '-'} ms, saturation ${s[m]?.saturation.join('/') ?? '-'} ms${s[m]?.unquiet ? `, ${s[m]!.unquiet} never` : ''}`).join('; '),
      );
    }
    for (const [name, why] of Object.entries(unavailable)) console.log(`${name}: NOT MEASURED — ${why}`);
    const notes: string[] = [];
    if (targets.some((t) => t.name === 'portkey')) {
      notes.push(`portkey: @hono/node-server pinned to ${PORTKEY_HONO} and immutable-header appends skipped at run time (Portkey-AI/gateway#1389/#1390), else its streams fail with 500`);
    }
    notes.push('litellm: 1 worker, no retries, no database');
    const versions = {
      mesh: spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || 'unknown',
      portkey: `@portkey-ai/gateway ${PORTKEY_VERSION} (@hono/node-server ${PORTKEY_HONO})`,
      litellm: `litellm[proxy] ${LITELLM_VERSION}`,
      node: process.version,
    };
    // Processes on each target's request path (every one shares the same CPUs with the load generator).
    const processes = {
      direct: 'the emulator',
      mesh: `edge → llm-broker → emulator (1 process each; Redis for the quota${TRACING ? ', Jaeger receiving every span' : ''}; orchestrator, tool-service, store, FerretDB, PostgreSQL running but idle)`,
      'mesh-inline': `edge with the broker inside (EDGE_INLINE_BROKER) → emulator (1 process; the same Redis${TRACING ? ' and Jaeger' : ''}, its quota shared with the llm-broker service)`,
      portkey: '1 Node.js process → emulator',
      litellm: '1 uvicorn worker → emulator',
    };
    if (redisRtt) {
      console.log(
        `machine: a Redis round trip (PING) takes ${redisRtt.backToBackUs.p50} µs back to back (p90 ${redisRtt.backToBackUs.p90}), ` +
          `${redisRtt.afterIdleUs.p50} µs after 20 ms idle (p90 ${redisRtt.afterIdleUs.p90}): the mesh makes one before each upstream call`,
      );
    }
    console.log(`versions: ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join('; ')}`);
    console.log(`mesh as it ships: tracing ${TRACING ? 'on (every span exported to Jaeger)' : 'OFF'}, LOG_LEVEL=${LOG_LEVEL}; load average at the end ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    for (const n of notes) console.log(`note: ${n}`);
    console.log(
      JSON.stringify({
        scenario: 'overhead',
        timeScale: 1,
        versions,
        processes,
        mesh: { tracing: TRACING, logLevel: LOG_LEVEL },
        loadAverage: os.loadavg().map((x) => Math.round(x * 10) / 10),
        settle: { quietCpus: QUIET_CPUS, windowMs: QUIET_WINDOW_MS, maxMs: QUIET_MAX_MS, afterPassesMs: settled },
        emulator: EMULATOR_ENV,
        modes: MODES,
        latencyRequests: Object.fromEntries(MODES.map((m) => [m, LATENCY_REQUESTS[m]])),
        concurrency: CONCURRENCY,
        seconds: SECONDS,
        rounds: ROUNDS,
        warmupSeconds: WARMUP_SECONDS,
        warmupRps: warmup,
        latencyMs: latency,
        addedLatencyMs: added,
        saturation,
        loadRps: LOAD_RPS,
        loadArrivals: LOAD_ARRIVALS,
        underLoad,
        addedUnderLoadMs: addedUnderLoad,
        upstreamRequests,
        meshRatios: ratios,
        redisRoundTripUs: redisRtt,
        unavailable,
        notes,
      }),
    );
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  console.log(JSON.stringify({ scenario: 'overhead', error: (err as Error).message }));
  process.exit(1);
});
