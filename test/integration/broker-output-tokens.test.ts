// A provider that limits input and output tokens apart (Anthropic's ITPM and OTPM), against real
// brokers on real Redis, over the Messages API. The emulator counts a call's prompt against its
// input limit and its max_tokens against its output limit on arrival, corrects the output to what
// was generated at the end, and counts its own 429s.
import { Metadata } from '@grpc/grpc-js';
import type { GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  emulatorStats, generateRequest, promMetric, startEmulator, startRedis, testDir,
  type EmulatorProc, type RedisProc,
} from '../support';
import { TestBrokers, type TestBroker } from '../support/brokers';

jest.setTimeout(120_000);

const ITPM = 1_000_000;
const OTPM = 3_000;
/** Each call's max_tokens: twenty at once reserve 6,000 output tokens, twice the provider's limit. */
const MAX_TOKENS = 300;

let redis: RedisProc;
let emulator: EmulatorProc;
let brokers: TestBrokers;

beforeAll(async () => {
  const dir = testDir('broker-output-tokens');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_RPM: '6000', EMULATOR_TPM: String(ITPM), EMULATOR_OTPM: String(OTPM), EMULATOR_TTFT_MS: '100', EMULATOR_COMPLETION_TOKENS: '10', EMULATOR_SEED: '3' },
  });
  brokers = new TestBrokers({
    logDir: dir,
    redisUrl: redis.url,
    emulatorUrl: emulator.url,
    env: { LLM_PROTOCOL: 'anthropic', LLM_RPM: '6000', LLM_TPM: String(ITPM), LLM_MAX_CONCURRENT: '50', LLM_ADMIT_AHEAD: '0' },
  });
});

afterAll(async () => {
  await brokers?.stopAll();
  await emulator?.stop();
  await redis?.stop();
});

/** Twenty calls at once through `broker`; the provider's 429s they drew, how many finished, and the most the provider had in flight. */
async function twenty(broker: TestBroker): Promise<{ upstream429: number; finished: number; maxInFlight: number }> {
  await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
  const before = (await emulatorStats(emulator)).rateLimited;
  const results = await Promise.all(Array.from({ length: 20 }, async () => {
    const call = broker.client.generate(generateRequest('How should a city plan for heat waves in summer?', { maxTokens: MAX_TOKENS }), new Metadata(), { deadline: Date.now() + 60_000 });
    let last: GenerateResponse['update'];
    try {
      for await (const m of call as AsyncIterable<GenerateResponse>) last = m.update;
    } catch {
      return false;
    }
    return last?.$case === 'done';
  }));
  const after = await emulatorStats(emulator);
  return { upstream429: after.rateLimited - before, finished: results.filter(Boolean).length, maxInFlight: after.maxInFlight };
}

it('with LLM_OTPM the broker holds calls back on their output tokens: twenty calls that reserve twice the output limit draw no 429', async () => {
  const broker = await brokers.start({ env: { LLM_OTPM: String(OTPM) } });
  const { upstream429, finished, maxInFlight } = await twenty(broker);
  expect(finished).toBe(20);
  expect(upstream429).toBe(0);
  // Counted over the window, not paced: as many went together as the output limit holds (3,000 ÷ 300),
  // where a pacing bucket (2 %: 60 tokens) would have let them go one at a time.
  expect(maxInFlight).toBe(10);
  // The output limiter, not the provider, made the calls wait.
  expect(await promMetric(broker.proc, 'llm_refusals_total', 'reason="otpm"')).toBeGreaterThan(0);
  // The input limit was not cut to the output one (the most restrictive, anthropic-ratelimit-tokens-*).
  expect(await promMetric(broker.proc, 'llm_effective_limit', 'limit="tpm"')).toBe(ITPM);
  expect(await promMetric(broker.proc, 'llm_effective_limit', 'limit="otpm"')).toBe(OTPM);
});

it('without it, the same calls exceed the provider\'s output limit: 429s', async () => {
  const broker = await brokers.start();
  const { upstream429 } = await twenty(broker);
  expect(upstream429).toBeGreaterThan(0);
});

it('an output limit configured above the provider\'s follows its output-tokens headers, and the input limit its own', async () => {
  const broker = await brokers.start({ env: { LLM_OTPM: String(OTPM * 10), LLM_TPM: String(ITPM * 2) } });
  const call = broker.client.generate(generateRequest('What is a heat wave?', { maxTokens: MAX_TOKENS }), new Metadata(), { deadline: Date.now() + 30_000 });
  let last: GenerateResponse['update'];
  for await (const m of call as AsyncIterable<GenerateResponse>) last = m.update;
  expect(last?.$case).toBe('done');
  // The answer's headers: anthropic-ratelimit-output-tokens-limit for the one, input-tokens-limit
  // for the other (not tokens-*, the most restrictive of the two).
  expect(await promMetric(broker.proc, 'llm_effective_limit', 'limit="otpm"')).toBe(OTPM);
  expect(await promMetric(broker.proc, 'llm_effective_limit', 'limit="tpm"')).toBe(ITPM);
});
