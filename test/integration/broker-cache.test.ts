// The broker's LLM response cache: real broker processes sharing one real Redis, the emulator
// counting upstream requests on its own. A repeated call is replayed without reaching the
// upstream or billing anything, every replica sees what another stored, identical concurrent
// misses make one upstream call (and a follower takes over when the leader dies), answers expire
// after their TTL but are served stale while the upstream refuses, and a call that does not ask
// for the cache never gets (or makes) a cached answer.
import { Metadata } from '@grpc/grpc-js';
import { reasonOf } from '@agent-mesh/common';
import {
  CacheStatus,
  CallerRole,
  type EmbedResponse,
  type GenerateRequest,
} from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, generateRequest, promMetric, runGenerate, startEmulator, startRedis, testDir, waitFor,
  type EmulatorProc, type GenerateOutcome, type RedisProc,
} from '../support';
import { TestBrokers, type TestBroker } from '../support/brokers';

jest.setTimeout(120_000);

let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
let brokers: TestBrokers;

type Broker = TestBroker;
/** A broker on Redis database `db` (replicas of one deployment share one). */
const startBroker = (db: number, env: Record<string, string> = {}) => brokers.start({ db, env });

type Outcome = GenerateOutcome;
const generate = (b: Broker, req: GenerateRequest, timeoutMs = 30_000) => runGenerate(b.client, req, { timeoutMs });
const doneOf = (o: Outcome) => {
  const u = o.messages.at(-1)?.update;
  if (u?.$case !== 'done') throw new Error(`no done: ${o.error ? `${reasonOf(o.error)}: ${o.error.details}` : 'stream ended'}`);
  return u.done;
};
const cachedOf = (o: Outcome) => {
  const u = o.messages.find((m) => m.update?.$case === 'cached')?.update;
  return u?.$case === 'cached' ? u.cached : undefined;
};
const textOf = (o: Outcome) => o.messages.map((m) => (m.update?.$case === 'delta' ? m.update.delta.content : '')).join('');
const upstreamRequests = async () => (await emulatorStats(emulator)).requests;
/** An embeddings call of `texts` that asks for the cache. */
const embedCached = (b: Broker, texts: string[]) =>
  new Promise<{ res?: EmbedResponse; err?: Error }>((resolve) =>
    b.client.embed(
      { userId: 'u', model: 'text-embedding-3-small', inputs: texts.map((text) => ({ input: { $case: 'text' as const, text } })), dimensions: 0, endUser: '', cache: true, vectorsAsBytes: true },
      new Metadata(),
      { deadline: new Date(Date.now() + 30_000) },
      (err, res) => resolve(err ? { err } : { res }),
    ),
  );
const metric = (b: Broker, name: string, labels = '') => promMetric(b.proc, name, labels);
const lookups = async (bs: Broker[], result: string) => (await Promise.all(bs.map((b) => metric(b, 'llm_cache_lookups_total', `result="${result}"`)))).reduce((a, b) => a + b, 0);

let seq = 0;
/** A question no other test asks (answers are cached across the whole file). */
const cachedAsk = (over: Partial<GenerateRequest> = {}) => generateRequest(`How should a small library plan its opening hours? (#${++seq})`, { cache: true, ...over });

let a: Broker;
let b: Broker;

beforeAll(async () => {
  dir = testDir('broker-cache');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_TTFT_MS: '50', EMULATOR_TOKENS_PER_SEC: '400', EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_SEED: '7', EMULATOR_STALL_MS: '1500' },
  });
  brokers = new TestBrokers({ logDir: dir, redisUrl: redis.url, emulatorUrl: emulator.url, env: { LLM_CACHE_LOCK_MS: '1000' } });
  // Two replicas of one deployment: the same Redis database.
  [a, b] = await Promise.all([startBroker(1), startBroker(1)]);
});

afterAll(async () => {
  await brokers?.stopAll();
  await emulator?.stop();
  await redis?.stop();
});

