// Benchmark `quota`: global quota accuracy across broker replicas under overload.
// 3 broker processes + one Redis + the emulator enforcing its own limit L (RPM, TPM, concurrency),
// offered 3×L from many equal users for 2 scaled minutes; then again with the emulator's real
// limit 30 % below the configured one (convergence, 429s until then).
// Prints a human summary and, as the last line, one JSON object of the figures.
import { setMaxListeners } from 'node:events';
import { Metadata } from '@grpc/grpc-js';
import { createClient } from '@agent-mesh/common';
import { LlmBrokerServiceClient, type GenerateRequest, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { percentile } from './stats';
import { startEmulator, startRedis, startService, testDir, type ServiceProc } from '../support';

const SCALE = Number(process.env.BENCH_SCALE ?? 0.1); // 0.1 → a 6 s "minute"
const WINDOW_MS = 60_000 * SCALE;
const SCALED_MINUTES = Number(process.env.BENCH_MINUTES ?? 2);
const L = { rpm: 120, tpm: 24_000, concurrency: 8 };
const USERS = 30;
const MAX_TOKENS = 120;

interface Outcome { user: number; ok: boolean; reason?: string; waitMs?: number; tokens?: number; at: number }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jain = (xs: number[]) => {
  const sum = xs.reduce((a, b) => a + b, 0);
  const sq = xs.reduce((a, b) => a + b * b, 0);
  return sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
};
/** Most timestamps inside any window of windowMs. */
const worstWindow = (ts: number[], windowMs: number) => {
  const s = [...ts].sort((a, b) => a - b);
  let worst = 0;
  for (let i = 0, j = 0; i < s.length; i += 1) {
    while (s[j]! <= s[i]! - windowMs) j += 1;
    worst = Math.max(worst, i - j + 1);
  }
  return worst;
};

function request(user: number): GenerateRequest {
  return {
    userId: `00000000-0000-4000-8000-${String(user).padStart(12, '0')}`,
    runId: '', agentRole: 'planner', runStarted: false, model: '', toolsJson: '', maxTokens: MAX_TOKENS,
    temperature: 0, hasTemperature: false, cache: false,
    messages: [
      { role: 'system', content: 'You are the Planner. Round: 1', name: '', toolCallId: '', toolCalls: [] },
      { role: 'user', content: `User ${user} asks: how do we keep a shared LLM quota exact across replicas?`, name: '', toolCallId: '', toolCalls: [] },
    ],
  };
}

async function generate(client: LlmBrokerServiceClient, user: number, signal: AbortSignal): Promise<Outcome> {
  const call = client.generate(request(user), new Metadata(), { deadline: Date.now() + 120_000 });
  signal.addEventListener('abort', () => call.cancel(), { once: true });
  try {
    let done: GenerateResponse['update'];
    for await (const m of call as AsyncIterable<GenerateResponse>) if (m.update?.$case === 'done') done = m.update;
    if (done?.$case !== 'done') return { user, ok: false, reason: 'no_done', at: Date.now() };
    return { user, ok: true, waitMs: done.done.queueWaitMs, tokens: done.done.usage?.totalTokens ?? 0, at: Date.now() };
  } catch (err) {
    const e = err as { code?: number; metadata?: Metadata };
    const reason = String(e.metadata?.get('x-mesh-reason')[0] ?? (e.code === 1 ? 'cancelled' : `code_${e.code}`));
    return { user, ok: false, reason, at: Date.now() };
  }
}

async function main(): Promise<void> {
  const dir = testDir('bench-quota');
  const redis = await startRedis({ logDir: dir });
  const emulator = await startEmulator({
    logDir: dir,
    env: {
      EMULATOR_TIME_SCALE: String(SCALE), EMULATOR_RPM: String(L.rpm), EMULATOR_TPM: String(L.tpm),
      EMULATOR_MAX_CONCURRENT: String(L.concurrency), EMULATOR_COMPLETION_TOKENS: '80', EMULATOR_SEED: '42',
    },
  });
  const brokers: ServiceProc[] = await Promise.all(
    [0, 1, 2].map((i) =>
      startService('llm-broker', {
        logDir: dir, instance: String(i),
        env: {
          REDIS_URL: redis.url, LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'bench', OTEL_SDK_DISABLED: 'true',
          LLM_MAX_CONCURRENT: String(L.concurrency), LLM_RPM: String(L.rpm), LLM_TPM: String(L.tpm),
          LLM_TIME_SCALE: String(SCALE), LLM_QUEUE_MAX: '5000', LOG_LEVEL: 'warn',
        },
      }),
    ),
  );
  const clients = brokers.map((b) => createClient(LlmBrokerServiceClient, b.addr));
  const emu = async (path: string, body?: unknown) =>
    (await fetch(`${emulator.url}${path}`, body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json();

  /** Offers 3×L (RPM) from USERS equal users for the duration; cancels what is left at the end. */
  async function phase(name: string, durationMs: number) {
    await emu('/_emulator/reset', {});
    const start = Date.now();
    const abort = new AbortController();
    setMaxListeners(0, abort.signal); // one listener per offered call
    const outcomes: Promise<Outcome>[] = [];
    const offeredPerSec = (3 * L.rpm) / (WINDOW_MS / 1000);
    const perUserGapMs = (1000 * USERS) / offeredPerSec;
    const rateLimitedAt: number[] = [];
    let last429 = 0;
    const poll = setInterval(async () => {
      const s = (await emu('/_emulator/stats')) as { rateLimited: number };
      if (s.rateLimited > last429) rateLimitedAt.push(Date.now() - start);
      last429 = s.rateLimited;
    }, 250);
    await Promise.all(
      Array.from({ length: USERS }, async (_, u) => {
        await sleep((u * perUserGapMs) / USERS);
        for (let n = 0; Date.now() - start < durationMs; n += 1) {
          outcomes.push(generate(clients[(u + n) % clients.length]!, u, abort.signal));
          await sleep(perUserGapMs);
        }
      }),
    );
    const elapsed = Date.now() - start;
    abort.abort(); // what was not admitted within the phase is dropped
    const results = await Promise.all(outcomes);
    clearInterval(poll);
    await sleep(500);
    const stats = (await emu('/_emulator/stats')) as { rateLimited: number; admissions: number[]; maxInFlight: number; promptTokens: number; completionTokens: number };
    const inPhase = stats.admissions.filter((t) => t >= start && t <= start + elapsed);
    const windows = elapsed / WINDOW_MS;
    const okDone = results.filter((r) => r.ok && r.at <= start + elapsed + 2_000);
    const tokens = okDone.reduce((s, r) => s + (r.tokens ?? 0), 0);
    const perUser = Array.from({ length: USERS }, (_, u) => okDone.filter((r) => r.user === u).length);
    const waits = okDone.map((r) => r.waitMs ?? 0);
    const refusals: Record<string, number> = {};
    for (const r of results) if (!r.ok) refusals[r.reason ?? '?'] = (refusals[r.reason ?? '?'] ?? 0) + 1;
    const worst = worstWindow(stats.admissions, WINDOW_MS);
    return {
      name, elapsedMs: elapsed, offered: results.length, admitted: inPhase.length, completed: okDone.length, refusals,
      upstream429: stats.rateLimited, last429AtMs: rateLimitedAt.at(-1) ?? 0,
      goodputRpm: inPhase.length / (L.rpm * windows),
      goodputTpm: tokens / (L.tpm * windows),
      worstWindowRequests: worst,
      overshoot: Math.max(0, worst - L.rpm) / L.rpm,
      maxInFlight: stats.maxInFlight,
      jain: jain(perUser),
      queueWaitP50Ms: percentile(waits, 50), queueWaitP99Ms: percentile(waits, 99),
    };
  }

  try {
    const durationMs = SCALED_MINUTES * WINDOW_MS;
    const p1 = await phase('configured = provider limit', durationMs);
    // Phase 2: the provider's real limit is 30 % below what the brokers are configured with.
    await sleep(WINDOW_MS); // let the windows empty
    await emu('/_emulator/config', { rpm: Math.floor(L.rpm * 0.7), tpm: Math.floor(L.tpm * 0.7), maxConcurrent: Math.floor(L.concurrency * 0.7) });
    const p2 = await phase('provider 30 % below configured', durationMs);
    const real = { rpm: Math.floor(L.rpm * 0.7), tpm: Math.floor(L.tpm * 0.7) };
    const p2goodput = { rpm: p2.admitted / (real.rpm * (p2.elapsedMs / WINDOW_MS)) };

    const line = (p: typeof p1) =>
      `  ${p.name}: offered ${p.offered}, admitted ${p.admitted}, 429s ${p.upstream429}, goodput RPM ${(100 * p.goodputRpm).toFixed(1)}% TPM ${(100 * p.goodputTpm).toFixed(1)}%, ` +
      `worst ${WINDOW_MS / 1000}s window ${p.worstWindowRequests} req (overshoot ${(100 * p.overshoot).toFixed(1)}%), max in flight ${p.maxInFlight}, ` +
      `Jain ${p.jain.toFixed(3)}, queue wait p50 ${p.queueWaitP50Ms} ms p99 ${p.queueWaitP99Ms} ms, refusals ${JSON.stringify(p.refusals)}`;
    console.log(`quota benchmark — time scale ${SCALE} (1 scaled minute = ${WINDOW_MS / 1000} s), ${SCALED_MINUTES} scaled minutes per phase,`);
    console.log(`  L = ${L.rpm} RPM, ${L.tpm} TPM, ${L.concurrency} concurrent; 3 brokers, ${USERS} equal users offering 3×L RPM`);
    console.log(line(p1));
    console.log(line(p2));
    console.log(`  phase 2: real limit ${real.rpm} RPM / ${real.tpm} TPM; converged (last 429) after ${p2.last429AtMs} ms (${(p2.last429AtMs / WINDOW_MS).toFixed(2)} scaled min), ` +
      `429s until then ${p2.upstream429}, goodput vs real RPM ${(100 * p2goodput.rpm).toFixed(1)}%`);
    console.log(JSON.stringify({
      scenario: 'quota', timeScale: SCALE, scaledMinutes: SCALED_MINUTES, limit: L,
      upstream429: p1.upstream429, goodputRpm: +p1.goodputRpm.toFixed(4), goodputTpm: +p1.goodputTpm.toFixed(4),
      worstOvershoot: +p1.overshoot.toFixed(4), jain: +p1.jain.toFixed(4), queueWaitP50Ms: p1.queueWaitP50Ms, queueWaitP99Ms: p1.queueWaitP99Ms,
      maxInFlight: p1.maxInFlight,
      phase2: { realLimit: real, upstream429: p2.upstream429, convergeMs: p2.last429AtMs, goodputRpmOfReal: +p2goodput.rpm.toFixed(4), maxInFlight: p2.maxInFlight, worstWindowRequests: p2.worstWindowRequests },
    }));
  } finally {
    clients.forEach((c) => c.close());
    for (const b of brokers) await b.stop().catch(() => undefined);
    await emulator.stop();
    await redis.stop();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
