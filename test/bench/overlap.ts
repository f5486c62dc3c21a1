// Overlap benchmark: the same runs with AGENT_OVERLAP on and off against the same emulator
// latencies; wall time per run (StartRun → terminal event), p50/p95 and the ratio. The last line
// is one JSON object of the figures. Run: npx tsx test/bench/overlap.ts
// env: RUNS (per mode, default 10), TIME_SCALE (0.25), REVISE_RATE (0.3), CONCURRENCY (runs in
// flight at once per wave, default 1). The orchestrators log a `run timings` line per run; the
// summary gives the median of the main moments (ms from StartRun) per mode. The broker's quota
// windows are scaled with the emulator's latencies (LLM_TIME_SCALE), as in the other scenarios:
// unscaled, 500 RPM spaces calls 120 ms apart and concurrent runs measure the quota, not overlap.
// ORCHESTRATOR_DIST=<folder with main.js> runs another build of the orchestrator (to compare
// revisions: e.g. the previous commit's source compiled into a scratch folder). The broker runs
// without its LLM response cache (every agent's call reaches the emulator).
import path from 'node:path';
import { createClient, newId, TERMINAL_EVENTS, unary } from '@agent-mesh/common';
import { OrchestratorServiceClient } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import { percentile, runTimingMedians } from './stats';
import { freePort, grpcServing, startEmulator, startFerret, startRedis, startService, testDir, waitFor, type Proc, type ServiceProc } from '../support';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js') as { ROOT: string; launch: (name: string, cmd: string, args: string[], o: { env: Record<string, string>; logDir: string }) => Proc };

const RUNS = Number(process.env.RUNS ?? 10);
const TIME_SCALE = Number(process.env.TIME_SCALE ?? 0.25);
const REVISE_RATE = Number(process.env.REVISE_RATE ?? 0.3);
const CONCURRENCY = Math.max(1, Number(process.env.CONCURRENCY ?? 1));
const ORCHESTRATOR_DIST = process.env.ORCHESTRATOR_DIST;

/** An orchestrator from ORCHESTRATOR_DIST (same wiring as startService), or the current build. */
async function startOrchestrator(o: { logDir: string; instance: string; env: Record<string, string> }): Promise<ServiceProc> {
  if (!ORCHESTRATOR_DIST) return startService('orchestrator', o);
  const [port, metricsPort] = [await freePort(), await freePort()];
  const h = stack.launch(`orchestrator${o.instance}-${port}`, process.execPath,
    ['--require', path.join(stack.ROOT, 'services/common/dist/telemetry/register.js'), path.join(path.resolve(ORCHESTRATOR_DIST), 'main.js')], {
      logDir: o.logDir,
      env: { OTEL_SERVICE_NAME: 'orchestrator', ORCHESTRATOR_PORT: String(port), METRICS_PORT: String(metricsPort), PROMPTS_DIR: path.join(stack.ROOT, 'services/orchestrator/prompts'), ...o.env },
    });
  const addr = `127.0.0.1:${port}`;
  await waitFor('orchestrator', () => grpcServing(addr), { timeoutMs: 30_000 });
  return { ...h, port, addr, metricsPort };
}

/** The moments of a one-round run the summary shows (see runTimingMedians). */
const PROFILE_KEYS = /^(store\.history|checkpoint\.1|store\.flush|total|(planner|critic|host|reporter)\.r1\.(start|first_token|done)|store\.(messages|run)\.1\.)/;

