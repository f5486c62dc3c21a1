// A provider that enforces its per-minute limit per second ("quantized" limits: OpenAI documents
// that 60,000 requests/minute may be enforced as 1,000 requests/second), against real brokers on
// real Redis. The emulator, at 600 RPM enforced per 1 s, holds 10 requests at once and refills one
// every 100 ms; it counts its own 429s. The pacing's bucket is LLM_QUOTA_BURST_FRACTION of the limit:
// 2 % (the default) lets 12 go from idle, more than the provider takes; 1.5 % lets 9 go. A 429 whose
// headers say the provider's minute had room teaches a broker to halve its bucket (not to cut its RPM).
import { Metadata } from '@grpc/grpc-js';
import type { GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  emulatorStats, generateRequest, promMetric, startEmulator, startRedis, testDir, waitFor,
  type EmulatorProc, type RedisProc,
} from '../support';
import { TestBrokers, type TestBroker } from '../support/brokers';

jest.setTimeout(120_000);

let redis: RedisProc;
let emulator: EmulatorProc;
let brokers: TestBrokers;

beforeAll(async () => {
  const dir = testDir('broker-quantized');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    // Real time: the provider's 100 ms between requests is far above event-loop delays.
    env: { EMULATOR_RPM: '600', EMULATOR_LIMIT_QUANTUM_MS: '1000', EMULATOR_TTFT_MS: '200', EMULATOR_COMPLETION_TOKENS: '10', EMULATOR_SEED: '3' },
  });
  // 600 RPM as the provider has it; no admissions taken ahead (each burst is decided as it comes).
  brokers = new TestBrokers({ logDir: dir, redisUrl: redis.url, emulatorUrl: emulator.url, env: { LLM_RPM: '600', LLM_MAX_CONCURRENT: '50', LLM_ADMIT_AHEAD: '0' } });
});

afterAll(async () => {
  await brokers?.stopAll();
  await emulator?.stop();
  await redis?.stop();
});

/** Fourteen calls at once (from idle, once the brokers' bucket is full again), spread over `over`; the provider's 429s they drew. */
async function burst(...over: TestBroker[]): Promise<{ upstream429: number; finished: number }> {
  await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
  const before = (await emulatorStats(emulator)).rateLimited;
  const results = await Promise.all(Array.from({ length: 14 }, async (_, i) => {
    const call = over[i % over.length]!.client.generate(generateRequest('How should a city plan for heat waves in summer?'), new Metadata(), { deadline: Date.now() + 60_000 });
    let last: GenerateResponse['update'];
    for await (const m of call as AsyncIterable<GenerateResponse>) last = m.update;
    return last?.$case === 'done';
  }));
  return { upstream429: (await emulatorStats(emulator)).rateLimited - before, finished: results.filter(Boolean).length };
}

const burstFraction = (b: TestBroker) => promMetric(b.proc, 'llm_quota_burst_fraction');

it('the default bucket (2 % of 600 RPM: 12 at once) draws 429s from a provider that takes 10 a second; the broker halves it, and the next burst draws none', async () => {
  const broker = await brokers.start();
  const first = await burst(broker);
  expect(first.finished).toBe(14); // the broker retried what was refused
  expect(first.upstream429).toBeGreaterThan(0);
  // The 429s came with 588 requests left in the provider's minute: a burst was refused, not the rate.
  expect(await burstFraction(broker)).toBe(0.01);
  expect(await promMetric(broker.proc, 'llm_effective_limit', 'limit="rpm"')).toBe(600);
  await new Promise((r) => setTimeout(r, 2_000)); // a lull: the broker's bucket (6 now) and the provider's fill up
  const second = await burst(broker);
  expect(second.finished).toBe(14);
  expect(second.upstream429).toBe(0);
});

it('LLM_QUOTA_BURST_FRACTION=0.015 (9 at once, then one per ~102 ms) draws none', async () => {
  const broker = await brokers.start({ env: { LLM_QUOTA_BURST_FRACTION: '0.015' } });
  const { upstream429, finished } = await burst(broker);
  expect(finished).toBe(14);
  expect(upstream429).toBe(0);
  expect(await burstFraction(broker)).toBe(0.015);
});

it('what one broker learnt reaches the others sharing the quota (and one started later): their next burst together draws none', async () => {
  const a = await brokers.start();
  const b = await brokers.start({ db: a.db }); // replicas of one deployment share the quota
  expect((await burst(a)).upstream429).toBeGreaterThan(0);
  expect(await burstFraction(a)).toBe(0.01);
  // B met no 429: it hears of A's bucket with its next heartbeat (every 2 s).
  await waitFor('broker B using the learnt bucket', async () => (await burstFraction(b)) === 0.01, { timeoutMs: 5_000, intervalMs: 100 });
  const c = await brokers.start({ db: a.db });
  await waitFor('broker C using the learnt bucket', async () => (await burstFraction(c)) === 0.01, { timeoutMs: 5_000, intervalMs: 100 });
  await new Promise((r) => setTimeout(r, 2_000)); // a lull
  const together = await burst(b, c);
  expect(together.finished).toBe(14);
  expect(together.upstream429).toBe(0);
});