describe('hits', () => {
  it('a repeated call is replayed from the cache: the same answer, 0 upstream calls, nothing billed, marked cached', async () => {
    const req = cachedAsk();
    const first = await generate(a, req);
    const miss = doneOf(first);
    expect(miss.cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(cachedOf(first)).toBeUndefined();
    expect(miss.usage?.totalTokens).toBeGreaterThan(0);
    const savedBefore = await metric(a, 'llm_cache_tokens_saved_total');
    const hitsBefore = await metric(a, 'llm_cache_lookups_total', 'result="hit"');
    const before = await upstreamRequests();

    const again = await generate(a, req);
    const hit = doneOf(again);
    expect(await upstreamRequests()).toBe(before);
    expect(again.messages[0]?.update?.$case).toBe('cached'); // announced before the first delta
    expect(cachedOf(again)?.stale).toBe(false);
    expect(hit.cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(textOf(again)).toBe(textOf(first));
    expect(textOf(again).length).toBeGreaterThan(20);
    expect(again.messages.filter((m) => m.update?.$case === 'delta').length).toBe(first.messages.filter((m) => m.update?.$case === 'delta').length);
    expect(hit.finishReason).toBe(miss.finishReason);
    expect(hit.usage).toEqual({ promptTokens: 0, completionTokens: 0, totalTokens: 0 });
    expect(hit.cachedUsage).toEqual(miss.usage);
    expect(hit.queueWaitMs).toBe(0);
    expect(await metric(a, 'llm_cache_lookups_total', 'result="hit"')).toBe(hitsBefore + 1);
    expect(await metric(a, 'llm_cache_tokens_saved_total')).toBe(savedBefore + miss.usage!.totalTokens);
  });

  it('answer_in_done: the whole text in Done, one message (no delta, no Cached), the miss and the hit alike', async () => {
    const streamed = cachedAsk({ callerRole: CallerRole.CALLER_ROLE_DIRECT });
    const first = await generate(a, streamed);
    // The same question, in one message: replayed from what the streamed call stored.
    const whole = await generate(b, { ...streamed, answerInDone: true });
    expect(whole.messages.map((m) => m.update?.$case)).toEqual(['done']);
    expect(doneOf(whole).cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(doneOf(whole).content).toBe(textOf(first));
    expect(textOf(first).length).toBeGreaterThan(20);
    expect(doneOf(first).content).toBe('');
    // A miss: the upstream's answer, stored as it was, and replayed to a streamed call word for word.
    const fresh = cachedAsk({ callerRole: CallerRole.CALLER_ROLE_DIRECT, answerInDone: true });
    const miss = await generate(a, fresh);
    expect(miss.messages.map((m) => m.update?.$case)).toEqual(['done']);
    expect(doneOf(miss).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    const replay = await generate(b, { ...fresh, answerInDone: false });
    expect(cachedOf(replay)?.stale).toBe(false);
    expect(textOf(replay)).toBe(doneOf(miss).content);
    expect(doneOf(miss).content.length).toBeGreaterThan(20);
  });

  it('an answer made of tool calls is replayed with its tool calls', async () => {
    const tools = JSON.stringify([{ type: 'function', function: { name: 'search_web', parameters: { type: 'object', properties: { query: { type: 'string' } } } } }]);
    const req = generateRequest(`Search the latest news about solar power (#${++seq})`, { toolsJson: tools, cache: true });
    const first = doneOf(await generate(a, req));
    expect(first.finishReason).toBe('tool_calls');
    const before = await upstreamRequests();
    const hit = doneOf(await generate(a, req));
    expect(await upstreamRequests()).toBe(before);
    expect(hit.cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(hit.finishReason).toBe('tool_calls');
    expect(hit.toolCalls).toEqual(first.toolCalls);
    // A caller that streams tool calls gets each replayed call as one piece, before Done.
    const streamed = await generate(a, { ...req, streamToolCalls: true });
    const pieces = streamed.messages.flatMap((m) => (m.update?.$case === 'toolCall' ? [m.update.toolCall] : []));
    expect(pieces).toEqual(first.toolCalls.map((c, index) => ({ index, id: c.id, name: c.name, arguments: c.argumentsJson })));
    expect(doneOf(streamed).cache).toBe(CacheStatus.CACHE_STATUS_HIT);
  });

  it('one replica stores, another replays: the cache is shared through Redis', async () => {
    const req = cachedAsk();
    const first = await generate(a, req);
    expect(doneOf(first).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    const before = await upstreamRequests();
    const other = await generate(b, req);
    expect(doneOf(other).cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(textOf(other)).toBe(textOf(first));
    expect(await upstreamRequests()).toBe(before);
  });
});

describe('single flight', () => {
  it('8 concurrent identical misses on two replicas make one upstream call; all get its answer', async () => {
    const req = cachedAsk();
    const before = await upstreamRequests();
    const [missesBefore, hitsBefore] = [await lookups([a, b], 'miss'), await lookups([a, b], 'hit')];
    const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => generate(i % 2 ? a : b, req)));
    expect(await upstreamRequests()).toBe(before + 1);
    const statuses = outcomes.map((o) => doneOf(o).cache);
    expect(statuses.filter((s) => s === CacheStatus.CACHE_STATUS_MISS)).toHaveLength(1);
    expect(statuses.filter((s) => s === CacheStatus.CACHE_STATUS_HIT)).toHaveLength(7);
    expect(new Set(outcomes.map(textOf)).size).toBe(1);
    expect(await lookups([a, b], 'miss')).toBe(missesBefore + 1);
    expect(await lookups([a, b], 'hit')).toBe(hitsBefore + 7);
  });

  it('the leader dies mid-call: a follower takes over once its lock lapses and calls the upstream itself', async () => {
    const leader = await startBroker(1);
    // The emulator stalls this answer halfway for 1.5 s: the leader is surely still in its call.
    const req = cachedAsk({ model: 'emulator-1+stall' });
    const before = await emulatorStats(emulator);
    const leading = generate(leader, req);
    await waitFor('the leader in its upstream call', async () => (await upstreamRequests()) === before.requests + 1, { timeoutMs: 10_000, intervalMs: 20 });
    const t0 = Date.now();
    const following = generate(a, req);
    await new Promise((r) => setTimeout(r, 200));
    await leader.proc.kill();
    const o = await following;
    expect((await leading).error).toBeDefined();
    expect(doneOf(o).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(textOf(o).length).toBeGreaterThan(20);
    expect(await upstreamRequests()).toBe(before.requests + 2);
    expect(await metric(a, 'llm_cache_single_flight_total', 'outcome="took_over"')).toBe(1);
    // It waited for the lock to lapse (1 s lease), not for its 60 s bound.
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});

describe('single flight, bounded', () => {
  it('a follower waits at most LLM_CACHE_WAIT_MS for a slow leader, then calls the upstream itself', async () => {
    const impatient = await startBroker(1, { LLM_CACHE_WAIT_MS: '300' });
    const req = cachedAsk({ model: 'emulator-1+stall' }); // the leader's answer takes > 1.5 s
    const before = await upstreamRequests();
    const leading = generate(a, req);
    await waitFor('the leader in its upstream call', async () => (await upstreamRequests()) === before + 1, { timeoutMs: 10_000, intervalMs: 20 });
    const o = await generate(impatient, req);
    expect(doneOf(o).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(doneOf(await leading).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(await upstreamRequests()).toBe(before + 2);
    expect(await metric(impatient, 'llm_cache_single_flight_total', 'outcome="timed_out"')).toBe(1);
  });
});

describe('expiry and stale answers (a replica with a 0.8 s TTL, on its own database)', () => {
  let c: Broker;
  beforeAll(async () => {
    c = await startBroker(2, { LLM_CACHE_TTL_S: '0.8', LLM_CACHE_STALE_S: '60', LLM_BREAKER_RESET_MS: '1500' });
  });
  const expire = () => new Promise((r) => setTimeout(r, 1_000));

  it('an answer older than its TTL is a miss again', async () => {
    const req = cachedAsk();
    const before = await upstreamRequests();
    expect(doneOf(await generate(c, req)).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(doneOf(await generate(c, req)).cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(await upstreamRequests()).toBe(before + 1);
    await expire();
    const late = await generate(c, req);
    expect(doneOf(late).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(cachedOf(late)).toBeUndefined();
    expect(await upstreamRequests()).toBe(before + 2);
  });

  it('while the breaker is open, an expired answer is served, marked stale; without one the call is refused', async () => {
    const req = cachedAsk();
    const first = await generate(c, req);
    await expire();
    // A wrong key (an account problem) opens the breaker.
    const opened = await generate(c, generateRequest('anything', { model: 'emulator-1+wrong_key' }));
    expect(reasonOf(opened.error)).toBe('breaker_open');
    expect(await metric(c, 'llm_breaker_state')).toBe(2);
    const before = await upstreamRequests();
    const stale = await generate(c, req);
    expect(doneOf(stale).cache).toBe(CacheStatus.CACHE_STATUS_STALE);
    expect(cachedOf(stale)).toMatchObject({ stale: true });
    expect(cachedOf(stale)!.ageMs).toBeGreaterThanOrEqual(800);
    expect(textOf(stale)).toBe(textOf(first));
    expect(doneOf(stale).usage?.totalTokens).toBe(0);
    expect(reasonOf((await generate(c, cachedAsk())).error)).toBe('breaker_open');
    expect(await upstreamRequests()).toBe(before);
    expect(await metric(c, 'llm_cache_lookups_total', 'result="stale"')).toBe(1);
    // Closed again (the half-open probe succeeds): expired is a miss again.
    await new Promise((r) => setTimeout(r, 1_700));
    expect(doneOf(await generate(c, generateRequest('probe'))).finishReason).toBeTruthy();
    expect(await metric(c, 'llm_breaker_state')).toBe(0);
    expect(doneOf(await generate(c, req)).cache).toBe(CacheStatus.CACHE_STATUS_MISS);
  });

  it('embeddings: while the breaker is open, expired vectors are served, marked stale; an input without one is refused', async () => {
    const first = (await embedCached(c, ['an expiring vector', 'another one'])).res!;
    await expire();
    const opened = await generate(c, generateRequest('anything', { model: 'emulator-1+wrong_key' }));
    expect(reasonOf(opened.error)).toBe('breaker_open');
    const before = await upstreamRequests();
    const stale = (await embedCached(c, ['another one', 'an expiring vector'])).res!;
    expect(stale).toMatchObject({ cachedInputs: 2, cachedStale: true, promptTokens: 0, cachedPromptTokens: first.promptTokens });
    expect(stale.embeddings).toEqual([first.embeddings[1], first.embeddings[0]]);
    const refused = await embedCached(c, ['an expiring vector', 'one never embedded']);
    expect(reasonOf(refused.err!)).toBe('breaker_open');
    expect(await upstreamRequests()).toBe(before);
    expect(await metric(c, 'llm_cache_embedding_inputs_total', 'result="stale"')).toBe(2);
    // Closed again (the half-open probe succeeds): expired is a miss again.
    await new Promise((r) => setTimeout(r, 1_700));
    expect(doneOf(await generate(c, generateRequest('probe'))).finishReason).toBeTruthy();
    const again = (await embedCached(c, ['an expiring vector'])).res!;
    expect([again.cachedInputs, again.cachedStale]).toEqual([0, false]);
    expect(await upstreamRequests()).toBe(before + 2);
  });

  it('while a provider 429 pauses the upstream, an expired answer is served, marked stale', async () => {
    const req = cachedAsk();
    await generate(c, req);
    await expire();
    // The provider allows 1 request per 3 s window: the second gets a 429 with Retry-After, and the broker pauses.
    await configureEmulator(emulator, { timeScale: 0.05, rpm: 1 });
    try {
      await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
      await generate(c, generateRequest('one'));
      const limited = await generate(c, generateRequest('two'), 1_000);
      expect(limited.error).toBeDefined();
      expect(await metric(c, 'llm_upstream_rate_limited_total')).toBeGreaterThanOrEqual(1);
      const before = await upstreamRequests();
      const stale = await generate(c, req, 2_000);
      expect(doneOf(stale).cache).toBe(CacheStatus.CACHE_STATUS_STALE);
      expect(await upstreamRequests()).toBe(before);
    } finally {
      await configureEmulator(emulator, { timeScale: 1, rpm: 0 });
    }
  });

});

describe('opting out', () => {
  it('a call that does not ask for the cache always reaches the upstream and is not marked', async () => {
    const req = cachedAsk();
    doneOf(await generate(a, req)); // stored
    const before = await upstreamRequests();
    const lookupsBefore = (await lookups([a], 'hit')) + (await lookups([a], 'miss'));
    const plain = { ...req, cache: false };
    const outcomes = [await generate(a, plain), await generate(a, plain)];
    expect(await upstreamRequests()).toBe(before + 2);
    for (const o of outcomes) {
      expect(doneOf(o).cache).toBe(CacheStatus.CACHE_STATUS_UNSPECIFIED);
      expect(cachedOf(o)).toBeUndefined();
      expect(doneOf(o).usage?.totalTokens).toBeGreaterThan(0);
    }
    expect((await lookups([a], 'hit')) + (await lookups([a], 'miss'))).toBe(lookupsBefore);
  });

  it('LLM_CACHE_TTL_S=0 turns the cache off: calls that ask for it reach the upstream', async () => {
    const off = await startBroker(1, { LLM_CACHE_TTL_S: '0' });
    const req = cachedAsk();
    doneOf(await generate(a, req)); // stored by a replica with the cache on
    const before = await upstreamRequests();
    const o = await generate(off, req);
    expect(doneOf(o).cache).toBe(CacheStatus.CACHE_STATUS_UNSPECIFIED);
    expect(await upstreamRequests()).toBe(before + 1);
  });
});

// Last: it stops Redis.
describe('without Redis', () => {
  it('a call that asks for the cache is answered by the upstream, and the lookup counted as an error', async () => {
    await redis.stop();
    const before = await upstreamRequests();
    const o = await generate(a, cachedAsk());
    expect(doneOf(o).cache).toBe(CacheStatus.CACHE_STATUS_UNSPECIFIED);
    expect(textOf(o).length).toBeGreaterThan(20);
    expect(await upstreamRequests()).toBe(before + 1);
    expect(await metric(a, 'llm_cache_lookups_total', 'result="error"')).toBe(1);
  });

  it('an embeddings call that asks for the cache has every input embedded by the upstream, each counted as an error', async () => {
    const before = await upstreamRequests();
    const r = (await embedCached(a, ['one', 'two'])).res!;
    expect([r.embeddings.length, r.cachedInputs, r.promptTokens > 0]).toEqual([2, 0, true]);
    expect(await upstreamRequests()).toBe(before + 1);
    expect(await metric(a, 'llm_cache_embedding_inputs_total', 'result="error"')).toBe(2);
  });
});
