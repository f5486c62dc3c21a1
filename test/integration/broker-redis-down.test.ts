// Redis down, for real: three brokers under three times the load their quota allows, Redis stopped
// for 20 s in the middle; then three more that start while Redis is away. The emulator enforces no
// limit of its own; it is the referee, counting the calls in flight at once and the requests
// admitted within any one rate window. The fleet must never exceed the global limits — before,
// during and after the outage, and across the switches.
import net from 'node:net';
import { Metadata } from '@grpc/grpc-js';
import { createClient, reasonOf } from '@agent-mesh/common';
import { LlmBrokerServiceClient, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  emulatorStats, freePort, generateRequest, promMetric, startEmulator, startRedis, startService, testDir, waitFor,
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
  for (let i = 0; i < 3; i++) await startBroker(String(i), redis.url, emulator.url);
  // Every replica has seen the other two in the heartbeat set (their share is a third).
  await waitFor('three live replicas', async () => (await Promise.all(brokers.map((b) => promMetric(b, 'llm_live_replicas')))).every((n) => n === 3), {
    timeoutMs: 30_000,
    intervalMs: 200,
  });
});

async function startBroker(instance: string, redisUrl: string, upstreamUrl: string, env: Record<string, string> = {}): Promise<LlmBrokerServiceClient> {
  const b = await startService('llm-broker', {
    logDir: dir,
    instance,
    env: {
      REDIS_URL: redisUrl,
      LLM_BASE_URL: `${upstreamUrl}/v1`,
      LLM_API_KEY: 'k',
      LLM_MAX_CONCURRENT: String(CONCURRENCY),
      LLM_RPM: String(RPM),
      LLM_TIME_SCALE: SCALE,
      OTEL_SDK_DISABLED: 'true',
      ...env,
    },
  });
  brokers.push(b);
  const client = createClient(LlmBrokerServiceClient, b.addr);
  clients.push(client);
  return client;
}

/** Closed loop, 6 callers per client, until stopped: ~3× the calls the limits allow for three. */
function load(targets: LlmBrokerServiceClient[]): { outcomes: Map<string, number>; stop: () => Promise<void> } {
  const outcomes = new Map<string, number>();
  let running = true;
  const callers = Array.from({ length: targets.length * CONCURRENCY }, async (_, i) => {
    while (running) {
      const o = await call(targets[i % targets.length]!, i);
      outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
      if (o !== 'done') await new Promise((r) => setTimeout(r, 50));
    }
  });
  return {
    outcomes,
    stop: async () => {
      running = false;
      await Promise.all(callers);
    },
  };
}

const sharedOnEvery = (list: ServiceProc[], v: 0 | 1) => async () => (await Promise.all(list.map((b) => promMetric(b, 'llm_quota_shared')))).every((x) => x === v);

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
  const { outcomes, stop } = load(clients.slice(0, 3));

  await new Promise((r) => setTimeout(r, 6_000)); // shared state, saturated
  const port = redis.port;
  const stoppedAt = Date.now();
  await redis.stop();
  await waitFor('every broker on its local share', sharedOnEvery(brokers, 0), {
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  await new Promise((r) => setTimeout(r, Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt))));
  const midOutage = await emulatorStats(emulator);
  redis = await startRedis({ logDir: dir, port });
  const restartedAt = Date.now();
  await waitFor('shared again', sharedOnEvery(brokers, 1), {
    timeoutMs: 20_000,
    intervalMs: 200,
  });
  await new Promise((r) => setTimeout(r, 8_000)); // saturated again, across the switch back
  await stop();

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

it('three brokers that start while Redis is away divide the limits by LLM_FALLBACK_REPLICAS, and share them once it is back', async () => {
  // A referee of its own, and a Redis that is not running yet.
  const referee = await startEmulator({
    logDir: dir,
    env: { EMULATOR_TIME_SCALE: SCALE, EMULATOR_COMPLETION_TOKENS: '100', EMULATOR_TOKENS_PER_SEC: '20', EMULATOR_SEED: '4' },
  });
  const port = await freePort();
  let late: RedisProc | undefined;
  try {
    const started = brokers.length;
    const fleet: LlmBrokerServiceClient[] = [];
    // A lease of 2 s: how long a replica that lost Redis holds its share back for calls the others
    // may have been admitted in the shared state (15 s by default).
    for (let i = 3; i < 6; i++) {
      fleet.push(await startBroker(String(i), `redis://127.0.0.1:${port}`, referee.url, { LLM_FALLBACK_REPLICAS: '3', LLM_LEASE_MS: '2000' }));
    }
    const mine = brokers.slice(started);
    const { outcomes, stop } = load(fleet);
    await waitFor('every new broker on its local share', sharedOnEvery(mine, 0), { timeoutMs: 10_000, intervalMs: 100 });
    await new Promise((r) => setTimeout(r, 12_000)); // two windows on the local shares
    const local = await emulatorStats(referee);
    late = await startRedis({ logDir: dir, port });
    await waitFor('shared once Redis is there', sharedOnEvery(mine, 1), { timeoutMs: 20_000, intervalMs: 200 });
    await new Promise((r) => setTimeout(r, 8_000)); // saturated across the switch to the shared state
    await stop();

    const s = await emulatorStats(referee);
    process.stdout.write(`redis-away-at-start referee: ${JSON.stringify({ local: { maxInFlight: local.maxInFlight, maxPerWindow: local.maxPerWindow, completed: local.completed }, maxInFlight: s.maxInFlight, maxPerWindow: s.maxPerWindow, outcomes: Object.fromEntries(outcomes) })}\n`);
    expect(s.maxInFlight).toBeLessThanOrEqual(CONCURRENCY);
    expect(s.maxPerWindow).toBeLessThanOrEqual(RPM);
    expect(s.rateLimited).toBe(0);
    // Served without Redis, pressing on the limits (each broker's share: 2 in flight, 20 a window).
    expect(local.completed).toBeGreaterThan(20);
    expect(local.maxInFlight).toBeGreaterThanOrEqual(CONCURRENCY - 1);
    expect(s.completed).toBeGreaterThan(local.completed);
  } finally {
    await late?.stop();
    await referee.stop();
  }
});

