// Seed benchmark: the brief's scenario, scaled to this machine. N simulated users each send 2–3
// messages a minute through the REAL edge (HTTP + SSE) of a whole mesh (Redis, FerretDB, the
// emulator, the five services as separate processes); every LLM call takes the brief's 5–10 s;
// the provider (emulator) enforces its own RPM/TPM and the broker is given the same limits.
// Time is scaled: the emulator's latencies, the quota windows, the users' pace and the agents'
// deadlines are all multiplied by TIME_SCALE, so a brief-minute lasts 60 × TIME_SCALE seconds.
// A user waits for the answer to a message before sending the next (2–3 a minute at most).
// Why TIME_SCALE defaults to 0.5, not 0.05: scaling time scales the database's query rate too
// (×1/TIME_SCALE per wall second). At 0.1 with 200 users, FerretDB on SQLite on a 2-core machine
// fell over (store queries p50 5 s, every run failed on store deadlines): that measures the
// development database, not the design. Production uses MongoDB.
//
// Run: npx tsx test/bench/seed.ts   (or npm run bench -- seed). env, with defaults:
//   USERS 200 · DURATION_S 120 (wall seconds of sending; in-flight runs then finish) ·
//   TIME_SCALE 0.5 · MSGS_PER_MIN 2.5 (per user, brief-minutes) · LLM_RPM 500 · LLM_TPM 0 (none) ·
//   LLM_MAX_CONCURRENT 50 · TTFT_MS 1500 · TOKENS_PER_SEC 6 · COMPLETION_TOKENS 30 (a call ≈ 5–8 s) ·
//   REVISE_RATE 0.3 · SSE_MAX_STREAMS 200 · MAX_QUEUE_WAIT_S 0 (brief-seconds; the orchestrator's
//   RUN_MAX_QUEUE_WAIT_MS load shedding, scaled; 0: off — every run waits its turn)
// Prints a human summary; the last line is one JSON object of the figures.
import { newId } from '@agent-mesh/common';
import { percentile, runTimingMedians } from './stats';
import { mintToken, parseSseBlock, startEmulator, startFerret, startMesh, startRedis, testDir, type Mesh, type Proc, type SseEvent } from '../support';

