// A provider's prompt cache and its input-token limit, against real brokers on real Redis, over the
// Messages API. The emulator caches as Anthropic does (the prefix through each cache_control
// breakpoint, for its ttl; at least 1,024 tokens), bills the three input counts, and leaves the
// tokens it reads from its cache out of its input limit (ITPM) unless told to count them; it counts
// its own 429s and cache reads.
import { Metadata, status } from '@grpc/grpc-js';
import { CallerRole, type GenerateRequest, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, generateRequest, promMetric, runGenerate, startEmulator, startRedis, testDir,
  type EmulatorProc, type RedisProc,
} from '../support';
import { TestBrokers, type TestBroker } from '../support/brokers';

jest.setTimeout(120_000);

/** Input tokens a minute: a whole prompt (~1,100 tokens) paces the next call 2.2 s later. */
const ITPM = 30_000;
/** A system prompt just over Anthropic's least cacheable prefix, the same in every call, marked as a breakpoint. */
const SYSTEM = 'You are the Host of a panel on city planning: answer in one short paragraph, cite no source you have not read. '.repeat(50);

let redis: RedisProc;
let emulator: EmulatorProc;
let brokers: TestBrokers;

beforeAll(async () => {
  const dir = testDir('broker-prompt-cache');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_RPM: '6000', EMULATOR_TPM: String(ITPM), EMULATOR_OTPM: '1000000', EMULATOR_TTFT_MS: '100', EMULATOR_COMPLETION_TOKENS: '10', EMULATOR_SEED: '5' },
  });
  brokers = new TestBrokers({
    logDir: dir,
    redisUrl: redis.url,
    emulatorUrl: emulator.url,
    env: { LLM_PROTOCOL: 'anthropic', LLM_RPM: '6000', LLM_TPM: String(ITPM), LLM_OTPM: '1000000', LLM_MAX_CONCURRENT: '100', LLM_ADMIT_AHEAD: '0' },
  });
});

afterAll(async () => {
  await brokers?.stopAll();
  await emulator?.stop();
  await redis?.stop();
});

/** Call `i`, a direct one (as /v1's): the cached system prompt, then a question of its own. */
function ask(i: number): GenerateRequest {
  const req = generateRequest(`Question ${i}: how should district ${i} plan for heat waves?`, { maxTokens: 50, callerRole: CallerRole.CALLER_ROLE_DIRECT });
  return { ...req, messages: [{ ...req.messages[0]!, content: SYSTEM, cacheTtl: '5m' }, req.messages[1]!] };
}

/** Calls `from`…`to - 1` at once through `broker`: how many finished within `deadlineMs`, and the usage of each. */
async function calls(broker: TestBroker, from: number, to: number, deadlineMs: number, request: (i: number) => GenerateRequest = ask) {
  const results = await Promise.all(Array.from({ length: to - from }, async (_, k) => {
    const call = broker.client.generate(request(from + k), new Metadata(), { deadline: Date.now() + deadlineMs });
    let last: GenerateResponse['update'];
    try {
      for await (const m of call as AsyncIterable<GenerateResponse>) last = m.update;
    } catch {
      return undefined;
    }
    return last?.$case === 'done' ? last.done.usage : undefined;
  }));
  return { finished: results.filter((u) => u !== undefined).length, usages: results };
}

async function fresh(): Promise<number> {
  await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
  return (await emulatorStats(emulator)).rateLimited;
}

it('reserves a prompt less the prefix the provider keeps: forty calls whose prompts hold the ITPM ~1.5 times over go within seconds, with no 429', async () => {
  await configureEmulator(emulator, { cacheReadsLimited: false });
  const before429 = await fresh();
  const broker = await brokers.start();
  // The first call writes the prefix: billed, and reserved, whole.
  const first = await calls(broker, 0, 1, 30_000);
  expect(first.finished).toBe(1);
  const written = first.usages[0]!.cacheWriteTokens!;
  expect(written).toBeGreaterThan(1_024);
  expect(first.usages[0]!.cacheReadTokens).toBe(0);
  const reservedBefore = await promMetric(broker.proc, 'llm_tokens_total', 'kind="reserved"');
  // Forty calls of ~1,100 prompt tokens: 44,000, where the provider counts ~30 of each. Reserved
  // whole, they would go 2.2 s apart (88 s for forty): not within the 30 s they are given.
  const rest = await calls(broker, 1, 41, 30_000);
  expect(rest.finished).toBe(40);
  expect(rest.usages.every((u) => u!.cacheReadTokens === written)).toBe(true);
  expect((await emulatorStats(emulator)).rateLimited - before429).toBe(0);
  // What was reserved is what the provider counts: the uncached rest of each prompt.
  const reserved = (await promMetric(broker.proc, 'llm_tokens_total', 'kind="reserved"')) - reservedBefore;
  const uncached = rest.usages.reduce((n, u) => n + u!.promptTokens - u!.cacheReadTokens!, 0);
  expect(reserved).toBe(uncached);
  expect(await promMetric(broker.proc, 'llm_tokens_total', 'kind="cache_read"')).toBe(40 * written);
});