/** A TCP relay to Redis that can be cut (connections refused, open ones reset) and restored. */
async function relayTo(port: number): Promise<{ url: string; cut: () => Promise<void>; restore: () => Promise<void>; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  const listenPort = await freePort();
  const listen = () => new Promise<void>((r) => server.listen(listenPort, '127.0.0.1', r));
  const cut = async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const s of sockets) s.destroy();
    await closed;
  };
  await listen();
  return { url: `redis://127.0.0.1:${listenPort}`, cut, restore: listen, close: () => (server.listening ? cut() : Promise.resolve()) };
}

it('one broker cut off from Redis while the other two still reach it: they keep its share free, the fleet stays within the limits', async () => {
  const referee = await startEmulator({
    logDir: dir,
    env: { EMULATOR_TIME_SCALE: SCALE, EMULATOR_COMPLETION_TOKENS: '100', EMULATOR_TOKENS_PER_SEC: '20', EMULATOR_SEED: '5' },
  });
  // A Redis of its own (the first test's brokers still beat in the other).
  const own = await startRedis({ logDir: dir });
  const relay = await relayTo(own.port);
  try {
    const started = brokers.length;
    // A lease of 2 s: the cut-off broker's slots in Redis free soon after it is cut off, so that
    // only the share the others keep free stands between the fleet and the limits.
    const env = { LLM_LEASE_MS: '2000' };
    const fleet = [
      await startBroker('cut', relay.url, referee.url, env),
      await startBroker('7', own.url, referee.url, env),
      await startBroker('8', own.url, referee.url, env),
    ];
    const [cut, ...others] = brokers.slice(started);
    await waitFor('three live replicas', async () => (await Promise.all([cut!, ...others].map((b) => promMetric(b, 'llm_live_replicas')))).every((n) => n === 3), {
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    const { outcomes, stop } = load(fleet);
    await new Promise((r) => setTimeout(r, 5_000)); // shared, saturated
    const admittedBefore = await promMetric(cut!, 'llm_admissions_total');
    await relay.cut();
    const cutAt = Date.now();
    await waitFor('the cut-off broker on its local share', sharedOnEvery([cut!], 0), { timeoutMs: 10_000, intervalMs: 100 });
    await waitFor('the others keeping its share free', async () => (await Promise.all(others.map((b) => promMetric(b, 'llm_departed_replicas')))).every((n) => n === 1), {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
    expect(await Promise.all(others.map((b) => promMetric(b, 'llm_quota_shared')))).toEqual([1, 1]);
    await new Promise((r) => setTimeout(r, Math.max(0, 20_000 - (Date.now() - cutAt))));
    const cutOff = await emulatorStats(referee);
    const servedAlone = (await promMetric(cut!, 'llm_admissions_total')) - admittedBefore;
    await relay.restore();
    await waitFor('all three sharing again', sharedOnEvery([cut!], 1), { timeoutMs: 20_000, intervalMs: 200 });
    await waitFor('nothing kept free any more', async () => (await Promise.all(others.map((b) => promMetric(b, 'llm_departed_replicas')))).every((n) => n === 0), {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
    await new Promise((r) => setTimeout(r, 5_000)); // saturated across the switch back
    await stop();

    const s = await emulatorStats(referee);
    process.stdout.write(`partition referee: ${JSON.stringify({ cutOff: { maxInFlight: cutOff.maxInFlight, maxPerWindow: cutOff.maxPerWindow }, maxInFlight: s.maxInFlight, maxPerWindow: s.maxPerWindow, servedAlone, outcomes: Object.fromEntries(outcomes) })}\n`);
    expect(s.maxInFlight).toBeLessThanOrEqual(CONCURRENCY);
    expect(s.maxPerWindow).toBeLessThanOrEqual(RPM);
    expect(s.rateLimited).toBe(0);
    // The limits were pressed on, and the cut-off broker served calls on its own share.
    expect(cutOff.maxInFlight).toBeGreaterThanOrEqual(CONCURRENCY - 1);
    expect(servedAlone).toBeGreaterThan(0);
  } finally {
    await relay.close();
    await own.stop();
    await referee.stop();
  }
});