const num = (name: string, def: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`);
  return v;
};
const USERS = Math.max(1, Math.floor(num('USERS', 200)));
const DURATION_S = num('DURATION_S', 120);
const TIME_SCALE = num('TIME_SCALE', 0.5);
const MSGS_PER_MIN = num('MSGS_PER_MIN', 2.5);
const LLM_RPM = num('LLM_RPM', 500);
const LLM_TPM = num('LLM_TPM', 0);
const LLM_MAX_CONCURRENT = num('LLM_MAX_CONCURRENT', 50);
const TTFT_MS = num('TTFT_MS', 1500);
const TOKENS_PER_SEC = num('TOKENS_PER_SEC', 6);
const COMPLETION_TOKENS = num('COMPLETION_TOKENS', 30);
const REVISE_RATE = num('REVISE_RATE', 0.3);
const SSE_MAX_STREAMS = num('SSE_MAX_STREAMS', 200);
const MAX_QUEUE_WAIT_S = num('MAX_QUEUE_WAIT_S', 0);
/** The brief's targets, in brief-seconds. */
const TARGETS = { avgS: 30, p95S: 60, p99S: 90, errorRatePct: 1, llmQueueLength: 50 };
const TERMINAL = new Set(['run.completed', 'run.failed', 'run.cancelled', 'degraded']);
const QUESTIONS = [
  'How should I plan a vegetable garden?', 'Explain how a heat pump works.', 'What makes a good code review?',
  'How do I train for a 10k run?', 'Search the latest news about solar panels.', 'How can I learn to bake bread?',
  'Find the best way to store fresh herbs.', 'What should I pack for a week of hiking?',
];

type Outcome = 'completed' | 'degraded' | 'failed' | 'cancelled' | 'http_error' | 'stream_error';
interface RunRecord { user: number; outcome: Outcome; wallMs: number; ttftMs?: number; status?: number; detail?: string; sseQueued: boolean }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

/** One gauge's value from a Prometheus text page (summed over label sets). */
function gauge(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

/** Sends one message and reads its SSE stream to the terminal event. */
async function sendMessage(edgeUrl: string, token: string, conversationId: string, content: string, user: number): Promise<RunRecord> {
  const started = Date.now();
  let queueToken: string | undefined;
  let sseQueued = false;
  const messageId = newId(); // one id across limiter retries: the run starts once
  for (;;) {
    let res: Response;
    try {
      res = await fetch(`${edgeUrl}/api/conversations/${conversationId}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream', ...(queueToken ? { 'x-queue-token': queueToken } : {}) },
        body: JSON.stringify({ content, messageId }),
      });
    } catch (err) {
      return { user, outcome: 'http_error', wallMs: Date.now() - started, detail: (err as Error).message, sseQueued };
    }
    if (res.status === 503 && res.headers.get('retry-after')) {
      // The SSE limiter is full: keep our place with the queue token and come back.
      const body = (await res.json().catch(() => ({}))) as { queueToken?: string; estimatedWaitMs?: number };
      sseQueued = true;
      queueToken = body.queueToken ?? queueToken;
      await sleep(Math.min(5_000, Math.max(100, body.estimatedWaitMs ?? Number(res.headers.get('retry-after')) * 1000)));
      continue;
    }
    if (!res.ok || !res.body) {
      const detail = await res.text().catch(() => '');
      return { user, outcome: 'http_error', wallMs: Date.now() - started, status: res.status, detail: detail.slice(0, 200), sseQueued };
    }
    let ttftMs: number | undefined;
    let terminal: SseEvent | undefined;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    try {
      while (!terminal) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let idx: number;
        while (!terminal && (idx = buf.indexOf('\n\n')) >= 0) {
          const e = parseSseBlock(buf.slice(0, idx));
          buf = buf.slice(idx + 2);
          if (!e) continue;
          if (e.event === 'token' && ttftMs === undefined) ttftMs = Date.now() - started;
          if (TERMINAL.has(e.event)) terminal = e;
        }
      }
    } catch (err) {
      return { user, outcome: 'stream_error', wallMs: Date.now() - started, ttftMs, detail: (err as Error).message, sseQueued };
    } finally {
      await reader.cancel().catch(() => undefined);
    }
    const wallMs = Date.now() - started;
    if (!terminal) return { user, outcome: 'stream_error', wallMs, ttftMs, detail: 'stream ended without a terminal event', sseQueued };
    const outcome: Outcome = terminal.event === 'run.completed' ? 'completed' : terminal.event === 'degraded' ? 'degraded' : terminal.event === 'run.cancelled' ? 'cancelled' : 'failed';
    return { user, outcome, wallMs, ttftMs, sseQueued, detail: outcome === 'failed' ? JSON.stringify(terminal.data).slice(0, 200) : undefined };
  }
}