it('a burst of calls whose prefix is not cached yet: the first writes it, and each queued behind it is reserved, when its turn comes, the uncached rest; twenty go within seconds, with no 429', async () => {
  await configureEmulator(emulator, { cacheReadsLimited: false });
  await brokers.stopAll();
  const before429 = await fresh();
  const broker = await brokers.start();
  // A prefix of its own (no other test's call wrote it).
  const brief = `Burst: ${SYSTEM}`;
  const burst = (i: number) => {
    const req = ask(i);
    return { ...req, messages: [{ ...req.messages[0]!, content: brief }, req.messages[1]!] };
  };
  // Twenty at once, ~1,100 prompt tokens each. On arrival none is cached: reserved whole, they
  // would go 2.2 s apart (~42 s). The first writes the prefix; by the turn of the second it is
  // read, and the rest go at the pace of their uncached tokens. (Their deadline is past the whole
  // prompts' pace, which the queue foresees until the first answer is learnt.)
  const started = Date.now();
  const all = await calls(broker, 300, 320, 60_000, burst);
  const tookMs = Date.now() - started;
  expect(all.finished).toBe(20);
  const written = all.usages.find((u) => u!.cacheWriteTokens! > 0)!.cacheWriteTokens!;
  expect(all.usages.filter((u) => u!.cacheReadTokens === written)).toHaveLength(19);
  expect(tookMs).toBeLessThan(20_000);
  expect((await emulatorStats(emulator)).rateLimited - before429).toBe(0);
  // Each was reserved what the provider counted: the first its whole prompt, the others their uncached rest.
  const reserved = await promMetric(broker.proc, 'llm_tokens_total', 'kind="reserved"');
  const uncached = all.usages.reduce((n, u) => n + u!.promptTokens - u!.cacheReadTokens!, 0);
  expect(reserved).toBe(uncached);
});

it('says which writes are kept an hour: a prefix marked 1h is billed as an hour\'s write, over gRPC as the provider said it', async () => {
  await brokers.stopAll();
  await fresh();
  const broker = await brokers.start();
  const hour = (i: number) => {
    const req = ask(i);
    return { ...req, messages: [{ ...req.messages[0]!, content: `Hour: ${SYSTEM}`, cacheTtl: '1h' }, req.messages[1]!] };
  };
  const { usages } = await calls(broker, 400, 401, 30_000, hour);
  expect(usages[0]!.cacheWriteTokens).toBeGreaterThan(1_024);
  expect(usages[0]!.cacheWrite1hTokens).toBe(usages[0]!.cacheWriteTokens);
  // Five minutes' writes: none of them an hour's.
  const { usages: five } = await calls(broker, 401, 402, 30_000, (i) => ({ ...ask(i), messages: [{ ...ask(i).messages[0]!, content: `Five: ${SYSTEM}` }, ask(i).messages[1]!] }));
  expect(five[0]!.cacheWriteTokens).toBeGreaterThan(1_024);
  expect(five[0]!.cacheWrite1hTokens ?? 0).toBe(0);
});

it('refuses a breakpoint kept an hour after one kept 5 minutes, in the order the provider reads (tools, system, the rest), before asking it', async () => {
  await brokers.stopAll();
  await fresh();
  const broker = await brokers.start();
  const marked = (system: string, question: string, tool = '') => {
    const req = ask(500);
    return {
      ...req,
      messages: [{ ...req.messages[0]!, cacheTtl: system }, { ...req.messages[1]!, cacheTtl: question }],
      tools: [{ name: 'search_web', description: 'Searches the web.', parametersJsonSchema: '{"type":"object"}', cacheTtl: tool }],
    };
  };
  const before = (await emulatorStats(emulator)).requests;
  for (const [system, question, tool] of [['5m', '1h', ''], ['1h', '', '5m'], ['', '1h', '5m']]) {
    const refused = await runGenerate(broker.client, marked(system!, question!, tool));
    expect(refused.error?.code).toBe(status.INVALID_ARGUMENT);
    expect(refused.error?.details).toMatch(/ttl 1h must not come after one with ttl 5m/);
  }
  expect((await emulatorStats(emulator)).requests).toBe(before);
  // An hour's first, then 5 minutes': as the provider takes them.
  for (const [system, question, tool] of [['1h', '5m', ''], ['1h', '5m', '1h'], ['5m', '5m', '']]) {
    const served = await runGenerate(broker.client, marked(system!, question!, tool));
    expect(served.error).toBeUndefined();
  }
});

