// Redis down, for real: three brokers under three times the load their quota allows, Redis stopped
// for 20 s in the middle. The emulator enforces no limit of its own; it is the referee, counting
// the calls in flight at once and the requests admitted within any one rate window. The fleet must
// never exceed the global limits — before, during and after the outage, and across the switches.
import { Metadata } from '@grpc/grpc-js';
import { createClient, reasonOf } from '@agent-mesh/common';
import { LlmBrokerServiceClient, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  emulatorStats, generateRequest, promMetric, startEmulator, startRedis, startService, testDir, waitFor,
  type EmulatorProc, type RedisProc, type ServiceProc,
} from '../support';

jest.setTimeout(240_000);

/** Global limits: 6 calls in flight, 60 requests per (scaled) minute = 10 per second at scale 0.1. */
const CONCURRENCY = 6;
const RPM = 60;
const SCALE = '0.1';
const OUTAGE_MS = 20_000;

let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
const brokers: ServiceProc[] = [];
const clients: LlmBrokerServiceClient[] = [];

beforeAll(async () => {
  dir = testDir('broker-redis-down');
  redis = await startRedis({ logDir: dir });
  // No limits: a provider that would accept any overshoot, so that only the referee sees it.
  // Calls last ~0.55 s (40 ms to the first token, ~100 tokens at 200/s): both limits bind.
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_TIME_SCALE: SCALE, EMULATOR_COMPLETION_TOKENS: '100', EMULATOR_TOKENS_PER_SEC: '20', EMULATOR_SEED: '3' },
  });
  for (let i = 0; i < 3; i++) {
    const b = await startService('llm-broker', {
      logDir: dir,
      instance: String(i),
      env: {
        REDIS_URL: redis.url,
        LLM_BASE_URL: `${emulator.url}/v1`,
        LLM_API_KEY: 'k',
        LLM_MAX_CONCURRENT: String(CONCURRENCY),
        LLM_RPM: String(RPM),
        LLM_TIME_SCALE: SCALE,
        OTEL_SDK_DISABLED: 'true',
      },
    });
    brokers.push(b);
    clients.push(createClient(LlmBrokerServiceClient, b.addr));
  }
  // Every replica has seen the other two in the heartbeat set (their share is a third).
  await waitFor('three live replicas', async () => (await Promise.all(brokers.map((b) => promMetric(b, 'llm_live_replicas')))).every((n) => n === 3), {
    timeoutMs: 30_000,
    intervalMs: 200,
  });
});

afterAll(async () => {
  clients.forEach((c) => c.close());
  for (const b of brokers) await b.stop().catch(() => undefined);
  await emulator?.stop();
  await redis?.stop();
});

async function call(client: LlmBrokerServiceClient, i: number): Promise<'done' | string> {
  const req = generateRequest('How should a city plan for heat waves in summer?', { userId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` });
  const c = client.generate(req, new Metadata(), { deadline: Date.now() + 30_000 });
  try {
    let last: GenerateResponse | undefined;
    for await (const m of c as AsyncIterable<GenerateResponse>) last = m;
    return last?.update?.$case === 'done' ? 'done' : 'no done';
  } catch (err) {
    return reasonOf(err) ?? String((err as Error).message);
  }
}

it('three brokers under 3× load never exceed the global limits while Redis is stopped for 20 s', async () => {
  const outcomes = new Map<string, number>();
  let running = true;
  // Closed loop, 6 callers per broker: ~3× the calls the limits allow.
  const callers = Array.from({ length: 3 * CONCURRENCY }, async (_, i) => {
    while (running) {
      const o = await call(clients[i % 3]!, i);
      outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
      if (o !== 'done') await new Promise((r) => setTimeout(r, 50));
    }
  });

  await new Promise((r) => setTimeout(r, 6_000)); // shared state, saturated
  const port = redis.port;
  const stoppedAt = Date.now();
  await redis.stop();
  await waitFor('every broker on its local share', async () => (await Promise.all(brokers.map((b) => promMetric(b, 'llm_quota_shared')))).every((v) => v === 0), {
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  await new Promise((r) => setTimeout(r, Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt))));
  const midOutage = await emulatorStats(emulator);
  redis = await startRedis({ logDir: dir, port });
  const restartedAt = Date.now();
  await waitFor('shared again', async () => (await Promise.all(brokers.map((b) => promMetric(b, 'llm_quota_shared')))).every((v) => v === 1), {
    timeoutMs: 20_000,
    intervalMs: 200,
  });
  await new Promise((r) => setTimeout(r, 8_000)); // saturated again, across the switch back
  running = false;
  await Promise.all(callers);

  const s = await emulatorStats(emulator);
  process.stdout.write(`redis-down referee: ${JSON.stringify({ maxInFlight: s.maxInFlight, maxPerWindow: s.maxPerWindow, outcomes: Object.fromEntries(outcomes) })}\n`);
  const during = midOutage.admissions.filter((t) => t > stoppedAt + 2_000 && t < restartedAt).length;
  // The referee: never more in flight, never more in any 6 s window, than the global limits.
  expect(s.maxInFlight).toBeLessThanOrEqual(CONCURRENCY);
  expect(s.maxPerWindow).toBeLessThanOrEqual(RPM);
  expect(s.rateLimited).toBe(0);
  // The load did press on the limits (the test could have failed), and the outage was served.
  expect(s.maxPerWindow).toBeGreaterThanOrEqual(RPM * 0.6);
  expect(s.maxInFlight).toBeGreaterThanOrEqual(CONCURRENCY - 1);
  expect(during).toBeGreaterThan(0);
  expect(outcomes.get('done') ?? 0).toBeGreaterThan(100);
});