async function main() {
  const logDir = testDir('bench-seed');
  const procs: Proc[] = [];
  let mesh: Mesh | undefined;
  const jwtSecret = 'seed-bench-secret-0123456789abcdef';
  // A brief-minute in wall milliseconds.
  const minuteMs = 60_000 * TIME_SCALE;
  try {
    const redis = await startRedis({ logDir }); procs.push(redis);
    const ferret = await startFerret({ logDir }); procs.push(ferret);
    const emulator = await startEmulator({
      logDir,
      env: {
        EMULATOR_TIME_SCALE: String(TIME_SCALE), EMULATOR_RPM: String(LLM_RPM), EMULATOR_TPM: String(LLM_TPM),
        EMULATOR_TTFT_MS: String(TTFT_MS), EMULATOR_TOKENS_PER_SEC: String(TOKENS_PER_SEC), EMULATOR_COMPLETION_TOKENS: String(COMPLETION_TOKENS),
        EMULATOR_REVISE_RATE: String(REVISE_RATE), EMULATOR_SEED: '2024',
      },
    });
    procs.push(emulator);
    mesh = await startMesh({
      logDir, redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret,
      env: { LOG_LEVEL: 'warn' },
      perService: {
        'llm-broker': {
          LLM_RPM: String(LLM_RPM), LLM_TPM: String(LLM_TPM), LLM_MAX_CONCURRENT: String(LLM_MAX_CONCURRENT), LLM_TIME_SCALE: String(TIME_SCALE),
          // Completions are short here; reserving the default 1024 tokens per call would starve the TPM quota.
          LLM_DEFAULT_MAX_TOKENS: String(Math.max(64, COMPLETION_TOKENS * 4)),
        },
        // The agents' deadline (120 brief-seconds per call, queueing included) is scaled with time.
        // info: the orchestrator's `run timings` lines (where a run's time goes) are summarised below.
        orchestrator: { LOG_LEVEL: 'info', AGENT_CALL_TIMEOUT_MS: String(Math.max(1_000, Math.round(120_000 * TIME_SCALE))), AGENT_MAX_TOKENS: String(Math.max(64, COMPLETION_TOKENS * 4)),
          RUN_MAX_QUEUE_WAIT_MS: String(Math.round(MAX_QUEUE_WAIT_S * 1000 * TIME_SCALE)) },
        edge: { SSE_MAX_STREAMS: String(SSE_MAX_STREAMS), RATE_LIMIT_PER_MINUTE: '600' },
      },
    });
    const edgeUrl = mesh.edge.url!;
    const brokerMetrics = `http://127.0.0.1:${mesh.broker.metricsPort}/metrics`;

    // Users and their conversations.
    const users = await Promise.all(Array.from({ length: USERS }, async (_, i) => {
      const token = await mintToken(jwtSecret, `seed-user-${i}`);
      const res = await fetch(`${edgeUrl}/api/conversations`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ title: `seed ${i}` }),
      });
      if (res.status !== 201) throw new Error(`creating a conversation: HTTP ${res.status} ${await res.text()}`);
      return { token, conversationId: ((await res.json()) as { id: string }).id };
    }));

    // Peaks of the broker's queue and the edge's open streams, sampled while the load runs.
    const peaks = { llmQueue: 0, llmInFlight: 0, openStreams: 0, samples: 0 };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          const [b, e] = await Promise.all([fetch(brokerMetrics).then((r) => r.text()), fetch(`${edgeUrl}/metrics`).then((r) => r.text())]);
          peaks.llmQueue = Math.max(peaks.llmQueue, gauge(b, 'llm_queue_depth'));
          peaks.llmInFlight = Math.max(peaks.llmInFlight, gauge(b, 'llm_in_flight'));
          peaks.openStreams = Math.max(peaks.openStreams, gauge(e, 'edge_sse_open_streams'));
          peaks.samples++;
        } catch { /* a missed sample */ }
        await sleep(250);
      }
    })();

    const records: RunRecord[] = [];
    const loadStarted = Date.now();
    const stopSendingAt = loadStarted + DURATION_S * 1000;
    // 2–3 messages a minute: one every 60/MSGS_PER_MIN brief-seconds on average (±20%), but never
    // before the previous answer arrived. First messages are spread over one interval (ramp-up).
    const intervalMs = minuteMs / MSGS_PER_MIN;
    await Promise.all(users.map(async (u, i) => {
      await sleep(Math.random() * intervalMs);
      let n = 0;
      while (Date.now() < stopSendingAt) {
        const sentAt = Date.now();
        records.push(await sendMessage(edgeUrl, u.token, u.conversationId, QUESTIONS[(i + n++) % QUESTIONS.length]!, i));
        const next = sentAt + intervalMs * (0.8 + Math.random() * 0.4);
        await sleep(Math.max(0, next - Date.now()));
      }
    }));
    const loadWallS = (Date.now() - loadStarted) / 1000;
    sampling = false;
    await sampler;

    const emuStats = (await (await fetch(`${emulator.url}/_emulator/stats`)).json()) as { requests: number; completed: number; rateLimited: number; maxInFlight: number; completionTokens: number };
    const brokerText = await (await fetch(brokerMetrics)).text();

    const queueWaitMeanMs = round((1000 * gauge(brokerText, 'llm_queue_wait_seconds_sum')) / Math.max(1, gauge(brokerText, 'llm_queue_wait_seconds_count')), 0);
    const profile = runTimingMedians(mesh.orchestrator.logFile, /^((planner|critic|host|reporter)\.r1\.(start|first_token|done)|store\.(history|flush)\.end|total)$/);
    const by = (o: Outcome) => records.filter((r) => r.outcome === o).length;
    const ended = records.filter((r) => r.outcome === 'completed' || r.outcome === 'degraded' || r.outcome === 'failed' || r.outcome === 'cancelled');
    const completedWall = records.filter((r) => r.outcome === 'completed').map((r) => r.wallMs);
    const ttfts = records.filter((r) => r.ttftMs !== undefined).map((r) => r.ttftMs!);
    const errors = by('failed') + by('http_error') + by('stream_error');
    const avg = completedWall.reduce((a, b) => a + b, 0) / Math.max(1, completedWall.length);
    const toBrief = (ms: number) => round(ms / 1000 / TIME_SCALE, 1);
    // Failures grouped by kind: outcome, HTTP status and the error code of the body or event.
    const failureKinds: Record<string, number> = {};
    for (const r of records) {
      if (r.outcome === 'completed' || r.outcome === 'degraded') continue;
      const code = /"code":"([^"]+)"/.exec(r.detail ?? '')?.[1] ?? r.detail?.slice(0, 60) ?? '';
      const kind = `${r.outcome}${r.status ? ` ${r.status}` : ''} ${code}`.trim();
      failureKinds[kind] = (failureKinds[kind] ?? 0) + 1;
    }
    const figures = {
      scenario: 'seed', maxQueueWaitBriefS: MAX_QUEUE_WAIT_S,
      users: USERS, timeScale: TIME_SCALE, durationS: DURATION_S, loadWallS: round(loadWallS), msgsPerMinPerUser: MSGS_PER_MIN,
      limits: { rpm: LLM_RPM, tpm: LLM_TPM, maxConcurrent: LLM_MAX_CONCURRENT, sseMaxStreams: SSE_MAX_STREAMS },
      callLatency: { ttftMs: TTFT_MS, tokensPerSec: TOKENS_PER_SEC, completionTokens: COMPLETION_TOKENS },
      runs: {
        sent: records.length, started: ended.length, completed: by('completed'), degraded: by('degraded'), failed: by('failed'),
        cancelled: by('cancelled'), httpErrors: by('http_error'), streamErrors: by('stream_error'), sseQueued: records.filter((r) => r.sseQueued).length,
        completedPerBriefMinute: round(by('completed') / (loadWallS / (minuteMs / 1000)), 1),
      },
      wallMs: { avg: Math.round(avg), p50: percentile(completedWall, 50), p95: percentile(completedWall, 95), p99: percentile(completedWall, 99) },
      wallBriefS: { avg: toBrief(avg), p50: toBrief(percentile(completedWall, 50)), p95: toBrief(percentile(completedWall, 95)), p99: toBrief(percentile(completedWall, 99)) },
      ttftMs: { p50: percentile(ttfts, 50), p95: percentile(ttfts, 95) },
      ttftBriefS: { p50: toBrief(percentile(ttfts, 50)), p95: toBrief(percentile(ttfts, 95)) },
      errorRatePct: round((100 * errors) / Math.max(1, records.length), 2),
      degradedRatePct: round((100 * by('degraded')) / Math.max(1, records.length), 2),
      upstream429: emuStats.rateLimited,
      brokerUpstream429: gauge(brokerText, 'llm_upstream_rate_limited_total'),
      upstreamRequests: emuStats.requests,
      upstreamMaxInFlight: emuStats.maxInFlight,
      llmQueueWaitMeanMs: queueWaitMeanMs, orchestratorProfileMedianMs: profile,
      llmQueuePeak: peaks.llmQueue, llmInFlightPeak: peaks.llmInFlight, edgeOpenStreamsPeak: peaks.openStreams, metricSamples: peaks.samples,
      targetsBriefS: TARGETS,
      targetsWallMs: { avg: TARGETS.avgS * 1000 * TIME_SCALE, p95: TARGETS.p95S * 1000 * TIME_SCALE, p99: TARGETS.p99S * 1000 * TIME_SCALE },
      met: {
        avg: avg < TARGETS.avgS * 1000 * TIME_SCALE,
        p95: percentile(completedWall, 95) < TARGETS.p95S * 1000 * TIME_SCALE,
        p99: percentile(completedWall, 99) < TARGETS.p99S * 1000 * TIME_SCALE,
        errorRate: (100 * errors) / Math.max(1, records.length) < TARGETS.errorRatePct,
        llmQueue: peaks.llmQueue < TARGETS.llmQueueLength,
        no429: emuStats.rateLimited === 0,
      },
      failureKinds,
      logDir,
    };
    const failures = Object.entries(failureKinds).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n}× ${k}`);
    const ok = (b: boolean) => (b ? 'met' : 'MISSED');
    console.log(`seed benchmark: ${USERS} users × ${MSGS_PER_MIN} messages per brief-minute for ${DURATION_S} s wall, through the edge (HTTP+SSE)`);
    console.log(`  time scale ${TIME_SCALE}: 1 brief-minute = ${minuteMs / 1000} s wall; LLM call ≈ ${TTFT_MS} ms to first token + ${COMPLETION_TOKENS}±25% tokens at ${TOKENS_PER_SEC}/s (brief time), ×${TIME_SCALE} on the wall`);
    console.log(`  provider and broker limits: ${LLM_RPM} RPM, ${LLM_TPM || 'no'} TPM, ${LLM_MAX_CONCURRENT} concurrent (windows scaled too); load shedding ${MAX_QUEUE_WAIT_S > 0 ? `above ${MAX_QUEUE_WAIT_S} brief-s of estimated queue wait` : 'off'}`);
    console.log(`  runs: ${figures.runs.sent} sent, ${figures.runs.completed} completed, ${figures.runs.degraded} degraded ("service busy"), ${figures.runs.failed} failed, ${figures.runs.httpErrors} HTTP errors, ${figures.runs.streamErrors} broken streams, ${figures.runs.sseQueued} queued by the SSE limiter`);
    console.log(`  throughput: ${figures.runs.completedPerBriefMinute} completed runs per brief-minute; upstream requests ${emuStats.requests}, upstream 429s ${emuStats.rateLimited}`);
    console.log(`  run wall time (completed): avg ${figures.wallMs.avg} ms, p50 ${figures.wallMs.p50}, p95 ${figures.wallMs.p95}, p99 ${figures.wallMs.p99}  = brief ${figures.wallBriefS.avg} / ${figures.wallBriefS.p50} / ${figures.wallBriefS.p95} / ${figures.wallBriefS.p99} s`);
    console.log(`  time to first token: p50 ${figures.ttftMs.p50} ms, p95 ${figures.ttftMs.p95} ms  = brief ${figures.ttftBriefS.p50} / ${figures.ttftBriefS.p95} s`);
    console.log(`  broker queue wait: mean ${queueWaitMeanMs} ms per call; one-round runs in the orchestrator (median ms since StartRun): ${Object.entries(profile).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    console.log(`  peaks: LLM queue ${peaks.llmQueue}, LLM calls in flight ${peaks.llmInFlight}, edge open streams ${peaks.openStreams} (${peaks.samples} samples)`);
    console.log(`  targets (brief, ×${TIME_SCALE} on the wall): avg < ${TARGETS.avgS} s ${ok(figures.met.avg)}, p95 < ${TARGETS.p95S} s ${ok(figures.met.p95)}, p99 < ${TARGETS.p99S} s ${ok(figures.met.p99)}, error rate < ${TARGETS.errorRatePct}% (${figures.errorRatePct}%) ${ok(figures.met.errorRate)}, LLM queue < ${TARGETS.llmQueueLength} ${ok(figures.met.llmQueue)}, no upstream 429 ${ok(figures.met.no429)}; degraded ${figures.degradedRatePct}%`);
    if (failures.length) console.log(`  failures by kind: ${failures.join(' | ')}`);
    console.log(`  logs: ${logDir}`);
    console.log(JSON.stringify(figures));
  } finally {
    await mesh?.stop();
    for (const p of procs.reverse()) await p.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