async function main() {
  const logDir = testDir('bench-overlap');
  const procs: Proc[] = [];
  let broker: { addr: string; stop(): Promise<void> } | undefined;
  try {
    const redis = await startRedis({ logDir }); procs.push(redis);
    const ferret = await startFerret({ logDir }); procs.push(ferret);
    const emulator = await startEmulator({ logDir, env: { EMULATOR_TIME_SCALE: String(TIME_SCALE), EMULATOR_REVISE_RATE: String(REVISE_RATE), EMULATOR_SEED: '42' } });
    procs.push(emulator);
    const common = { REDIS_URL: redis.url, MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true', LOG_LEVEL: 'warn' };
    const orchLog = { LOG_LEVEL: 'info' }; // for the `run timings` lines
    const store = await startService('store', { logDir, env: common }); procs.push(store);
    const tools = await startService('tool-service', { logDir, env: { ...common, STORE_ADDR: store.addr } }); procs.push(tools);
    // The LLM response cache off: the runs ask the same few questions, and a Planner or Critic answered
    // from the cache takes milliseconds, so the benchmark would time cache hits instead of overlap.
    const b = await startService('llm-broker', { logDir, env: { ...common, LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'k', LLM_TIME_SCALE: String(TIME_SCALE), LLM_CACHE_TTL_S: '0' } });
    procs.push(b);
    broker = { addr: b.addr, stop: async () => undefined };
    const env = { ...common, STORE_ADDR: store.addr, TOOL_SERVICE_ADDR: tools.addr, LLM_BROKER_ADDR: broker.addr };
    const on = await startOrchestrator({ logDir, instance: 'overlap', env: { ...env, ...orchLog, AGENT_OVERLAP: 'true' } }); procs.push(on);
    const off = await startOrchestrator({ logDir, instance: 'sequential', env: { ...env, ...orchLog, AGENT_OVERLAP: 'false' } }); procs.push(off);
    const storeClient = createClient(StoreServiceClient, store.addr);
    const clients = { on: createClient(OrchestratorServiceClient, on.addr), off: createClient(OrchestratorServiceClient, off.addr) };
    const times: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const rounds: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const pairs: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const userId = 'bench-user';
    const questions = ['How should I plan a vegetable garden?', 'Explain how a heat pump works.', 'What makes a good code review?', 'How do I train for a 10k run?', 'How do I choose a laptop for programming?', 'What should I pack for a week of hiking?', 'How can a small team adopt continuous delivery?', 'How do I prepare for a job interview?', 'What is a sensible way to learn Spanish?', 'How should a library catalogue its books?'];
    const runOne = async (mode: 'on' | 'off', question: string) => {
      const conversationId = newId();
      await unary(storeClient.createConversation.bind(storeClient), { userId, conversationId, title: 'bench' });
      const started = Date.now();
      let plannerStart = 0;
      let criticDone = 0;
      const end = await new Promise<{ type: string; data: Record<string, unknown> }>((resolve, reject) => {
        const call = clients[mode].startRun({ userId, conversationId, messageId: newId(), content: question }, { deadline: Date.now() + 300_000 });
        call.on('data', (m: { event?: { type: string; dataJson: string } }) => {
          if (!m.event) return;
          const d = JSON.parse(m.event.dataJson) as Record<string, unknown>;
          // The brief's pair: from the Planner's start to the Critic's verdict, round 1.
          if (m.event.type === 'agent.started' && d.agent === 'planner' && d.round === 1) plannerStart = Date.now();
          if (m.event.type === 'agent.completed' && d.agent === 'critic' && d.round === 1) criticDone = Date.now();
          if (TERMINAL_EVENTS.has(m.event.type)) resolve({ type: m.event.type, data: d });
        });
        call.on('error', reject);
      });
      if (end.type !== 'run.completed') throw new Error(`run ended with ${end.type}: ${JSON.stringify(end.data)}`);
      times[mode].push(Date.now() - started);
      if (plannerStart && criticDone) pairs[mode].push(criticDone - plannerStart);
      rounds[mode].push(Number(end.data.rounds));
    };
    // Waves of CONCURRENCY runs, alternating the modes so both see the same machine load over time.
    const waves = Math.ceil(RUNS / CONCURRENCY);
    for (let w = 0; w < waves * 2; w++) {
      const mode: 'on' | 'off' = w % 2 === 0 ? 'on' : 'off';
      const n = Math.min(CONCURRENCY, RUNS - Math.floor(w / 2) * CONCURRENCY);
      await Promise.all(Array.from({ length: n }, (_, k) => runOne(mode, questions[(Math.floor(w / 2) * CONCURRENCY + k) % questions.length]!)));
    }
    const figures = {
      scenario: 'overlap', runsPerMode: RUNS, concurrency: CONCURRENCY, timeScale: TIME_SCALE, reviseRate: REVISE_RATE,
      sequential: { p50Ms: percentile(times.off, 50), p95Ms: percentile(times.off, 95), meanRounds: rounds.off.reduce((a, b) => a + b, 0) / RUNS },
      overlap: { p50Ms: percentile(times.on, 50), p95Ms: percentile(times.on, 95), meanRounds: rounds.on.reduce((a, b) => a + b, 0) / RUNS },
      ratioP50: 0, ratioP95: 0, reductionP50Pct: 0,
      plannerCriticPair: { sequentialP50Ms: percentile(pairs.off, 50), overlapP50Ms: percentile(pairs.on, 50), reductionP50Pct: 0 },
    };
    figures.plannerCriticPair.reductionP50Pct = Math.round((1 - figures.plannerCriticPair.overlapP50Ms / figures.plannerCriticPair.sequentialP50Ms) * 1000) / 10;
    figures.ratioP50 = Math.round((figures.overlap.p50Ms / figures.sequential.p50Ms) * 1000) / 1000;
    figures.ratioP95 = Math.round((figures.overlap.p95Ms / figures.sequential.p95Ms) * 1000) / 1000;
    figures.reductionP50Pct = Math.round((1 - figures.ratioP50) * 1000) / 10;
    const profiles = { sequential: runTimingMedians(off.logFile, PROFILE_KEYS), overlap: runTimingMedians(on.logFile, PROFILE_KEYS) };
    console.log(`overlap benchmark: ${RUNS} runs per mode, ${CONCURRENCY} at a time, emulator time scale ${TIME_SCALE} (latencies ×${TIME_SCALE}), revise rate ${REVISE_RATE}`);
    for (const [mode, p] of Object.entries(profiles)) {
      console.log(`  ${mode} one-round run profile (median ms since StartRun; .ms = duration of a wait): ${Object.entries(p).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    }
    console.log(`  sequential: p50 ${figures.sequential.p50Ms} ms, p95 ${figures.sequential.p95Ms} ms, mean rounds ${figures.sequential.meanRounds}`);
    console.log(`  overlap:    p50 ${figures.overlap.p50Ms} ms, p95 ${figures.overlap.p95Ms} ms, mean rounds ${figures.overlap.meanRounds}`);
    console.log(`  overlap/sequential p50 ${figures.ratioP50} (${figures.reductionP50Pct}% less), p95 ${figures.ratioP95}`);
    const pair = figures.plannerCriticPair;
    console.log(`  Planner start → Critic verdict (round 1): sequential p50 ${pair.sequentialP50Ms} ms, overlap p50 ${pair.overlapP50Ms} ms (${pair.reductionP50Pct}% less; the brief's target ~50%)`);
    console.log(JSON.stringify({ ...figures, profiles }));
    clients.on.close(); clients.off.close(); storeClient.close();
  } finally {
    await broker?.stop();
    for (const p of procs.reverse()) await p.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
