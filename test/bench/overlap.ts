// Overlap benchmark: the same runs with AGENT_OVERLAP on and off against the same emulator
// latencies; wall time per run (StartRun → terminal event), p50/p95 and the ratio. The last line
// is one JSON object of the figures. Run: npx tsx test/bench/overlap.ts  (env: RUNS, TIME_SCALE)
import fs from 'node:fs';
import path from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { createClient, newId, unary } from '@agent-mesh/common';
import { LlmBrokerServiceService, type GenerateRequest, type GenerateResponse } from '@agent-mesh/common/dist/gen/llmbroker/v1/llm_broker';
import { OrchestratorServiceClient } from '@agent-mesh/common/dist/gen/orchestrator/v1/orchestrator';
import { StoreServiceClient } from '@agent-mesh/common/dist/gen/store/v1/store';
import { startEmulator, startFerret, startRedis, startService, testDir, type Proc } from '../support';

const RUNS = Number(process.env.RUNS ?? 10);
const TIME_SCALE = Number(process.env.TIME_SCALE ?? 0.25);
const REVISE_RATE = Number(process.env.REVISE_RATE ?? 0.3);
const ROOT = path.resolve(__dirname, '../..');

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? 0;
};

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
    const store = await startService('store', { logDir, env: common }); procs.push(store);
    const tools = await startService('tool-service', { logDir, env: { ...common, STORE_ADDR: store.addr } }); procs.push(tools);
    const b = await startService('llm-broker', { logDir, env: { ...common, LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'k' } });
    procs.push(b);
    broker = { addr: b.addr, stop: async () => undefined };
    const env = { ...common, STORE_ADDR: store.addr, TOOL_SERVICE_ADDR: tools.addr, LLM_BROKER_ADDR: broker.addr };
    const on = await startService('orchestrator', { logDir, instance: 'overlap', env: { ...env, AGENT_OVERLAP: 'true' } }); procs.push(on);
    const off = await startService('orchestrator', { logDir, instance: 'sequential', env: { ...env, AGENT_OVERLAP: 'false' } }); procs.push(off);
    const storeClient = createClient(StoreServiceClient, store.addr);
    const clients = { on: createClient(OrchestratorServiceClient, on.addr), off: createClient(OrchestratorServiceClient, off.addr) };
    const times: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const rounds: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const userId = 'bench-user';
    const questions = ['How should I plan a vegetable garden?', 'Explain how a heat pump works.', 'What makes a good code review?', 'How do I train for a 10k run?'];
    for (let i = 0; i < RUNS * 2; i++) {
      // Alternate the modes so both see the same machine load over time.
      const mode: 'on' | 'off' = i % 2 === 0 ? 'on' : 'off';
      const conversationId = newId();
      await unary(storeClient.createConversation.bind(storeClient), { userId, conversationId, title: 'bench' });
      const started = Date.now();
      const end = await new Promise<{ type: string; data: Record<string, unknown> }>((resolve, reject) => {
        const call = clients[mode].startRun({ userId, conversationId, messageId: newId(), content: questions[Math.floor(i / 2) % questions.length]! }, { deadline: Date.now() + 300_000 });
        call.on('data', (m: { event?: { type: string; dataJson: string } }) => {
          if (m.event && ['run.completed', 'run.failed', 'run.cancelled', 'degraded'].includes(m.event.type)) resolve({ type: m.event.type, data: JSON.parse(m.event.dataJson) as Record<string, unknown> });
        });
        call.on('error', reject);
      });
      if (end.type !== 'run.completed') throw new Error(`run ended with ${end.type}: ${JSON.stringify(end.data)}`);
      times[mode].push(Date.now() - started);
      rounds[mode].push(Number(end.data.rounds));
    }
    const figures = {
      scenario: 'overlap', runsPerMode: RUNS, timeScale: TIME_SCALE, reviseRate: REVISE_RATE,
      sequential: { p50Ms: pct(times.off, 50), p95Ms: pct(times.off, 95), meanRounds: rounds.off.reduce((a, b) => a + b, 0) / RUNS },
      overlap: { p50Ms: pct(times.on, 50), p95Ms: pct(times.on, 95), meanRounds: rounds.on.reduce((a, b) => a + b, 0) / RUNS },
      ratioP50: 0, ratioP95: 0, reductionP50Pct: 0,
    };
    figures.ratioP50 = Math.round((figures.overlap.p50Ms / figures.sequential.p50Ms) * 1000) / 1000;
    figures.ratioP95 = Math.round((figures.overlap.p95Ms / figures.sequential.p95Ms) * 1000) / 1000;
    figures.reductionP50Pct = Math.round((1 - figures.ratioP50) * 1000) / 10;
    console.log(`overlap benchmark: ${RUNS} runs per mode, emulator time scale ${TIME_SCALE} (latencies ×${TIME_SCALE}), revise rate ${REVISE_RATE}`);
    console.log(`  sequential: p50 ${figures.sequential.p50Ms} ms, p95 ${figures.sequential.p95Ms} ms, mean rounds ${figures.sequential.meanRounds}`);
    console.log(`  overlap:    p50 ${figures.overlap.p50Ms} ms, p95 ${figures.overlap.p95Ms} ms, mean rounds ${figures.overlap.meanRounds}`);
    console.log(`  overlap/sequential p50 ${figures.ratioP50} (${figures.reductionP50Pct}% less), p95 ${figures.ratioP95}`);
    console.log(JSON.stringify(figures));
    clients.on.close(); clients.off.close(); storeClient.close();
  } finally {
    await broker?.stop();
    for (const p of procs.reverse()) await p.stop();
  }
}