/**
 * A conversation that marks only its last message, as Anthropic's guide has a chat do: each turn's
 * breakpoint is new, and the provider reads the turn before it, found by looking back from there.
 */
function turn(history: string[], question: string): GenerateRequest {
  const base = generateRequest('', { maxTokens: 50, callerRole: CallerRole.CALLER_ROLE_DIRECT });
  const message = (role: string, content: string, cacheTtl = '') => ({ ...base.messages[1]!, role, content, cacheTtl });
  // The conversation opens with a long brief (~1,100 tokens).
  const asked = [...history, question].map((q, k) => (k === 0 ? `${SYSTEM}${q}` : q));
  const said = asked.slice(0, -1).flatMap((q, k) => [message('user', q), message('assistant', `Answer ${k}: plant trees.`)]);
  return { ...base, messages: [base.messages[0]!, ...said, message('user', asked.at(-1)!, '5m')] };
}

it('a conversation that marks its last turn, spread over three replicas: the turn before, found by the provider\'s lookback and learnt by another replica, is foreseen; twenty follow-ups go within seconds, with no 429', async () => {
  await configureEmulator(emulator, { cacheReadsLimited: false });
  await brokers.stopAll();
  const before429 = await fresh();
  // Three replicas of one deployment: one Redis database (one quota, one forecast).
  const a = await brokers.start();
  const [b, c] = [await brokers.start({ db: a.db }), await brokers.start({ db: a.db })];
  const reservedOf = async () => (await Promise.all([a, b, c].map((x) => promMetric(x.proc, 'llm_tokens_total', 'kind="reserved"')))).reduce((x, y) => x + y, 0);
  // Turn 1 (on a) writes the long opening; turn 2 (on b) reads it, two blocks back, and writes itself.
  const first = await calls(a, 0, 1, 30_000, () => turn([], 'Where to start?'));
  expect(first.usages[0]!.cacheWriteTokens).toBeGreaterThan(1_024);
  const reservedBefore = await reservedOf();
  const second = await calls(b, 1, 2, 30_000, () => turn(['Where to start?'], 'And then?'));
  expect(second.usages[0]!.cacheReadTokens).toBe(first.usages[0]!.cacheWriteTokens);
  // Twenty follow-ups of turn 2 on c, ~1,300 tokens each: 26,000, where the provider counts ~30 of
  // each. Reserved whole, they would go ~2.6 s apart (~52 s): not within the 20 s they are given.
  const followUp = (i: number) => turn(['Where to start?', 'And then?'], `Follow-up ${i}: and the budget for district ${i}?`);
  const rest = await calls(c, 2, 22, 20_000, followUp);
  expect(rest.finished).toBe(20);
  const turn2 = second.usages[0]!.cacheReadTokens! + second.usages[0]!.cacheWriteTokens!;
  expect(rest.usages.every((u) => u!.cacheReadTokens === turn2)).toBe(true);
  expect((await emulatorStats(emulator)).rateLimited - before429).toBe(0);
  // Turn 2 and each follow-up were reserved their uncached rest, as the provider billed.
  const uncached = [...second.usages, ...rest.usages].reduce((n, u) => n + u!.promptTokens - u!.cacheReadTokens!, 0);
  expect((await reservedOf()) - reservedBefore).toBe(uncached);
});

it('a provider that counts its cache reads (LLM_CACHE_READS_LIMITED=true) is reserved whole prompts: no 429, where Anthropic\'s rule draws them', async () => {
  await configureEmulator(emulator, { cacheReadsLimited: true });
  try {
    await brokers.stopAll();
    let before429 = await fresh();
    const counted = await brokers.start({ env: { LLM_CACHE_READS_LIMITED: 'true' } });
    expect((await calls(counted, 100, 101, 30_000)).finished).toBe(1);
    // Six whole prompts (~6,600 tokens) paced at 30,000 a minute: ~13 s.
    expect((await calls(counted, 101, 107, 60_000)).finished).toBe(6);
    expect((await emulatorStats(emulator)).rateLimited - before429).toBe(0);
    await brokers.stopAll();
    // Reads taken for free against this provider: forty calls reserve ~30 tokens each, and it counts ~1,100.
    before429 = await fresh();
    const free = await brokers.start();
    await calls(free, 200, 201, 30_000);
    await calls(free, 201, 241, 30_000);
    expect((await emulatorStats(emulator)).rateLimited - before429).toBeGreaterThan(0);
  } finally {
    await configureEmulator(emulator, { cacheReadsLimited: false });
  }
});
